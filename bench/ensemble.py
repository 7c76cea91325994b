"""An ensemble of k fold models against its members and against one model trained on all of train, on the demo
city's test split or on CamVid val: the mIoU gain of averaging their probabilities, and the inference cost per image
against the members' own (target: at most the sum of the members' times x 1.1), all measured in this run by
``evaluate run`` on one machine.

  python bench/ensemble.py [--folds 3] [--epochs 8]                       the demo city (demo recipe)
  python bench/ensemble.py --camvid [DIR] [--folds 3] [--minutes 5]      CamVid val (configs/experiments/camvid.yaml)

On CamVid every member and the reference train for the same ``--minutes`` (the recipe follows the clock), so the
reference is the single model one member's budget buys; the ensemble costs the k members' budgets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import _common

CAMVID = _common.ROOT.parent / "shared" / "data" / "camvid"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, default=3, help="folds, one member each")
    p.add_argument("--epochs", type=int, default=8, help="demo city: epochs per model (the demo recipe trains 25)")
    p.add_argument("--camvid", nargs="?", const=os.environ.get("SEGLOOP_CAMVID", str(CAMVID)), default=None,
                   help="CamVid instead of the demo city: its folder (default ../shared/data/camvid, SEGLOOP_CAMVID)")
    p.add_argument("--minutes", type=float, default=5, help="CamVid: training minutes per model")
    args = p.parse_args()
    from evaluate.ensemble import build_ensemble
    from ingest.version import build, load_data_config
    from train.config import load_train_config
    from train.engine import train
    from train.folds import train_folds

    work = Path(tempfile.mkdtemp(prefix="segloop-bench-ensemble-"))
    if args.camvid:
        if not (Path(args.camvid) / "train").is_dir():
            print(f"ensemble: skipped, CamVid not found at {args.camvid} (give --camvid DIR or SEGLOOP_CAMVID)")
            sys.exit(0)
        dcfg = load_data_config(_common.ROOT / "configs" / "data" / "camvid.yaml",
                                [f"output={work / 'versions'}", f"folds={args.folds}"])
        dcfg["sources"][0]["root"] = str(args.camvid)
        recipe, budget, split = "camvid.yaml", [f"train.time_limit={args.minutes}"], "val"
        what = f"CamVid val, {args.minutes:g} training minutes per model"
    else:  # the demo city of make demo (data/demo_city, generated on first use), folded
        dcfg = load_data_config(_common.ROOT / "configs" / "data" / "demo-folds.yaml",
                                [f"output={work / 'versions'}", f"folds={args.folds}"])
        recipe, budget, split = "demo.yaml", [f"train.epochs={args.epochs}"], "test"
        what = f"demo city test split, {args.epochs} epochs per model"
    version = build(dcfg, progress=False)
    common = [f"data.version={version.path}", *budget, f"output.runs_dir={work / 'runs'}"]
    cfg = load_train_config(_common.ROOT / "configs" / "experiments" / recipe,
                            [*common, "data.fold=all", "output.name=cv"])
    members = [r.run_dir for r in train_folds(cfg, progress=False)]
    whole = train(load_train_config(_common.ROOT / "configs" / "experiments" / recipe,
                                    [*common, "output.name=all-train"]), progress=False).run_dir
    table = build_ensemble(members, work / "runs" / "ens", split, reference=whole, progress=False)
    ens = table["ensemble"]
    each = [r["figures"] for r in table["runs"] if r["role"] == "member"]
    ref = next(r["figures"] for r in table["runs"] if r["role"] == "reference")
    mean_member = sum(f["mIoU"] for f in each) / len(each)
    best_member = max(f["mIoU"] for f in each)
    cost = ens["ms_per_image"] / sum(f["ms_per_image"] for f in each)
    print(f"ensemble of {args.folds} fold models, {what}:")
    for i, f in enumerate(each):
        print(f"  fold {i}: mIoU {f['mIoU']:.4f}   {f['ms_per_image']:.1f} ms/image")
    print(f"  one model on all of train: mIoU {ref['mIoU']:.4f}   {ref['ms_per_image']:.1f} ms/image")
    print(f"  ensemble: mIoU {ens['mIoU']:.4f}   {ens['ms_per_image']:.1f} ms/image")
    print(f"  gain over the mean member {ens['mIoU'] - mean_member:+.4f}, over the best "
          f"{ens['mIoU'] - best_member:+.4f}, over the all-train model {ens['mIoU'] - ref['mIoU']:+.4f}")
    print(f"  inference cost / sum of the members' {cost:.2f} (target <= 1.10)")
    print(f"  worst-10 overlap (mean pairwise Jaccard): {table['worst_overlap']['mean_pairwise_jaccard']:.2f}")
    (work / "ensemble_bench.json").write_text(json.dumps(table, indent=2))
    shutil.rmtree(work / "versions", ignore_errors=True)
    print(f"  details: {work / 'ensemble_bench.json'}")


if __name__ == "__main__":
    main()
