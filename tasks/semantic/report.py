"""The semantic task's report sections: the encoder-decoder diagram, what its loss and augmentations were, and
its worst classes by IoU and Dice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evaluate.diagrams import ensemble_png
from evaluate.tables import standard_augmentations, table


class SemanticReport:
    def architecture_png(self, spec: dict[str, Any], hw: tuple[int, int], path: Path) -> None:
        """Block diagram: the encoder's levels (channels, resolution), the decoder's, the skips and the head, read
        from the model itself (built from the run's spec, without weights)."""
        from train.checkpoint import build_from_spec
        from train.models.heads import decoding_of

        if spec["name"] == "ensemble":
            ensemble_png(spec, path, "mean of the class\nprobabilities")
            return
        model = build_from_spec(spec, 2 if spec["args"].get("head") == "sigmoid" else 3)
        enc = model.encoder
        chs, strides = enc.channels, enc.strides
        depth = len(chs) - 1
        join = "add" if spec["name"] == "linknet" else "concat"
        fig, ax = plt.subplots(figsize=(10, 3.6))
        ax.axis("off")
        for i in range(depth + 1):
            h, w = hw[0] // strides[i], hw[1] // strides[i]
            y = depth - i
            ax.add_patch(plt.Rectangle((i * 1.1, y), 1.0, 0.7, color="#4c72b0", alpha=0.85))
            ax.text(i * 1.1 + 0.5, y + 0.35, f"enc {i}\n{chs[i]} ch\n{h}x{w}", ha="center", va="center",
                    color="white", fontsize=7)
            if i < depth:
                x = (2 * depth - i) * 1.1
                ax.add_patch(plt.Rectangle((x, y), 1.0, 0.7, color="#dd8452", alpha=0.85))
                ax.text(x + 0.5, y + 0.35, f"dec {i}\n{chs[i]} ch", ha="center", va="center", color="white",
                        fontsize=7)
                ax.annotate("", xy=(x, y + 0.35), xytext=(i * 1.1 + 1.0, y + 0.35),
                            arrowprops={"arrowstyle": "->", "color": "grey", "ls": "--"})
                ax.text((i * 1.1 + 1.0 + x) / 2, y + 0.45, f"skip ({join})", ha="center", fontsize=6, color="grey")
        ax.set_xlim(-0.2, (2 * depth + 1) * 1.1)
        ax.set_ylim(-0.3, depth + 1)
        encoder = spec["args"].get("encoder", type(enc).__name__.removesuffix("Encoder").lower())
        ax.set_title(f"{spec['name']} on {encoder}: {depth} levels down to 1/{strides[-1]}; head: "
                     f"{decoding_of(model).describe()}", fontsize=9)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)

    def loss(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        from train.losses import describe, uses_class_weights

        lc = cfg["loss"]
        weights = lc.get("class_weights") if uses_class_weights(lc["name"]) else None
        return " + ".join(describe(lc)) + (f"; class weights {weights}" if weights is not None else "")

    def augmentations(self, spec: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
        a = cfg["augment"]
        scale = [f"scale {a['scale'][0]}-{a['scale'][1]} then crop"] if list(a.get("scale", [1, 1])) != [1, 1] else []
        extra = [", ".join(f"{k}={v}" for k, v in t.items() if k != "name").join((f"{t['name']}(", ")"))
                 for t in a.get("transforms") or []]
        cb = a.get("copy_blob") or {"p": 0}  # absent from the configs of runs trained before CopyBlob
        if cb["p"] > 0:
            extra.append(f"CopyBlob of {', '.join(cb['classes'])} (p {cb['p']}, up to {cb['max_blobs']} blobs, "
                         f"band {cb['band']})")
        return standard_augmentations(a, scale, extra)

    def metrics(self, test: dict[str, Any]) -> list[str]:
        return ["mIoU", "pixel accuracy", "mean Dice", "per-class IoU and Dice"] if "mIoU" in test else []

    def encoder(self, spec: dict[str, Any], info: dict[str, Any]) -> str:
        """The encoder as run.json recorded it (the model's own for architectures with a fixed one)."""
        return str(info.get("encoder") or spec["args"].get("encoder") or "-")

    def loss_terms(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        """The loss terms with their weights, from the config alone (``0.5 x dice``)."""
        from train.config import LOSS_ALIASES

        lc = cfg["loss"]
        name = "cross_entropy+dice" if lc["name"] in LOSS_ALIASES else lc["name"]
        args = lc.get("args") or {}
        terms = [t.strip() for t in name.split("+")]
        return " + ".join(f"{(args.get(t) or {}).get('weight', 1.0):g} x {t}" if len(terms) > 1 else t
                          for t in terms)

    def per_class(self, test: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
        """The per-class figure of a test evaluation: IoU."""
        return "IoU", {n: v.get("iou") for n, v in (test.get("per_class") or {}).items()}

    def worst_classes(self, name: str, test: dict[str, Any]) -> list[str]:
        pc = test["per_class"]
        return [f"### {name}", "", table(["class", "IoU", "Dice", "ground-truth pixels"],
                                         [[n, f"{pc[n]['iou']:.4f}", f"{pc[n]['dice']:.4f}", pc[n]["gt_pixels"]]
                                          for n in test["worst_classes"]]), ""]
