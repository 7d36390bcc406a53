"""segkit.training.loops: the epoch loop drives a step object, and the eager TrainStep's
``--on-nan`` handling, on tensors (no loader, no engine)."""

from __future__ import annotations

import pytest
import torch

from segkit.contracts import Batch
from segkit.errors import NumericalError
from segkit.training.loops import EvalContext, StepContext, StepOutput, TrainStep, train_one_epoch
from segkit.training.precision import Precision
from segkit.training.runtime import Runtime

CPU_RUNTIME = Runtime(torch.device("cpu"), Precision(), False)


def _batches(n: int, nan_at: tuple[int, ...] = ()) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        images = torch.randn(2, 3, 8, 8, generator=g)
        if i in nan_at:
            images[0, 0, 0, 0] = float("nan")
        out.append(Batch(images, (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()))
    return out


def _context(**options) -> StepContext:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return StepContext(model, torch.nn.BCEWithLogitsLoss(), optimizer, CPU_RUNTIME, **options)


class RecordingStep:
    """A stand-in for TrainStep (as a CUDA-graph step would be): the epoch loop may only
    use begin_epoch, __call__ and counts."""

    def __init__(self, context: StepContext, skip: set[int]) -> None:
        self.context, self.skip, self.seen = context, skip, []

    def begin_epoch(self, loader) -> None:
        self.seen.clear()

    def __call__(self, batch: Batch) -> StepOutput | None:
        self.seen.append(batch)
        if len(self.seen) - 1 in self.skip:
            return None
        logits = self.context.model(batch.images)
        return StepOutput(logits, batch.masks, self.context.loss_fn(logits, batch.masks))

    def counts(self) -> dict[str, int]:
        return {"steps": len(self.seen), "optimizer_steps": 0}


def test_the_epoch_loop_drives_any_step_object_and_leaves_skipped_batches_out() -> None:
    batches = _batches(4)
    step = RecordingStep(_context(), skip={1})
    out = train_one_epoch(step, batches)
    assert step.seen == batches
    assert out["steps"] == 4 and out["optimizer_steps"] == 0
    assert out["images"] == 6  # three batches of two: the skipped one is not scored


def test_on_nan_skip_skips_the_batch_and_keeps_the_weights_finite() -> None:
    context = _context(on_nan="skip")
    out = train_one_epoch(TrainStep(context), _batches(4, nan_at=(2,)))
    assert out["skipped_nan"] == 1 and out["steps"] == 4 and out["optimizer_steps"] == 4
    assert out["images"] == 6
    assert all(torch.isfinite(p).all() for p in context.model.parameters())


def test_on_nan_stop_raises_naming_the_epoch_and_step() -> None:
    with pytest.raises(NumericalError, match=r"epoch 3, step 2: the loss is NaN"):
        train_one_epoch(TrainStep(_context()), _batches(3, nan_at=(1,)), epoch=3)


def test_a_step_object_is_reused_across_epochs_with_fresh_counts() -> None:
    step = TrainStep(_context(accumulate=2))
    first = train_one_epoch(step, _batches(5))
    second = train_one_epoch(step, _batches(5))
    assert first["optimizer_steps"] == second["optimizer_steps"] == 3  # 2 + 2 + 1
    assert first["steps"] == second["steps"] == 5


def test_the_eval_context_calls_the_model_or_its_forward() -> None:
    model = torch.nn.Conv2d(3, 1, 1)
    images = torch.randn(2, 3, 4, 4)
    plain = EvalContext(CPU_RUNTIME)
    assert torch.equal(plain.logits(model, images), model(images))
    doubled = EvalContext(CPU_RUNTIME, forward=lambda m, x: 2 * m(x))
    assert torch.equal(doubled.logits(model, images), 2 * model(images))
