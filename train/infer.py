"""Inference shared by validation, evaluation and prediction: logits at the label's resolution."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import SegLoopError
from train.config import device_problem
from train.data import normalize


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA where supported, fp16 otherwise; nothing on CPU (fp32 is faster there)."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def use_channels_last(model: nn.Module, device: torch.device, requested: bool) -> bool:
    """Whether to run in channels_last (NHWC). It is 1.5x faster on this CPU through oneDNN, but torch 2.14's CPU
    (oneDNN) backward corrupts the heap ("double free or corruption") when a layer has fewer than 16 channels in
    NHWC (reproduced here with widths 4, 8 and 12), so narrow models stay NCHW on the CPU."""
    if not requested:
        return False
    if device.type == "cpu":
        narrow = [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.num_features < 16]
        if narrow:
            return False
    return True


DEVICE_FIX = "use auto (a GPU when there is one), cpu, or a cuda:N this machine has (nvidia-smi lists them)"


def pick_device(name: str) -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. A device this machine lacks (``cuda``
    without a GPU, ``cuda:3`` on a 2-GPU machine) or a misspelt one is a ``SegLoopError`` naming it, not torch's
    ``RuntimeError`` deep inside model loading or a page that shows a traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise SegLoopError(f"device {problem}", fix=DEVICE_FIX)
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise SegLoopError(f"device {name!r} is not one torch knows ({exc})", fix=DEVICE_FIX) from None


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, out_hw: tuple[int, int] | None, device: torch.device,
                   amp: bool = True, channels_last: bool = True, hflip_tta: bool = False) -> torch.Tensor:
    """Float logits (N, C, H, W) for a uint8 batch, bilinearly upsampled to ``out_hw`` (the label size)."""
    x = normalize(images.to(device, non_blocking=True))
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with autocast_for(device, amp):
        logits = model(x)
        if hflip_tta:
            logits = (logits + model(x.flip(-1)).flip(-1)) / 2
    logits = logits.float()
    if out_hw is not None and tuple(logits.shape[-2:]) != tuple(out_hw):
        logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    return logits
