"""Where and how a run executes: device, precision, torchrun's process group."""

from __future__ import annotations

import ctypes
import os
import resource
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from agencerdas.stores.errors import AgencerdasError

#: Collective timeout of a DDP run (see setup).
DDP_TIMEOUT = timedelta(hours=2)


@dataclass
class Runtime:
    """Device, autocast dtype (None = fp32) and DDP rank/world, chosen once per run."""

    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def precision(self) -> str:
        """fp32 (with TF32 matmuls on CUDA, see :func:`setup`), bf16 or fp16 autocast."""
        if self.amp_dtype is None:
            return "fp32 (TF32 matmuls)" if self.device.type == "cuda" else "fp32"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self):
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def peak_memory_mb(self) -> float:
        """Peak allocated GPU memory on CUDA, else the process's peak RSS, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device(request: str, local_rank: int, world: int = 1) -> torch.device:
    if request == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(request)
    except RuntimeError:
        raise AgencerdasError(f"unknown device {request!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and world > 1:  # every rank on one GPU: NCCL "duplicate GPU"
        raise AgencerdasError(f"DEVICE={request} names one GPU, but torchrun started {world} processes, one per GPU; "
                              "use DEVICE=cuda or auto (each rank takes GPU LOCAL_RANK), and CUDA_VISIBLE_DEVICES "
                              "to choose which GPUs")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AgencerdasError(f"device {request!r} requested but this machine has no CUDA GPU; use DEVICE=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _amp_dtype(request: str, device: torch.device) -> torch.dtype | None:
    if request == "auto":
        # bf16 where the GPU supports it, else fp16 with a GradScaler; fp32 on CPU,
        # where autocast slows training down.
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[request]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: compute capability 8.0 (Ampere) or newer.

    ``torch.cuda.is_bf16_supported()`` also says yes on older GPUs that only emulate bf16
    (several times slower than fp16 there), so it is not the test.
    """
    return torch.cuda.get_device_capability(device)[0] >= 8


def keep_freed_memory() -> None:
    """Let glibc's malloc keep large freed blocks for reuse instead of returning them to the system.

    A CPU batch of the throughput preset is ~150 MB per tensor; glibc serves blocks that large with
    fresh mmaps and unmaps them when freed, so every batch page-faulted all of its memory back in
    (measured: a gather 3x, a zero fill 9x slower than into reused memory). PyTorch's CPU tuning guide
    swaps in jemalloc or tcmalloc for this; raising glibc's mmap and trim thresholds does it in process.
    A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers (malloc.h)
    libc.mallopt(m_mmap_threshold, 2**30)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader workers for ``requested`` (-1 = auto, see TrainConfig.num_workers)."""
    if requested >= 0:
        return requested
    if device.type == "cuda":
        return min(4, max(1, cores() - 1))
    return 0 if cores() <= 4 else 2


def set_cpu_threads(requested: int, workers: int, device: torch.device) -> None:
    """torch threads for CPU compute: ``requested``, or the cores not taken by loader workers.

    Oversubscribed OpenMP threads wait on each other at every parallel region; on a
    2-core machine with a busy loader process a step ran ~3.5x slower with 2 threads than with 1.
    """
    if device.type == "cpu":
        torch.set_num_threads(requested or max(1, cores() - workers))


def setup(device: str = "auto", precision: str = "auto") -> Runtime:
    """Pick device and precision; join torchrun's process group when RANK/WORLD_SIZE are set."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = _device(device, local_rank, world)
    if dev.type == "cuda":  # fp32 matmuls and convolutions on tensor cores (TF32, Ampere and newer)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Full-recording DER validation runs on rank 0 while the other ranks wait at a barrier;
        # on a large validation split that can outlast the default 10-minute collective timeout.
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=DDP_TIMEOUT)
    return Runtime(dev, _amp_dtype(precision, dev), rank, world, local_rank)


def inference_runtime(device: str = "auto") -> Runtime:
    """Device and autocast for applying a model in this process: no process group, whatever the environment."""
    dev = _device(device, 0)
    return Runtime(dev, _amp_dtype("auto", dev))


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
