"""``python -m evaluate``: score trained runs.

  python -m evaluate run RUN [--split test] [--checkpoint best|last] [--tta]
  python -m evaluate predict RUN --images DIR|LIST.txt [--name NAME]
  python -m evaluate report RUN [RUN ...] --out reports/NAME [--pdf]
  python -m evaluate compare RUN [RUN ...] [--out reports/NAME] [--split test] [--flops]
  python -m evaluate ensemble RUN RUN [...] --out runs/NAME [--split test] [--reference RUN]
  python -m evaluate history RUN [--out PNG] [--json]
  python -m evaluate panoptic --semantic RUN --instance RUN --out DIR [--split test]
  python -m evaluate app [RUN ...] [--port N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import output_folder, port_number, positive_int
from core.errors import run_cli


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
    rp.add_argument("--out", required=True, type=output_folder, help="output folder, e.g. reports/demo")
    rp.add_argument("--gallery", type=positive_int, default=6, help="test triptychs shown (>= 1)")
    rp.add_argument("--pdf", action="store_true", help="also report.pdf, printed by headless Chromium")
    cp = sub.add_parser("compare", help="every run in one table (Markdown on the terminal; --out adds CSV, HTML, "
                                        "curves), read from the run folders")
    cp.add_argument("runs", nargs="+", help="run folders (a folder that is no run is named and left out)")
    cp.add_argument("--out", type=output_folder, help="folder for compare.md, compare.csv, compare.html and the curves")
    cp.add_argument("--split", default="test", help="the evaluated split whose figures are compared (default test)")
    cp.add_argument("--flops", action="store_true", help="also GFLOPs per forward pass (loads each model)")
    en = sub.add_parser("ensemble", help="several runs as one model (mean of probabilities), evaluated beside each")
    en.add_argument("runs", nargs="+", help="the members: run folders of one task, taxonomy and dataset version")
    en.add_argument("--out", required=True, type=output_folder, help="the ensemble's run folder, e.g. runs/folds-ens")
    en.add_argument("--split", default="test", help="the split scored (default test)")
    en.add_argument("--reference", help="a run to show beside them (a model trained on all of train)")
    en.add_argument("--worst", type=positive_int, default=10, help="worst images compared across members")
    hi = sub.add_parser("history", help="a run's training across the runs it started from (model.weights, "
                                         "model.init_from): the chain, total epochs, the loss drop, one curve")
    hi.add_argument("run", help="run folder, a name under runs/, or 'last'")
    hi.add_argument("--out", help="the plot's file (default: history.png in the run folder)")
    hi.add_argument("--json", action="store_true", help="print the figures as JSON instead of lines")
    pa = sub.add_parser("panoptic", help="a semantic run's stuff + an instance run's things as one panoptic "
                                          "prediction, scored by PQ (panopticapi files written)")
    pa.add_argument("--semantic", required=True, help="a semantic run (its stuff classes are used)")
    pa.add_argument("--instance", required=True, help="an instance run: Mask R-CNN, YOLO-seg (its detections)")
    pa.add_argument("--out", required=True, type=output_folder, help="result folder, e.g. reports/panoptic-demo")
    pa.add_argument("--split", default="test", help="the split both runs were evaluated on (default test)")
    pa.add_argument("--score", type=float, default=0.5, help="detections below this score are left out (0.5)")
    pa.add_argument("--overlap", type=float, default=0.5,
                    help="a detection whose pixels are more than this share taken by better ones is dropped (0.5)")
    pa.add_argument("--min-stuff-area", type=int, default=64, help="a stuff region smaller than this many pixels "
                                                                  "is left void (64)")
    pa.set_defaults(handler=_panoptic)
    hi.set_defaults(handler=_history)
    args = p.parse_args(argv)
    if getattr(args, "handler", None):
        return args.handler(args)
    if args.cmd == "ensemble":
        from evaluate.ensemble import build_ensemble, print_comparison

        print_comparison(build_ensemble(args.runs, args.out, args.split, args.reference, args.worst), Path(args.out))
        return 0
    if args.cmd == "compare":
        return _compare(args.runs, args.out, args.split, args.flops)
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
        from evaluate.predict import predict_images  # torch and the model code: imported for the commands that run one

        out = predict_images(args.run, args.images, args.name, args.checkpoint, args.device)
        print(f"predictions written to {out}")
        return 0
    from evaluate.runner import evaluate_run, print_summary

    result = evaluate_run(args.run, args.split, args.checkpoint, args.device, args.version, args.tta,
                          not args.no_uncertainty, replace=args.replace)
    print_summary(result)
    return 0


def _panoptic(args: argparse.Namespace) -> int:
    from evaluate.panoptic import panoptic_from_runs, print_figures

    print_figures(panoptic_from_runs(args.semantic, args.instance, args.out, args.split, args.score, args.overlap,
                                     args.min_stuff_area), Path(args.out))
    return 0


def _history(args: argparse.Namespace) -> int:
    import json

    from evaluate.history import describe, run_history

    figures = run_history(args.run, args.out)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"history of {figures['run']}:")
        print("\n".join(f"  {line}" for line in describe(figures)))
        print(f"  plot: {figures['plot']}" if "plot" in figures else "  no epoch was logged: no plot")
    return 0


def _compare(runs: list[str], out: str | None, split: str, flops: bool) -> int:
    from core.errors import SegLoopError
    from evaluate.compare import check_out, compare_runs, markdown, write_comparison

    if split not in ("train", "val", "test"):
        raise SegLoopError(f"--split {split}: there is no such split", fix="--split train, val or test")
    if out:
        check_out(out)
    rows, skipped = compare_runs(runs, split, flops)
    for line in skipped:
        print(f"note: left out {line}", file=sys.stderr)
    for row in rows:
        if row.note:
            print(f"note: {row.note}", file=sys.stderr)
    if not rows:
        raise SegLoopError(f"none of the {len(runs)} folder(s) is a run to compare", path=runs[0],
                           fix="give run folders written by python -m train.run (ls runs/)")
    if not any(r.values.get("evaluated") for r in rows):
        print(f"note: no run has an evaluation of the {split} split: the table has no {split} figures "
              f"(python -m evaluate run RUN --split {split})", file=sys.stderr)
    print(markdown(rows, split))
    if out:
        print(f"comparison written: {write_comparison(rows, out, split)}/compare.md, compare.csv, compare.html")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
