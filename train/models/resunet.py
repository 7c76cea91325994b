"""Residual UNet: a ResNet-style encoder (stride-2 residual blocks) and a UNet decoder with skip connections.

Width (channels of the first stage, doubled per level) and depth (number of down-samplings) scale it from a
CPU-sized model for the demo to a GPU-sized one for Cityscapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models.blocks import ResBlock, conv_bn_relu, pad_to_multiple


class Up(nn.Module):
    """Bilinear up-sampling, a 1x1 channel reduction, concatenation with the skip, one residual block."""

    def __init__(self, cin: int, cskip: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(cin, cskip, k=1)
        self.block = ResBlock(2 * cskip, cskip)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([self.reduce(x), skip], 1))


class ResUNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 24, depth: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError("depth and width must be positive")
        chs = [width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.stem = nn.Sequential(conv_bn_relu(in_channels, chs[0]), ResBlock(chs[0], chs[0]))
        self.down = nn.ModuleList(
            nn.Sequential(ResBlock(chs[i], chs[i + 1], stride=2), ResBlock(chs[i + 1], chs[i + 1]))
            for i in range(depth))
        self.up = nn.ModuleList(Up(chs[i + 1], chs[i]) for i in reversed(range(depth)))
        self.head = nn.Sequential(nn.Dropout2d(dropout) if dropout else nn.Identity(),
                                  nn.Conv2d(chs[0], num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2**self.depth)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            y = up(y, skips.pop())
        return self.head(y)[..., :h, :w]
