"""Gradient accumulation (``--accumulate``) and the EMA of the weights (``--ema``).

The equivalence tests run :func:`segkit.training.loops.train_one_epoch` on tensors: a fake loader
(a list of batches) fixes the data order. Their model has no BatchNorm: BN normalizes with
the statistics of the batch it sees, so 2 micro-batches of 8 are not the same computation
as one batch of 16 (and its running statistics update twice); the gradients can only match
without it. The loss is a per-pixel mean (BCE), so the mean of equal-sized micro-batch
losses is the big batch's loss; a batch-level Dice would not be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny

from segkit.build import build_scheduler, optimizer_steps
from segkit.config import RunConfig
from segkit.contracts import Batch
from segkit.errors import ConfigError
from segkit.training import checkpoint as ckpt_io
from segkit.training import ema as ema_mod
from segkit.training import engine
from segkit.training.loops import StepContext, TrainStep, train_one_epoch
from segkit.training.precision import Precision
from segkit.training.runtime import Runtime

CPU = torch.device("cpu")


def _epoch(model, batches, loss_fn, optimizer, *, epoch: int = 0, **options):
    """One epoch of an eager training step in fp32 on the CPU; ``options``: the
    :class:`StepContext`'s (``accumulate``, ``ema``, ``scheduler``)."""
    context = StepContext(model, loss_fn, optimizer, Runtime(CPU, Precision(), False), **options)
    return train_one_epoch(TrainStep(context), batches, epoch=epoch)


def _batches(sizes: list[int], seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            torch.randn(n, 3, 8, 8, generator=g),
            (torch.rand(n, 1, 8, 8, generator=g) > 0.5).float(),
        )
        for n in sizes
    ]


def _joined(batches: list[Batch], group: list[int]) -> list[Batch]:
    """``batches`` concatenated in groups of the given counts."""
    out, i = [], 0
    for k in group:
        part = batches[i : i + k]
        out.append(Batch(torch.cat([b.images for b in part]), torch.cat([b.masks for b in part])))
        i += k
    return out


def _model(bn: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(torch.nn.BatchNorm2d(4))
    layers += [torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)]
    return torch.nn.Sequential(*layers)


def _train(batches: list[Batch], accumulate: int, epochs: int = 1, **kw):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    steps = []
    opt.register_step_post_hook(lambda o, a, k: steps.append(o.param_groups[0]["lr"]))
    outs = [
        _epoch(model, batches, torch.nn.BCEWithLogitsLoss(), opt, accumulate=accumulate, **kw)
        for _ in range(epochs)
    ]
    return model, steps, outs


@pytest.mark.parametrize(
    ("sizes", "group"),
    [([8, 8, 8, 8], [2, 2]), ([8, 8, 8], [2, 1])],
    ids=["4x8-as-2x16", "trailing-group"],
)
def test_accumulating_2_batches_of_8_matches_batches_of_16(sizes, group) -> None:
    small = _batches(sizes)
    acc, acc_steps, acc_out = _train(small, accumulate=2)
    big, big_steps, _ = _train(_joined(small, group), accumulate=1)
    for a, b in zip(acc.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The optimizer stepped once per group, a trailing group of one batch included.
    assert len(acc_steps) == len(big_steps) == len(group)
    assert acc_out[0]["steps"] == len(sizes)
    assert acc_out[0]["optimizer_steps"] == len(group)


def test_accumulate_1_steps_every_batch() -> None:
    _, steps, out = _train(_batches([4, 4, 4]), accumulate=1)
    assert len(steps) == 3 and out[0]["optimizer_steps"] == 3


def test_the_schedule_counts_optimizer_steps() -> None:
    # 5 batches, 2 per step: 3 optimizer steps an epoch, the last for the trailing batch.
    assert optimizer_steps(5, 2) == 3
    assert optimizer_steps(4, 2) == 2
    assert optimizer_steps(5, 1) == 5
    config = RunConfig(epochs=2, lr=0.5, lr_gamma=0.5)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    lrs: list[float] = []
    opt.register_step_post_hook(lambda o, a, k: lrs.append(o.param_groups[0]["lr"]))
    sched = build_scheduler(opt, config, optimizer_steps(5, 2))
    batches = _batches([2] * 5)
    for epoch in (1, 2):
        _epoch(
            model, batches, torch.nn.BCEWithLogitsLoss(), opt,
            scheduler=sched, epoch=epoch, accumulate=2,
        )  # fmt: skip
    # The per-epoch decay falls exactly at the epoch boundary: 3 steps at lr, 3 at lr/2.
    assert lrs == pytest.approx([0.5] * 3 + [0.25] * 3)
    assert sched.last_epoch == 6
    # A scheduler built for a resume after epoch 1 is where this one was after epoch 1.
    resumed = build_scheduler(
        torch.optim.SGD(_model().parameters(), lr=0.5), config, 3, steps_done=3
    )
    assert resumed.get_last_lr() == pytest.approx([0.25])


def test_accumulate_and_ema_are_checked() -> None:
    with pytest.raises(ConfigError, match="^accumulate=0: "):
        RunConfig(accumulate=0)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="^ema="):
            RunConfig(ema=bad)
    assert RunConfig(ema=0.99).ema == 0.99


def test_the_ema_after_one_step_is_the_formula_and_averages_bn_buffers() -> None:
    model = _model(bn=True)
    ema = ema_mod.create(model, 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = torch.nn.BCEWithLogitsLoss()
    _epoch(model, _batches([4]), loss, opt, ema=ema)
    after = model.state_dict()
    averaged = ema.module.state_dict()
    for k, v in after.items():
        if not v.is_floating_point():
            continue
        assert not torch.equal(v, before[k]), k  # weights and BN statistics moved
        torch.testing.assert_close(averaged[k], 0.9 * before[k] + 0.1 * v, rtol=1e-6, atol=1e-7)
    assert int(ema.n_averaged) == 1


def test_the_ema_differs_from_the_weights_after_a_few_steps() -> None:
    model = _model()
    ema = ema_mod.create(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    _epoch(model, _batches([4] * 6), torch.nn.BCEWithLogitsLoss(), opt, ema=ema, accumulate=2)
    assert int(ema.n_averaged) == 3  # once per optimizer step
    for a, p in zip(ema.module.parameters(), model.parameters(), strict=True):
        assert not torch.allclose(a, p)
    # best.pt's weights are the averaged model's own state_dict
    state = ckpt_io.weights_state(
        {"config": {}, "model": model.state_dict(), "epoch": 1, "best_valid_dice": 0.0,
         "best_epoch": 1, "ema": ema.state_dict()}
    )  # fmt: skip
    assert state["model"].keys() == model.state_dict().keys()
    assert all(torch.equal(state["model"][k], v) for k, v in ema.module.state_dict().items())


# ---------------------------------------------------------------------- the engine


@pytest.mark.slow
def test_the_engine_validates_and_tests_the_ema_weights(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.nn.Module] = []
    real = engine.evaluate

    def recording(model, *args, **kwargs):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", recording)
    config = tiny(tiny_pets, tmp_path, epochs=2, ema=0.5, accumulate=2, name="ema", keep_last=True)
    result = engine.train(config, quiet=True)
    last = ckpt_io.load(result.run_dir / "last.pt")
    best = ckpt_io.load(result.run_dir / "best.pt")
    averaged = ema_mod.weights(last["ema"])
    assert any(not torch.equal(averaged[k], v) for k, v in last["model"].items())
    # Epoch 2's validation saw the EMA's weights, not the raw ones.
    assert all(torch.equal(seen[1][k], v) for k, v in averaged.items())
    # best.pt holds the EMA weights of its epoch; the test pass evaluated best.pt's.
    if best["epoch"] == 2:
        assert all(torch.equal(best["model"][k], v) for k, v in averaged.items())
    assert all(torch.equal(seen[-1][k], v) for k, v in best["model"].items())


@pytest.mark.slow
def test_resume_restores_the_ema_and_the_accumulated_schedule(
    tiny_pets: Path, tmp_path: Path
) -> None:
    # The per-epoch decay shows a schedule positioned by batches instead of steps.
    options = {"ema": 0.5, "accumulate": 2, "lr_gamma": 0.5, "validate_every": 9, "keep_last": True}
    whole = engine.train(tiny(tiny_pets, tmp_path, epochs=2, name="whole", **options), quiet=True)
    engine.train(tiny(tiny_pets, tmp_path, epochs=1, name="part", **options), quiet=True)
    resumed = engine.resume(tmp_path / "part", epochs=2, quiet=True)
    a = ckpt_io.load(whole.run_dir / "last.pt")
    b = ckpt_io.load(resumed.run_dir / "last.pt")
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert [r["lr"] for r in a["history"]] == [r["lr"] for r in b["history"]]
    # 13 train images in batches of 4: 3 batches (the lone 13th image is dropped, see
    # build.lone_last_batch), 2 per optimizer step, for 2 epochs
    assert int(b["ema"]["n_averaged"]) == 2 * optimizer_steps(3, 2)
    assert b["history"][1]["lr"] == pytest.approx(0.5 * b["history"][0]["lr"])
