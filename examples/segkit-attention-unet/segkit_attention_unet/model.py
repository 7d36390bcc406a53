"""Attention U-Net (Oktay et al., 2018, "Attention U-Net: Learning Where to Look for the
Pancreas"), sized for binary segmentation.

A UNet (conv blocks, 2x2 max pooling, transposed-conv upsampling, skip connections)
whose skip connections pass through **additive attention gates**: before a decoder level
concatenates the encoder's feature map ``x``, a gate computes a per-pixel coefficient
``alpha`` in [0, 1] from ``x`` and from the coarser decoder signal ``g`` and passes
``alpha * x``. As in the paper, ``x`` is brought to ``g``'s resolution by a strided 1x1
projection, the attention ``sigmoid(psi(relu(W_x x + W_g g)))`` is computed there, and
``alpha`` is resampled back to ``x``'s resolution (bilinear).

Returns logits (no sigmoid) and declares ``min_input_multiple = 2 ** depth`` (16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segkit.contracts import declare
from segkit.errors import ConfigError


class ConvBlock(nn.Sequential):
    """(conv3x3 -> BN -> ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate: ``x * alpha`` with
    ``alpha = sigmoid(psi(relu(W_x(x) + W_g(g))))`` computed at ``g``'s (half) resolution.

    Args:
        x_channels: Channels of the skip (encoder) feature map ``x``.
        g_channels: Channels of the gating signal ``g``, half ``x``'s resolution.
        inter_channels: Channels of the intermediate projection.
    """

    def __init__(self, x_channels: int, g_channels: int, inter_channels: int):
        super().__init__()
        # Stride 2: x (H, W) meets g (H/2, W/2). No bias: the sum is followed by ReLU and
        # W_g has one.
        self.theta_x = nn.Conv2d(x_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(g_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)
        # The paper's output transform: a 1x1 conv + BN on the gated features.
        self.out = nn.Sequential(
            nn.Conv2d(x_channels, x_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(x_channels),
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(self.psi(F.relu(self.theta_x(x) + self.phi_g(g))))
        alpha = F.interpolate(attention, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(x * alpha)


class AttentionUp(nn.Module):
    """One decoder level: gate the skip with the coarse signal, upsample the signal with a
    transposed conv, concatenate both, then a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.gate = AttentionGate(skip_channels, in_channels, max(1, skip_channels // 2))
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(out_channels + skip_channels, out_channels)

    def forward(self, g: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gated = self.gate(skip, g)
        return self.conv(torch.cat([gated, self.up(g)], dim=1))


class AttentionUNet(nn.Module):
    """Attention U-Net: ``depth`` poolings, widths ``base_channels * 2**level``.

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits.
        base_channels: Width of the first level (the paper's is 64; 16 trains quickly).
        depth: Number of 2x2 poolings; H and W must be divisible by ``2 ** depth``.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 1, base_channels: int = 16, depth: int = 4
    ):
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.min_input_multiple = 2**depth
        self.inc = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            AttentionUp(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, H, W)`` images to ``(N, out_channels, H, W)`` logits
        (H and W divisible by ``min_input_multiple``)."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.up:
            y = up(y, skips.pop())
        return self.head(y)


def _min_input_multiple(depth: int = 4, **_: object) -> int:
    """H and W must be divisible by ``2 ** depth``; segkit reads this without building the
    model (an invalid depth is the factory's to report)."""
    return 2**depth if isinstance(depth, int) and 1 <= depth <= 5 else 1


@declare(min_input_multiple=_min_input_multiple)
def create_attention_unet(
    in_channels: int = 3, out_channels: int = 1, base_channels: int = 16, depth: int = 4
) -> AttentionUNet:
    """Create an Attention U-Net (about 2.0M parameters with the defaults).

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits.
        base_channels: Width of the first level; every level doubles it.
        depth: Number of poolings, 1 to 5 (H and W must be divisible by ``2 ** depth``,
            and segkit models must accept every multiple of 32).

    Returns:
        An :class:`AttentionUNet` returning logits.

    Raises:
        ConfigError: ``base_channels`` or ``depth`` is out of range.
    """
    if isinstance(base_channels, bool) or not isinstance(base_channels, int) or base_channels < 2:
        raise ConfigError(f"attention_unet: base_channels={base_channels!r}; expected an int >= 2")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 5:
        raise ConfigError(f"attention_unet: depth={depth!r}; expected an int from 1 to 5")
    return AttentionUNet(in_channels, out_channels, base_channels, depth)
