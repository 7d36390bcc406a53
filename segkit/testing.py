"""The conformance kit: the contract of every plugin kind, as runnable checks.

segkit's own contract tests (``tests/test_models.py``, ``tests/test_losses.py``, ...) are
written with these functions, and a plugin author runs the same ones in their package's
tests::

    # tests/test_conformance.py of segkit-mymodel
    from segkit.testing import check, parametrize_plugins

    @parametrize_plugins("models", distribution="segkit-mymodel", rules=True)
    def test_contract(kind, name, rule):
        check(kind, name, rules=[rule])

or call a checker directly, with a registered name or with the factory itself::

    from segkit.testing import check_model, check_loss
    check_model("mymodel", options={"width": 16})
    check_loss(create_myloss)

Each checker runs a list of named rules (:data:`MODEL_RULES`, :data:`LOSS_RULES`,
:data:`RECIPE_RULES`, :data:`LOADER_RULES`: rule name -> what it demands) and raises
:class:`ConformanceError`, an ``AssertionError``, at the first rule broken. The message
names the plugin, its distribution and the rule, e.g.::

    model 'mymodel' (segkit_mymodel 0.1.0) breaks rule 'forward_backward': parameters
    without a gradient: ['aux.weight'] (every parameter must get a finite gradient ...)

Everything runs on the CPU at small sizes (64x64, batch 2), so a plugin's whole contract
is checked in seconds. Recipes and loaders are exercised on a small generated dataset
(:func:`shapes_dataset`): bright L-shaped blobs on a dark background, so the mask can be
read back from the pixels after any augmentation and a geometric op applied to only one
of image and mask shows.

What cannot be checked is not: that a model returns logits rather than probabilities,
for one, is up to its author (see :mod:`segkit.contracts`).
"""

from __future__ import annotations

import atexit
import functools
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit import recipes as R
from segkit.contracts import Batch, MaskSpec, Sample
from segkit.errors import ConfigError, PluginLoadError, SegkitError

__all__ = [
    "CHECKERS",
    "LOADER_RULES",
    "LOSS_RULES",
    "MODEL_RULES",
    "RECIPE_RULES",
    "ConformanceError",
    "ShapesDataset",
    "check",
    "check_loader",
    "check_loss",
    "check_model",
    "check_recipe",
    "parametrize_plugins",
    "plugin_names",
    "shapes_dataset",
    "write_shapes_dataset",
]


class ConformanceError(AssertionError):
    """A plugin breaks a rule of its kind's contract.

    Attributes:
        plugin: Which plugin, e.g. ``"model 'unet' (segkit 0.1.0)"``.
        rule: The rule's name, a key of the kind's ``*_RULES`` table.
        detail: What was observed.
    """

    def __init__(self, plugin: str, rule: str, detail: str, demand: str = "") -> None:
        self.plugin, self.rule, self.detail = plugin, rule, detail
        message = f"{plugin} breaks rule '{rule}': {detail}"
        if demand:
            message += f" ({demand})"
        super().__init__(message)


#: Model rules, in the order they run: name -> what the rule demands.
MODEL_RULES: dict[str, str] = {
    "returns_module": "the factory returns a torch.nn.Module",
    "min_input_multiple": "min_input_multiple, if declared, is an int >= 1 that divides 32",
    "seeded_determinism": "two models made under the same torch seed are identical, and in "
    "eval mode the same input gives the same output",
    "forward_backward": "in train mode (N, in_channels, H, W) float32 maps to finite float32 "
    "(N, out_channels, H, W), and every parameter gets a finite gradient",
    "bf16_autocast": "the forward pass works under torch.autocast(bfloat16) with finite output",
    "channels_last": "channels_last weights and input give the same output as contiguous ones",
    "input_sizes": "every H, W divisible by 32 works (and every multiple of "
    "min_input_multiple), square or not",
    "bad_input_size": "a size not divisible by min_input_multiple raises "
    "segkit.errors.ConfigError naming the size",
    "in_out_channels": "in_channels and out_channels are honoured",
    "unknown_option": "an unknown option raises TypeError or ConfigError, never passes silently",
}

#: Loss rules, in the order they run.
LOSS_RULES: dict[str, str] = {
    "returns_callable": "the factory returns a callable loss(logits, target)",
    "float32_scalar": "the loss is a finite float32 scalar and gives the logits a finite, "
    "non-zero gradient",
    "bf16_autocast": "under torch.autocast(bfloat16) the loss is float32 and equals the loss "
    "of the same bf16 logits upcast first (reductions in float32)",
    "low_precision_sums": "fp16 and bf16 logits of a 512x512 mask give the float32 result "
    "(sums must not overflow fp16 or stall in bf16)",
    "perfect_beats_wrong": "a perfect prediction scores lower than the inverted one",
    "all_zero_target": "an all-background target gives a finite loss and finite gradients",
    "unknown_option": "an unknown option raises TypeError or ConfigError, never passes silently",
}

#: Recipe rules, in the order they run.
RECIPE_RULES: dict[str, str] = {
    "returns_recipe": "the factory(image_size=...) returns a segkit.recipes.Recipe",
    "vocabulary": "every op is one of segkit.recipes.VOCABULARY (loaders compile only those)",
    "output_size": "train and eval ops end at image_size x image_size",
    "masks_binary_and_aligned": "run through a loader, images are float32 (N, 3, S, S), masks "
    "(N, 1, S, S) hold only 0 and 1 and still cover the object in the image",
}

#: Loader rules, in the order they run.
LOADER_RULES: dict[str, str] = {
    "batches": "batches are segkit.contracts.Batch of float32 (N, 3, S, S) images and 0/1 "
    "(N, 1, S, S) masks, len() counts the last partial batch, which is kept",
    "drop_last": "drop_last=True drops the last partial batch, and len() says so",
    "epoch_determinism": "the same seed and set_epoch() give the same batches; another epoch "
    "reshuffles",
    "shards": "shard=(rank, 2) loaders read disjoint halves that together cover the split",
}

_NO_SUCH_OPTION = "no_such_option"


# ----------------------------------------------------------------------------- targets


@dataclass
class _Target:
    """The plugin under test: how to describe it and how to call its factory."""

    kind: str
    label: str
    factory: Callable[..., Any]


def _target(kind: str, plugin: str | Callable[..., Any], name: str | None) -> _Target:
    singular = {"models": "model", "losses": "loss", "augmentations": "recipe", "loaders": "loader"}
    if isinstance(plugin, str):
        from segkit.registry import default_registry

        registry = default_registry()
        info = registry.info(kind, plugin)  # PluginNotFoundError names close matches
        dist = f"{info.distribution} {info.version}".strip()
        label = f"{singular[kind]} '{plugin}' ({dist})"
        try:
            info.load()
        except PluginLoadError as e:
            raise ConformanceError(label, "loads", str(e)) from e

        def factory(*args: Any, **kwargs: Any) -> Any:
            return registry.create(kind, plugin, *args, **kwargs)

        return _Target(kind, label, factory)
    if not callable(plugin):
        raise TypeError(f"expected a plugin name or a factory, got {type(plugin).__name__}")
    what = name or getattr(plugin, "__qualname__", None) or repr(plugin)
    module = getattr(plugin, "__module__", None)
    where = f" ({module})" if module and not name else ""
    return _Target(kind, f"{singular[kind]} factory '{what}'{where}", plugin)


def _select(table: Mapping[str, str], rules: Iterable[str] | None, kind: str) -> list[str]:
    if rules is None:
        return list(table)
    chosen = list(rules)
    unknown = [r for r in chosen if r not in table]
    if unknown:
        raise ValueError(f"unknown {kind} rule(s) {unknown}; the rules are: {', '.join(table)}")
    return [r for r in table if r in chosen]  # run in the table's order


def _run(target: _Target, table: Mapping[str, str], rule: str, fn: Callable[[], None]) -> None:
    """Run one rule; anything it raises becomes a ConformanceError naming plugin and rule."""
    try:
        fn()
    except ConformanceError:
        raise
    except _Broken as e:
        raise ConformanceError(target.label, rule, str(e), table[rule]) from None
    except Exception as e:
        raise ConformanceError(
            target.label, rule, f"raised {type(e).__name__}: {_first_line(e)}", table[rule]
        ) from e


class _Broken(Exception):
    """Raised inside a rule with what was observed; :func:`_run` adds plugin and rule."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _demand(condition: bool, detail: str) -> None:
    if not condition:
        raise _Broken(detail)


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = list(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"


# ----------------------------------------------------------------------------- models


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
    target = _target("models", model, name)
    opts = dict(options or {})
    selected = _select(MODEL_RULES, rules, "model")
    state: dict[str, Any] = {}

    def make(seed_: int = seed, **channels: int) -> torch.nn.Module:
        torch.manual_seed(seed_)
        kw = {"in_channels": in_channels, "out_channels": out_channels, **channels}
        out = target.factory(**kw, **opts)
        _demand(
            isinstance(out, torch.nn.Module),
            f"the factory returned a {type(out).__name__}, not a torch.nn.Module",
        )
        return out

    def shared() -> torch.nn.Module:
        # One instance serves every rule that neither needs a pristine model nor changes it.
        if "model" not in state:
            state["model"] = make()
            state["pristine"] = True
        return state["model"]

    def multiple() -> int:
        return int(getattr(shared(), "min_input_multiple", 1))

    def images(*shape: int, generator_seed: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(generator_seed)
        return torch.randn(*shape, generator=gen)

    def expect_shape(out: Any, shape: tuple[int, ...], what: str) -> None:
        _demand(
            isinstance(out, torch.Tensor), f"{what}: returned a {type(out).__name__}, not a tensor"
        )
        _demand(
            tuple(out.shape) == shape,
            f"{what}: output shape {tuple(out.shape)}, expected {shape}",
        )
        _demand(bool(torch.isfinite(out.float()).all()), f"{what}: NaN or inf in the output")

    def returns_module() -> None:
        shared()

    def min_input_multiple() -> None:
        value = getattr(shared(), "min_input_multiple", 1)
        _demand(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"min_input_multiple is {value!r}; expected an int >= 1",
        )
        _demand(32 % value == 0, f"min_input_multiple is {value}, which does not divide 32")

    def seeded_determinism() -> None:
        # The shared model serves as the first one while no rule has trained or converted it.
        first = state["model"] if state.get("pristine") else make()
        second = make()
        a, b = first.state_dict(), second.state_dict()
        differ = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
        _demand(not differ, f"two models made with torch seed {seed} differ in {_names(differ)}")
        first.eval()
        second.eval()
        x = images(1, in_channels, 32, 32)
        with torch.no_grad():
            out1, out2, out3 = first(x), first(x), second(x)
        _demand(torch.equal(out1, out2), "in eval mode the same input gave different outputs")
        _demand(
            torch.allclose(out1, out3, rtol=1e-5, atol=1e-6),
            "two models made with the same seed gave different outputs",
        )

    def forward_backward() -> None:
        m = shared().train()
        state["pristine"] = False  # batch-norm statistics and gradients change
        x = images(batch, in_channels, size, size)
        out = m(x)
        expect_shape(out, (batch, out_channels, size, size), "train-mode forward")
        _demand(out.dtype == torch.float32, f"float32 input gave a {out.dtype} output")
        weights = images(*out.shape, generator_seed=2)
        (out * weights).mean().backward()
        params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
        _demand(bool(params), "the model has no trainable parameters")
        missing = [n for n, p in params if p.grad is None]
        _demand(not missing, f"parameters without a gradient: {_names(missing)}")
        bad = [n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
        _demand(not bad, f"parameters with NaN or inf gradients: {_names(bad)}")
        m.zero_grad(set_to_none=True)

    def bf16_autocast() -> None:
        m = shared().eval()
        x = images(1, in_channels, 32, 32)  # CPUs without bf16 units emulate it: keep it small
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
        expect_shape(out, (1, out_channels, 32, 32), "forward under bf16 autocast")

    def channels_last() -> None:
        m = shared().eval()
        x = images(1, in_channels, 32, 32)
        with torch.no_grad():
            plain = m(x)
            state["pristine"] = False
            m.to(memory_format=torch.channels_last)
            try:
                out = m(x.contiguous(memory_format=torch.channels_last))
            finally:
                m.to(memory_format=torch.contiguous_format)
        expect_shape(out, tuple(plain.shape), "channels_last forward")
        # Different kernels run in NHWC: equal up to float32 rounding, not bit for bit.
        scale = 1.0 + float(plain.abs().max())
        diff = float((out.float() - plain.float()).abs().max())
        _demand(
            diff <= 1e-3 * scale,
            f"channels_last output differs from the contiguous one by {diff:.3g}",
        )

    def input_sizes() -> None:
        m = shared().eval()
        k = multiple()
        odd = k * 3
        while odd < 48:  # an odd multiple: odd feature maps deep in the network
            odd += 2 * k
        for h, w in ((32, 96), (odd, odd + 2 * k)):
            with torch.no_grad():
                out = m(images(1, in_channels, h, w))
            expect_shape(out, (1, out_channels, h, w), f"input {h}x{w}")

    def bad_input_size() -> None:
        k = multiple()
        if k == 1:
            return  # every size is fine
        bad, good = 2 * k + k // 2, 2 * k  # 80 x 64 for a multiple of 32
        m = shared().eval()
        try:
            with torch.no_grad():
                m(images(1, in_channels, bad, good))
        except ConfigError as e:
            _demand(str(bad) in str(e), f"the ConfigError does not name the size {bad}: {e}")
            return
        except Exception as e:
            raise _Broken(
                f"input {bad}x{good} with min_input_multiple={k} raised {type(e).__name__} "
                f"({_first_line(e)}), not segkit.errors.ConfigError"
            ) from e
        raise _Broken(
            f"input {bad}x{good} was accepted although min_input_multiple={k}; declare a "
            "smaller min_input_multiple or raise ConfigError"
        )

    def in_out_channels() -> None:
        cin = 1 if in_channels != 1 else 3
        cout = 2 if out_channels != 2 else 3
        m = make(in_channels=cin, out_channels=cout).eval()
        with torch.no_grad():
            out = m(images(1, cin, 32, 32))
        expect_shape(out, (1, cout, 32, 32), f"in_channels={cin}, out_channels={cout}")

    def unknown_option() -> None:
        try:
            target.factory(
                in_channels=in_channels, out_channels=out_channels, **opts, **{_NO_SUCH_OPTION: 1}
            )
        except (TypeError, ConfigError) as e:
            _demand(_NO_SUCH_OPTION in str(e), f"the error does not name the option: {e}")
            return
        raise _Broken(f"{_NO_SUCH_OPTION}=1 was accepted silently")

    checks = {
        "returns_module": returns_module,
        "min_input_multiple": min_input_multiple,
        "seeded_determinism": seeded_determinism,
        "forward_backward": forward_backward,
        "bf16_autocast": bf16_autocast,
        "channels_last": channels_last,
        "input_sizes": input_sizes,
        "bad_input_size": bad_input_size,
        "in_out_channels": in_out_channels,
        "unknown_option": unknown_option,
    }
    for rule in selected:
        _run(target, MODEL_RULES, rule, checks[rule])


# ----------------------------------------------------------------------------- losses


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
    target = _target("losses", loss, name)
    opts = dict(options or {})
    selected = _select(LOSS_RULES, rules, "loss")
    shape = (batch, 1, size, size)

    def make() -> Callable[..., torch.Tensor]:
        fn = target.factory(**opts)
        _demand(callable(fn), f"the factory returned a {type(fn).__name__}, which is not callable")
        return fn

    def data(seed: int = 0, shape: tuple[int, ...] = shape) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        logits = 3 * torch.randn(shape, generator=gen)
        target_ = (torch.rand(shape, generator=gen) < 0.3).float()
        return logits, target_

    def scalar(value: Any, what: str) -> torch.Tensor:
        _demand(isinstance(value, torch.Tensor), f"{what}: returned a {type(value).__name__}")
        _demand(value.ndim == 0, f"{what}: returned shape {tuple(value.shape)}, not a scalar")
        _demand(value.dtype == torch.float32, f"{what}: returned {value.dtype}, not float32")
        _demand(bool(torch.isfinite(value)), f"{what}: returned {value.item()}")
        return value

    def finite_grad(t: torch.Tensor, what: str) -> None:
        _demand(t.grad is not None, f"{what}: no gradient reached the logits")
        assert t.grad is not None
        _demand(bool(torch.isfinite(t.grad).all()), f"{what}: NaN or inf in the gradient")

    def returns_callable() -> None:
        make()

    def float32_scalar() -> None:
        logits, t = data()
        logits.requires_grad_(True)
        value = scalar(make()(logits, t), "float32 logits")
        value.backward()
        finite_grad(logits, "float32 logits")
        assert logits.grad is not None
        _demand(float(logits.grad.abs().sum()) > 0, "the gradient is zero everywhere")

    def bf16_autocast() -> None:
        torch.manual_seed(0)
        head = torch.nn.Conv2d(3, 1, kernel_size=1)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))
        _, t = data()
        fn = make()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(x)
            value = fn(logits, t)
        scalar(value, "under bf16 autocast")
        reference = fn(logits.detach().float(), t)
        _demand(
            torch.allclose(value, reference, rtol=1e-4, atol=1e-5),
            f"under bf16 autocast the loss is {value.item():.6g}, but the same bf16 logits "
            f"upcast to float32 give {reference.item():.6g}",
        )
        value.backward()
        _demand(
            head.weight.grad is not None and bool(torch.isfinite(head.weight.grad).all()),
            "under bf16 autocast no finite gradient reached the model",
        )

    def low_precision_sums() -> None:
        fn = make()
        logits, _ = data(shape=(1, 1, 512, 512))
        for dtype in (torch.float16, torch.bfloat16):
            low = logits.abs().to(dtype)  # confident foreground everywhere: large sums
            t = torch.ones_like(low, dtype=torch.float32)
            value = scalar(fn(low, t), f"{dtype} logits")
            reference = fn(low.float(), t)
            _demand(
                torch.allclose(value, reference, rtol=1e-4, atol=1e-5),
                f"{dtype} logits give {value.item():.6g}, the same values in float32 give "
                f"{reference.item():.6g}",
            )

    def perfect_beats_wrong() -> None:
        fn = make()
        _, t = data()
        perfect = torch.where(t > 0, 20.0, -20.0)
        good = scalar(fn(perfect, t), "perfect prediction")
        bad = scalar(fn(-perfect, t), "inverted prediction")
        _demand(
            float(good) < float(bad),
            f"perfect prediction {good.item():.6g} is not below the inverted {bad.item():.6g}",
        )

    def all_zero_target() -> None:
        fn = make()
        t = torch.zeros(shape)
        for what, start in (
            ("random logits", data()[0]),
            ("perfect logits", torch.full(shape, -20.0)),
        ):
            logits = start.clone().requires_grad_(True)
            value = scalar(fn(logits, t), f"all-zero target, {what}")
            value.backward()
            finite_grad(logits, f"all-zero target, {what}")

    def unknown_option() -> None:
        try:
            target.factory(**opts, **{_NO_SUCH_OPTION: 1})
        except (TypeError, ConfigError) as e:
            _demand(_NO_SUCH_OPTION in str(e), f"the error does not name the option: {e}")
            return
        raise _Broken(f"{_NO_SUCH_OPTION}=1 was accepted silently")

    checks = {
        "returns_callable": returns_callable,
        "float32_scalar": float32_scalar,
        "bf16_autocast": bf16_autocast,
        "low_precision_sums": low_precision_sums,
        "perfect_beats_wrong": perfect_beats_wrong,
        "all_zero_target": all_zero_target,
        "unknown_option": unknown_option,
    }
    for rule in selected:
        _run(target, LOSS_RULES, rule, checks[rule])


# ----------------------------------------------------------------------------- data


#: Raw mask values of :class:`ShapesDataset` (the Oxford-IIIT Pet trimap codes it uses).
SHAPES_MASK_SPEC = MaskSpec(background=2, allowed=(1, 2))

#: How :func:`write_shapes_dataset` splits its images: train, valid, test.
_SHAPES_SPLITS = {"train": range(0, 10), "valid": range(10, 12), "test": range(12, 16)}


def write_shapes_dataset(root: Path, seed: int = 0) -> Path:
    """Write 16 generated images and masks in the Oxford-IIIT Pet layout.

    Each image (90-140 x 100-160 px, every one a different size) holds a bright L shape
    (an asymmetric shape, so a flip or a shifted crop shows) on a dark background; its
    trimap is 1 inside the shape and 2 outside. ``annotations/trainval.txt`` lists the
    first 12 images and ``annotations/test.txt`` the last 4; :class:`ShapesDataset`
    reads the first 10 as "train" and the next 2 as "valid".

    Args:
        root: Folder to write into (created).
        seed: Seed of the generator; the same seed writes the same files.

    Returns:
        ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(16):
        h, w = 90 + 3 * i, 100 + 4 * i
        mask = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(5, h // 3)), int(rng.integers(5, w // 3))
        mask[y0 : h - 10, x0 : x0 + w // 5] = True  # the L's vertical bar
        mask[h - 30 : h - 10, x0 : w - 8] = True  # its foot, to the right
        img = np.where(mask[..., None], rng.integers(200, 240, 3), rng.integers(15, 50, 3))
        name = f"shape_{i:02d}"
        names.append(name)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{name}.jpg", quality=95)
        trimap = np.where(mask, 1, 2).astype(np.uint8)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    trainval, test = names[:12], names[12:]
    (root / "annotations" / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in trainval))
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in test))
    return root


class ShapesDataset:
    """The :class:`segkit.contracts.Dataset` over a folder from :func:`write_shapes_dataset`.

    Splits: "train" 10 images, "valid" 2, "test" 4.
    """

    mask_spec = SHAPES_MASK_SPEC

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def samples(self, split: str) -> list[Sample]:
        if split not in _SHAPES_SPLITS:
            raise ConfigError(f"split {split!r}: expected one of {', '.join(_SHAPES_SPLITS)}")
        return [
            Sample(
                f"shape_{i:02d}",
                self.root / "images" / f"shape_{i:02d}.jpg",
                self.root / "annotations" / "trimaps" / f"shape_{i:02d}.png",
            )
            for i in _SHAPES_SPLITS[split]
        ]

    def __repr__(self) -> str:
        return f"ShapesDataset({str(self.root)!r})"


@functools.cache
def shapes_dataset() -> ShapesDataset:
    """The generated dataset the recipe and loader checks use, written once per process
    into a temporary folder that is removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="segkit-testing-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return ShapesDataset(write_shapes_dataset(root))


def _loader_factory(loader: str | Callable[..., Any] | None) -> tuple[str, Callable[..., Any]]:
    """``(label, factory)`` of the loader used to run recipes."""
    from segkit.registry import default_registry

    registry = default_registry()
    if callable(loader):
        return getattr(loader, "__qualname__", repr(loader)), loader
    if loader is None:
        # The first registered loader that imports: no loader is special to the core.
        for info in registry.plugins("loaders").values():
            try:
                info.load()
            except SegkitError:
                continue
            loader = info.name
            break
        else:
            raise ConfigError("no loader plugin is installed to run recipes through")
    name = loader

    def factory(*args: Any, **kwargs: Any) -> Any:
        return registry.create("loaders", name, *args, **kwargs)

    return f"loader '{name}'", factory


def _collect(loader: Any, epoch: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    loader.set_epoch(epoch)
    images, masks, sizes = [], [], []
    for b in loader:
        _demand(isinstance(b, Batch), f"yielded a {type(b).__name__}, not a segkit.contracts.Batch")
        images.append(b.images.cpu())
        masks.append(b.masks.cpu())
        sizes.append(len(b.images))
    _demand(bool(sizes), "yielded no batches")
    return torch.cat(images), torch.cat(masks), sizes


def _check_batches(images: torch.Tensor, masks: torch.Tensor, n: int, size: int) -> None:
    _demand(
        images.dtype == torch.float32 and tuple(images.shape) == (n, 3, size, size),
        f"images are {images.dtype} {tuple(images.shape)}, expected float32 {(n, 3, size, size)}",
    )
    _demand(
        masks.dtype == torch.float32 and tuple(masks.shape) == (n, 1, size, size),
        f"masks are {masks.dtype} {tuple(masks.shape)}, expected float32 {(n, 1, size, size)}",
    )
    values = sorted(set(masks.unique().tolist()) - {0.0, 1.0})
    _demand(not values, f"masks hold values other than 0 and 1: {values[:5]}")
    _demand(bool(torch.isfinite(images).all()), "NaN or inf in the images")


def _alignment(images: torch.Tensor, masks: torch.Tensor) -> float:
    """The worst agreement, over images, between the mask and the thresholded image: the
    generated shapes are bright on dark, so an aligned mask agrees on nearly every pixel."""
    worst = 1.0
    for img, msk in zip(images.mean(1), masks[:, 0], strict=True):
        fg, bg = img[msk == 1], img[msk == 0]
        if len(fg) < 20 or len(bg) < 20:
            continue  # a crop that holds only one class says nothing about alignment
        threshold = (fg.mean() + bg.mean()) / 2
        agreement = float(((img > threshold) == (msk == 1)).float().mean())
        worst = min(worst, agreement)
    return worst


# ----------------------------------------------------------------------------- recipes


def check_recipe(
    recipe: str | Callable[..., Any],
    *,
    image_size: int = 64,
    loader: str | Callable[..., Any] | None = None,
    loader_options: Mapping[str, Any] | None = None,
    dataset: Any = None,
    epochs: int = 2,
    rules: Iterable[str] | None = None,
    name: str | None = None,
) -> None:
    """Check an augmentation recipe plugin against :data:`RECIPE_RULES`.

    Args:
        recipe: A registered recipe name (``"type3"``) or a factory
            ``factory(image_size=...) -> Recipe``.
        image_size: The size asked of the factory.
        loader: The loader to run the recipe through: a registered name, a loader
            factory, or ``None`` for the first registered loader that imports.
        loader_options: Extra keyword arguments for the loader factory.
        dataset: A :class:`segkit.contracts.Dataset` whose images are bright objects on
            a dark background (default: :func:`shapes_dataset`).
        epochs: Training epochs to draw augmentations from.
        rules: Names of the rules to run (default: all, in :data:`RECIPE_RULES` order).
        name: How to call a factory in messages.

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
    """
    target = _target("augmentations", recipe, name)
    selected = _select(RECIPE_RULES, rules, "recipe")
    state: dict[str, Any] = {}

    def made() -> R.Recipe:
        if "recipe" not in state:
            out = target.factory(image_size=image_size)
            _demand(
                isinstance(out, R.Recipe),
                f"the factory returned a {type(out).__name__}, not a segkit.recipes.Recipe",
            )
            state["recipe"] = out
        return state["recipe"]

    def returns_recipe() -> None:
        made()

    def vocabulary() -> None:
        known = set(R.VOCABULARY.values())
        for stage in ("train", "eval"):
            foreign = [
                type(op).__name__ for op in made().ops(stage == "train") if type(op) not in known
            ]
            _demand(
                not foreign,
                f"{stage} ops {foreign} are not in the vocabulary ({', '.join(R.VOCABULARY)})",
            )

    def output_size() -> None:
        for stage in ("train", "eval"):
            ops = made().ops(stage == "train")
            sizing = [op for op in ops if isinstance(op, R.Resize | R.RandomResizedCrop)]
            always = [i for i, op in enumerate(sizing) if op.p == 1.0]
            _demand(
                bool(always),
                f"{stage} ops hold no Resize or RandomResizedCrop with p=1, so batches "
                "would mix image sizes",
            )
            last = [op.size for op in sizing[always[-1] :]]
            _demand(
                set(last) == {image_size},
                f"{stage} ops end at size {last[-1]}, not image_size={image_size}",
            )

    def masks_binary_and_aligned() -> None:
        ds = dataset if dataset is not None else shapes_dataset()
        label, factory = _loader_factory(loader)
        kw: dict[str, Any] = {"num_workers": 0, "device": "cpu", **(loader_options or {})}
        for train, split, runs in ((True, "train", epochs), (False, "test", 1)):
            stage = "train" if train else "eval"
            ld = factory(ds, split, made(), 4, train=train, seed=0, **kw)
            n = len(ds.samples(split))
            for epoch in range(runs):
                images, masks, _ = _collect(ld, epoch)
                try:
                    _check_batches(images, masks, n, image_size)
                except _Broken as e:
                    raise _Broken(f"{stage} ops through {label}: {e}") from None
                worst = _alignment(images, masks)
                _demand(
                    worst > 0.95,
                    f"{stage} ops through {label}: mask and image agree on only {worst:.1%} "
                    "of the pixels of one image (a geometric op moved one but not the other?)",
                )

    checks = {
        "returns_recipe": returns_recipe,
        "vocabulary": vocabulary,
        "output_size": output_size,
        "masks_binary_and_aligned": masks_binary_and_aligned,
    }
    for rule in selected:
        _run(target, RECIPE_RULES, rule, checks[rule])


# ----------------------------------------------------------------------------- loaders


def check_loader(
    loader: str | Callable[..., Any],
    *,
    batch_size: int = 4,
    image_size: int = 64,
    options: Mapping[str, Any] | None = None,
    dataset: Any = None,
    device: str = "cpu",
    rules: Iterable[str] | None = None,
    name: str | None = None,
) -> None:
    """Check a loader plugin against :data:`LOADER_RULES`.

    The loader reads :func:`shapes_dataset` (10 training images: with ``batch_size=4``
    the last batch is partial) with a recipe of a flip, a resize and ImageNet
    normalization, and ``num_workers=0`` unless ``options`` says otherwise.

    Args:
        loader: A registered loader name (``"albumentations"``) or a loader factory (see
            :class:`segkit.contracts.LoaderFactory`).
        batch_size: Images per batch; must not divide the split's size.
        image_size: The recipe's output size.
        options: Extra keyword arguments for the factory.
        dataset: The dataset to read (default: :func:`shapes_dataset`).
        device: Passed to the factory; batches are compared on the CPU.
        rules: Names of the rules to run (default: all, in :data:`LOADER_RULES` order).
        name: How to call a factory in messages.

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
    """
    target = _target("loaders", loader, name)
    selected = _select(LOADER_RULES, rules, "loader")
    ds = dataset if dataset is not None else shapes_dataset()
    n = len(ds.samples("train"))
    if n % batch_size == 0:
        raise ValueError(
            f"batch_size={batch_size} divides the {n} training images: no partial batch"
        )
    flip = R.Recipe(
        "conformance",
        train=(R.HorizontalFlip(p=0.5), R.Resize(size=image_size), R.Normalize()),
        eval=(R.Resize(size=image_size), R.Normalize()),
    )
    fixed = R.Recipe("conformance-eval", train=flip.eval, eval=flip.eval)
    kw: dict[str, Any] = {"num_workers": 0, "device": device, **(options or {})}

    def make(recipe: R.Recipe = flip, *, train: bool = True, seed: int = 0, **extra: Any) -> Any:
        ld = target.factory(ds, "train", recipe, batch_size, train=train, seed=seed, **kw, **extra)
        for attr in ("__iter__", "__len__", "set_epoch"):
            _demand(hasattr(ld, attr), f"the factory returned a {type(ld).__name__} without {attr}")
        return ld

    def batches() -> None:
        ld = make()
        expected = math.ceil(n / batch_size)
        _demand(
            len(ld) == expected,
            f"len() is {len(ld)} for {n} images in batches of {batch_size}, expected {expected}",
        )
        images, masks, sizes = _collect(ld, 1)
        want = [batch_size] * (n // batch_size) + [n % batch_size]
        _demand(sizes == want, f"batch sizes {sizes}, expected {want} (the partial batch is kept)")
        _check_batches(images, masks, n, image_size)

    def drop_last() -> None:
        ld = make(drop_last=True)
        _demand(
            len(ld) == n // batch_size,
            f"with drop_last len() is {len(ld)}, expected {n // batch_size}",
        )
        _, _, sizes = _collect(ld, 1)
        _demand(
            sizes == [batch_size] * (n // batch_size), f"with drop_last batch sizes are {sizes}"
        )

    def epoch_determinism() -> None:
        a, b = make(seed=3), make(seed=3)
        img_a, msk_a, _ = _collect(a, 1)
        img_b, msk_b, _ = _collect(b, 1)
        _demand(
            torch.equal(img_a, img_b) and torch.equal(msk_a, msk_b),
            "two loaders with the same seed and epoch gave different batches",
        )
        img_a2, _, _ = _collect(a, 2)
        _demand(not torch.equal(img_a, img_a2), "epoch 2 gave exactly the batches of epoch 1")
        img_a1, _, _ = _collect(a, 1)
        _demand(torch.equal(img_a, img_a1), "set_epoch(1) again did not repeat epoch 1")

    def shards() -> None:
        def keys(images: torch.Tensor) -> list[float]:
            # Every generated image has its own size and shape: its pixel sum identifies it.
            return sorted(round(float(x), 1) for x in images.double().sum(dim=(1, 2, 3)))

        full = keys(_collect(make(fixed, train=False), 0)[0])
        _demand(len(set(full)) == len(full), "the dataset's images are not distinguishable")
        parts = [keys(_collect(make(fixed, seed=5, shard=(r, 2)), 1)[0]) for r in range(2)]
        half = math.ceil(n / 2)
        _demand(
            len(parts[0]) == len(parts[1]) == half,
            f"shards hold {len(parts[0])} and {len(parts[1])} images, expected {half} each",
        )
        both = set(parts[0]) & set(parts[1])
        _demand(not both, f"{len(both)} image(s) appear in both shards")
        _demand(
            sorted(parts[0] + parts[1]) == full,
            "the two shards together do not hold exactly the images of the split",
        )

    checks = {
        "batches": batches,
        "drop_last": drop_last,
        "epoch_determinism": epoch_determinism,
        "shards": shards,
    }
    for rule in selected:
        _run(target, LOADER_RULES, rule, checks[rule])


# ----------------------------------------------------------------------------- pytest

#: The checker of each kind that has one.
CHECKERS: dict[str, Callable[..., None]] = {
    "models": check_model,
    "losses": check_loss,
    "augmentations": check_recipe,
    "loaders": check_loader,
}

_RULES = {
    "models": MODEL_RULES,
    "losses": LOSS_RULES,
    "augmentations": RECIPE_RULES,
    "loaders": LOADER_RULES,
}


def check(kind: str, plugin: str | Callable[..., Any], **kwargs: Any) -> None:
    """Run the checker of ``kind`` ("models", "losses", "augmentations", "loaders").

    Keyword arguments go to :func:`check_model`, :func:`check_loss`, :func:`check_recipe`
    or :func:`check_loader`.
    """
    if kind not in CHECKERS:
        raise ValueError(f"no conformance checks for kind {kind!r}; kinds: {', '.join(CHECKERS)}")
    CHECKERS[kind](plugin, **kwargs)


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def plugin_names(kind: str, distribution: str | None = None) -> list[str]:
    """Registered names of ``kind``, optionally only those of one distribution (its name
    as in ``pyproject.toml``; ``-``, ``_`` and ``.`` are equivalent)."""
    from segkit.registry import default_registry

    plugins = default_registry().plugins(kind)
    if distribution is None:
        return list(plugins)
    want = _normalize(distribution)
    return [n for n, info in plugins.items() if _normalize(info.distribution) == want]


def parametrize_plugins(*kinds: str, distribution: str | None = None, rules: bool = False) -> Any:
    """A ``pytest.mark.parametrize`` over the registered plugins of ``kinds``.

    The test receives ``kind`` and ``name``, and with ``rules=True`` also ``rule``: one
    test per plugin and rule, so a report shows exactly which rule a plugin breaks::

        @parametrize_plugins("models", "losses", rules=True)
        def test_contract(kind, name, rule):
            check(kind, name, rules=[rule])

    Args:
        kinds: Plugin kinds; with ``rules=True`` only kinds that have a checker.
        distribution: Only the plugins of this distribution (e.g. your own package's).
        rules: Parametrize over the rules of each kind too.

    Returns:
        A pytest mark. No plugin found gives pytest's "empty parameter set" skip.
    """
    import pytest

    cases = []
    for kind in kinds:
        if rules and kind not in _RULES:
            raise ValueError(f"no conformance rules for kind {kind!r}; kinds: {', '.join(_RULES)}")
        for plugin in plugin_names(kind, distribution):
            if rules:
                cases += [
                    pytest.param(kind, plugin, rule, id=f"{kind}-{plugin}-{rule}")
                    for rule in _RULES[kind]
                ]
            else:
                cases.append(pytest.param(kind, plugin, id=f"{kind}-{plugin}"))
    argnames = ("kind", "name", "rule") if rules else ("kind", "name")
    return pytest.mark.parametrize(argnames, cases)
