"""The training step captured as a CUDA graph (``--cuda-graphs``) against the eager step,
on a GPU.

Skipped where CUDA is absent (see tests/cuda/test_cuda_path.py); ``make gpu-check`` runs
it. The CPU suite covers the policy and the refusals (tests/test_graph_policy.py) and the
warm-up, capture and replay bookkeeping with a stand-in graph (tests/test_graphs.py);
this tier captures for real.

Tolerances, stated once:
- fp32 with cudnn deterministic and its autotuner off, and a schedule whose every
  learning rate is a float32 value (the graph's fused Adam reads the rate from a float32
  tensor, the eager one from a Python float): the graph step and the eager step run the
  same kernels on the same numbers, so the weights, the EMA and the metrics must agree
  bit for bit.
- bf16 and fp16 with the autotuner on (how runs train): the two processes' autotuners may
  pick other kernels, so the epochs' loss and Dice agree to 2e-2, as a resumed run's do.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from segkit import build
from segkit.config import RunConfig
from segkit.contracts import Batch
from segkit.errors import ConfigError
from segkit.training import ema as ema_mod
from segkit.training.graphs import GraphStep
from segkit.training.loops import TrainStep, train_one_epoch

pytestmark = [pytest.mark.cuda, pytest.mark.slow]

SIZE = 32
BATCH = 4


def _config(**options: object) -> RunConfig:
    base = {
        "model": "unet",
        "image_size": SIZE,
        "batch_size": BATCH,
        "device": "cuda",
        "epochs": 3,
        # Every rate a float32 value: 2**-7 times 1/4, 2/4, 3/4, 1 (warm-up), then halved
        # each epoch.
        "lr": 2.0**-7,
        "schedule": "exponential",
        "lr_gamma": 0.5,
        "warmup_epochs": 0.5,
        "seed": 5,
    }
    return RunConfig(**(base | options))  # type: ignore[arg-type]


def _epochs(sizes: list[int], epochs: int) -> list[list[Batch]]:
    g = torch.Generator().manual_seed(11)
    out = []
    for _ in range(epochs):
        batch = []
        for n in sizes:
            images = torch.randn(n, 3, SIZE, SIZE, generator=g)
            # Blobs rather than noise, so the loss falls and Dice means something.
            masks = (images[:, :1].abs() > 0.8).float()
            batch.append(Batch(images.pin_memory(), masks.pin_memory()))
        out.append(batch)
    return out


def _train(
    config: RunConfig,
    epochs: list[list[Batch]],
    *,
    autotune: bool = True,
    lines: list[str] | None = None,
):
    """Build a step of ``config`` as ``segkit run`` does (same seed: same initial weights)
    and train it over ``epochs``; returns the step, its model, EMA and epoch metrics.
    ``autotune`` False turns cudnn's autotuner off again after the runtime turned it on."""
    runtime = build.resolve_runtime(config)
    torch.backends.cudnn.benchmark = autotune
    model = build.build_model(config, runtime)
    optimizer = build.build_optimizer(model, config)
    images = sum(len(b.images) for b in epochs[0])
    drops = build.drops_last_batch(images, BATCH, 1, config.last_batch)
    scheduler = build.build_scheduler(optimizer, config, len(epochs[0]) - int(drops))
    ema = ema_mod.create(model, config.ema) if config.ema else None
    step = build.create_step(
        config, runtime, model=model, loss=build.build_loss(config), optimizer=optimizer,
        train_images=images, ema=ema, scheduler=scheduler,
        say=lines.append if lines is not None else None,
    )  # fmt: skip
    # The loader drops the last batch where the rule says so; these lists are the loader.
    epochs = [b[:-1] for b in epochs] if drops else epochs
    metrics = [train_one_epoch(step, batches, epoch=e + 1) for e, batches in enumerate(epochs)]
    torch.cuda.synchronize()
    return step, model, ema, metrics


@pytest.fixture
def deterministic():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), f"{name}: max difference {(x.float() - y.float()).abs().max()}"


def test_fp32_graph_step_is_bit_for_bit_the_eager_step(deterministic) -> None:
    """Three epochs of 6 full batches and a last batch of 3 (kept: it runs eagerly between
    replays), with an EMA: the same weights, EMA, optimizer state and metrics."""
    epochs = _epochs([BATCH] * 6 + [3], 3)
    options = {"precision": "fp32", "last_batch": "keep", "ema": 0.9}
    eager_step, eager_model, eager_ema, eager = _train(
        _config(cuda_graphs="off", **options), epochs, autotune=False
    )
    graph_step, graph_model, graph_ema, graphed = _train(
        _config(cuda_graphs="on", **options), epochs, autotune=False
    )
    assert type(eager_step) is TrainStep and isinstance(graph_step, GraphStep)
    assert graph_step.note == (
        "cuda graphs: on (--cuda-graphs on; the epoch's last batch of 3 images, not 4, "
        "runs eagerly)"
    )
    # Epoch 1: 3 warm-up steps, the capture (replayed at once) and 2 replays; every
    # epoch's last batch runs eagerly; later epochs replay all 6 full batches.
    assert [(m["graph_replays"], m["eager_batches"]) for m in graphed] == [(3, 1), (6, 1), (6, 1)]
    _same(eager_model, graph_model)
    _same(eager_ema, graph_ema)
    for e, g in zip(eager, graphed, strict=True):
        assert {k: e[k] for k in e} == {k: g[k] for k in e}
    opt_e = eager_step.context.optimizer.state_dict()
    opt_g = graph_step.context.optimizer.state_dict()
    assert opt_e["param_groups"] == opt_g["param_groups"]  # lr a float, capturable off
    for s_e, s_g in zip(opt_e["state"].values(), opt_g["state"].values(), strict=True):
        assert all(torch.equal(s_e[k], s_g[k]) for k in s_e)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_graph_step_trains_as_the_eager_step(precision: str) -> None:
    """How runs train (the autotuner on, the last batch dropped): every batch is replayed
    after the warm-up, and the epochs' loss and Dice follow the eager step's. fp16: the
    GradScaler's step and update are in the graph (fused Adam reads its inf flag on the
    device)."""
    epochs = _epochs([BATCH] * 8 + [2], 3)
    _, _, _, eager = _train(_config(cuda_graphs="off", precision=precision), epochs)
    step, _, _, graphed = _train(_config(cuda_graphs="on", precision=precision), epochs)
    assert step.note == "cuda graphs: on (--cuda-graphs on)"
    assert [(m["graph_replays"], m["eager_batches"]) for m in graphed] == [(5, 0), (8, 0), (8, 0)]
    for e, g in zip(eager, graphed, strict=True):
        assert e["steps"] == g["steps"] == 8
        assert g["loss"] == pytest.approx(e["loss"], rel=2e-2, abs=2e-2)
        assert g["dice"] == pytest.approx(e["dice"], rel=2e-2, abs=2e-2)
    assert graphed[-1]["loss"] < graphed[0]["loss"]  # it trains


class _HostSyncLoss(torch.nn.Module):
    """BCE that reads its value on the host every call: a capture cannot record it."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        if loss.item() != loss.item():  # a NaN check on the host: a sync
            raise FloatingPointError("NaN")
        return loss


def _train_with(loss: torch.nn.Module, mode: str, lines: list[str], epochs: int = 2):
    config = _config(cuda_graphs=mode, precision="bf16")
    runtime = build.resolve_runtime(config)
    model = build.build_model(config, runtime)
    step = build.create_step(
        config, runtime, model=model, loss=loss, optimizer=build.build_optimizer(model, config),
        train_images=6 * BATCH, say=lines.append,
    )  # fmt: skip
    batches = _epochs([BATCH] * 6, epochs)
    return model, step, [train_one_epoch(step, b, epoch=e + 1) for e, b in enumerate(batches)]


def test_auto_times_the_graph_against_the_eager_step_and_says_which_it_keeps() -> None:
    """3 warm-up steps, 8 timed eager steps, the capture, 8 timed replays, the verdict:
    either is right on some GPU; the line gives both times, and the run trains on."""
    lines: list[str] = []
    model, step, metrics = _train_with(torch.nn.BCEWithLogitsLoss(), "auto", lines, epochs=4)
    assert len(lines) == 1 and re.fullmatch(
        r"segkit: cuda graphs: (on|off), a replay took [0-9.]+ ms against [0-9.]+ ms for the "
        r"eager step \(medians of 8 each\)(; a graph must be at least 5% faster; eager steps)?",
        lines[0],
    ), lines
    kept = lines[0].startswith("segkit: cuda graphs: on")
    assert (step.graph is not None) == kept and [m["steps"] for m in metrics] == [6] * 4
    assert metrics[3]["graph_replays"] == (6 if kept else 2)  # the trial ends 2 into epoch 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_run_with_cuda_graphs_on_trains_validates_and_resumes(
    tiny_pets, tmp_path, capsys
) -> None:
    """The engine's path: 13 training images in batches of 2 (6 full, the lone 13th
    dropped), so epoch 1 warms up, captures and replays; validation runs between epochs
    on the same weights; the resumed run captures again and goes on."""
    from segkit.training import engine

    config = RunConfig(
        model="unet", image_size=32, batch_size=2, num_workers=0, device="cuda",
        data=str(tiny_pets), out=str(tmp_path), name="graphs", epochs=2, seed=3,
        cuda_graphs="on", keep_last=True,
    )  # fmt: skip
    result = engine.train(config)
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("segkit: unet + "))
    assert lines[header + 1] == "segkit: cuda graphs: on (--cuda-graphs on)"  # just after it
    assert len(result.history) == 2
    assert all(r["train_images"] == 12 for r in result.history)
    summary = json.loads((tmp_path / "graphs" / "summary.json").read_text())
    assert summary["cuda_graphs"] == {
        "kept": True, "why_not": None, "eager_ms": None, "replay_ms": None, "trial_steps": 0
    }  # fmt: skip
    resumed = engine.resume(tmp_path / "graphs", epochs=3, quiet=True)
    assert len(resumed.history) == 3
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in resumed.history)


def test_a_step_that_cannot_be_captured_is_an_error_with_on_and_falls_back_with_auto() -> None:
    """Last in the file: a failed capture leaves the process's CUDA context usable, and
    the eager step trains on."""
    with pytest.raises(ConfigError, match=r"--cuda-graphs on: the training step could not be "
                       r"captured as a CUDA graph \("):  # fmt: skip
        _train_with(_HostSyncLoss(), "on", [])
    lines: list[str] = []
    # auto: 3 warm-up and 8 timed eager steps, then the capture fails at step 12.
    model, _, metrics = _train_with(_HostSyncLoss(), "auto", lines)
    assert len(lines) == 1 and lines[0].startswith(
        "segkit: cuda graphs: off, the capture failed ("
    ), lines
    assert lines[0].endswith("); eager steps")
    assert [m["steps"] for m in metrics] == [6, 6] and metrics[1]["graph_replays"] == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    copy.deepcopy(model.state_dict())  # the weights are readable: the context is sound
