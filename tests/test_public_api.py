"""The public API's keyword names as users of the field's libraries type them."""

from __future__ import annotations

import pytest

import segkit
from segkit import build
from segkit.errors import ConfigError


@pytest.fixture
def built(monkeypatch):
    """What segkit.create_model passes to the build path (no model is built)."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        build, "create_model", lambda name, i, o, **options: calls.append((name, i, o, options))
    )
    return calls


def test_classes_is_out_channels_as_smp_names_it(built):
    segkit.create_model("unet", classes=3)
    segkit.create_model("unet", in_channels=1, classes=2, encoder="x")
    segkit.create_model("unet", out_channels=3, classes=3)
    segkit.create_model("unet", 3, 4)
    segkit.create_model("unet")
    assert built == [
        ("unet", 3, 3, {}),
        ("unet", 1, 2, {"encoder": "x"}),
        ("unet", 3, 3, {}),
        ("unet", 3, 4, {}),
        ("unet", 3, 1, {}),  # binary by default
    ]


def test_classes_and_out_channels_that_disagree_name_both(built):
    with pytest.raises(
        ConfigError, match=r"create_model\('unet'\): classes=3 and out_channels=2 disagree"
    ):
        segkit.create_model("unet", out_channels=2, classes=3)
    assert built == []
