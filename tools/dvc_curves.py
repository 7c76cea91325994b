"""``python tools/dvc_curves.py RUN``: a run's learning curves as ``RUN/curves.json`` for ``dvc plots``.

DVC reads plots from JSON, YAML, CSV or TSV files but not from JSON Lines, which is what a run's ``metrics.jsonl``
is; this writes the same records as one JSON list holding only their scalar fields (epoch, step, lr, train_loss,
val_mIoU, ...), the per-class dictionaries left out. The DVC pipeline's train stage (dvc.yaml) runs it right after
``python -m train.run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.errors import SegLoopError, run_cli
from core.fsio import write_json_atomic
from core.runs import Run

CURVES = "curves.json"


def scalar_records(run: str | Path) -> list[dict[str, Any]]:
    """Every validation record of the run with its numeric fields only (nested per-class maps dropped)."""
    records = Run(run).read_metrics()
    return [{k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for rec in records]


def write_curves(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's curves (default ``RUN/curves.json``), atomically; a run without metrics is an error."""
    run = Path(run)
    records = scalar_records(run)
    if not records:
        raise SegLoopError("the run has no validation records in metrics.jsonl", path=run / "metrics.jsonl",
                           fix="train it first (python -m train.run), with train.eval_every <= train.epochs")
    dest = Path(out) if out else run / CURVES
    write_json_atomic(dest, records, indent=1)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/dvc_curves.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (runs/<name>)")
    p.add_argument("--out", help=f"output JSON file (default RUN/{CURVES})")
    args = p.parse_args(argv)
    dest = write_curves(args.run, args.out)
    print(f"curves written: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
