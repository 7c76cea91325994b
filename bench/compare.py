"""``evaluate compare`` over many runs: the whole command (a fresh interpreter, as a user types it) against reading
the same files with nothing else (json and yaml), on N copies of one tiny evaluated demo run. Target: 50 runs in
under 5 s; it loads no model, so torch is never imported.

  python bench/compare.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50, help="run folders compared")
    args = p.parse_args()
    from evaluate.runner import evaluate_run
    from ingest.version import DatasetVersion, build, load_data_config
    from train.config import load_train_config
    from train.engine import train

    work = Path(tempfile.mkdtemp(prefix="segloop-bench-compare-"))
    city = _common.demo_city(24, work)
    dcfg = load_data_config(_common.ROOT / "configs" / "data" / "demo.yaml",
                            [f"sources=[{{type: cityscapes, name: demo_city, root: '{city}'}}]",
                             f"output={work / 'versions'}"])
    ds = DatasetVersion(build(dcfg, progress=False).path)
    res = train(load_train_config(None, [f"data.version={ds.path}", "data.image_size=[64,128]",
                                         "model.args={width: 8, depth: 2}", "train.epochs=2",
                                         f"output.runs_dir={work / 'runs'}", "output.name=r000"]), progress=False)
    evaluate_run(res.run_dir, "test", progress=False)
    runs = [res.run_dir] + [work / "runs" / f"r{i:03d}" for i in range(1, args.runs)]
    for r in runs[1:]:
        shutil.copytree(res.run_dir, r, ignore=shutil.ignore_patterns("checkpoints", "tb"))

    def files_only() -> None:
        import yaml

        for r in runs:
            json.loads((r / "run.json").read_text())
            yaml.safe_load((r / "config.yaml").read_text())
            [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
            json.loads((r / "eval" / "test" / "metrics.json").read_text())

    reference = _common.best_of(files_only)
    cmd = [sys.executable, "-m", "evaluate", "compare", *map(str, runs), "--out", str(work / "cmp")]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=_common.ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    ours = min(times)
    probe = subprocess.run([sys.executable, "-c", "import sys, evaluate.compare as c; "
                            "c.compare_runs(sys.argv[1:]); print('torch' in sys.modules)", *map(str, runs)],
                           cwd=_common.ROOT, check=True, capture_output=True, text=True).stdout.strip()
    print(f"compare: {args.runs} runs")
    print(f"  python -m evaluate compare --out (whole command): {ours:.2f} s  (target 5 s: {ours / 5:.2f} of it)")
    print(f"  reading the same files alone:                     {reference:.3f} s  (command / files "
          f"{ours / reference:.0f}x: interpreter start, imports, tables, curves)")
    print(f"  torch imported: {probe}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
