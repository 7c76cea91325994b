"""Every registered semantic architecture on the encoders it takes: parameters, weight memory, FLOPs and CPU
inference time per image at 512x1024 (a Cityscapes frame at half resolution), with smp's Unet-resnet18 (the
hand-written baseline of bench/camvid.py) measured in the same run as the reference; ratios are against it.

  python bench/models.py [--hw 512 1024] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse

import _common
import torch
from torch.utils.flop_counter import FlopCounterMode

from train.models import SEMANTIC_MODELS

# one row per architecture and encoder it takes (the recipes' sizes), 19 Cityscapes classes
ROWS = [
    ("resunet", {"width": 16}),
    ("resunet", {"width": 32, "stem_stride": 2}),
    ("unet", {"encoder": "resnet18"}),
    ("unet", {"encoder": "resnet34"}),
    ("unet", {"encoder": "resnet50"}),
    ("unet", {"encoder": "efficientnet-lite0"}),
    ("unet", {"encoder": "efficientnet-lite1"}),
    ("unet", {"encoder": "efficientnet-lite2"}),
    ("unet", {"encoder": "convnext", "attention": True}),
    ("convunext", {}),
    ("convunext", {"stem_stride": 2}),
    ("linknet", {}),
    ("linknet", {"encoder": "resnet34"}),
    ("linknet", {"encoder": "efficientnet-lite0"}),
]


def measure(model: torch.nn.Module, hw: tuple[int, int], repeat: int) -> dict[str, float]:
    model.eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            model(x)
        model(x)  # warm-up (oneDNN picks its kernels)
        seconds = _common.best_of(lambda: model(x), repeat)
    params = sum(p.numel() for p in model.parameters())
    mb = (sum(p.numel() * p.element_size() for p in model.parameters())
          + sum(b.numel() * b.element_size() for b in model.buffers())) / 2**20
    return {"params_M": params / 1e6, "weights_MB": mb, "GFLOPs": fc.get_total_flops() / 1e9, "ms": seconds * 1000}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hw", type=int, nargs=2, default=[512, 1024], help="input height and width")
    p.add_argument("--repeat", type=int, default=3, help="timed forward passes per model (the fastest counts)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hw = tuple(args.hw)
    import segmentation_models_pytorch as smp

    ref = measure(smp.Unet("resnet18", encoder_weights=None, classes=19), hw, args.repeat)
    print(f"input 1x3x{hw[0]}x{hw[1]}, {torch.get_num_threads()} CPU threads; reference smp Unet-resnet18: "
          f"{ref['params_M']:.2f} M params, {ref['GFLOPs']:.1f} GFLOPs, {ref['ms']:.0f} ms")
    print(f"{'model':<44} {'params M':>9} {'MB':>7} {'GFLOPs':>8} {'ms/img':>8} {'ms ratio':>9} {'FLOPs ratio':>11}")
    for name, args_ in ROWS:
        m = measure(SEMANTIC_MODELS.build(name, args_, num_classes=19), hw, args.repeat)
        label = name + (" " + ", ".join(f"{k}={v}" for k, v in args_.items()) if args_ else "")
        print(f"{label:<44} {m['params_M']:>9.2f} {m['weights_MB']:>7.1f} {m['GFLOPs']:>8.1f} {m['ms']:>8.0f} "
              f"{m['ms'] / ref['ms']:>9.2f} {m['GFLOPs'] / ref['GFLOPs']:>11.2f}")


if __name__ == "__main__":
    main()
