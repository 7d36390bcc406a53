"""ResNet34-UNet: a ResNet-34 encoder under a UNet decoder (48.2M parameters).

The encoder is written out here rather than taken from timm or torchvision so the model
is exactly the lab's and has no weight download: a 7x7 stride-2 stem and a 3x3 stride-2
max pool (stride 4), then BasicBlock stages of 3, 4, 6 and 3 blocks with 64, 128, 256 and
512 channels (strides 4, 8, 16, 32), then one more BasicBlock, 512 -> 1024 channels at
stride 2, as the bottleneck (stride 64).

The decoder climbs back with four :class:`segkit_unet.Up` blocks (1024 -> 512 -> 256 ->
128 -> 64 channels, skips from the four stages), then two transposed convolutions take
stride 4 back to full resolution and a 1x1 conv gives the logits.

Input size: H and W must be divisible by 32 (``min_input_multiple``), not 64. A size
divisible by 32 but not 64 leaves the last stage with an odd map; the bottleneck's
stride-2 conv rounds it up, and each up block crops its upsampled map to the skip's size.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.contracts import declare
from segkit_unet import Up
from segkit_unet._init import Init, check_init, init_decoder, init_encoder, init_head

__all__ = ["ResNet34UNet", "create_resnet34_unet"]


class BasicBlock(nn.Module):
    """The ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus the input, then ReLU.

    When the stride or the channel count changes, the shortcut is a 1x1 conv + BN
    (ResNet "option B"), as in torchvision's ``resnet34``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one changes stride and channels."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _upsample(in_channels: int, out_channels: int) -> nn.Sequential:
    """Transposed conv (k2, s2) -> BN -> ReLU: doubles H and W."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResNet34UNet(nn.Module):
    """A UNet whose encoder is ResNet-34, with a 1024-channel residual bottleneck.

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits (1 for binary segmentation).
        init: ``"torch"`` (default): PyTorch's layer defaults; ``"kaiming"``: the encoder
            as torchvision's ResNet, the decoder and head as smp's (see
            :mod:`segkit_unet._init`), which measured worse for this model (see
            :func:`create_resnet34_unet`).
    """

    #: The deepest skip (layer4) is at stride 32; the bottleneck's odd sizes are cropped.
    min_input_multiple = 32

    def __init__(self, in_channels: int = 3, out_channels: int = 1, init: Init = "torch"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.layer1 = _stage(64, 64, blocks=3, stride=1)  # stride 4
        self.layer2 = _stage(64, 128, blocks=4, stride=2)  # stride 8
        self.layer3 = _stage(128, 256, blocks=6, stride=2)  # stride 16
        self.layer4 = _stage(256, 512, blocks=3, stride=2)  # stride 32
        self.bottleneck = BasicBlock(512, 1024, stride=2)  # stride 64
        self.up1 = Up(1024, 512)  # + layer4 -> stride 32
        self.up2 = Up(512, 256)  # + layer3 -> stride 16
        self.up3 = Up(256, 128)  # + layer2 -> stride 8
        self.up4 = Up(128, 64)  # + layer1 -> stride 4
        self.up5 = _upsample(64, 32)  # stride 2
        self.up6 = _upsample(32, 32)  # stride 1
        self.head = nn.Conv2d(32, out_channels, kernel_size=1)
        check_init("resnet34_unet", init)
        if init == "kaiming":
            for part in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
                init_encoder(part)
            init_encoder(self.bottleneck)  # a residual block like the encoder's
            for part in (self.up1, self.up2, self.up3, self.up4, self.up5, self.up6):
                init_decoder(part)
            init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, H, W)`` images to ``(N, out_channels, H, W)`` logits
        (H and W divisible by 32)."""
        x1 = self.layer1(self.stem(x))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        x = self.bottleneck(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.head(self.up6(self.up5(x)))


@declare(min_input_multiple=ResNet34UNet.min_input_multiple)
def create_resnet34_unet(
    in_channels: int = 3, out_channels: int = 1, init: Init = "torch"
) -> ResNet34UNet:
    """Create the ResNet34-UNet (48.2M parameters for RGB in, one logit channel out).

    Trained from scratch (no pretrained weights), from PyTorch's layer defaults:
    chosen by measurement (issue 29). ``init="kaiming"`` (torchvision's ResNet init for
    the encoder, smp's for the decoder and head) gave a lower test Dice in short runs
    from scratch with Adam at 1e-3: ``make run``'s 0.8183 against 0.8491, and lower on
    each generated set and seed (``benchmarks/results/2026-12-06-cpu-init/``).

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits.
        init: ``"torch"`` (default) or ``"kaiming"``.

    Returns:
        A :class:`ResNet34UNet` returning logits; H and W must be divisible by 32.

    Raises:
        ConfigError: ``init`` is not one of ``kaiming``, ``torch``.
        TypeError: An unknown option was given. Through :func:`segkit.registry.create`
            this is a ``ConfigError`` listing the options.
    """
    return ResNet34UNet(in_channels, out_channels, init)
