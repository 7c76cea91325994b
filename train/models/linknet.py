"""LinkNet (Chaurasia & Culurciello, 2017): a residual encoder whose decoder adds, rather than concatenates, the
skip features, which makes it lighter than a UNet of the same width."""

from __future__ import annotations

import torch
from torch import nn

from train.models.blocks import ResBlock, conv_bn_relu, pad_to_multiple
from train.models.registry import SEMANTIC_MODELS


class Decoder(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = max(cin // 4, 8)
        self.block = nn.Sequential(
            conv_bn_relu(cin, mid, k=1),
            nn.ConvTranspose2d(mid, mid, 4, 2, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            conv_bn_relu(mid, cout, k=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


@SEMANTIC_MODELS.register("linknet")
class LinkNet(nn.Module):
    """LinkNet with a residual encoder.

    Args:
        num_classes: output channels (set by SegLoop from the taxonomy)
        in_channels: input channels (3 for RGB)
        width: channels of the first stage (doubles each level)
        depth: number of down-samplings
        dropout: dropout before the classifier
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, depth: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        chs = [width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.stem = nn.Sequential(conv_bn_relu(in_channels, chs[0]), ResBlock(chs[0], chs[0]))
        self.enc = nn.ModuleList(nn.Sequential(ResBlock(chs[i], chs[i + 1], 2), ResBlock(chs[i + 1], chs[i + 1]))
                                 for i in range(depth))
        self.dec = nn.ModuleList(Decoder(chs[i + 1], chs[i]) for i in range(depth))
        self.head = nn.Sequential(nn.Dropout2d(dropout) if dropout else nn.Identity(),
                                  conv_bn_relu(chs[0], chs[0]), nn.Conv2d(chs[0], num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2**self.depth)
        feats = [self.stem(x)]
        for enc in self.enc:
            feats.append(enc(feats[-1]))
        y = feats[-1]
        for i in reversed(range(self.depth)):
            y = self.dec[i](y) + feats[i]
        return self.head(y)[..., :h, :w]
