"""Contract tests for every registered ``segkit.models`` plugin, plus the built-ins' sizes.

Parametrized over the registry at collection time, so an installed third-party model is
tested by the same suite. Kept CPU-sized: 64x64 images, batch 2, and ``torch.no_grad``
wherever no gradient is checked.
"""

from __future__ import annotations

import pytest
import torch

from segkit.errors import ConfigError
from segkit.registry import create, list_plugins

MODELS = list_plugins("models")

#: Built-in models and their parameter counts in millions (3 channels in, 1 out), as the
#: lab reported them: the milesial UNet (bilinear=False) and the lab's ResNet34-UNet.
BUILTIN_PARAMS = {"unet": 31.0, "resnet34_unet": 48.2}


def _multiple(model: torch.nn.Module) -> int:
    return int(getattr(model, "min_input_multiple", 1))


def test_builtin_models_are_registered() -> None:
    assert set(BUILTIN_PARAMS) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create("models", name).train()
    x = torch.randn(2, 3, 64, 64)

    out = model(x)

    assert out.shape == (2, 1, 64, 64)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all(), "NaN or inf in the output"
    out.mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f"parameters without a gradient: {missing}"
    nonfinite = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    assert not nonfinite, f"parameters with NaN or inf gradients: {nonfinite}"


@pytest.mark.parametrize("name", MODELS)
def test_in_and_out_channels(name: str) -> None:
    model = create("models", name, in_channels=1, out_channels=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 2, 64, 64)


@pytest.mark.parametrize("name", MODELS)
def test_min_input_multiple_divides_32(name: str) -> None:
    # The toolkit promises that any size divisible by 32 works with every model.
    multiple = getattr(create("models", name), "min_input_multiple", 1)
    assert isinstance(multiple, int) and multiple >= 1
    assert 32 % multiple == 0


@pytest.mark.parametrize("name", MODELS)
def test_accepts_an_odd_multiple_of_min_input_multiple(name: str) -> None:
    # An odd multiple (96 for a multiple of 32) leaves odd feature maps deep in the
    # network; a decoder must still line them up with its skips.
    model = create("models", name).eval()
    multiple = _multiple(model)
    factor = 3
    while multiple * factor < 48:
        factor += 2
    size = multiple * factor
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size + 2 * multiple))
    assert out.shape == (1, 1, size, size + 2 * multiple)


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_size_raises_config_error(name: str) -> None:
    model = create("models", name).eval()
    multiple = _multiple(model)
    if multiple == 1:
        pytest.skip(f"{name} accepts any size")
    bad, good = 2 * multiple + multiple // 2, 2 * multiple  # 80 and 64 for a multiple of 32
    with torch.no_grad(), pytest.raises(ConfigError, match=f"height={bad}, width={good}"):
        model(torch.randn(1, 3, bad, good))


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_under_bf16_autocast(name: str) -> None:
    model = create("models", name).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (1, 1, 64, 64)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", MODELS)
def test_unknown_option_is_refused(name: str) -> None:
    # Plain factories raise TypeError; segkit.registry.create turns it into a ConfigError.
    with pytest.raises((TypeError, ConfigError), match="no_such_option"):
        create("models", name, no_such_option=1)


@pytest.mark.parametrize(("name", "millions"), BUILTIN_PARAMS.items())
def test_builtin_parameter_count(name: str, millions: float) -> None:
    model = create("models", name, in_channels=3, out_channels=1)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 1) == millions, f"{name}: {count:,} parameters"


def test_unet_size_error_suggests_a_size_that_works() -> None:
    model = create("models", "unet")
    with pytest.raises(ConfigError, match=r"height=250, width=250 .* by 16.*\(256, 256\)"):
        model(torch.randn(1, 3, 250, 250))


def test_resnet34_unet_size_error_suggests_a_size_that_works() -> None:
    model = create("models", "resnet34_unet")
    with pytest.raises(ConfigError, match=r"height=250, width=100 .* by 32.*\(256, 128\)"):
        model(torch.randn(1, 3, 250, 100))
