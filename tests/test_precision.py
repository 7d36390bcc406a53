"""segkit.training.precision: the fp32 / bf16 / fp16 objects the engine calls, on the CPU."""

from __future__ import annotations

import pytest
import torch

from segkit.errors import ConfigError
from segkit.training.precision import PRECISIONS, MixedPrecision, Precision, create_precision

CPU = torch.device("cpu")


def sgd_on(value: float) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    w = torch.nn.Parameter(torch.tensor([value]))
    return w, torch.optim.SGD([w], lr=0.1)


def test_choices() -> None:
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")


def test_unknown_name_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"precision 'fp64' is not one of auto, fp32, bf16, fp16"):
        create_precision("fp64", CPU)


def test_auto_on_cpu_is_fp32() -> None:
    p = create_precision("auto", CPU)
    assert type(p) is Precision
    assert p.name == "fp32"


def test_fp32_on_cpu() -> None:
    p = create_precision("fp32", CPU)
    assert type(p) is Precision and p.name == "fp32"


def test_fp16_on_cpu_raises_config_error_naming_the_device() -> None:
    with pytest.raises(ConfigError, match=r"fp16 needs a CUDA device, got 'cpu'"):
        create_precision("fp16", CPU)


def test_bf16_on_cpu_autocasts_a_linear_to_bfloat16() -> None:
    p = create_precision("bf16", CPU)
    assert isinstance(p, MixedPrecision)
    assert p.name == "bf16" and p.dtype == torch.bfloat16 and p.scaler is None
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with p.autocast():
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), layer(x), atol=0.05)
    assert layer(x).dtype == torch.float32  # only inside the context


def test_fp32_autocast_is_a_no_op() -> None:
    p = Precision()
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")
        y = layer(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, layer(x))


def test_precision_backward_and_step() -> None:
    p = Precision()
    w, opt = sgd_on(1.0)
    p.backward((2 * w).sum())
    assert w.grad.tolist() == [2.0]
    p.step(opt)
    assert p.take_skipped() == 0
    assert w.item() == pytest.approx(1.0 - 0.1 * 2.0)


def test_bf16_backward_and_step_are_plain() -> None:
    p = MixedPrecision(torch.bfloat16, "cpu")
    w, opt = sgd_on(1.0)
    p.backward((2 * w).sum())
    assert w.grad.tolist() == [2.0]  # no loss scaling
    p.step(opt)
    assert p.take_skipped() == 0
    assert w.item() == pytest.approx(0.8)


def test_fp32_and_bf16_state_dict_round_trip() -> None:
    for p in (Precision(), MixedPrecision(torch.bfloat16, "cpu")):
        state = p.state_dict()
        assert state == {}
        p.load_state_dict(state)
        assert p.state_dict() == {}


def test_fp16_scales_the_loss() -> None:
    p = MixedPrecision(torch.float16, "cpu")
    assert p.name == "fp16" and p.scaler is not None
    w, _ = sgd_on(1.0)
    p.backward((2 * w).sum())
    assert w.grad.tolist() == [2.0 * 65536.0]  # GradScaler's initial scale


def test_fp16_finite_step_updates_and_is_not_counted_as_skipped() -> None:
    p = MixedPrecision(torch.float16, "cpu")
    w, opt = sgd_on(1.0)
    p.backward((2 * w).sum())
    p.step(opt)
    assert p.take_skipped() == 0
    # The gradient is unscaled before the step: 1 - 0.1 * 2.
    assert w.item() == pytest.approx(0.8)
    assert p.scaler.get_scale() == 65536.0


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_fp16_overflow_skips_the_step_and_counts_it(bad: float) -> None:
    p = MixedPrecision(torch.float16, "cpu")
    w, opt = sgd_on(1.0)
    p.backward((2 * w).sum())
    w.grad.fill_(bad)
    p.step(opt)
    assert p.take_skipped() == 1
    assert p.take_skipped() == 0  # taken: the count starts again
    assert w.item() == 1.0
    assert p.scaler.get_scale() == 32768.0  # halved

    # The next finite step goes through at the lowered scale.
    opt.zero_grad()
    p.backward((2 * w).sum())
    assert w.grad.tolist() == [2.0 * 32768.0]
    p.step(opt)
    assert p.take_skipped() == 0
    assert w.item() == pytest.approx(0.8)


def test_fp16_counts_every_skipped_step_of_an_epoch() -> None:
    p = MixedPrecision(torch.float16, "cpu")
    w, opt = sgd_on(1.0)
    for i in range(6):
        opt.zero_grad()
        p.backward((2 * w).sum())
        if i in (1, 2, 4):
            w.grad.fill_(float("inf"))
        p.step(opt)
    assert p.take_skipped() == 3
    assert Precision().take_skipped() == 0


def test_fp16_state_dict_round_trip() -> None:
    p = MixedPrecision(torch.float16, "cpu")
    w, opt = sgd_on(1.0)
    p.backward((2 * w).sum())
    w.grad.fill_(float("inf"))
    p.step(opt)  # skipped: scale 65536 -> 32768
    state = p.state_dict()
    assert state["scaler"]["scale"] == 32768.0

    q = MixedPrecision(torch.float16, "cpu")
    q.load_state_dict(state)
    assert q.scaler.get_scale() == 32768.0
    assert q.state_dict() == state
    # A state without a scaler (saved under fp32) leaves the scaler as it is.
    r = MixedPrecision(torch.float16, "cpu")
    r.load_state_dict({})
    assert r.scaler.get_scale() == 65536.0
