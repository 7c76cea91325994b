"""An ensemble of k fold models against its members on the demo city's test split: the mIoU gain of averaging their
probabilities, and the inference cost per image against the members' own (target: at most the sum of the members'
times x 1.1), all measured in this run by ``evaluate run`` on one machine.

  python bench/ensemble.py [--folds 3] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import _common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, default=3, help="folds, one member each")
    p.add_argument("--epochs", type=int, default=8, help="epochs per member (the demo recipe trains 25)")
    args = p.parse_args()
    from evaluate.ensemble import build_ensemble
    from ingest.version import build, load_data_config
    from train.config import load_train_config
    from train.folds import train_folds

    work = Path(tempfile.mkdtemp(prefix="segloop-bench-ensemble-"))
    # the demo city of make demo (data/demo_city, generated on first use), folded
    dcfg = load_data_config(_common.ROOT / "configs" / "data" / "demo-folds.yaml",
                            [f"output={work / 'versions'}", f"folds={args.folds}"])
    version = build(dcfg, progress=False)
    cfg = load_train_config(_common.ROOT / "configs" / "experiments" / "demo.yaml",
                            [f"data.version={version.path}", "data.fold=all", f"train.epochs={args.epochs}",
                             f"output.runs_dir={work / 'runs'}", "output.name=cv"])
    results = train_folds(cfg, progress=False)
    members = [r.run_dir for r in results]
    table = build_ensemble(members, work / "runs" / "ens", "test", progress=False)
    ens = table["ensemble"]
    each = [r["figures"] for r in table["runs"]]
    mean_member = sum(f["mIoU"] for f in each) / len(each)
    best_member = max(f["mIoU"] for f in each)
    cost = ens["ms_per_image"] / sum(f["ms_per_image"] for f in each)
    print(f"ensemble of {args.folds} fold models ({args.epochs} epochs each), demo city test split:")
    for i, f in enumerate(each):
        print(f"  fold {i}: mIoU {f['mIoU']:.4f}   {f['ms_per_image']:.1f} ms/image")
    print(f"  ensemble: mIoU {ens['mIoU']:.4f}   {ens['ms_per_image']:.1f} ms/image")
    print(f"  gain over the mean member {ens['mIoU'] - mean_member:+.4f}, "
          f"over the best {ens['mIoU'] - best_member:+.4f}")
    print(f"  inference cost / sum of the members' {cost:.2f} (target <= 1.10)")
    print(f"  worst-10 overlap (mean pairwise Jaccard): {table['worst_overlap']['mean_pairwise_jaccard']:.2f}")
    (work / "ensemble_bench.json").write_text(json.dumps(table, indent=2))
    shutil.rmtree(work / "versions", ignore_errors=True)
    print(f"  details: {work / 'ensemble_bench.json'}")


if __name__ == "__main__":
    main()
