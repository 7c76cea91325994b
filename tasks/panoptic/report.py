"""The panoptic task's report sections: DETR's panoptic diagram (the detector, then the mask head on its decoder
outputs and encoder memory), its loss (DETR's terms with the mask's focal and Dice terms), and its worst classes by
PQ beside their mask AP and IoU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluate.diagrams import stages_png
from evaluate.tables import num, table
from tasks.detection.report import VARIANT_NAMES, DetectionReport


class PanopticReport(DetectionReport):
    def architecture_png(self, spec: dict[str, Any], hw: tuple[int, int], path: Path) -> None:
        a = spec["args"]
        frozen = " (frozen)" if a.get("freeze_detector") else ""
        stages = [(f"{a.get('backbone', 'resnet18')}\n({a.get('norm', 'group')} norm){frozen}", "#4c72b0"),
                  (f"transformer\n{a.get('encoder_layers', 3)} + {a.get('decoder_layers', 3)} layers{frozen}",
                   "#55a868"),
                  (f"{a.get('num_queries', 100)} queries:\nclass + box", "#dd8452"),
                  ("attention maps over\nencoder memory", "#c44e52"),
                  ("mask head (FPN)\n1/4-resolution masks", "#c44e52"),
                  ("panoptic map\nthings ids, stuff classes", "#8172b2")]
        stages_png(stages, f"{VARIANT_NAMES.get(spec['name'], spec['name'])} panoptic: a mask per query on the "
                           f"detector, pixels to the best query (score >= {a.get('segment_score', 0.5)})", path)

    def loss(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        terms = next((list(m["train_losses"]) for m in reversed(curve) if "train_losses" in m), [])
        return ("DETR's set-prediction loss with the mask head's focal (mask) and Dice terms on the matched queries: "
                + (" + ".join(terms) or "class, L1, GIoU, mask and Dice terms"))

    def per_class(self, test: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
        return "PQ", {n: (v or {}).get("PQ") for n, v in (test.get("per_class_pq") or {}).items()}

    def metrics(self, test: dict[str, Any]) -> list[str]:
        return ["PQ / SQ / RQ (panopticapi)", "COCO mask and box AP of the things", "mIoU of the class map"] \
            if "PQ" in test else []

    def worst_classes(self, name: str, test: dict[str, Any]) -> list[str]:
        pc, ap = test["per_class_pq"], (test.get("segm") or {}).get("per_class", {})
        iou = test.get("class_iou") or {}
        return [f"### {name} (PQ per class)", "",
                table(["class", "PQ", "SQ", "RQ", "mask AP", "IoU"],
                      [[n, num((pc[n] or {}).get("PQ")), num((pc[n] or {}).get("SQ")), num((pc[n] or {}).get("RQ")),
                        num(ap.get(n)), num(iou.get(n))] for n in test["worst_classes"]]), ""]
