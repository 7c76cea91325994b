"""Residual UNet: a ResNet-style encoder (stride-2 residual blocks) and a UNet decoder with skip connections.

Width (channels of the first stage, doubled per level) and depth (number of down-samplings) scale it from a
CPU-sized model for the demo to a GPU-sized one for Cityscapes. ``stem_stride`` 2 or 4 starts at a lower
resolution (as ResNet's stem does) and upsamples the logits at the end: about 4x / 16x less compute in the
full-resolution stages, for a CPU budget or large images, at some cost on thin structures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models.blocks import ResBlock, conv_bn_relu, pad_to_multiple
from train.models.registry import SEMANTIC_MODELS


class Up(nn.Module):
    """Bilinear up-sampling, a 1x1 channel reduction, concatenation with the skip, one residual block."""

    def __init__(self, cin: int, cskip: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(cin, cskip, k=1)
        self.block = ResBlock(2 * cskip, cskip)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([self.reduce(x), skip], 1))


@SEMANTIC_MODELS.register("resunet")
class ResUNet(nn.Module):
    """Residual UNet.

    Args:
        num_classes: output channels (set by SegLoop from the taxonomy)
        in_channels: input channels (3 for RGB)
        width: channels of the first stage (doubles each level)
        depth: number of down-samplings
        dropout: dropout before the classifier
        stem_stride: 2 or 4 start at lower resolution (faster on CPU, coarser on thin objects)
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, depth: int = 4,
                 dropout: float = 0.0, stem_stride: int = 1) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError("depth and width must be positive")
        if stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
        chs = [width * 2**i for i in range(depth + 1)]
        self.depth, self.stem_stride = depth, stem_stride
        stem: list[nn.Module] = [conv_bn_relu(in_channels, chs[0], stride=min(stem_stride, 2))]
        if stem_stride == 4:
            stem.append(conv_bn_relu(chs[0], chs[0], stride=2))
        self.stem = nn.Sequential(*stem, ResBlock(chs[0], chs[0]))
        self.down = nn.ModuleList(
            nn.Sequential(ResBlock(chs[i], chs[i + 1], stride=2), ResBlock(chs[i + 1], chs[i + 1]))
            for i in range(depth))
        self.up = nn.ModuleList(Up(chs[i + 1], chs[i]) for i in reversed(range(depth)))
        self.head = nn.Sequential(nn.Dropout2d(dropout) if dropout else nn.Identity(),
                                  nn.Conv2d(chs[0], num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.stem_stride * 2**self.depth)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            y = up(y, skips.pop())
        y = self.head(y)
        if self.stem_stride > 1:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]
