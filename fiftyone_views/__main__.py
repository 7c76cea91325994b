"""``python -m fiftyone_views``: look at a run's mistakes (after ``python -m evaluate run RUN --split test``).

  load RUN [--split test] [--tag-k 10]          FiftyOne dataset <run>-<split>: images, ground truth, predictions,
                                                per-sample mIoU / Dice / pixel acc / class IoU / instance TP FP FN,
                                                saved views worst_miou, worst_instances, class_<name>_fails,
                                                random_100 (reloading replaces the dataset)
  views RUN [--split test]                      the saved views and their first samples
  relabel RUN [--view worst_miou] [--k 50]      the view's first K images as a list file for
                                                `python -m annotate import --project P --images LIST.txt`
  app RUN [--split test] [--port 5151] [--view NAME]   the FiftyOne App on 127.0.0.1
  triptychs RUN [--split test] [--n 100] [--seed 0] [--worst]   image | ground truth | prediction + index.html
  db status|stop                                SegLoop's mongod for FiftyOne

FiftyOne's database lives in data/fiftyone/db, served by a mongod on 127.0.0.1 that SegLoop starts on first use
and leaves running (`db stop` stops it); --db-dir or $SEGLOOP_FIFTYONE_DB_DIR move it, $FIFTYONE_DATABASE_URI
uses a MongoDB of yours instead.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import non_negative_int, port_number, positive_int
from core.errors import SegLoopError, run_cli


def _run_args(p: argparse.ArgumentParser, db: bool = True) -> None:
    p.add_argument("run", help="run folder or name under runs/ ('last' = the newest)")
    p.add_argument("--split", default="test")
    if db:
        p.add_argument("--db-dir", default=None, help="FiftyOne database folder (default data/fiftyone/db)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fiftyone_views", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ld = sub.add_parser("load", help="load a run's evaluated split into FiftyOne, with triage views")
    _run_args(ld)
    ld.add_argument("--tag-k", type=non_negative_int, default=10,
                    help="tag the first K samples of each worst view 'relabel' (0: none)")
    vw = sub.add_parser("views", help="list the saved views of a loaded run")
    _run_args(vw)
    rl = sub.add_parser("relabel", help="write a view's first K images as a list for `annotate import`")
    _run_args(rl)
    rl.add_argument("--view", default="worst_miou")
    rl.add_argument("--k", type=positive_int, default=50)
    rl.add_argument("--out", default=None, help="list file (default runs/<run>/relabel/<split>-<view>-k<K>.txt)")
    ap = sub.add_parser("app", help="serve the FiftyOne App on 127.0.0.1")
    _run_args(ap)
    ap.add_argument("--port", type=port_number, default=5151)
    ap.add_argument("--view", default=None, help="open on a saved view")
    t = sub.add_parser("triptychs", help="image | ground truth | prediction panels with an index.html")
    _run_args(t, db=False)
    t.add_argument("--n", type=positive_int, default=100)
    t.add_argument("--seed", type=non_negative_int, default=None,
                   help="which random images (default 0); --worst picks by error instead, so it takes no seed")
    t.add_argument("--worst", action="store_true", help="the N lowest-mIoU images instead of a random sample")
    t.add_argument("--out", default=None, help="output folder (default runs/<run>/triptychs/<split>-<kind>)")
    db = sub.add_parser("db", help="status or stop of SegLoop's mongod for FiftyOne")
    db.add_argument("action", choices=["status", "stop"])
    db.add_argument("--db-dir", default=None, help="FiftyOne database folder (default data/fiftyone/db)")
    args = p.parse_args(argv)

    if args.cmd == "triptychs":
        from evaluate.gallery import make_triptychs

        if args.worst and args.seed is not None:
            raise SegLoopError("--seed picks random images and --worst the worst ones: the two do not combine",
                               fix="drop --seed (with --worst) or --worst (for a random sample)")
        dest, picked, note = make_triptychs(args.run, args.split, args.n, args.seed or 0, args.worst, args.out)
        if note:
            print(f"note: {note}")
        print(f"{len(picked)} triptychs and index.html written to {dest}")
    elif args.cmd == "load":
        from fiftyone_views.dataset import load_run

        s = load_run(args.run, args.split, args.db_dir, args.tag_k)
        print(f"{'replaced' if s['replaced'] else 'created'} FiftyOne dataset '{s['dataset']}': {s['samples']} "
              f"samples in {s['seconds']} s (instances from {s['instances_from']}; database {s['database']})")
        for name, n in s["views"].items():
            print(f"  view {name:28} {n} samples")
        print(f"open it: python -m fiftyone_views app {args.run} --split {args.split}")
    elif args.cmd == "views":
        _print_views(args)
    elif args.cmd == "relabel":
        from fiftyone_views.views import relabel

        r = relabel(args.run, args.view, args.k, args.split, args.out, args.db_dir)
        if r["note"]:
            print(f"note: {r['note']}")
        print(f"{len(r['images'])} images of view '{args.view}' listed in {r['list']} (why: "
              f"{r['list'].with_suffix('.json')})\nlabel them: python -m annotate import --project NAME "
              f"--images {r['list']}")
    elif args.cmd == "db":
        from fiftyone_views import db as fodb

        if args.action == "stop":
            stopped = fodb.stop_mongod(args.db_dir)
            print(f"{'stopped' if stopped else 'no mongod running on'} {fodb.db_dir(args.db_dir)}")
        else:
            for k, v in fodb.status(args.db_dir).items():
                print(f"{k:10} {v}")
    elif args.cmd == "app":
        from fiftyone_views.app import launch

        launch(args.run, args.split, args.port, args.view, args.db_dir)
    return 0


def _print_views(args: argparse.Namespace) -> None:
    from fiftyone_views.dataset import open_dataset

    dataset = open_dataset(args.run, args.split, args.db_dir)
    miou = dataset.info.get("split_mIoU")
    print(f"{dataset.name}: {len(dataset)} samples, split mIoU " + (f"{miou:.4f}" if miou is not None else "-"))
    for name in dataset.list_saved_views():
        v = dataset.load_saved_view(name)
        first = ", ".join(f"{k} ({m:.3f})" for k, m in zip(*v.limit(3).values(["key", "miou"]), strict=True)
                          if m is not None)
        print(f"  {name:28} {len(v):5d} samples   first: {first}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
