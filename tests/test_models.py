"""Contract tests for every registered ``segkit.models`` plugin, plus the built-ins' sizes.

The contract is :mod:`segkit.testing`'s: one test per registered model and rule of
:data:`segkit.testing.MODEL_RULES`, parametrized over the registry at collection time,
so an installed third-party model is tested by the same suite, with the same functions
its author runs. Kept CPU-sized: 64x64 for the train-mode pass, 32x32 elsewhere.
"""

from __future__ import annotations

import pytest
import torch

import segkit
from segkit.errors import ConfigError
from segkit.registry import create, list_plugins
from segkit.testing import check_model, parametrize_plugins

MODELS = list_plugins("models")

#: Built-in models and their parameter counts in millions (3 channels in, 1 out): the
#: milesial UNet (bilinear=False) and the lab's ResNet34-UNet, as the lab reported them,
#: and the UNet over timm's ResNet-34 with the default decoder.
BUILTIN_PARAMS = {"unet": 31.0, "resnet34_unet": 48.2, "timm_unet": 24.4}


def test_builtin_models_are_registered() -> None:
    assert set(BUILTIN_PARAMS) <= set(MODELS)


@parametrize_plugins("models", rules=True)
def test_contract(kind: str, name: str, rule: str) -> None:
    check_model(name, rules=[rule])


@pytest.mark.parametrize(("name", "millions"), BUILTIN_PARAMS.items())
def test_builtin_parameter_count(name: str, millions: float) -> None:
    model = create("models", name, in_channels=3, out_channels=1)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 1) == millions, f"{name}: {count:,} parameters"


def test_unet_size_error_suggests_a_size_that_works() -> None:
    model = segkit.create_model("unet")
    with pytest.raises(ConfigError, match=r"height=250, width=250 .* by 16.*\(256, 256\)"):
        model(torch.randn(1, 3, 250, 250))


def test_resnet34_unet_size_error_suggests_a_size_that_works() -> None:
    model = segkit.create_model("resnet34_unet")
    with pytest.raises(ConfigError, match=r"height=250, width=100 .* by 32.*\(256, 128\)"):
        model(torch.randn(1, 3, 250, 100))
