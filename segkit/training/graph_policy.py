"""Whether a run's training step may be captured as a CUDA graph (``--cuda-graphs``).

A CUDA graph replays one recorded step: fixed shapes, fixed addresses, no decision on
the host. This module only decides, from what is known before the first epoch, whether a
run can use one and, where it cannot, says why in one line per reason; it captures
nothing (the engine does, behind this decision).

``off`` never captures. ``on`` captures when every rule allows it, else falls back to the
eager step with the reasons. ``auto`` captures only when every rule allows it *and* a
measurement says the graph wins for this run (``measured_win``): a graph pays where the
host, not the GPU, is the bottleneck (many short kernels, as ResNet34-UNet's batch norms),
and costs a capture where the GPU is busy anyway; without a measurement ``auto`` stays off.

The rules (each one line in :attr:`GraphDecision.reasons`):

- a CUDA device (there is no graph on the CPU);
- not fp16: its GradScaler decides on the host, from the gradients, whether to step;
- not DDP: the gradient all-reduce and its buckets are not part of the captured step;
- no ``--ema``: the average is updated outside the step;
- no ``--accumulate``: a group of batches is more than one step;
- no ``--on-nan skip``: it reads each step's loss on the host (``stop`` checks on the
  device and stays capturable);
- one batch shape: an epoch whose last batch is smaller is a second shape, unless that
  batch is dropped or padded (``last_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GraphMode = Literal["auto", "on", "off"]
LastBatch = Literal["keep", "drop", "pad"]
MODES: tuple[str, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class GraphDecision:
    """The outcome: capture (``use``) or not, and why not, one line per reason.

    Attributes:
        mode: What was asked for.
        use: Whether the step is captured.
        reasons: Why not (empty when ``use``); each a short sentence.
    """

    mode: str
    use: bool
    reasons: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for the run's log, e.g. ``cuda graphs: off (fp16: ...; --ema: ...)``."""
        if self.use:
            return f"cuda graphs: on (--cuda-graphs {self.mode})"
        if not self.reasons:
            return "cuda graphs: off"
        return f"cuda graphs: off (--cuda-graphs {self.mode}: {'; '.join(self.reasons)})"


def decide_cuda_graphs(
    mode: str,
    *,
    device_type: str,
    precision: str,
    world_size: int = 1,
    ema: bool = False,
    accumulate: int = 1,
    on_nan: str = "stop",
    train_images: int,
    batch_size: int,
    last_batch: LastBatch = "keep",
    measured_win: bool | None = None,
) -> GraphDecision:
    """Decide ``--cuda-graphs`` for a run (see the module docstring for the rules).

    Args:
        mode: ``auto``, ``on`` or ``off``.
        device_type: The resolved device's type (``cuda``, ``cpu``).
        precision: The resolved precision (``fp32``, ``bf16``, ``fp16``).
        world_size: Processes of the torchrun job (more than 1: DDP).
        ema: Whether ``--ema`` keeps an average of the weights.
        accumulate: Batches per optimizer step.
        on_nan: ``stop`` or ``skip``.
        train_images: Images of this rank's training epoch.
        batch_size: Images per batch.
        last_batch: What the loader does with a smaller last batch.
        measured_win: A measurement says the graph wins for this model and batch (True),
            loses (False), or none exists (None); read by ``auto`` only.

    Returns:
        The decision, with one line per reason it was refused.

    Raises:
        ValueError: ``mode``, ``last_batch`` or a count out of range, naming the value.
    """
    if mode not in MODES:
        raise ValueError(f"--cuda-graphs {mode!r}: expected one of {', '.join(MODES)}")
    if last_batch not in ("keep", "drop", "pad"):
        raise ValueError(f"last_batch {last_batch!r}: expected keep, drop or pad")
    if batch_size < 1 or train_images < 0 or accumulate < 1 or world_size < 1:
        raise ValueError(
            f"batch_size {batch_size}, train_images {train_images}, accumulate {accumulate}, "
            f"world_size {world_size}: expected batch_size, accumulate and world_size >= 1 "
            "and train_images >= 0"
        )
    if mode == "off":
        return GraphDecision(mode, False, ("turned off",))
    reasons = []
    if device_type != "cuda":
        reasons.append(f"needs a CUDA device, the run is on {device_type}")
    if precision == "fp16":
        reasons.append("fp16's GradScaler decides on the host whether to step; use bf16")
    if world_size > 1:
        reasons.append(f"DDP ({world_size} processes): the gradient all-reduce is not captured")
    if ema:
        reasons.append("--ema updates its average outside the captured step")
    if accumulate > 1:
        reasons.append(f"--accumulate {accumulate}: a group of batches is more than one step")
    if on_nan == "skip":
        reasons.append("--on-nan skip reads every step's loss on the host")
    tail = train_images % batch_size
    if tail and last_batch == "keep" and train_images > batch_size:
        reasons.append(
            f"the epoch's last batch has {tail} images, not {batch_size}: a second shape "
            "(drop or pad it)"
        )
    if mode == "auto" and not reasons:
        if measured_win is None:
            reasons.append("auto: no measurement yet says a graph wins for this run; use on")
        elif not measured_win:
            reasons.append("auto: measured slower or no faster than the eager step")
    return GraphDecision(mode, not reasons, tuple(reasons))
