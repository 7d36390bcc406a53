"""Run segkit's conformance kit over this package's plugins: the same checks segkit runs
over its own built-ins. Needs the package installed (`pip install .`): the plugins are
found through the entry points, exactly as `segkit run` finds them."""

from __future__ import annotations

import pytest
import torch

from segkit.registry import default_registry
from segkit.testing import check, check_model, parametrize_plugins

DISTRIBUTION = "segkit-attention-unet"
OURS = {"models": "attention_unet", "losses": "focal_dice", "recipes": "light"}


@pytest.mark.parametrize(("kind", "name"), OURS.items())
def test_registered_under_our_distribution(kind: str, name: str) -> None:
    info = default_registry().info(kind, name)  # PluginNotFoundError if not installed
    assert info.distribution.replace("_", "-") == DISTRIBUTION


@parametrize_plugins("models", "losses", "recipes", distribution=DISTRIBUTION, rules=True)
def test_contract(kind: str, name: str, rule: str) -> None:
    check(kind, name, rules=[rule])


def test_model_contract_at_another_width() -> None:
    check_model(
        "attention_unet",
        options={"base_channels": 8, "depth": 5},
        rules=["forward_backward", "input_sizes", "bad_input_size"],
    )


def test_attention_gates_weigh_the_skips() -> None:
    from segkit_attention_unet import AttentionGate

    gate = AttentionGate(x_channels=4, g_channels=8, inter_channels=2).eval()
    x, g = torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert gate(x, g).shape == x.shape
        gate.psi.bias.fill_(-100.0)  # attention ~0 everywhere: the skip is switched off
        assert gate(x, g).abs().max() < 1e-3 + gate.out[1].bias.abs().max()
