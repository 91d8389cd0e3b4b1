"""Where and how a run computes: device, process group, threads and precision, resolved once.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank builds the same length-bucketed global
batches (same seed) and takes its shard ``batch[rank::world]``, so N ranks see exactly the
batches one process would; gradients are averaged by DistributedDataParallel. Rank 0 writes
checkpoints and logs. The process group's backend follows the device (cuda -> NCCL, cpu ->
gloo), and collectives run on that device (NCCL refuses CPU tensors).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist

from .errors import AsrError

DeviceName = Literal["cpu", "cuda", "auto"]
Amp = Literal["off", "bf16", "fp16", "auto"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))   # where collectives run

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: list) -> list:
        return items[self.rank:: self.world]

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank (keeps collective decisions in step)."""
        if not self.active:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def any_true(self, flag: bool) -> bool:
        return not self.all_true(not flag)

    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: object) -> list:
        """Every rank's ``obj``, on every rank, in rank order."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def backend_for(device: torch.device) -> str:
    """The process-group backend for ``device``: NCCL for CUDA, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (this rank's GPU) or ``auto`` (CUDA when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise AsrError("train.device=cuda but no CUDA device is available (use cpu or auto)")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products in hardware (CPU: AMX or AVX512-BF16;
    elsewhere oneDNN emulates bf16 and autocast would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return any(check() for check in checks if check is not None)
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` for this device: ``auto`` becomes bf16 where it is native, else off. An
    explicit bf16 on a CPU without it is refused: oneDNN has no emulated bf16 LSTM there."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    if amp == "bf16" and device.type == "cpu" and not native_bf16(device):
        raise AsrError("train.amp=bf16: this CPU has no native bf16 (AMX or AVX512-BF16), and oneDNN "
                       "cannot run the LSTM in bf16 without it; use train.amp=auto or off")
    return amp


def precision_name(amp: str) -> str:
    """A resolved ``train.amp`` as a precision: fp32, bf16 or fp16."""
    return "fp32" if amp == "off" else amp


def join_process_group(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), with the backend
    and collective device of ``device``; a single process gets a no-op :class:`Dist`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return Dist(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)          # before NCCL init: one GPU per rank
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return Dist(dist.get_rank(), dist.get_world_size(), local, device)


@dataclass(frozen=True)
class Runtime:
    """The resolved device (``cuda:<local rank>`` under torchrun), process group, CPU threads
    and precision (``amp``: off | bf16 | fp16) of a run."""

    device: torch.device
    dist: Dist
    amp: str
    threads: int

    @classmethod
    def create(cls, device: DeviceName = "cpu", amp: Amp = "off", threads: int = 2) -> "Runtime":
        torch.set_num_threads(threads)
        dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        return cls(dev, join_process_group(dev), resolve_amp(amp, dev), threads)

    @property
    def precision(self) -> str:
        return precision_name(self.amp)
