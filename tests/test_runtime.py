"""The runtime resolves device, process group and precision once: backend and collective
device follow the device (NCCL on CUDA with collectives on the rank's GPU, gloo on the CPU)."""
import pytest
import torch

import asr.runtime as R
from asr.errors import AsrError


def test_backend_follows_the_device():
    assert R.backend_for(torch.device("cuda", 1)) == "nccl"
    assert R.backend_for(torch.device("cpu")) == "gloo"


def test_single_process_runtime_on_cpu():
    rt = R.Runtime.create("cpu", "off", threads=1)
    assert rt.device == torch.device("cpu") and not rt.dist.active and rt.dist.device.type == "cpu"
    assert rt.precision == "fp32" and torch.get_num_threads() == 1


@pytest.mark.parametrize("name, cuda, backend, device", [
    ("auto", True, "nccl", "cuda:1"),     # auto on a GPU machine: NCCL, not gloo
    ("cuda", True, "nccl", "cuda:1"),
    ("auto", False, "gloo", "cpu"),
    ("cpu", True, "gloo", "cpu"),
])
def test_torchrun_rank_joins_with_the_backend_of_its_device(monkeypatch, name, cuda, backend, device):
    """Under torchrun (WORLD_SIZE 2, LOCAL_RANK 1) the device is resolved before the process
    group is created, so ``device: auto`` on GPUs gets NCCL and collectives on the rank's GPU."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", str(d)))
    monkeypatch.setattr(R.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(R.dist, "init_process_group", lambda backend: calls.setdefault("backend", backend))
    monkeypatch.setattr(R.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(R.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(R, "native_bf16", lambda d: d.type == "cuda")
    rt = R.Runtime.create(name, "auto", threads=1)
    assert calls["backend"] == backend and str(rt.device) == device
    assert str(rt.dist.device) == device and rt.dist.active and rt.dist.rank == 1
    assert calls.get("set_device") == (device if cuda and device != "cpu" else None)
    assert rt.amp == ("bf16" if device.startswith("cuda") else "off")


def test_collectives_use_the_dist_device(monkeypatch):
    """The tensors handed to all_reduce live on ``Dist.device`` (NCCL refuses CPU tensors)."""
    seen = []
    monkeypatch.setattr(R.dist, "all_reduce", lambda t, **k: seen.append(t.device))
    for device in ("cpu", "meta"):
        d = R.Dist(rank=0, world=2, device=torch.device(device))
        try:
            d.all_true(True)
            d.sum([1.0, 2.0])
        except (NotImplementedError, RuntimeError):
            pass                               # a meta tensor has no value to read back
    assert seen[:2] == [torch.device("cpu")] * 2 and seen[2] == torch.device("meta")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AsrError, match="no CUDA device"):
        R.resolve_device("cuda")
