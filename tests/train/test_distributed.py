"""Data parallel: 2 processes (torchrun, gloo) follow the 1-process trajectory for the same seed and
global batch — each takes half the prompts, gradients are summed and divided by the global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy import one_thread, toy_config, toy_task  # noqa: F401 (one_thread: an autouse fixture)

from t2cli.registry import Registry
from t2cli.train import train

WORKER = Path(__file__).resolve().parent / "toy.py"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one(llama, tmp_path, isolated_home):
    env = os.environ | {
        "T2_HOME": str(isolated_home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path / "two"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    two = saved["final_state"]

    # the worker's model is conftest's tiny_llama(seed=0), i.e. this `llama` fixture
    result = train(
        toy_config(tmp_path / "one" / "run", iters=4),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "one" / "registry"),
    )
    one = result.final_state
    assert set(one) == set(two)
    difference = max(float((one[name] - two[name]).abs().max()) for name in one)
    assert difference <= 1e-5, difference
    # Adam and clipping hide a wrongly scaled gradient in z; the logged pre-clip norm and loss do not
    for single, double in zip(result.metrics, saved["metrics"], strict=True):
        for key in ("grad_norm", "loss", "reward/mean"):
            assert double[key] == pytest.approx(single[key], rel=1e-5), key
    moved = max(float((z - torch.sigmoid(torch.tensor(0.1))).abs().max()) for z in one.values())
    assert moved > 1e-3  # the comparison is between trained vectors, not two copies of the start
    assert (tmp_path / "two" / "registry" / llama.name / "toy" / "expert.json").is_file()  # rank 0 registered
