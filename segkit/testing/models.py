"""Model rules (:data:`MODEL_RULES`) and :func:`check_model`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from segkit.contracts import attach_input_check, declared_multiple
from segkit.errors import ConfigError
from segkit.testing._rules import (
    SIGNATURE,
    UNKNOWN_OPTION,
    Rule,
    Target,
    demand,
    demands,
    expect_refusal,
    fits_contract,
    names,
    refuses_unknown_option,
    returned,
    run_rules,
    select,
    target,
)


@dataclass
class ModelCase:
    """A model plugin under test, the checker's settings, and the instance rules share."""

    target: Target
    in_channels: int
    out_channels: int
    size: int
    batch: int
    options: dict[str, Any]
    seed: int
    model: torch.nn.Module | None = None
    pristine: bool = False  # no rule has trained or converted ``model`` yet
    own_multiple: Any = None  # what the model itself says, before segkit sets it

    def declared_multiple(self) -> int | None:
        """What the factory declares, read without building a model (None: nothing)."""
        return declared_multiple(self.target.plugin, self.options)

    def make(self, **channels: int) -> torch.nn.Module:
        """A new model under the case's torch seed (``channels`` override the case's),
        with the input-size check attached as segkit attaches it to every model it builds."""
        torch.manual_seed(self.seed)
        kw = {"in_channels": self.in_channels, "out_channels": self.out_channels, **channels}
        out = self.target.factory(**kw, **self.options)
        returned(out, torch.nn.Module, "not a torch.nn.Module")
        self.own_multiple = getattr(out, "min_input_multiple", None)
        attach_input_check(out, self.target.label, self.declared_multiple())
        return out

    def shared(self) -> torch.nn.Module:
        """One instance serves every rule that neither needs a pristine model nor changes it."""
        if self.model is None:
            self.model = self.make()
            self.pristine = True
        return self.model

    def multiple(self) -> int:
        return int(getattr(self.shared(), "min_input_multiple", 1))


def _images(*shape: int, generator_seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(generator_seed)
    return torch.randn(*shape, generator=gen)


def _expect_tensor(out: Any, what: str) -> None:
    from segkit.training.outputs import _returned

    demand(
        isinstance(out, torch.Tensor),
        f"{what}: returned {_returned(out)}; return the logits tensor alone (unpack the "
        "output of a wrapped model, such as torchvision's {'out': ...})",
    )


def _expect_output(out: Any, shape: tuple[int, ...], what: str) -> None:
    _expect_tensor(out, what)
    demand(tuple(out.shape) == shape, f"{what}: output shape {tuple(out.shape)}, expected {shape}")
    demand(bool(torch.isfinite(out.float()).all()), f"{what}: NaN or inf in the output")


def _eval_forward(m: torch.nn.Module, cin: int, h: int, w: int) -> torch.Tensor:
    with torch.no_grad():
        return m(_images(1, cin, h, w))


# ----------------------------------------------------------------------------- rules


def returns_module(case: ModelCase) -> None:
    case.shared()


def min_input_multiple(case: ModelCase) -> None:
    declared = case.declared_multiple()  # a bad declaration raises ConfigError, saying why
    case.shared()
    own = case.own_multiple
    if declared is None:
        demand(
            own is None,
            f"the model sets min_input_multiple={own!r} but its factory declares none; "
            "declare it on the factory (@segkit.contracts.declare(min_input_multiple=...)) "
            "so segkit reads it without building the model",
        )
        return
    demand(
        own is None or own == declared,
        f"the factory declares min_input_multiple={declared} but the model says {own!r}",
    )


def seeded_determinism(case: ModelCase) -> None:
    # The shared model serves as the first one while no rule has trained or converted it.
    first = case.model if case.pristine and case.model is not None else case.make()
    second = case.make()
    a, b = first.state_dict(), second.state_dict()
    differ = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
    demand(not differ, f"two models made with torch seed {case.seed} differ in {names(differ)}")
    first.eval()
    second.eval()
    x = _images(1, case.in_channels, 32, 32)
    with torch.no_grad():
        out1, out2, out3 = first(x), first(x), second(x)
    _expect_tensor(out1, "eval-mode forward")
    demand(torch.equal(out1, out2), "in eval mode the same input gave different outputs")
    demand(
        torch.allclose(out1, out3, rtol=1e-5, atol=1e-6),
        "two models made with the same seed gave different outputs",
    )


def forward_backward(case: ModelCase) -> None:
    m = case.shared().train()
    case.pristine = False  # batch-norm statistics and gradients change
    batch, size = case.batch, case.size
    out = m(_images(batch, case.in_channels, size, size))
    _expect_output(out, (batch, case.out_channels, size, size), "train-mode forward")
    demand(out.dtype == torch.float32, f"float32 input gave a {out.dtype} output")
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    demand(
        bool(params),
        "the model has no parameter that requires a gradient (nothing to train: keep "
        "weights in layers or torch.nn.Parameter, and leave at least one unfrozen)",
    )
    weights = _images(*out.shape, generator_seed=2)
    (out * weights).mean().backward()
    missing = [n for n, p in params if p.grad is None]
    demand(not missing, f"parameters without a gradient: {names(missing)}")
    bad = [n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
    demand(not bad, f"parameters with NaN or inf gradients: {names(bad)}")
    m.zero_grad(set_to_none=True)


def bf16_autocast(case: ModelCase) -> None:
    m = case.shared().eval()
    x = _images(1, case.in_channels, 32, 32)  # CPUs without bf16 units emulate it: keep it small
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    _expect_output(out, (1, case.out_channels, 32, 32), "forward under bf16 autocast")


def channels_last(case: ModelCase) -> None:
    m = case.shared().eval()
    x = _images(1, case.in_channels, 32, 32)
    with torch.no_grad():
        plain = m(x)
        case.pristine = False
        m.to(memory_format=torch.channels_last)
        try:
            out = m(x.contiguous(memory_format=torch.channels_last))
        finally:
            m.to(memory_format=torch.contiguous_format)
    _expect_output(out, tuple(plain.shape), "channels_last forward")
    # Different kernels run in NHWC: equal up to float32 rounding, not bit for bit.
    scale = 1.0 + float(plain.abs().max())
    diff = float((out.float() - plain.float()).abs().max())
    demand(
        diff <= 1e-3 * scale, f"channels_last output differs from the contiguous one by {diff:.3g}"
    )


def input_sizes(case: ModelCase) -> None:
    m = case.shared().eval()
    k = case.multiple()
    odd = k * 3
    while odd < 48:  # an odd multiple: odd feature maps deep in the network
        odd += 2 * k
    for h, w in ((32, 96), (odd, odd + 2 * k)):
        out = _eval_forward(m, case.in_channels, h, w)
        _expect_output(out, (1, case.out_channels, h, w), f"input {h}x{w}")


def bad_input_size(case: ModelCase) -> None:
    k = case.multiple()
    if k == 1:
        return  # every size is fine
    bad, good = 2 * k + k // 2, 2 * k  # 80 x 64 for a multiple of 32
    m = case.shared().eval()
    expect_refusal(
        lambda: _eval_forward(m, case.in_channels, bad, good),
        (ConfigError,),
        naming=str(bad),
        unnamed=f"the ConfigError does not name the size {bad}",
        accepted=f"input {bad}x{good} was accepted although min_input_multiple={k}; declare a "
        "smaller min_input_multiple or raise ConfigError",
        other=f"input {bad}x{good} with min_input_multiple={k}",
    )


def in_out_channels(case: ModelCase) -> None:
    cin = 1 if case.in_channels != 1 else 3
    cout = 2 if case.out_channels != 2 else 3
    m = case.make(in_channels=cin, out_channels=cout).eval()
    out = _eval_forward(m, cin, 32, 32)
    _expect_output(out, (1, cout, 32, 32), f"in_channels={cin}, out_channels={cout}")


def k_classes(case: ModelCase) -> None:
    k = 5
    m = case.make(out_channels=k).train()
    gen = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.batch, case.in_channels, 32, 32, generator=gen)
    out = m(x)
    _expect_output(out, (case.batch, k, 32, 32), f"out_channels={k} (a {k}-class model)")
    target_ = torch.randint(0, k, (case.batch, 32, 32), generator=gen)
    torch.nn.functional.cross_entropy(out.float(), target_).backward()
    bad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    demand(not bad, f"cross-entropy over {k} classes gave {names(bad)} no finite gradient")


def unknown_option(case: ModelCase) -> None:
    channels = {"in_channels": case.in_channels, "out_channels": case.out_channels}
    refuses_unknown_option(functools.partial(case.target.factory, **channels, **case.options))


#: The model rules, in the order they run.
RULES: dict[str, Rule[ModelCase]] = {
    "signature": Rule(SIGNATURE, fits_contract),
    "returns_module": Rule("the factory returns a torch.nn.Module", returns_module),
    "min_input_multiple": Rule(
        "the factory declares min_input_multiple (an int >= 1 that divides 32, or a "
        "function of the options returning one), and the model does not contradict it",
        min_input_multiple,
    ),
    "seeded_determinism": Rule(
        "two models made under the same torch seed are identical, and in eval mode the same "
        "input gives the same output",
        seeded_determinism,
    ),
    "forward_backward": Rule(
        "in train mode (N, in_channels, H, W) float32 maps to finite float32 "
        "(N, out_channels, H, W), and every parameter gets a finite gradient",
        forward_backward,
    ),
    "bf16_autocast": Rule(
        "the forward pass works under torch.autocast(bfloat16) with finite output", bf16_autocast
    ),
    "channels_last": Rule(
        "channels_last weights and input give the same output as contiguous ones", channels_last
    ),
    "input_sizes": Rule(
        "every H, W divisible by 32 works (and every multiple of min_input_multiple), "
        "square or not",
        input_sizes,
    ),
    "bad_input_size": Rule(
        "a size not divisible by min_input_multiple raises segkit.errors.ConfigError naming "
        "the size (segkit attaches this check to every model it builds)",
        bad_input_size,
    ),
    "in_out_channels": Rule("in_channels and out_channels are honoured", in_out_channels),
    "k_classes": Rule(
        "out_channels=K gives (N, K, H, W) logits, and cross-entropy over K classes gives "
        "every parameter a finite gradient (K-class datasets)",
        k_classes,
    ),
    "unknown_option": Rule(UNKNOWN_OPTION, unknown_option),
}

#: Model rules, in the order they run: name -> what the rule demands.
MODEL_RULES: dict[str, str] = demands(RULES)


def check_model(
    model: str | Callable[..., Any],
    *,
    in_channels: int = 3,
    out_channels: int = 1,
    size: int = 64,
    batch: int = 2,
    options: Mapping[str, Any] | None = None,
    rules: Iterable[str] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> None:
    """Check a model plugin against :data:`MODEL_RULES`.

    Args:
        model: A registered model name (``"unet"``) or a factory
            ``factory(in_channels, out_channels, **options) -> nn.Module``.
        in_channels: Input channels of every check but ``in_out_channels``.
        out_channels: Output channels of every check but ``in_out_channels``.
        size: Square input size of the train-mode forward and backward; a multiple of
            32. The eval-mode checks use one 32x32 image (and the sizes of
            ``input_sizes``) to stay quick on a CPU.
        batch: Batch size of the train-mode forward (>= 2: batch norm needs it).
        options: Extra keyword arguments for the factory, e.g. ``{"encoder": "resnet18"}``.
        rules: Names of the rules to run (default: all, in :data:`MODEL_RULES` order).
        seed: Torch seed for model creation and inputs.
        name: How to call a factory in messages (default: its qualified name).

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
        segkit.errors.PluginNotFoundError: ``model`` is a name nobody registered.
        ValueError: An unknown rule, or ``size`` not a multiple of 32.
    """
    if size % 32:
        raise ValueError(f"size={size}: the checks need a multiple of 32 (every model takes those)")
    case = ModelCase(
        target("models", model, name),
        in_channels,
        out_channels,
        size,
        batch,
        dict(options or {}),
        seed,
    )
    run_rules(RULES, select(RULES, rules, "model"), case)
