"""The instance task's report sections: the two-stage detector's diagram, its multi-task loss and augmentations,
and its worst classes by mask AP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluate.report import num, table


class InstanceReport:
    def architecture_png(self, spec: dict[str, Any], hw: tuple[int, int], path: Path) -> None:
        """The stages of a two-stage detector."""
        args = spec["args"]
        stages = [(f"{args.get('backbone', 'resnet50')}\n({args.get('norm', 'group')} norm)", "#4c72b0"),
                  ("FPN\nmulti-scale features", "#4c72b0"), ("RPN\nanchors " + str(list(args.get(
                      "anchor_sizes", [32, 64, 128, 256, 512]))), "#55a868"), ("RoIAlign 7x7\nbox head: class + box",
                                                                              "#dd8452"),
                  ("RoIAlign 14x14\nmask head: 28x28 mask", "#c44e52")]
        fig, ax = plt.subplots(figsize=(10, 1.8))
        ax.axis("off")
        for i, (text, color) in enumerate(stages):
            ax.add_patch(plt.Rectangle((i * 1.3, 0), 1.1, 0.8, color=color, alpha=0.85))
            ax.text(i * 1.3 + 0.55, 0.4, text, ha="center", va="center", color="white", fontsize=7)
            if i:
                ax.annotate("", xy=(i * 1.3, 0.4), xytext=(i * 1.3 - 0.2, 0.4), arrowprops={"arrowstyle": "->"})
        ax.set_xlim(-0.1, len(stages) * 1.3)
        ax.set_ylim(-0.1, 1.0)
        ax.set_title(f"{spec['name']}: two-stage instance segmentation, images resized to shorter side "
                     f"{args.get('min_size', 256)} (at most {args.get('max_size', 1024)})", fontsize=9)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)

    def loss(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        terms = next((list(m["train_losses"]) for m in reversed(curve) if "train_losses" in m), [])
        return "Mask R-CNN multi-task loss: " + (" + ".join(terms) or "RPN, box and mask terms")

    def geometric_augmentations(self, spec: dict[str, Any], a: dict[str, Any]) -> list[str]:
        size = spec["args"].get("min_size")
        return [f"scale jitter (shorter side {size})"] if isinstance(size, list) else []

    def mixing_augmentations(self, spec: dict[str, Any], a: dict[str, Any]) -> list[str]:
        return [f"copy-paste p={a['copy_paste']}"] if a.get("copy_paste") else []

    def metrics(self, test: dict[str, Any]) -> list[str]:
        if "segm" not in test:
            return []
        return ["COCO mask AP", "box AP" if "bbox" in test else "", "thing-class mIoU (painted masks)"]

    def worst_classes(self, name: str, test: dict[str, Any]) -> list[str]:
        ap, box = test["segm"]["per_class"], test.get("bbox", {}).get("per_class", {})
        return [f"### {name} (mask AP per class)", "",
                table(["class", "mask AP", "box AP", "IoU (painted)"],
                      [[n, num(ap.get(n)), num(box.get(n)), num(test["thing_iou"].get(n))]
                       for n in test["worst_classes"]]), ""]
