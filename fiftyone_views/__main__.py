"""``python -m fiftyone_views``: look at a run's mistakes.

  triptychs RUN [--split test] [--n 100] [--seed 0] [--worst]   image | ground truth | prediction panels + index.html

Coming with the rest of the triage issue: ``load`` (FiftyOne dataset with per-sample scores), saved views,
``relabel`` (hand the worst images to the labeling loop) and ``app``.
"""

from __future__ import annotations

import argparse
import sys

from core.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fiftyone_views", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("triptychs", help="image | ground truth | prediction panels with an index.html")
    t.add_argument("run", help="run folder (after python -m evaluate run RUN --split SPLIT)")
    t.add_argument("--split", default="test")
    t.add_argument("--n", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--worst", action="store_true", help="the N lowest-mIoU images instead of a random sample")
    t.add_argument("--out", default=None, help="output folder (default runs/<run>/triptychs/<split>-<kind>)")
    args = p.parse_args(argv)
    from fiftyone_views.triptychs import make_triptychs

    dest, picked, note = make_triptychs(args.run, args.split, args.n, args.seed, args.worst, args.out)
    if note:
        print(f"note: {note}")
    print(f"{len(picked)} triptychs and index.html written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
