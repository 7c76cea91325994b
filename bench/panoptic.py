"""Panoptic Quality: SegLoop's PQ against cityscapesScripts' ``evalPanopticSemanticLabeling`` on the same segments.

The demo version's test split is the ground truth (its labels, and its instances with crowds as their class's crowd
region); the prediction is each image's ground truth perturbed as a model errs (a fifth of the instances dropped,
the others shifted by a few pixels, class noise in blocks). Both are written once as the panopticapi files
``evaluate panoptic`` and ``evaluate run`` write (``evaluate.panoptic.PanopticFiles``). Then, timed: SegLoop's
``metrics.panoptic.PanopticEvaluator`` on the maps (what those commands run) and cityscapesScripts'
``pq_compute_single_core`` + ``average_pq`` on the files. The figures must be equal; target: SegLoop >= 2x faster.

  python bench/panoptic.py [--repeat 3] [--copies 4]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import _common
import numpy as np

from evaluate.panoptic import PanopticFiles, ground_truth_instances
from ingest.coco import by_image
from ingest.version import DatasetVersion, build, load_data_config
from metrics.panoptic import PanopticEvaluator


def perturbed(rng: np.random.Generator, sem: np.ndarray, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A prediction as a model makes one: instances dropped or shifted, blocks of the class map wrong."""
    p_sem, p_inst = sem.copy(), np.zeros_like(inst)
    for k in np.unique(inst[inst > 0]):
        if rng.random() < 0.2:
            continue
        dy, dx = rng.integers(-3, 4, 2)
        m = np.roll(inst == k, (int(dy), int(dx)), (0, 1))
        p_inst[m] = k
    h, w = sem.shape
    for _ in range(6):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
        p_sem[y:y + 16, x:x + 16] = rng.integers(0, 19)
    return p_sem, p_inst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side (the fastest counts)")
    p.add_argument("--copies", type=int, default=4, help="each test image scored this many times (more pairs)")
    args = p.parse_args()
    _common.cityscapes_reference()
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ref

    cfg = load_data_config(_common.ROOT / "configs" / "data" / "demo.yaml",
                           [f"output={_common.ROOT / 'data' / 'versions'}"])
    ds = DatasetVersion(build(cfg, progress=False).path)
    tax = ds.taxonomy
    is_thing = [c.has_instances for c in tax.classes]
    anns = by_image(ds.coco("test")["annotations"])
    rng = np.random.default_rng(0)
    maps = []
    work = Path(tempfile.mkdtemp())
    files = PanopticFiles(work, tax)
    for copy in range(args.copies):
        for im in ds.images("test"):
            label = ds.load_semantic(im)
            gt_inst = ground_truth_instances(anns.get(int(im["id"]), []), label.shape)
            p_sem, p_inst = perturbed(rng, label, gt_inst)
            key = f"{im['key']}#{copy}"
            files.add(key, f"{len(maps):05d}.png", label, gt_inst, p_sem, p_inst)
            maps.append((label, gt_inst, p_sem, p_inst))
    files.finish()
    gt, pred = (json.loads((work / f).read_text()) for f in ("ground_truth.json", "predictions.json"))
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = list(zip(gt["annotations"], pred["annotations"], strict=True))
    result: dict = {}

    def ours() -> None:
        ev = PanopticEvaluator(tax.names, is_thing, tax.ignore_index)
        for m in maps:
            ev.process(*m)
        result["ours"] = ev.evaluate()

    def theirs() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            stat = ref.pq_compute_single_core(0, pairs, str(work / "gt"), str(work / "pred"), categories)
            result["ref"] = ref.average_pq(stat, categories)

    t_ref = _common.best_of(theirs, args.repeat)
    t_ours = _common.best_of(ours, args.repeat)
    diff = max(abs(result["ours"][k.upper() + s] - result["ref"][g][k])
               for g, s in (("All", ""), ("Things", "_th"), ("Stuff", "_st")) for k in ("pq", "sq", "rq")
               if result["ref"][g]["n"])
    print(f"PQ on {len(maps)} demo test frames ({args.copies} perturbed copies of each), best of {args.repeat}:")
    print(f"  cityscapesScripts {t_ref:.3f} s   SegLoop {t_ours:.3f} s   speed-up {t_ref / t_ours:.2f}x "
          f"(target >= 2x)")
    print(f"  PQ {100 * result['ours']['PQ']:.2f} (things {100 * result['ours']['PQ_th']:.2f}, stuff "
          f"{100 * result['ours']['PQ_st']:.2f}); largest difference to cityscapesScripts {diff:.1e}")


if __name__ == "__main__":
    main()
