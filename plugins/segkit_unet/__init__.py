"""The lab's two segmentation models, as ``segkit.models`` plugins.

``unet`` (this module) is the classic UNet of Ronneberger et al. (2015) with batch norm and
transposed-convolution upsampling, layer for layer the milesial/Pytorch-UNet model with
``bilinear=False``: 31.0M parameters for 3 input channels and 1 output channel.
``resnet34_unet`` (:mod:`segkit_unet.resnet34_unet`) puts a ResNet-34 encoder under the
same kind of decoder: 48.2M parameters.

Both return logits (no sigmoid), and their factories declare ``min_input_multiple``: the
factor H and W must be divisible by. segkit reads it without building the model and
attaches the input check to every model it builds, so a wrong size raises
:class:`segkit.errors.ConfigError` saying which size would work, instead of a shape
mismatch deep in the decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.contracts import declare
from segkit_unet._init import Init, check_init, init_decoder, init_head

__all__ = ["UNet", "create_unet"]


class DoubleConv(nn.Sequential):
    """(conv3x3 -> BN -> ReLU) x 2. The convs have no bias: the batch norm after each one
    has its own, so a conv bias would be a redundant parameter."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max pool, then :class:`DoubleConv`: halves H and W."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Transposed conv (k2, s2) halving the channels and doubling H and W, concatenation
    with the encoder's skip tensor, then :class:`DoubleConv`.

    If the upsampled map is larger than the skip (the deeper map had an odd size), it is
    cropped to the skip's size, so the decoder works for any input its model's
    ``min_input_multiple`` allows.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # The skip has in_channels // 2 channels too, so the concatenation has in_channels.
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        height, width = skip.shape[-2:]
        # Always sliced (a no-op view when the sizes match), never under an `if`: a model
        # traced for export (segkit export --dynamic) keeps the crop for every size.
        x = x[..., :height, :width]
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """The classic UNet: 4 down blocks (64, 128, 256, 512 channels), a 1024-channel
    bottleneck, 4 up blocks with skip connections, and a 1x1 conv to the logits.

    Four 2x2 poolings mean H and W must be divisible by 16 (``min_input_multiple``);
    segkit's usual sizes (multiples of 32) all qualify.

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits (1 for binary segmentation).
        init: ``"kaiming"``: every convolution ``kaiming_uniform_(fan_in, relu)``, batch
            norm 1/0, the head ``xavier_uniform_`` (smp's decoder and head init, see
            :mod:`segkit_unet._init`); ``"torch"``: PyTorch's layer defaults.
    """

    #: Four 2x2 max pools: H and W must be divisible by 2**4.
    min_input_multiple = 16

    def __init__(self, in_channels: int = 3, out_channels: int = 1, init: Init = "kaiming"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.inc = DoubleConv(in_channels, 64)
        self.down1 = Down(64, 128)
        self.down2 = Down(128, 256)
        self.down3 = Down(256, 512)
        self.down4 = Down(512, 1024)
        self.up1 = Up(1024, 512)
        self.up2 = Up(512, 256)
        self.up3 = Up(256, 128)
        self.up4 = Up(128, 64)
        self.outc = nn.Conv2d(64, out_channels, kernel_size=1)
        check_init("unet", init)
        if init == "kaiming":
            init_decoder(self)
            init_head(self.outc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, H, W)`` images to ``(N, out_channels, H, W)`` logits
        (H and W divisible by 16)."""
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.down4(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


@declare(min_input_multiple=UNet.min_input_multiple)
def create_unet(in_channels: int = 3, out_channels: int = 1, init: Init = "kaiming") -> UNet:
    """Create the classic UNet (31.0M parameters for RGB in, one logit channel out).

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits.
        init: ``"kaiming"`` (default): smp's decoder and head initialization for every
            layer; ``"torch"``: PyTorch's layer defaults (segkit before issue 29).

    Returns:
        A :class:`UNet` returning logits; H and W must be divisible by 16.

    Raises:
        ConfigError: ``init`` is not one of ``kaiming``, ``torch``.
        TypeError: An unknown option was given. Through :func:`segkit.registry.create`
            this is a ``ConfigError`` listing the options.
    """
    return UNet(in_channels, out_channels, init)
