"""``python -m evaluate``: score trained runs.

  python -m evaluate run RUN [--split test] [--checkpoint best|last] [--tta]
  python -m evaluate predict RUN --images DIR|LIST.txt [--name NAME]
  python -m evaluate report RUN [RUN ...] --out reports/NAME [--pdf]
  python -m evaluate app [RUN ...] [--port N]
"""

from __future__ import annotations

import argparse
import sys

from core.cli import port_number, positive_int
from core.errors import run_cli
from evaluate.predict import predict_images
from evaluate.runner import evaluate_run, print_summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="evaluate a run on a split: metrics, per-image scores, predictions, timing")
    r.add_argument("run", help="run folder, a name under runs/, or 'last'")
    r.add_argument("--split", default="test", help="train, val or test (default test)")
    r.add_argument("--checkpoint", default="best", choices=["best", "last"])
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    r.add_argument("--version", help="evaluate on another dataset version (same taxonomy)")
    r.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    r.add_argument("--no-uncertainty", action="store_true", help="skip the entropy maps")
    r.add_argument("--replace", action="store_true",
                   help="replace an evaluation of this split on another dataset version (refused without it)")
    pr = sub.add_parser("predict", help="predict unlabelled images (folder or .txt list) for the labeling loop")
    pr.add_argument("run", help="run folder, a name under runs/, or 'last'")
    pr.add_argument("--images", required=True, help="folder of images, or a .txt file listing them")
    pr.add_argument("--name", help="output name under runs/<run>/predict/ (default: the folder's name)")
    pr.add_argument("--checkpoint", default="best", choices=["best", "last"])
    pr.add_argument("--device", default="auto")
    ap = sub.add_parser("app", help="try models in the browser: Streamlit demo on 127.0.0.1 (Ctrl-C stops it)")
    ap.add_argument("runs", nargs="*", help="run folders or names to offer (default: every run under --runs-dir)")
    ap.add_argument("--port", type=port_number, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--runs-dir", default="runs", help="where runs are listed from (default runs/)")
    ap.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    rp = sub.add_parser("report", help="Markdown + HTML report of one or more runs (after evaluate run)")
    rp.add_argument("runs", nargs="+", help="run folders")
    rp.add_argument("--out", required=True, help="output folder, e.g. reports/demo")
    rp.add_argument("--gallery", type=positive_int, default=6, help="test triptychs shown (>= 1)")
    rp.add_argument("--pdf", action="store_true", help="also report.pdf, printed by headless Chromium")
    args = p.parse_args(argv)
    if args.cmd == "app":
        from evaluate.app_server import serve

        return serve(args.runs, args.port, args.runs_dir, args.checkpoint, args.device)
    if args.cmd == "report":
        from evaluate.report import build_report

        out = build_report(args.runs, args.out, args.gallery, pdf=args.pdf)
        print(f"report written: {out / 'report.md'} and {out / 'report.html'}"
              + (f" and {out / 'report.pdf'}" if args.pdf else ""))
        return 0
    if args.cmd == "predict":
        out = predict_images(args.run, args.images, args.name, args.checkpoint, args.device)
        print(f"predictions written to {out}")
        return 0
    result = evaluate_run(args.run, args.split, args.checkpoint, args.device, args.version, args.tta,
                          not args.no_uncertainty, replace=args.replace)
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
