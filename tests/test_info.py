"""`segkit info` / :func:`segkit.model_info`: counts, FLOPs and activation memory of a
model, measured on the CPU. The UNet at 64 and 128 px takes 1-2 s (slow tier); the
others run at 32-64 px or build nothing."""

from __future__ import annotations

import json

import pytest

import segkit
from segkit.cli import main
from segkit.config import COMMAND_LINE, given_as


@pytest.mark.slow
def test_parameters_are_those_of_the_model_create_model_builds() -> None:
    info = segkit.model_info("unet", image_size=64)
    model = segkit.create_model("unet", image_size=64)
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.trainable_parameters == info.parameters
    assert info.min_input_multiple == 16
    # Backward costs about twice the forward (gradients of inputs and of weights).
    assert 2.5 < info.train_gflop / info.forward_gflop < 3.5
    assert info.activation_mib > 0
    assert info.feature_channels is None and info.feature_strides is None


@pytest.mark.slow
def test_flops_and_activations_scale_with_the_pixels() -> None:
    small, large = segkit.model_info("unet", 64), segkit.model_info("unet", 128)
    assert large.train_gflop / small.train_gflop == pytest.approx(4, rel=0.05)
    assert large.forward_gflop / small.forward_gflop == pytest.approx(4, rel=0.05)
    assert large.activation_mib / small.activation_mib == pytest.approx(4, rel=0.05)


def test_timm_encoder_reports_its_feature_channels_and_strides() -> None:
    info = segkit.model_info("timm_unet", image_size=64, encoder="resnet18", weights="imagenet")
    assert info.feature_channels == [64, 64, 128, 256, 512]
    assert info.feature_strides == [2, 4, 8, 16, 32]
    assert info.min_input_multiple == 32
    assert info.options == {"encoder": "resnet18"}  # weights ignored: nothing is read
    assert info.notes and "weights ignored" in info.notes[0]


def test_cli_prints_a_table_and_json(capsys) -> None:
    assert main(["info", "unet", "--image-size", "32"]) == 0
    out = capsys.readouterr().out.splitlines()
    labels = [line.split("  ")[0] for line in out]
    assert labels == [
        "model",
        "parameters",
        "trainable parameters",
        "min input multiple",
        "image size",
        "forward GFLOP / image",
        "training GFLOP / image",
        "activation memory / image",
    ]
    assert out[1].split()[-1] == "31,037,633"
    assert out[4].endswith("32 x 32")
    assert main(["info", "timm_unet", "--encoder", "resnet18", "--image-size", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "timm_unet" and data["options"] == {"encoder": "resnet18"}
    assert data["feature_strides"] == [2, 4, 8, 16, 32]
    assert data["train_gflop"] > data["forward_gflop"] > 0


def test_unknown_model_is_a_clear_error(capsys) -> None:
    assert main(["info", "unte"]) == 2
    err = capsys.readouterr().err
    assert "no model named 'unte'" in err and "unet" in err
    with pytest.raises(segkit.PluginNotFoundError):
        segkit.model_info("unte")


def test_a_bad_image_size_is_named_as_it_was_given() -> None:
    with pytest.raises(segkit.ConfigError, match=r"^image_size='64': expected a positive int$"):
        segkit.model_info("unet", image_size="64")
    with (
        given_as(COMMAND_LINE),
        pytest.raises(segkit.ConfigError, match=r"^--image-size 0: expected a positive int$"),
    ):
        segkit.model_info("unet", image_size=0)


def test_image_size_the_model_cannot_take(capsys) -> None:
    assert main(["info", "unet", "--image-size", "30"]) == 2
    assert "not divisible by 16" in capsys.readouterr().err


def test_a_grouped_convolutions_backward_costs_twice_its_forward() -> None:
    """torch's formula ignores ``groups`` in the backward; segkit.reports.info counts its own."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segkit.reports.info import _conv_backward_flop

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        y = conv(x)
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as backward:
        y.sum().backward()
    assert backward.get_total_flops() == 2 * forward.get_total_flops()
