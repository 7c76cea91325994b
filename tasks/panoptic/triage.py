"""What triage (triptychs, FiftyOne) shows of a panoptic run's evaluated split: the panoptic map's classes, each
image's PQ, the ground truth's instances and the model's things outlined, and the things (with their scores) as
FiftyOne's predicted instances."""

from __future__ import annotations

from typing import Any

from tasks.instance.triage import InstanceTriage


class PanopticTriage(InstanceTriage):
    things_only = False  # the panoptic map gives every pixel a class (or void)
    instance_source = "instances.json (the panoptic things)"

    @property
    def score_threshold(self) -> float | None:
        return None  # the model's own segment_score already cut the segments

    def title(self, row: dict[str, Any], score: float) -> str:
        return f"{row['key']}   PQ {score:.3f}   segments {row['segments']}"

    def summary(self) -> str:
        m = self.res.metrics
        pq, miou = (m.get(k) for k in ("PQ", "mIoU"))
        return (f"Things outlined in white. Split PQ {'-' if pq is None else f'{pq:.4f}'}, mIoU "
                f"{'-' if miou is None else f'{miou:.4f}'}")

    def headline(self) -> dict[str, Any]:
        m = self.res.metrics
        return {"split_mIoU": m.get("mIoU"), "split_mask_AP": (m.get("segm") or {}).get("AP"), "split_PQ": m.get("PQ")}
