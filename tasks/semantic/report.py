"""The semantic task's report sections: the encoder-decoder diagram, what its loss and augmentations were, and
its worst classes by IoU and Dice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluate.report import standard_augmentations, table


class SemanticReport:
    def architecture_png(self, spec: dict[str, Any], hw: tuple[int, int], path: Path) -> None:
        """Block diagram: encoder-decoder levels (channels, resolution) with skips."""
        args = spec["args"]
        depth, width = args.get("depth", 4), args.get("width", 16)
        stride = args.get("stem_stride", 1)
        fig, ax = plt.subplots(figsize=(10, 3.6))
        ax.axis("off")
        for i in range(depth + 1):
            ch = width * 2**i
            h, w = hw[0] // (stride * 2**i), hw[1] // (stride * 2**i)
            y = depth - i
            ax.add_patch(plt.Rectangle((i * 1.1, y), 1.0, 0.7, color="#4c72b0", alpha=0.85))
            ax.text(i * 1.1 + 0.5, y + 0.35, f"enc {i}\n{ch} ch\n{h}x{w}", ha="center", va="center", color="white",
                    fontsize=7)
            if i < depth:
                x = (2 * depth - i) * 1.1
                ax.add_patch(plt.Rectangle((x, y), 1.0, 0.7, color="#dd8452", alpha=0.85))
                ax.text(x + 0.5, y + 0.35, f"dec {i}\n{ch} ch", ha="center", va="center", color="white", fontsize=7)
                join = "concat" if spec["name"] == "resunet" else "add"
                ax.annotate("", xy=(x, y + 0.35), xytext=(i * 1.1 + 1.0, y + 0.35),
                            arrowprops={"arrowstyle": "->", "color": "grey", "ls": "--"})
                ax.text((i * 1.1 + 1.0 + x) / 2, y + 0.45, f"skip ({join})", ha="center", fontsize=6, color="grey")
        ax.set_xlim(-0.2, (2 * depth + 1) * 1.1)
        ax.set_ylim(-0.3, depth + 1)
        ax.set_title(f"{spec['name']}: residual blocks down (stride 2), bilinear up + residual block; "
                     f"1x1 head to classes" + (f"; stem stride {stride}" if stride > 1 else ""), fontsize=9)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)

    def loss(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        lc = cfg["loss"]
        return (f"{lc['name']}, class weights {lc['class_weights'] if lc['class_weights'] is not None else 'none'}, "
                f"label smoothing {lc['label_smoothing']}")

    def augmentations(self, spec: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
        a = cfg["augment"]
        scale = [f"scale {a['scale'][0]}-{a['scale'][1]} then crop"] if list(a.get("scale", [1, 1])) != [1, 1] else []
        return standard_augmentations(a, scale, [])

    def metrics(self, test: dict[str, Any]) -> list[str]:
        return ["mIoU", "pixel accuracy", "mean Dice", "per-class IoU and Dice"] if "mIoU" in test else []

    def worst_classes(self, name: str, test: dict[str, Any]) -> list[str]:
        pc = test["per_class"]
        return [f"### {name}", "", table(["class", "IoU", "Dice", "ground-truth pixels"],
                                         [[n, f"{pc[n]['iou']:.4f}", f"{pc[n]['dice']:.4f}", pc[n]["gt_pixels"]]
                                          for n in test["worst_classes"]]), ""]
