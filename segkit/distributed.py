"""Data-parallel training with torch.distributed, started by torchrun.

``torchrun --nproc-per-node N -m segkit run ...`` (or ``segkit run --devices N``, which
launches exactly that) starts N processes; each reads RANK, WORLD_SIZE and LOCAL_RANK
from the environment. Rank r trains on shard r of the training split (the loader's
``shard=(r, N)``), gradients are averaged by DistributedDataParallel, training metrics
are summed across ranks, and rank 0 alone validates, tests and writes the run folder
while the others wait.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: Processes of this job on this host (torchrun's LOCAL_WORLD_SIZE).
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """Read torchrun's variables; a single process when they are absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(
        int(os.environ["RANK"]),
        world,
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def init(d: Dist, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    if d.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``t`` across ranks in place (no-op on one process)."""
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def weights_in_sync(model: torch.nn.Module, d: Dist) -> bool:
    """True when every rank holds bit-identical parameters.

    Compares a float64 checksum per tensor across ranks: DDP keeps replicas identical
    by construction, so a difference means a bug worth reporting. Buffers are left out:
    batch-norm running statistics are each rank's own until DDP broadcasts rank 0's at
    the next forward, and rank 0's are the ones checkpointed.
    """
    if not d.enabled:
        return True
    sums = torch.stack([t.detach().double().sum() for t in model.parameters()])
    lo, hi = sums.clone(), sums.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``segkit <argv>`` under torchrun with ``nproc`` processes on this machine."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "segkit",
        *argv,
    ]
    return subprocess.call(cmd)
