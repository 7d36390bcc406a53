"""Whether a run's training step is captured as a CUDA graph (``--cuda-graphs``).

A CUDA graph replays one recorded step: fixed shapes, fixed addresses, no decision on
the host. This module decides, from what is known before the first epoch, whether a run
can use one and, where it cannot, says why in one line per reason; the capture itself is
:class:`segkit.training.graphs.GraphStep`, which :func:`segkit.build.build_step` makes
behind this decision.

``off`` never captures. ``on`` captures when every rule allows it; a run a rule refuses
is an error naming the reasons (:meth:`GraphDecision.error`), since the user asked for
it. ``auto`` captures when every rule allows it, and keeps the graph only if a trial in
the first epoch measures it faster than the eager step
(:class:`segkit.training.graphs.GraphStep`'s ``trial``): a graph pays where the host,
not the GPU, is the bottleneck (many short kernels, as ResNet34-UNet's batch norms: about
14.6 ms of kernels in a 23 ms step on an H100), and only costs a capture where the GPU is
busy anyway. Where a rule refuses, ``auto`` runs the eager step and says why in one line.

The rules (each one line in :attr:`GraphDecision.reasons`):

- a CUDA device (there is no graph on the CPU);
- not DDP: the gradient all-reduce and its buckets are not part of the captured step;
- no ``--accumulate``: a group of batches is more than one step;
- no ``--on-nan skip``: it reads each step's loss on the host (``stop`` checks on the
  device and stays capturable).

fp16 is no refusal: with the fused Adam segkit builds, the GradScaler decides on the
device whether a step is skipped (the optimizer reads the inf flag; the scale is updated
in place), so the whole scaled step is captured, and the count of skipped steps is
accumulated in place on the device.

``--compile`` is no refusal: Inductor's kernels (its default mode, without CUDA graphs of
its own) are captured as eager ones are, and fused ones are what a graph replays best
(fewer, longer kernels, no launches). Every step of a graph run shares one autocast state,
so the compiled model does not recompile at the capture; a capture that fails anyway
falls back under ``auto``.

What works with a graph (no refusal): ``--ema`` (its average is updated on the device
after each replay, outside the graph), and a smaller last batch (``--last-batch keep``):
a batch of another shape runs the eager step with the same weights and optimizer, and
the decision's line says so (:attr:`GraphDecision.notes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from segkit.config import CUDA_GRAPHS, LAST_BATCHES, named
from segkit.errors import ConfigError

MODES: tuple[str, ...] = CUDA_GRAPHS


@dataclass(frozen=True)
class GraphDecision:
    """The outcome: capture (``use``) or not, why not, and what else to know.

    Attributes:
        mode: What was asked for.
        use: Whether the step is captured.
        reasons: Why not (empty when ``use``); each a short sentence.
        notes: What a captured run does differently (e.g. its last batch runs eagerly).
    """

    mode: str
    use: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for the run's log, e.g. ``cuda graphs: off (--cuda-graphs auto: ...)``."""
        if self.use:
            notes = "".join(f"; {n}" for n in self.notes)
            return f"cuda graphs: on ({named('cuda_graphs', self.mode, as_typed=True)}{notes})"
        if not self.reasons:
            return "cuda graphs: off"
        asked = named("cuda_graphs", self.mode, as_typed=True)
        return f"cuda graphs: off ({asked}: {'; '.join(self.reasons)})"

    def error(self) -> ConfigError | None:
        """The error for ``--cuda-graphs on`` with a run the rules refuse (None otherwise):
        the user asked for a graph, so a silent fallback would hide why none is used."""
        if self.mode != "on" or self.use:
            return None
        return ConfigError(
            f"{named('cuda_graphs', 'on', as_typed=True)}: this run cannot capture its "
            f"training step: {'; '.join(self.reasons)}. Change that, or use "
            f"{named('cuda_graphs', 'auto', as_typed=True)} or "
            f"{named('cuda_graphs', 'off', as_typed=True)}"
        )


def decide_cuda_graphs(
    mode: str,
    *,
    device_type: str,
    world_size: int = 1,
    ema: bool = False,
    accumulate: int = 1,
    on_nan: str = "stop",
    train_images: int,
    batch_size: int,
    last_batch: str = "keep",
) -> GraphDecision:
    """Decide ``--cuda-graphs`` for a run (see the module docstring for the rules).

    Args:
        mode: ``auto``, ``on`` or ``off``.
        device_type: The resolved device's type (``cuda``, ``cpu``).
        world_size: Processes of the torchrun job (more than 1: DDP).
        ema: Whether ``--ema`` keeps an average of the weights (allowed: updated after
            each replay).
        accumulate: Batches per optimizer step.
        on_nan: ``stop`` or ``skip``.
        train_images: Images of this rank's training epoch.
        batch_size: Images per batch.
        last_batch: What training does with a smaller last batch (``drop`` or ``keep``);
            a kept one runs eagerly, which the decision's notes say.

    Returns:
        The decision, with one line per reason it was refused.

    Raises:
        ValueError: ``mode``, ``last_batch`` or a count out of range, naming the value.
    """
    if mode not in MODES:
        raise ValueError(f"{named('cuda_graphs', mode)}: expected one of {', '.join(MODES)}")
    if last_batch not in LAST_BATCHES:
        raise ValueError(f"last_batch {last_batch!r}: expected {' or '.join(LAST_BATCHES)}")
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
    if world_size > 1:
        reasons.append(f"DDP ({world_size} processes): the gradient all-reduce is not captured")
    if accumulate > 1:
        reasons.append(
            f"{named('accumulate', accumulate)}: a group of batches is more than one step"
        )
    if on_nan == "skip":
        reasons.append(
            f"{named('on_nan', 'skip', as_typed=True)} reads every step's loss on the host"
        )
    notes = []
    if mode == "auto":
        notes.append("kept if faster than the eager step, timed in the first epoch")
    tail = train_images % batch_size
    if tail and last_batch == "keep" and train_images > batch_size:
        notes.append(f"the epoch's last batch of {tail} images, not {batch_size}, runs eagerly")
    return GraphDecision(mode, not reasons, tuple(reasons), tuple(notes) if not reasons else ())
