"""segkit.training.graphs.GraphStep on the CPU, with a stand-in for the CUDA graph: its
warm-up, trial (``auto``: a scripted clock), capture and replay bookkeeping (static buffers, the learning rate written into
a tensor for the replay, the schedule, the EMA, batches of another shape run eagerly,
the counts) must train exactly as the eager step does. The real capture runs in the CUDA
tier (tests/cuda/test_cuda_graphs.py)."""

from __future__ import annotations

import pytest
import torch

from segkit.build import lr_factor
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.contracts import Batch
from segkit.errors import ConfigError
from segkit.training import ema as ema_mod
from segkit.training.graphs import GraphStep
from segkit.training.loops import StepContext, TrainStep, train_one_epoch
from segkit.training.precision import Precision
from segkit.training.runtime import Runtime

CPU = Runtime(torch.device("cpu"), Precision(), False)


class ReplayedBody:
    """The stand-in graph: ``capture`` records the body and runs nothing (as a capture
    does); ``replay`` runs it, reading each parameter group's learning rate from the
    step's device tensors (as the captured fused Adam does) and not from the group.

    A real replay's backward overwrites the gradients the capture allocated (they were
    None at capture, so autograd wrote rather than accumulated); running the body again
    eagerly would accumulate, so the stand-in sets them to None first.
    """

    def __init__(self, step: GraphStep, fail: Exception | None = None) -> None:
        self.step, self.fail, self.body = step, fail, None

    def capture(self, body) -> None:
        groups = self.step.context.optimizer.param_groups
        assert all(g["capturable"] for g in groups), "Adam must be capturable under capture"
        assert all(g["lr"] is lr for g, lr in zip(groups, self.step.lrs, strict=True))
        if self.fail is not None:
            raise self.fail
        self.body = body

    def replay(self) -> None:
        groups = self.step.context.optimizer.param_groups
        saved = [g["lr"] for g in groups]
        for g, lr in zip(groups, self.step.lrs, strict=True):
            g["lr"] = float(lr)
        self.step.context.optimizer.zero_grad(set_to_none=True)
        try:
            self.body()
        finally:
            for g, lr in zip(groups, saved, strict=True):
                g["lr"] = lr


def _batches(sizes: list[int], seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(torch.randn(n, 3, 8, 8, generator=g), (torch.rand(n, 1, 8, 8, generator=g) > 0.5).float())
        for n in sizes
    ]  # fmt: skip


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 1, 3, padding=1),
    )


def _context(*, ema: bool = False, steps_per_epoch: int = 8, exact: bool = True) -> StepContext:
    """A step's parts. ``exact``: a learning rate of 2**-7 and a schedule (warm-up in
    quarters, then halving every epoch) whose every value is a float32, so the graph's
    float32 learning-rate tensor holds exactly what the eager step reads as a Python float
    and the two steps can be compared bit for bit; else a cosine schedule (its values are
    rounded to float32 in the tensor, as fused Adam on CUDA reads a tensor learning rate)."""
    model = _model()
    lr = 2.0**-7 if exact else 1e-2
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # as build makes it
    if exact:
        config = RunConfig(epochs=3, schedule="exponential", lr_gamma=0.5, warmup_epochs=0.5)
    else:
        config = RunConfig(epochs=3, schedule="cosine", warmup_epochs=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
    return StepContext(
        model,
        torch.nn.BCEWithLogitsLoss(),
        optimizer,
        CPU,
        scheduler=scheduler,
        ema=ema_mod.create(model, 0.9) if ema else None,
    )


def _graph_step(context: StepContext, **options) -> GraphStep:
    fail = options.pop("fail", None)
    holder: dict[str, GraphStep] = {}
    step = GraphStep(context, graph=lambda stream: ReplayedBody(holder["step"], fail), **options)
    holder["step"] = step
    return step


def _train(step, epochs: list[list[Batch]]) -> list[dict]:
    return [train_one_epoch(step, batches, epoch=e + 1) for e, batches in enumerate(epochs)]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("ema", [False, True])
def test_the_graph_step_trains_exactly_as_the_eager_step(ema: bool) -> None:
    """Two epochs of 7 full batches and a smaller last one, a cosine schedule with warm-up
    and (parametrized) an EMA: the same weights, Adam state, learning rate and metrics."""
    epochs = [_batches([4] * 7 + [3], seed=1), _batches([4] * 7 + [3], seed=2)]
    eager_ctx, graph_ctx = _context(ema=ema), _context(ema=ema)
    eager = _train(TrainStep(eager_ctx), epochs)
    step = _graph_step(graph_ctx, batch_size=4, warmup=3)
    graphed = _train(step, epochs)
    _same_weights(eager_ctx.model, graph_ctx.model)
    if ema:
        _same_weights(eager_ctx.ema, graph_ctx.ema)
    states = zip(
        eager_ctx.optimizer.state.values(), graph_ctx.optimizer.state.values(), strict=True
    )
    for a, b in states:
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert eager_ctx.optimizer.param_groups[0]["lr"] == graph_ctx.optimizer.param_groups[0]["lr"]
    assert graph_ctx.optimizer.param_groups[0]["capturable"] is False  # as a checkpoint keeps it
    for a, b in zip(eager, graphed, strict=True):
        assert {k: a[k] for k in a} == {k: b[k] for k in a}
    # Epoch 1: 3 warm-up steps, the capture (replayed at once) and 3 replays; its last
    # batch of 3 and epoch 2's runs eagerly; epoch 2's full batches all replay.
    assert (graphed[0]["graph_replays"], graphed[0]["eager_batches"]) == (4, 1)
    assert (graphed[1]["graph_replays"], graphed[1]["eager_batches"]) == (7, 1)
    assert graphed[1]["steps"] == graphed[1]["optimizer_steps"] == 8


def test_the_replayed_step_reads_the_scheduled_learning_rate() -> None:
    """The lr tensor holds what the schedule set for the step being replayed (a cosine
    schedule: warm-up, then a new rate every step), rounded to float32."""
    context = _context(exact=False)
    step = _graph_step(context, batch_size=4, warmup=1)
    seen = []
    replay = ReplayedBody.replay

    def spy(self) -> None:
        seen.append((self.step.lrs[0].clone(), context.optimizer.param_groups[0]["lr"]))
        replay(self)

    ReplayedBody.replay = spy  # type: ignore[method-assign]
    try:
        _train(step, [_batches([4] * 6)])
    finally:
        ReplayedBody.replay = replay  # type: ignore[method-assign]
    factor = lr_factor(RunConfig(epochs=3, schedule="cosine", warmup_epochs=0.5), 8)
    assert [group for _, group in seen] == pytest.approx([1e-2 * factor(i) for i in range(1, 6)])
    for tensor, group in seen:
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, torch.tensor(group, dtype=torch.float32))


def test_with_a_rounded_learning_rate_the_graph_step_stays_close_to_the_eager_step() -> None:
    """A cosine schedule's rates are not float32 values: the graph's Adam reads them
    rounded (as on CUDA), so the weights drift from the eager step's by rounding only."""
    epochs = [_batches([4] * 7 + [3], seed=1)]
    eager_ctx, graph_ctx = _context(exact=False), _context(exact=False)
    _train(TrainStep(eager_ctx), epochs)
    _train(_graph_step(graph_ctx, batch_size=4, warmup=3), epochs)
    for (name, a), b in zip(
        eager_ctx.model.state_dict().items(), graph_ctx.model.state_dict().values(), strict=True
    ):
        # Adam moves each weight by about lr (1e-2) a step; the conv bias before batch norm
        # has a gradient of rounding noise only, which Adam scales up to lr: the bound.
        assert torch.allclose(a.float(), b.float(), atol=5e-3), name


def test_a_failed_capture_is_an_error_with_on() -> None:
    step = _graph_step(
        _context(), batch_size=4, warmup=1,
        fail=RuntimeError("CUDA error: operation not permitted when stream is capturing"),
    )  # fmt: skip
    with given_as(COMMAND_LINE), pytest.raises(ConfigError, match=(
        r"--cuda-graphs on: the training step could not be captured as a CUDA graph \(RuntimeError: "
        r"CUDA error: operation not permitted when stream is capturing\); the model or loss "
        r"synchronizes with the host or changes shape with the data. Use --cuda-graphs off"
    )):  # fmt: skip
        _train(step, [_batches([4] * 3)])
    step = _graph_step(
        _context(), batch_size=4, warmup=1, fail=RuntimeError("CUDA error: not permitted")
    )
    with pytest.raises(ConfigError, match=r"^cuda_graphs='on': .* Use cuda_graphs='off'$"):
        _train(step, [_batches([4] * 3)])  # from Python: the keyword


def test_a_failed_capture_falls_back_to_the_eager_step_with_auto() -> None:
    lines: list[str] = []
    epochs = [_batches([4] * 5, seed=3), _batches([4] * 5, seed=4)]
    graph_ctx, eager_ctx = _context(), _context()
    step = _graph_step(
        graph_ctx, batch_size=4, warmup=2, fallback=True, say=lines.append,
        fail=RuntimeError("operation not permitted when stream is capturing\ndetails"),
    )  # fmt: skip
    graphed = _train(step, epochs)
    eager = _train(TrainStep(eager_ctx), epochs)
    assert [e["loss"] for e in eager] == [g["loss"] for g in graphed]
    assert lines == [
        "segkit: cuda graphs: off, the capture failed (RuntimeError: operation not permitted "
        "when stream is capturing); eager steps"
    ]
    _same_weights(eager_ctx.model, graph_ctx.model)
    assert graphed[1]["graph_replays"] == 0 and graphed[1]["steps"] == 5
    assert graph_ctx.optimizer.param_groups[0]["capturable"] is False
    record = step.graph_record()
    assert not record["kept"] and record["why_not"].startswith("RuntimeError: operation not")
    assert isinstance(graph_ctx.optimizer.param_groups[0]["lr"], float)


def test_an_epoch_smaller_than_one_batch_is_captured_at_its_own_size() -> None:
    """build gives the step min(batch size, images per epoch): one partial batch an epoch
    is the one shape, and it replays."""
    step = _graph_step(_context(steps_per_epoch=1), batch_size=3, warmup=1)
    out = _train(step, [_batches([3]), _batches([3], seed=5), _batches([3], seed=6)])
    assert [o["graph_replays"] for o in out] == [0, 1, 1]


def test_a_graph_step_refuses_what_the_policy_refuses() -> None:
    for options, why in [
        ({"accumulate": 2}, "accumulate 2: a graph step is one optimizer step"),
        ({"on_nan": "skip"}, "on_nan 'skip' reads the loss on the host"),
    ]:
        context = _context()
        context.accumulate = options.get("accumulate", 1)
        context.on_nan = options.get("on_nan", "stop")
        with pytest.raises(ValueError, match=f"GraphStep: {why}"):
            _graph_step(context, batch_size=4)
    with pytest.raises(ValueError, match="batch_size 0, warmup 3"):
        _graph_step(_context(), batch_size=0)


def test_off_builds_the_eager_step_and_it_trains_as_the_plain_loop() -> None:
    """``--cuda-graphs off`` is the eager step as it always was: built through
    create_step, it trains bit for bit as the plain loop (zero_grad, forward and loss,
    backward, fused Adam, the schedule) over two epochs with a smaller last batch."""
    from segkit import build

    config = RunConfig(cuda_graphs="off", epochs=2, schedule="cosine", warmup_epochs=0.5, lr=1e-2)
    epochs = [_batches([4] * 5 + [3], seed=7), _batches([4] * 5 + [3], seed=8)]
    model, plain = _model(), _model()
    optimizer = build.build_optimizer(model, config)
    step = build.create_step(
        config, CPU, model=model, loss=torch.nn.BCEWithLogitsLoss(), optimizer=optimizer,
        train_images=23, scheduler=build.build_scheduler(optimizer, config, 6),
    )  # fmt: skip
    assert type(step) is TrainStep and step.note is None
    metrics = _train(step, epochs)

    plain_optimizer = build.build_optimizer(plain, config)
    schedule = build.build_scheduler(plain_optimizer, config, 6)
    losses = []
    plain.train()
    for batches in epochs:
        total = 0.0
        for b in batches:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(plain(b.images), b.masks)
            plain_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            plain_optimizer.step()
            schedule.step()
            total += float(loss.detach())
        losses.append(total / len(batches))  # the meter's: the mean batch loss
    _same_weights(plain, model)
    for a, b in zip(plain_optimizer.state.values(), optimizer.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in metrics] == pytest.approx(losses, rel=1e-6)


class ScriptedClock:
    """The trial's clock: each reading is ``eager`` seconds after the last while the step
    has no graph, ``replay`` seconds once it has one (a timed step reads it twice)."""

    def __init__(self, eager: float, replay: float) -> None:
        self.eager, self.replay, self.now = eager, replay, 0.0
        self.step: GraphStep | None = None

    def __call__(self) -> float:
        assert self.step is not None
        self.now += self.replay if self.step.graph is not None else self.eager
        return self.now


def _trial_step(context: StepContext, clock: ScriptedClock, lines: list[str]) -> GraphStep:
    step = _graph_step(
        context, batch_size=4, warmup=1, fallback=True, say=lines.append, trial=8, clock=clock
    )
    clock.step = step
    return step


@pytest.mark.parametrize(
    ("replay_ms", "kept"),
    [(10.0, True), (19.5, False)],  # 2x faster: kept; 2.5% faster: under MIN_GAIN, dropped
)
def test_auto_times_both_steps_and_keeps_the_graph_only_if_it_is_faster(
    replay_ms: float, kept: bool
) -> None:
    """1 warm-up step, 8 timed eager steps, the capture, 8 timed replays, then the
    verdict; either way the run trains exactly as the eager step does."""
    epochs = [_batches([4] * 10, seed=11), _batches([4] * 10, seed=12)]
    lines: list[str] = []
    clock = ScriptedClock(eager=0.020, replay=replay_ms / 1e3)
    graph_ctx, eager_ctx = _context(), _context()
    step = _trial_step(graph_ctx, clock, lines)
    graphed = _train(step, epochs)
    eager = _train(TrainStep(eager_ctx), epochs)
    times = (
        f"a replay took {replay_ms:.1f} ms against 20.0 ms for the eager step (medians of 8 each)"
    )
    if kept:
        assert lines == [f"segkit: cuda graphs: on, {times}"]
        # Epoch 1: the capture's replay at batch 10; epoch 2: 8 timed replays, then 2 more.
        assert [g["graph_replays"] for g in graphed] == [1, 10]
    else:
        assert lines == [
            f"segkit: cuda graphs: off, {times}; a graph must be at least 5% faster; eager steps"
        ]
        assert [g["graph_replays"] for g in graphed] == [1, 8]  # dropped after the trial
    _same_weights(eager_ctx.model, graph_ctx.model)
    assert [e["loss"] for e in eager] == [g["loss"] for g in graphed]
    assert step.graph_record() == {
        "kept": kept,
        "why_not": None if kept else "not 5% faster",
        "eager_ms": 20.0,
        "replay_ms": replay_ms,
        "trial_steps": 8,
    }


def test_a_dropped_graph_leaves_eager_steps_only() -> None:
    lines: list[str] = []
    clock = ScriptedClock(eager=0.010, replay=0.010)
    context = _context()
    step = _trial_step(context, clock, lines)
    _train(step, [_batches([4] * 10, seed=13), _batches([4] * 10, seed=14)])
    assert step.graph is None and step.static_images is None and step.failed
    third = train_one_epoch(step, _batches([4] * 4, seed=15), epoch=3)
    assert third["graph_replays"] == 0 and third["steps"] == 4 and len(lines) == 1
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in context.model.parameters())


@pytest.mark.slow  # torch.compile (dynamo): 3-17 s on 2 cores
def test_a_compiled_model_is_not_recompiled_at_the_capture() -> None:
    """Every step of a GraphStep (warm-up, trial, capture, eager batches) runs under one
    autocast state, the capture's (weight cache off): a torch.compile-d model guards on
    it, and a recompile inside a CUDA graph capture would fail it. bf16 autocast on the
    CPU, the stand-in graph, dynamo's cheapest backend."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from segkit.training.precision import create_precision

    torch._dynamo.reset()
    counters.clear()
    context = _context()
    model = context.model
    bf16 = Runtime(torch.device("cpu"), create_precision("bf16", torch.device("cpu")), False)
    context.model = torch.compile(model, backend="aot_eager")
    context.runtime = bf16
    lines: list[str] = []
    step = _trial_step(context, ScriptedClock(eager=0.020, replay=0.010), lines)
    out = _train(step, [_batches([4] * 10, seed=16), _batches([4] * 10 + [3], seed=17)])
    assert lines == [
        "segkit: cuda graphs: on, a replay took 10.0 ms against 20.0 ms for the eager step "
        "(medians of 8 each)"
    ]
    assert out[1]["graph_replays"] == 10 and out[1]["eager_batches"] == 1
    # One graph for the full batches; the last batch of 3 adds one (another shape), never
    # one for the capture's autocast.
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    torch._dynamo.reset()


def test_fp16_steps_replay_with_the_grad_scaler_and_count_its_skips() -> None:
    """fp16 (autocast on the CPU here, a GradScaler, fused Adam reading its inf flag):
    the graph step trains as the eager one, and the steps the scaler skips for overflowing
    gradients are counted in place, one tensor for the run (what a captured step adds
    into at every replay)."""
    from segkit.training.precision import MixedPrecision

    def fp16(context: StepContext) -> MixedPrecision:
        precision = MixedPrecision(torch.float16, "cpu")
        context.runtime = Runtime(torch.device("cpu"), precision, False)
        return precision

    epochs = [_batches([4] * 6, seed=21), _batches([4] * 6, seed=22)]
    eager_ctx, graph_ctx = _context(), _context()
    eager_p, graph_p = fp16(eager_ctx), fp16(graph_ctx)
    for p in (eager_p, graph_p):  # a scale fp16 gradients overflow at: the first steps skip
        p.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    eager = _train(TrainStep(eager_ctx), epochs)
    step = _graph_step(graph_ctx, batch_size=4, warmup=2)
    graphed = _train(step, epochs)
    assert graphed[1]["graph_replays"] == 6
    assert [e["skipped_overflow"] for e in eager] == [g["skipped_overflow"] for g in graphed]
    assert graphed[0]["skipped_overflow"] > 0  # the huge scale was lowered step by step
    assert graph_p._skipped is not None and int(graph_p._skipped) == 0  # read and zeroed
    _same_weights(eager_ctx.model, graph_ctx.model)
    assert eager_p.scaler.get_scale() == graph_p.scaler.get_scale()
