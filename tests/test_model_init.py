"""Initialization of the built-in models (issue 29): the lab's two models keep their
architecture and parameter counts under either init, the new init is torchvision's and
smp's, the old one stays reachable with ``init="torch"``, and timm encoders trained from
scratch no longer start their residual branches at zero."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segkit.build import create_model
from segkit.config import COMMAND_LINE, given_as
from segkit.errors import ConfigError


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("name", "count"), [("unet", 31_037_633), ("resnet34_unet", 48_173_729)])
def test_lab_models_keep_their_parameters(name, count):
    new, old = create_model(name), create_model(name, init="torch")
    assert _params(new) == _params(old) == count
    shapes = {k: v.shape for k, v in new.state_dict().items()}
    assert shapes == {k: v.shape for k, v in old.state_dict().items()}


def _kaiming_uniform_std(conv: nn.Conv2d) -> float:
    fan_in = conv.weight[0].numel()
    return math.sqrt(2.0 / fan_in)


def test_unet_init_is_smps():
    torch.manual_seed(0)
    model = create_model("unet")
    conv = model.up1.conv[0]  # 1024 -> 512, fan_in 9216: plenty of samples
    assert conv.weight.std().item() == pytest.approx(_kaiming_uniform_std(conv), rel=0.02)
    assert model.outc.bias.abs().max().item() == 0.0
    bound = math.sqrt(6.0 / (64 + model.outc.out_channels))  # xavier_uniform, 1x1 kernel
    assert model.outc.weight.abs().max().item() <= bound
    bn = model.inc[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))


def test_resnet34_unet_kaiming_encoder_is_torchvisions_decoder_smps():
    torch.manual_seed(0)
    model = create_model("resnet34_unet", init="kaiming")
    enc = model.layer3[0].conv1  # kaiming_normal fan_out: std sqrt(2 / (out * 9))
    assert enc.weight.std().item() == pytest.approx(math.sqrt(2.0 / (256 * 9)), rel=0.02)
    dec = model.up1.conv[0]
    assert dec.weight.std().item() == pytest.approx(_kaiming_uniform_std(dec), rel=0.02)
    # No residual branch starts at zero (torchvision's zero_init_residual=False).
    assert all(b.bn2.weight.min().item() == 1.0 for b in model.layer1)
    assert model.head.bias.abs().max().item() == 0.0


def test_old_init_is_pytorchs_default():
    """init="torch" builds exactly what segkit built before: the same weights for the
    same seed as constructing the layers with no init at all."""
    from segkit_unet import UNet

    torch.manual_seed(3)
    old = create_model("unet", init="torch")
    conv = old.up1.conv[0]
    # PyTorch's default: kaiming_uniform(a=sqrt(5)), std 1/sqrt(3 fan_in).
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 9216), rel=0.02)
    torch.manual_seed(3)
    again = UNet(init="torch")
    assert all(
        torch.equal(a, b)
        for a, b in zip(old.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_resnet34_unet_default_is_pytorchs_init():
    """Measured (issue 29): ResNet34-UNet keeps PyTorch's defaults, so make run's model
    is the one it always was: the same weights for the same seed."""
    from segkit_unet.resnet34_unet import ResNet34UNet

    torch.manual_seed(4)
    default = create_model("resnet34_unet")
    torch.manual_seed(4)
    explicit = ResNet34UNet(init="torch")
    pairs = zip(default.state_dict().values(), explicit.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    conv = default.up1.conv[0]  # PyTorch's default: std 1/sqrt(3 fan_in)
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 9216), rel=0.02)


@pytest.mark.parametrize("name", ["unet", "resnet34_unet", "timm_unet"])
def test_unknown_init_is_refused(name):
    with pytest.raises(ConfigError, match=r"init='xavier'.*kaiming, torch"):
        create_model(name, init="xavier")
    # The example is named as the settings are given: keywords in Python, flags in a command.
    with pytest.raises(ConfigError, match=r"e\.g\. model_options=\{'init': 'kaiming'\}$"):
        create_model(name, init="xavier")
    with (
        given_as(COMMAND_LINE),
        pytest.raises(ConfigError, match=r"e\.g\. --model-opt init=kaiming$"),
    ):
        create_model(name, init="xavier")


def _last_norms_zero(model: nn.Module) -> list[bool]:
    return [
        bool((b.bn2.weight == 0).all())
        for b in model.encoder.modules()
        if hasattr(b, "zero_init_last")
    ]


def test_timm_unet_from_scratch_keeps_residual_branches_on():
    torch.manual_seed(0)
    new = create_model("timm_unet", encoder="resnet18")
    old = create_model("timm_unet", encoder="resnet18", init="torch")
    assert _last_norms_zero(new) == [False] * 8
    assert _last_norms_zero(old) == [True] * 8  # timm's zero_init_last
    conv = new.decoder[0].conv1[0]
    assert conv.weight.std().item() == pytest.approx(_kaiming_uniform_std(conv), rel=0.02)
    assert new.head.bias.abs().max().item() == 0.0


def test_timm_unet_encoder_without_zero_init_option_builds():
    """An encoder family without timm's zero_init_last option (EfficientNet) still
    builds under the new init (the option is passed only where it is taken)."""
    model = create_model("timm_unet", encoder="efficientnet_b0")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)


def test_timm_unet_head_kernel():
    three = create_model("timm_unet", encoder="resnet18")  # the default: smp's 3x3
    one = create_model("timm_unet", encoder="resnet18", head_kernel=1)  # before issue 29
    assert three.head.kernel_size == (3, 3) and three.head.padding == (1, 1)
    assert one.head.kernel_size == (1, 1)
    assert _params(three) - _params(one) == 16 * 8  # 16 in-channels x (9 - 1) weights
    assert three(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(ConfigError, match=r"head_kernel=2.* model_options=\{'head_kernel': 3\}$"):
        create_model("timm_unet", encoder="resnet18", head_kernel=2)
    with (
        given_as(COMMAND_LINE),
        pytest.raises(ConfigError, match=r"head_kernel=2.* e\.g\. --model-opt head_kernel=3$"),
    ):
        create_model("timm_unet", encoder="resnet18", head_kernel=2)


def test_timm_unet_starts_from_smp_unets_weights():
    """timm_unet over resnet18 is smp.Unet('resnet18', encoder_weights=None) layer for
    layer, and with the same seed it starts from the very same weights: the encoder is
    initialized as torchvision's ResNet (no zero_init_last), the decoder and head as smp's,
    in the same order. So the peer benchmark compares the two pipelines on one model."""
    smp = pytest.importorskip("segmentation_models_pytorch", reason="pip install -e '.[bench]'")
    torch.manual_seed(5)
    ours = create_model("timm_unet", encoder="resnet18")
    torch.manual_seed(5)
    peer = smp.Unet("resnet18", encoder_weights=None)
    mine, theirs = list(ours.parameters()), list(peer.parameters())
    assert len(mine) == len(theirs) == 92
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
