"""Inference shared by validation, evaluation and prediction: logits at the label's resolution."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from train.data import normalize


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA where supported, fp16 otherwise; nothing on CPU (fp32 is faster there)."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, out_hw: tuple[int, int] | None, device: torch.device,
                   amp: bool = True, channels_last: bool = True, hflip_tta: bool = False) -> torch.Tensor:
    """Float logits (N, C, H, W) for a uint8 batch, bilinearly upsampled to ``out_hw`` (the label size)."""
    x = normalize(images.to(device, non_blocking=True))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_for(device, amp):
        logits = model(x)
        if hflip_tta:
            logits = (logits + model(x.flip(-1)).flip(-1)) / 2
    logits = logits.float()
    if out_hw is not None and tuple(logits.shape[-2:]) != tuple(out_hw):
        logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    return logits
