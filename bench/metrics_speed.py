"""Pixel-level evaluation: SegLoop vs cityscapesScripts' evalPixelLevelSemanticLabeling on the same predictions.

Predictions are the demo test labels with 20 % of pixels replaced by random classes, written as labelIds PNGs.
Both sides start from the same files: cityscapesScripts with its own evaluateImgLists (iIoU off: SegLoop does
not compute it), SegLoop by decoding the same PNGs and feeding ``SemSegEvaluator`` (one confusion matrix, per-image
scores included). Also printed: the scoring alone, from arrays already in memory, which is what ``evaluate run``
does after inference. The IoUs must agree to 1e-12.

  python bench/metrics_speed.py [--n 200]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
from pathlib import Path

import _common
import cv2
import numpy as np
from PIL import Image

from core.metrics import confusion
from ingest.taxonomy import load_taxonomy
from metrics.semantic import SemSegEvaluator

_LUT = np.full(256, 255, np.uint8)  # labelId -> trainId, set in main before the worker processes fork


def one_pair(pair: tuple[Path, Path]) -> np.ndarray:
    """Decode one prediction / ground-truth pair of labelIds PNGs and return its confusion matrix."""
    pred = _LUT[cv2.imread(str(pair[0]), cv2.IMREAD_UNCHANGED)]
    gt = _LUT[cv2.imread(str(pair[1]), cv2.IMREAD_UNCHANGED)]
    return confusion(pred, gt, 19)


def main() -> None:
    args = _common.frames_args(__doc__)
    _common.cityscapes_reference()
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ref

    city = _common.demo_city(args.n, _common.ROOT / ".cache" / "bench")
    gts = sorted(city.glob("gtFine/*/*/*_gtFine_labelIds.png"))[: args.n]
    tax = load_taxonomy("cityscapes")
    id_to_train = np.full(256, 255, np.uint8)
    train_to_id = np.zeros(256, np.uint8)
    for lb in tax.labels:
        if lb.id >= 0:
            id_to_train[lb.id] = lb.trainId if 0 <= lb.trainId < 255 else 255
            if 0 <= lb.trainId < 255:
                train_to_id[lb.trainId] = lb.id
    work = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    preds = []
    for i, g in enumerate(gts):
        gt = id_to_train[np.asarray(Image.open(g))]
        pred = np.where(gt == 255, rng.integers(0, 19, gt.shape), gt)
        pred = np.where(rng.random(gt.shape) < 0.2, rng.integers(0, 19, gt.shape), pred).astype(np.uint8)
        path = work / f"{i}_pred.png"
        Image.fromarray(train_to_id[pred]).save(path)
        preds.append(path)

    rargs = ref.args
    rargs.quiet, rargs.JSONOutput, rargs.evalInstLevelScore = True, False, False
    result: dict = {}

    def reference() -> None:
        result["ref"] = ref.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts], rargs)

    _LUT[:] = id_to_train

    def segloop_files(workers: int = 1) -> None:
        ev = SemSegEvaluator(tax.names)
        pairs = list(zip(preds, gts, strict=True))
        if workers > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                mats = pool.map(one_pair, pairs, chunksize=16)
        else:
            mats = [one_pair(p) for p in pairs]
        for mat, (pr, _) in zip(mats, pairs, strict=True):
            ev.process_matrix(mat, {"file": pr.name})
        result["ours"] = ev.evaluate()

    arrays = [(id_to_train[np.asarray(Image.open(pr))], id_to_train[np.asarray(Image.open(g))])
              for pr, g in zip(preds, gts, strict=True)]

    def segloop_memory() -> None:
        ev = SemSegEvaluator(tax.names)
        for pred, gt in arrays:
            ev.process(pred, gt, {})
        result["mem"] = ev.evaluate()

    t_ref = _common.best_of(reference, args.repeat)
    t_files = _common.best_of(segloop_files, args.repeat)
    cores = os.cpu_count() or 1
    t_par = _common.best_of(lambda: segloop_files(cores), args.repeat)
    t_mem = _common.best_of(segloop_memory, args.repeat)
    worst = 0.0
    for name in tax.names:
        theirs, mine = result["ref"]["classScores"][name], result["ours"]["per_class"][name]["iou"]
        assert (mine is None) == bool(np.isnan(theirs)), name
        if mine is not None:
            worst = max(worst, abs(mine - theirs))
    assert worst < 1e-12 and abs(result["ours"]["mIoU"] - result["ref"]["averageScoreClasses"]) < 1e-12
    n = len(gts)
    w, h = Image.open(gts[0]).size
    print(f"metrics_speed: {n} prediction/ground-truth pairs {w}x{h}; mIoU {result['ours']['mIoU']:.6f} both, "
          f"largest per-class IoU difference {worst:.1e}")
    print(f"  cityscapesScripts, from files   {n / t_ref:9.1f} images/s")
    print(f"  SegLoop, from files             {n / t_files:9.1f} images/s   speed-up {t_ref / t_files:.1f}x")
    print(f"  SegLoop, from files, {cores} procs  {n / t_par:9.1f} images/s   speed-up {t_ref / t_par:.1f}x")
    print(f"  SegLoop, scoring arrays only    {n / t_mem:9.1f} images/s   speed-up {t_ref / t_mem:.1f}x "
          f"(target >= 20x)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
