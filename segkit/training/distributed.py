"""Data-parallel training with torch.distributed, started by torchrun.

``torchrun --nproc-per-node N -m segkit run ...`` (or ``segkit run --devices N``, which
launches exactly that) starts N processes; each reads RANK, WORLD_SIZE and LOCAL_RANK
from the environment. Rank r trains on shard r of the training split (the loader's
``shard=(r, N)``), gradients are averaged by DistributedDataParallel, training metrics
are summed across ranks, and rank 0 alone validates, tests and writes the run folder
while the others wait.

A dead rank never leaves the others waiting for good. Each rank dies with its launcher
(:mod:`segkit.system.lifeline`), and the launcher stops every rank when one fails. A rank blocked
in a collective whose peer died sees the broken connection at once (gloo) or gives up
after the collective timeout (``SEGKIT_COLLECTIVE_TIMEOUT`` seconds; torch's defaults
without it: 10 minutes for NCCL, whose watchdog then aborts the process, 30 for gloo),
and stops with one line (:class:`~segkit.errors.DistributedError`, exit status
:data:`EXIT_LOST_CONTACT`). ``segkit run --devices N`` then prints one line naming the
rank that failed first.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from segkit.errors import ConfigError, DistributedError
from segkit.system.lifeline import tie_to_parent

#: Seconds a collective waits for the other ranks before it fails (unset: torch's default).
TIMEOUT_ENV = "SEGKIT_COLLECTIVE_TIMEOUT"

#: Where :func:`launch` asks rank 0 to note its run folder (a file path).
FOLDER_NOTE_ENV = "SEGKIT_LAUNCH_FOLDER_NOTE"

#: Exit status of a rank that stopped because another one did (``segkit run --devices``
#: tells it from the rank that failed first).
EXIT_LOST_CONTACT = 3


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


def collective_timeout() -> timedelta | None:
    """``SEGKIT_COLLECTIVE_TIMEOUT`` as a timedelta (None when unset).

    Raises:
        ConfigError: it is not a positive number of seconds.
    """
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def init(d: Dist, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU, with the collective
    timeout of :func:`collective_timeout`. The rank is tied to its launcher first
    (:func:`segkit.system.lifeline.tie_to_parent`): it dies if the launcher dies."""
    if d.enabled and not dist.is_initialized():
        tie_to_parent()
        timeout = collective_timeout()
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            **({"timeout": timeout} if timeout is not None else {}),
        )


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank died or hangs.
    Torch raises a DistError from NCCL but a plain RuntimeError from gloo: then it is one
    raised inside torch.distributed or DDP (a broadcast of the buffers in ``forward``), or
    one whose message comes from gloo (an all-reduce in ``backward``'s hooks)."""
    if isinstance(error, dist.DistError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    tb = error.__traceback__
    while tb is not None:
        where = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "torch/distributed/" in where or "torch/nn/parallel/" in where:
            return True
        tb = tb.tb_next
    marks = ("gloo/", "NCCL", "Connection reset by peer", "Connection closed", "pair closure")
    return any(mark in str(error) for mark in marks)


def lost_contact(d: Dist, epoch: int, error: BaseException, resume: str) -> DistributedError:
    """The one-line error of a rank whose collective failed: the rank, the epoch, the
    reason and, from rank 0, how to resume."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(error).__name__
    if reason.startswith("[") and "] " in reason:  # gloo's source location
        reason = reason.split("] ", 1)[1]
    reason = reason.split(". This is typically")[0][:200]
    timeout = collective_timeout()
    waited = f"{timeout.total_seconds():g} s" if timeout else "torch's default"
    return DistributedError(
        f"rank {d.rank} of {d.world}: a collective failed during epoch {epoch} ({reason}); "
        f"another rank stopped or stopped answering (collective timeout: {waited}, "
        f"{TIMEOUT_ENV}).{resume}"
    )


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
    """Run ``segkit <argv>`` as torchrun would, with ``nproc`` processes on this machine
    (torch's elastic agent runs in this process). When a rank fails, the agent stops the
    others and this prints one line naming the rank that failed first (the one that did
    not exit with :data:`EXIT_LOST_CONTACT`, as those stopped because of it; if all did,
    the ranks that stopped answering) and how to resume rank 0's run folder.

    Returns:
        0, or the failed rank's exit status (1 for a signal or a rank that hung).
    """
    import logging
    import tempfile
    from uuid import uuid4

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    # torchrun --standalone: a rendezvous on a free local port.
    rendezvous = ["--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid4()}"]
    args = get_args_parser().parse_args([*rendezvous, f"--nproc-per-node={nproc}", "-m", "segkit"])
    # Set, not parsed: torchrun's parser takes a prefix of its own options in segkit's
    # arguments (`--monitor valid_loss` is "ambiguous: --monitor-interval").
    args.training_script_args = list(argv)
    config, cmd, cmd_args = config_from_args(args)
    # The agent's own log lines (which process it sends SIGTERM, its failure table) are
    # replaced by the line below.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="segkit-launch-") as tmp:
        note = os.path.join(tmp, "run-folder")
        os.environ[FOLDER_NOTE_ENV] = note  # the ranks inherit it; rank 0 writes its folder
        try:
            elastic_launch(config, cmd)(*cmd_args)
        except ChildFailedError as e:
            folder = open(note).read() if os.path.exists(note) else None
            line = f"{_first_failure(e.failures, nproc)}. {_resume_hint(folder, nproc)}"
            print(f"segkit: error: {line}", file=sys.stderr, flush=True)
            codes = [f.exitcode for f in e.failures.values()]
            return next((c for c in codes if c > 0 and c not in (EXIT_LOST_CONTACT, 130)), 1)
        finally:
            os.environ.pop(FOLDER_NOTE_ENV, None)
    return 0


def note_run_folder(d: Dist, path: os.PathLike[str] | str) -> None:
    """Rank 0 tells :func:`launch` (if it launched this job) where its run folder is."""
    note = os.environ.get(FOLDER_NOTE_ENV)
    if d.main and note:
        with open(note, "w") as f:
            f.write(str(path))


def _first_failure(failures: dict[int, Any], world: int) -> str:
    """Name the rank that failed first (see :func:`launch`)."""
    # Collateral: stopped because of another rank (a failed collective, or the agent's
    # SIGTERM: 130 once segkit turned it into an interrupt, -15 before it could).
    collateral = (EXIT_LOST_CONTACT, 130, -signal.SIGTERM)
    culprits = {r: f for r, f in failures.items() if f.exitcode not in collateral}
    if culprits:
        rank = min(culprits, key=lambda r: (culprits[r].timestamp, r))
        f = culprits[rank]
        how = (
            f"was killed by {f.signal_name()}"
            if f.exitcode < 0
            else f"exited with status {f.exitcode}"
        )
        return f"rank {rank} of {world} {how} (pid {f.pid}); the other ranks were stopped"
    # No rank failed of its own: the ones that hung are those that did not give up
    # waiting first (stopped by the agent afterwards, or woken to a broken connection).
    waited = [f.timestamp for f in failures.values() if f.exitcode == EXIT_LOST_CONTACT]
    first = {
        r
        for r, f in failures.items()
        if f.exitcode == EXIT_LOST_CONTACT and f.timestamp == min(waited)
    }
    silent = sorted(set(range(world)) - first) or ["?"]
    return (
        f"rank {', '.join(map(str, silent))} of {world} stopped answering; the others gave "
        f"up waiting for it after the collective timeout ({TIMEOUT_ENV})"
    )


def _resume_hint(folder: str | None, world: int) -> str:
    if folder is None:
        return "No run folder was made yet: start the run again"
    if os.path.exists(os.path.join(folder, "last.pt")):
        return f"Resume with: segkit run --resume {folder} --devices {world}"
    return (
        f"{folder} has no checkpoint yet: start it again with: segkit run --config "
        f"{os.path.join(folder, 'config.json')} --devices {world}"
    )
