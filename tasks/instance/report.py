"""The instance task's report sections: the model's diagram (Mask R-CNN's two stages or YOLO-seg's one), its loss
and augmentations (SegLoop's pipeline, or Ultralytics' for a YOLO run), and its worst classes by mask AP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluate.diagrams import ensemble_png, stages_png
from evaluate.tables import num, standard_augmentations, table
from tasks.instance.names import is_yolo


class InstanceReport:
    def architecture_png(self, spec: dict[str, Any], hw: tuple[int, int], path: Path) -> None:
        """The stages of a two-stage detector, or of a one-stage YOLO segmenter (an ensemble: its members)."""
        if spec["name"] == "ensemble":
            ensemble_png(spec, path, "boxes and masks\nfused (weighted)")
            return
        args = spec["args"]
        if is_yolo(spec["name"]):
            stages = [("backbone\nconv + C2f/C3k2 blocks", "#4c72b0"), ("neck\nPAN, strides 8 / 16 / 32", "#4c72b0"),
                      ("detect head\nbox + class per cell", "#dd8452"), ("32 prototypes\n+ coefficients", "#c44e52"),
                      ("masks at native\nresolution", "#c44e52")]
            title = (f"{spec['name']}: one-stage instance segmentation (Ultralytics), letterboxed to "
                     f"{max(hw)} px; masks = prototypes x coefficients, cropped to each box")
        else:
            stages = [(f"{args.get('backbone', 'resnet50')}\n({args.get('norm', 'group')} norm)", "#4c72b0"),
                      ("FPN\nmulti-scale features", "#4c72b0"),
                      ("RPN\nanchors " + str(list(args.get("anchor_sizes", [32, 64, 128, 256, 512]))), "#55a868"),
                      ("RoIAlign 7x7\nbox head: class + box", "#dd8452"),
                      ("RoIAlign 14x14\nmask head: 28x28 mask", "#c44e52")]
            title = (f"{spec['name']}: two-stage instance segmentation, images resized to shorter side "
                     f"{args.get('min_size', 256)} (at most {args.get('max_size', 1024)})")
        stages_png(stages, title, path)

    def loss(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        terms = next((list(m["train_losses"]) for m in reversed(curve) if "train_losses" in m), [])
        if is_yolo(cfg["model"]["name"]):
            return "Ultralytics' YOLO-seg loss: " + (" + ".join(terms) or "box, mask, class and DFL terms")
        return "Mask R-CNN multi-task loss: " + (" + ".join(terms) or "RPN, box and mask terms")

    def augmentations(self, spec: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
        a = cfg["augment"]
        if not is_yolo(spec["name"]):
            size = spec["args"].get("min_size")
            return standard_augmentations(a, [f"scale jitter (shorter side {size})"] if isinstance(size, list) else [],
                                          [f"copy-paste p={a['copy_paste']}"] if a.get("copy_paste") else [])
        # Ultralytics' pipeline, with the values SegLoop's keys mapped to (tasks.instance.yolo.ultralytics_args)
        from tasks.instance.yolo import ultralytics_keys

        u = {**ultralytics_keys(), **(cfg.get("ultralytics") or {})}
        lo, hi = a["scale"]
        color = a["color"] > 0
        out = [f"mosaic of 4 images p={u['mosaic']} (off for the last {u['close_mosaic']} epochs)"
               ] if u["mosaic"] else []
        out.append(f"random affine: scale +-{max(1 - lo, hi - 1):g}, translate +-{u['translate']}"
                   + (f", rotation +-{u['degrees']} deg" if u["degrees"] else ""))
        if a.get("hflip"):
            out.append(f"horizontal flip p={a['hflip']}")
        if color:
            out.append(f"HSV gains on every image (hue {a['hue']}, saturation {a['saturation']}, value "
                       f"{a['brightness']})")
        out += [f"copy-paste p={a['copy_paste']}"] if a.get("copy_paste") else []
        out += [f"mixup p={u['mixup']}"] if u["mixup"] else []
        return out

    def encoder(self, spec: dict[str, Any], info: dict[str, Any]) -> str:
        """Mask R-CNN's backbone, or the YOLO family's own (an ensemble: its members')."""
        if spec["name"] == "ensemble":
            return " + ".join(self.encoder(m, {}) for m in spec["args"]["members"])
        if is_yolo(spec["name"]):
            return f"{spec['name'].split('-')[0]} backbone"
        return str(spec["args"].get("backbone") or "resnet50") + "-FPN"

    def loss_terms(self, cfg: dict[str, Any], curve: list[dict[str, Any]]) -> str:
        """The named losses the run logged (its trainer's own terms)."""
        terms = next((list(m["train_losses"]) for m in reversed(curve) if "train_losses" in m), [])
        return " + ".join(terms) or "-"

    def per_class(self, test: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
        """The per-class figure of a test evaluation: mask AP."""
        return "mask AP", dict((test.get("segm") or {}).get("per_class") or {})

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
