"""Loss rules (:data:`LOSS_RULES`) and :func:`check_loss`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from segkit.contracts import IGNORE_INDEX, loss_accepts
from segkit.testing._rules import (
    SIGNATURE,
    UNKNOWN_OPTION,
    Rule,
    Target,
    demand,
    demands,
    fits_contract,
    refuses_unknown_option,
    run_rules,
    select,
    target,
)


@dataclass
class LossCase:
    """A loss plugin under test and the checker's settings.

    A factory that declares ``accepts="multiclass"`` (:func:`segkit.contracts.loss_accepts`)
    is checked with ``(N, K, H, W)`` logits (``K`` = :data:`CLASSES`) and an integer
    ``(N, H, W)`` class map; every other one with ``(N, 1, H, W)`` logits and a 0/1 target.
    """

    target: Target
    options: dict[str, Any]
    size: int
    batch: int

    @property
    def multiclass(self) -> bool:

        return loss_accepts(self.target.plugin) == "multiclass"

    @property
    def channels(self) -> int:
        return CLASSES if self.multiclass else 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The logits' shape."""
        return (self.batch, self.channels, self.size, self.size)

    def make(self) -> Callable[..., torch.Tensor]:
        fn = self.target.factory(**self.options)
        demand(callable(fn), f"the factory returned a {type(fn).__name__}, which is not callable")
        return fn

    def data(
        self, seed: int = 0, shape: tuple[int, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random logits of ``shape`` (the case's) and a target: 0/1 (30% foreground),
        or for a multi-class loss a uniformly random class map."""
        shape = shape or self.shape
        gen = torch.Generator().manual_seed(seed)
        logits = 3 * torch.randn(shape, generator=gen)
        if self.multiclass:
            n, k, h, w = shape
            return logits, torch.randint(0, k, (n, h, w), generator=gen)
        target_ = (torch.rand(shape, generator=gen) < 0.3).float()
        return logits, target_

    def background(self, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """An all-background target (class 0) for logits of ``shape``."""
        n, _, h, w = shape or self.shape
        if self.multiclass:
            return torch.zeros((n, h, w), dtype=torch.long)
        return torch.zeros((n, 1, h, w))

    def confident(self, t: torch.Tensor, margin: float = 20.0) -> torch.Tensor:
        """Logits predicting ``t`` with every logit at +-``margin``."""
        if self.multiclass:
            onehot = torch.nn.functional.one_hot(t, CLASSES).permute(0, 3, 1, 2)
            return torch.where(onehot > 0, margin, -margin)
        return torch.where(t > 0, margin, -margin)


#: Classes in the data of a multi-class loss's checks.
CLASSES = 3


def _scalar(value: Any, what: str) -> torch.Tensor:
    demand(isinstance(value, torch.Tensor), f"{what}: returned a {type(value).__name__}")
    demand(value.ndim == 0, f"{what}: returned shape {tuple(value.shape)}, not a scalar")
    demand(value.dtype == torch.float32, f"{what}: returned {value.dtype}, not float32")
    demand(bool(torch.isfinite(value)), f"{what}: returned {value.item()}")
    return value


def _finite_grad(t: torch.Tensor, what: str) -> torch.Tensor:
    demand(t.grad is not None, f"{what}: no gradient reached the logits")
    assert t.grad is not None
    demand(bool(torch.isfinite(t.grad).all()), f"{what}: NaN or inf in the gradient")
    return t.grad


def _matches(value: torch.Tensor, reference: torch.Tensor) -> bool:
    return torch.allclose(value, reference, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- rules


def returns_callable(case: LossCase) -> None:
    case.make()


def float32_scalar(case: LossCase) -> None:
    logits, t = case.data()
    logits.requires_grad_(True)
    value = _scalar(case.make()(logits, t), "float32 logits")
    value.backward()
    grad = _finite_grad(logits, "float32 logits")
    demand(float(grad.abs().sum()) > 0, "the gradient is zero everywhere")


def bf16_autocast(case: LossCase) -> None:
    torch.manual_seed(0)
    head = torch.nn.Conv2d(3, case.channels, kernel_size=1)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(case.batch, 3, case.size, case.size, generator=gen)
    _, t = case.data()
    fn = case.make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x)
        value = fn(logits, t)
    _scalar(value, "under bf16 autocast")
    reference = fn(logits.detach().float(), t)
    demand(
        _matches(value, reference),
        f"under bf16 autocast the loss is {value.item():.6g}, but the same bf16 logits "
        f"upcast to float32 give {reference.item():.6g}",
    )
    value.backward()
    demand(
        head.weight.grad is not None and bool(torch.isfinite(head.weight.grad).all()),
        "under bf16 autocast no finite gradient reached the model",
    )


def low_precision_sums(case: LossCase) -> None:
    fn = case.make()
    shape = (1, case.channels, 512, 512)
    logits, _ = case.data(shape=shape)
    for dtype in (torch.float16, torch.bfloat16):
        if case.multiclass:  # confident class 0 everywhere: large sums
            sign = torch.tensor([1.0] + [-1.0] * (case.channels - 1)).view(1, -1, 1, 1)
            low = (logits.abs() * sign).to(dtype)
            t = case.background(shape)
        else:  # confident foreground everywhere: large sums
            low = logits.abs().to(dtype)
            t = torch.ones_like(low, dtype=torch.float32)
        value = _scalar(fn(low, t), f"{dtype} logits")
        reference = fn(low.float(), t)
        demand(
            _matches(value, reference),
            f"{dtype} logits give {value.item():.6g}, the same values in float32 give "
            f"{reference.item():.6g}",
        )


def perfect_beats_wrong(case: LossCase) -> None:
    fn = case.make()
    _, t = case.data()
    perfect = case.confident(t)
    good = _scalar(fn(perfect, t), "perfect prediction")
    bad = _scalar(fn(-perfect, t), "inverted prediction")
    demand(
        float(good) < float(bad),
        f"perfect prediction {good.item():.6g} is not below the inverted {bad.item():.6g}",
    )


def all_zero_target(case: LossCase) -> None:
    fn = case.make()
    t = case.background()
    for what, start in (
        ("random logits", case.data()[0]),
        ("perfect logits", case.confident(t)),
    ):
        logits = start.clone().requires_grad_(True)
        value = _scalar(fn(logits, t), f"all-zero target, {what}")
        value.backward()
        _finite_grad(logits, f"all-zero target, {what}")


def ignored_pixels(case: LossCase) -> None:
    if not case.multiclass:
        return  # binary targets have no ignore index

    fn = case.make()
    logits, t = case.data()
    t = t.clone()
    t[:, : case.size // 2] = IGNORE_INDEX  # the top half of every image is ignored
    changed = logits.clone()
    changed[:, :, : case.size // 2] = torch.randn_like(changed[:, :, : case.size // 2]) * 9
    first = logits.clone().requires_grad_(True)
    value = _scalar(fn(first, t), f"a target with pixels labelled {IGNORE_INDEX}")
    value.backward()
    grad = _finite_grad(first, f"a target with pixels labelled {IGNORE_INDEX}")
    demand(
        bool((grad[:, :, : case.size // 2] == 0).all()),
        f"pixels labelled {IGNORE_INDEX} (the ignore index) got a gradient",
    )
    other = _scalar(fn(changed, t), "other logits on the ignored pixels")
    demand(
        _matches(value.detach(), other),
        f"changing the logits of ignored pixels changed the loss from {value.item():.6g} "
        f"to {other.item():.6g}",
    )


def unknown_option(case: LossCase) -> None:
    refuses_unknown_option(functools.partial(case.target.factory, **case.options))


#: The loss rules, in the order they run.
RULES: dict[str, Rule[LossCase]] = {
    "signature": Rule(SIGNATURE, fits_contract),
    "returns_callable": Rule(
        "the factory returns a callable loss(logits, target)", returns_callable
    ),
    "float32_scalar": Rule(
        "the loss is a finite float32 scalar and gives the logits a finite, non-zero gradient",
        float32_scalar,
    ),
    "bf16_autocast": Rule(
        "under torch.autocast(bfloat16) the loss is float32 and equals the loss of the same "
        "bf16 logits upcast first (reductions in float32)",
        bf16_autocast,
    ),
    "low_precision_sums": Rule(
        "fp16 and bf16 logits of a 512x512 mask give the float32 result (sums must not "
        "overflow fp16 or stall in bf16)",
        low_precision_sums,
    ),
    "perfect_beats_wrong": Rule(
        "a perfect prediction scores lower than the inverted one", perfect_beats_wrong
    ),
    "all_zero_target": Rule(
        "an all-background target gives a finite loss and finite gradients", all_zero_target
    ),
    "ignored_pixels": Rule(
        "a multi-class loss leaves pixels labelled 255 (segkit.contracts.IGNORE_INDEX) out: "
        "they get no gradient and their logits do not change the loss",
        ignored_pixels,
    ),
    "unknown_option": Rule(UNKNOWN_OPTION, unknown_option),
}

#: Loss rules, in the order they run: name -> what the rule demands.
LOSS_RULES: dict[str, str] = demands(RULES)


def check_loss(
    loss: str | Callable[..., Any],
    *,
    options: Mapping[str, Any] | None = None,
    size: int = 64,
    batch: int = 2,
    rules: Iterable[str] | None = None,
    name: str | None = None,
) -> None:
    """Check a loss plugin against :data:`LOSS_RULES`.

    Args:
        loss: A registered loss name (``"bce_dice"``) or a factory
            ``factory(**options) -> loss(logits, target)``.
        options: Keyword arguments for the factory.
        size: Height and width of the test masks.
        batch: Images per test batch.
        rules: Names of the rules to run (default: all, in :data:`LOSS_RULES` order).
        name: How to call a factory in messages.

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
    """
    case = LossCase(target("losses", loss, name), dict(options or {}), size, batch)
    run_rules(RULES, select(RULES, rules, "loss"), case)
