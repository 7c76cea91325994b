"""The detection task's report sections: the DETR variant's diagram (backbone, transformer encoder, decoder
queries, class and box heads), its set-prediction loss, the augmentations, and its worst classes by box AP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluate.diagrams import stages_png
from evaluate.tables import num, standard_augmentations, table
from tasks.instance.report import InstanceReport

VARIANT_NAMES = {"conditional_detr": "Conditional DETR", "detr": "DETR", "deformable_detr": "Deformable DETR"}


class DetectionReport(InstanceReport):
    """The instance report's loss terms; DETR's own diagram, loss, augmentations and per-class figure."""

    def architecture_png(self, spec: dict[str, Any], hw: tuple[int, int], path: Path) -> None:
        a = spec["args"]
        name = VARIANT_NAMES.get(spec["name"], spec["name"])
        attention = "deformable attention\nover 3 scales" if spec["name"] == "deformable_detr" else "self-attention"
        stages = [(f"{a.get('backbone', 'resnet18')}\n({a.get('norm', 'group')} norm)", "#4c72b0"),
                  (f"encoder x{a.get('encoder_layers', 3)}\n{attention}", "#55a868"),
                  (f"decoder x{a.get('decoder_layers', 3)}\n{a.get('num_queries', 100)} object queries", "#55a868"),
                  ("class head\n+ no object" if spec["name"] == "detr" else "class head\n(sigmoid)", "#dd8452"),
                  ("box head\ncx, cy, w, h", "#c44e52")]
        targets = "things and stuff regions" if a.get("stuff", True) else "things"
        stages_png(stages, f"{name}: set prediction of boxes ({targets}), d_model {a.get('d_model', 128)}, images "
                           f"resized to shorter side {a.get('min_size', 256)} (at most {a.get('max_size', 1024)})",
                   path)

    def loss(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        terms = next((list(m["train_losses"]) for m in reversed(curve) if "train_losses" in m), [])
        return ("DETR's set-prediction loss after Hungarian matching of queries to boxes: "
                + (" + ".join(terms) or "class, L1 box and GIoU terms"))

    def augmentations(self, spec: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
        size = spec["args"].get("min_size")
        return standard_augmentations(cfg["augment"],
                                      [f"scale jitter (shorter side {size})"] if isinstance(size, list) else [], [])

    def encoder(self, spec: dict[str, Any], info: dict[str, Any]) -> str:
        return str(spec["args"].get("backbone") or "resnet18")

    def per_class(self, test: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
        return "box AP", dict((test.get("bbox") or {}).get("per_class") or {})

    def metrics(self, test: dict[str, Any]) -> list[str]:
        return ["COCO box AP (things and stuff regions)"] if "bbox" in test else []

    def worst_classes(self, name: str, test: dict[str, Any]) -> list[str]:
        ap = test["bbox"]["per_class"]
        boxes = (test.get("targets") or {}).get("boxes") or {}
        return [f"### {name} (box AP per class)", "",
                table(["class", "box AP", "target boxes"], [[n, num(ap.get(n)), str(boxes.get(n, 0))]
                                                            for n in test["worst_classes"]]), ""]
