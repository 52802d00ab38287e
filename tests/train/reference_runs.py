"""Tiny deterministic training runs whose results are pinned in data/reference.pt.

The file was written by this module on the training code before the SVF and LoRA loops were merged
into one (`python tests/train/reference_runs.py`, 2-core CPU, torch 2.13); test_reference.py reruns the
same cases and requires the same z / LoRA weights (within rounding on other CPUs) and metrics.
`python tests/train/reference_runs.py --compare` prints how far this CPU's rounding moves each SVF run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (conftest) when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/train/ (toy)

import torch  # noqa: E402
from conftest import make_tokenizer, tiny_llama  # noqa: E402
from toy import toy_config, toy_task  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "data" / "reference.pt"
TIMES = ("time/iter", "time/rollout", "time/val")

CASES = {
    "svf-rl": dict(iters=4, eval_every=2),
    "svf-rl-k2-kl": dict(iters=3, rollouts_per_prompt=2, kl=0.1, eval_every=3),
    "svf-sft": dict(objective="sft", iters=3, eval_every=1),
    "svf-sft-rl": dict(objective="sft+rl", iters=3, sft_iters=1),
    "lora-sft": dict(method="lora", objective="sft", iters=3, lr=1e-2, eval_every=1),
}


def untimed(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIMES} for line in metrics]


def run_case(name: str, out: Path) -> dict:
    """One case on a fresh tiny Llama (seed 0); the values the reference pins."""
    from t2cli.registry import Registry
    from t2cli.train import train

    settings = dict(CASES[name])
    loaded = tiny_llama(make_tokenizer(), seed=0)
    config = toy_config(out / name, name=name, **settings)
    result = train(config, loaded=loaded, task=toy_task(), registry=Registry(write_root=out / "registry"))
    if config.method == "lora":
        from safetensors.torch import load_file

        best = load_file(str(result.path / "adapter_model.safetensors"))
        return {"final": result.final_state, "best": best, "metrics": untimed(result.metrics)}
    return {"final": result.final_state, "best": dict(result.expert.z), "metrics": untimed(result.metrics)}


def update_size(run: dict) -> float:
    """The largest change training made to any trained value: final vs the initial (= saved best)
    state. PEFT names a tensor `….default.weight` in memory and `….weight` in its saved file."""
    best = {name.replace(".default", ""): tensor for name, tensor in run["best"].items()}
    return max(
        float((tensor - best[name.replace(".default", "")]).abs().max()) for name, tensor in run["final"].items()
    )


def difference(got: dict, expected: dict, part: str = "final") -> float:
    """The largest absolute difference between two runs' tensors of `part`."""
    return max(float((got[part][name] - tensor).abs().max()) for name, tensor in expected[part].items())


def main() -> None:
    torch.set_num_threads(1)
    if "--compare" in sys.argv:  # this CPU against the recorded file: how far rounding moves each run
        reference = torch.load(REFERENCE, weights_only=True)
        for name, settings in CASES.items():
            if settings.get("method") == "lora":
                continue  # reproduced only with the old dropout draw replayed (test_reference.py)
            with tempfile.TemporaryDirectory() as tmp:
                got = run_case(name, Path(tmp))
            share = difference(got, reference[name]) / update_size(reference[name])
            print(f"{name}: final z differs by {share:.2%} of the training update")
        return
    with tempfile.TemporaryDirectory() as tmp:
        reference = {name: run_case(name, Path(tmp)) for name in CASES}
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference, REFERENCE)
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
