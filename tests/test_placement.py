"""Dtype names and the one device resolver: what each option takes, and each refusal's wording."""

import subprocess
import sys

import pytest
import torch

from t2cli.errors import DispatchError, ModelNotFoundError
from t2cli.placement import (
    DTYPE_BYTES,
    EXPORT_DTYPES,
    MODEL_DTYPES,
    PASS1_DTYPES,
    STORE_DTYPES,
    SVD_DTYPES,
    PlacementError,
    check_placement,
    dtype_name,
    pass1_dtype_of,
    resolve_device,
    resolve_dtype,
    torch_dtype,
    unknown_dtype,
)

NO_CUDA = not torch.cuda.is_available()


def test_auto_is_float32_on_a_cpu():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelNotFoundError, match="--dtype"):
        resolve_dtype("float64")
    with pytest.raises(ModelNotFoundError, match="--device"):
        resolve_device("tpu:banana")
    if NO_CUDA:
        with pytest.raises(ModelNotFoundError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "dtype, device, expected",
    [
        ("auto", "cpu", torch.float32),
        ("float32", "cpu", torch.float32),
        ("bfloat16", "cpu", torch.bfloat16),
        ("float16", "cpu", torch.float16),
        (torch.float64, "cpu", torch.float64),  # a torch dtype is taken as it is
        ("auto", torch.device("cuda", 3), torch.bfloat16),  # a GPU to plan for is assumed to have bfloat16
    ],
)
def test_resolve_dtype(dtype, device, expected):
    if isinstance(device, torch.device) and not NO_CUDA:
        pytest.skip("a GPU is present: auto asks it whether it supports bfloat16")
    assert resolve_dtype(dtype, device) == expected


@pytest.mark.parametrize(
    "device, expected",
    [("cpu", torch.device("cpu")), (torch.device("cpu"), torch.device("cpu")), ("meta", torch.device("meta"))],
)
def test_resolve_device(device, expected):
    assert resolve_device(device) == expected


@pytest.mark.skipif(not NO_CUDA, reason="auto is the GPU here")
@pytest.mark.parametrize("device", ["auto", None])
def test_auto_device_is_the_cpu_without_cuda(device, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # a distributed launch without GPUs stays on the CPU
    assert resolve_device(device) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has the GPU")
def test_a_gpu_this_machine_lacks_can_be_planned_for():
    assert resolve_device("cuda:1", visible=False) == torch.device("cuda", 1)
    with pytest.raises(PlacementError, match="no CUDA device is visible: use --device cpu"):
        resolve_device("cuda:1")


@pytest.mark.parametrize(
    "dtype, device, device_map, message",
    [
        (
            "float64",
            "cpu",
            None,
            "--dtype must be one of auto, float32, bfloat16, float16, not 'float64' (the SVD precision is --svd-dtype)",
        ),
        ("int8", "cpu", None, "--dtype must be one of auto, float32, bfloat16, float16, not 'int8'"),
        ("auto", "tpu", None, "--device must be auto, cpu, cuda or cuda:N, not 'tpu'"),
        ("auto", "auto", "everywhere", "--device-map must be auto, balanced, sequential or cpu, not 'everywhere'"),
    ],
)
def test_check_placement_refuses_with_one_line(dtype, device, device_map, message):
    with pytest.raises(PlacementError) as error:
        check_placement(dtype, device, device_map)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "dtype, device, device_map",
    [("auto", "auto", None), ("bfloat16", "cuda:1", None), ("float16", "cpu", "auto"), ("float32", "cuda", "cpu")],
)
def test_check_placement_takes_what_a_model_loads_with(dtype, device, device_map):
    check_placement(dtype, device, device_map)


@pytest.mark.parametrize(
    "name, expected",
    [(None, None), ("float32", torch.float32), ("bfloat16", torch.bfloat16), (torch.float16, torch.float16)],
)
def test_pass1_dtype_of(name, expected):
    assert pass1_dtype_of(name) == expected


def test_a_pass1_dtype_it_does_not_take_is_a_dispatch_error():
    with pytest.raises(DispatchError, match="--pass1-dtype must be one of float32, bfloat16, float16, not 'float64'"):
        pass1_dtype_of("float64")


@pytest.mark.parametrize(
    "names", [MODEL_DTYPES[1:], STORE_DTYPES, SVD_DTYPES, PASS1_DTYPES, EXPORT_DTYPES], ids=lambda n: "-".join(n)
)
def test_every_dtype_name_is_a_torch_dtype_of_known_size(names):
    for name in names:
        dtype = torch_dtype(name)
        assert dtype_name(dtype) == name and torch.empty(0, dtype=dtype).element_size() == DTYPE_BYTES[name]
    assert DTYPE_BYTES["bfloat16"] == 2


def test_torch_dtype_refuses_other_names():
    with pytest.raises(PlacementError, match="dtype must be one of float32, bfloat16, float16, float64, not 'int8'"):
        torch_dtype("int8")


def test_unknown_dtype_wording():
    assert unknown_dtype("--store-dtype", "int4", STORE_DTYPES) == (
        "--store-dtype must be one of float32, bfloat16, float16, float64, not 'int4'"
    )


def test_the_names_are_read_without_torch():
    """`t2 --help` shows them: importing them must not import torch."""
    code = "import sys, t2cli.placement, t2cli.defaults; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
