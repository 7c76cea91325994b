"""``python -m ingest``: make the demo city, build dataset versions, list and show them, remove the unfinished
folders of interrupted builds (``gc``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.cli import non_negative_int, positive_float, positive_int
from core.errors import SegLoopError, run_cli
from core.fsio import remove_leftovers
from ingest.demo import generate
from ingest.polygons import rasterize_files
from ingest.version import DatasetVersion, build, leftovers, list_versions, load_data_config, resolve_version


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="write the procedurally generated demo city in the Cityscapes layout")
    d.add_argument("--out", default="data/demo_city", help="output folder (must not exist or be empty)")
    d.add_argument("--n", type=positive_int, default=300, help="number of frames (70%% train, 15%% val, 15%% test)")
    d.add_argument("--seed", type=non_negative_int, default=0, help="same seed, same bytes")
    d.add_argument("--width", type=positive_int, default=512)
    d.add_argument("--height", type=positive_int, default=256)
    b = sub.add_parser("build", help="build an immutable dataset version from a data config")
    b.add_argument("--config", default="configs/data/demo.yaml", help="data config YAML")
    b.add_argument("overrides", nargs="*", help="key=value overrides, e.g. split.mode=ratio folds=5")
    r = sub.add_parser("rasterize", help="write gtFine labelIds/instanceIds PNGs from the polygons of a Cityscapes "
                                         "tree (as cityscapesScripts' json2labelImg/json2instanceImg, faster)")
    r.add_argument("root", help="Cityscapes root (holding gtFine/)")
    r.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    ls = sub.add_parser("list", help="list dataset versions with image and instance counts")
    ls.add_argument("--root", default="data/versions")
    s = sub.add_parser("show", help="show one version: sources, split rule, per-class counts")
    s.add_argument("version", help="name, name@hash or path")
    s.add_argument("--root", default="data/versions")
    g = sub.add_parser("gc", help="list and remove the unfinished folders of interrupted builds")
    g.add_argument("--root", default="data/versions")
    g.add_argument("--dry-run", action="store_true", help="only list them")
    g.add_argument("--max-idle-hours", type=positive_float, default=24.0,
                   help="a folder whose build process cannot be told apart counts as abandoned after this long "
                        "without change (a folder of a build that still runs is never removed)")
    return p


def _counts_line(counts: dict) -> str:
    return "  ".join(f"{s}: {c['images']} img / {c['instances']} inst" for s, c in counts.items())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "demo":
        out = generate(args.out, n=args.n, seed=args.seed, size=(args.width, args.height))
        print(f"demo city written to {out}")
    elif args.cmd == "build":
        cfg = load_data_config(args.config, args.overrides)
        res = build(cfg)
        print(f"{'built' if res.created else 'up to date'}: {res.version} -> {res.path}")
    elif args.cmd == "rasterize":
        files = sorted(Path(args.root).glob("gtFine/*/*/*_gtFine_polygons.json"))
        if not files:
            raise SegLoopError("no gtFine/*/*/*_gtFine_polygons.json files", path=args.root,
                               fix="point at the Cityscapes root that holds gtFine/")
        n = rasterize_files(files, args.workers)
        print(f"wrote labelIds and instanceIds PNGs for {n} frames under {args.root}/gtFine")
    elif args.cmd == "gc":
        found = leftovers(args.root, args.max_idle_hours)
        if not found:
            print(f"no unfinished version folders under {args.root}")
        for lo in found if args.dry_run else remove_leftovers(found):
            print(f"{'would remove' if args.dry_run else 'removed'} {lo.path} ({lo.reason})")
    elif args.cmd == "list":
        versions = list_versions(args.root)
        if not versions:
            print(f"no dataset versions under {args.root} (python -m ingest build --config ...)")
        for v in versions:
            print(f"{v['version']:32} {v['taxonomy']:12} {v['created']}  {_counts_line(v['counts'])}")
    elif args.cmd == "show":
        ds = DatasetVersion(resolve_version(args.version, args.root))
        m = ds.manifest
        print(f"version   {m['version']}  ({ds.path})\ncreated   {m['created']}\ntaxonomy  {m['taxonomy']['name']} "
              f"({len(m['taxonomy']['classes'])} classes)\nsplit     {m['split']['mode']} (seed {m['split']['seed']})")
        for src in m["sources"]:
            print(f"source    {src['name']} [{src['type']}] {src['root']}: {src['images']} images, "
                  f"content {src['content_hash'][:12]}")
        if m.get("folds"):
            print(f"folds     {m['folds']['k']} over {m['folds']['over']}")
        names = [c["name"] for c in m["taxonomy"]["classes"]]
        splits = list(m["counts"])
        print(f"\n{'class':16}" + "".join(f"{s + ' img':>11}{s + ' inst':>11}" for s in splits))
        print(f"{'(all)':16}" + "".join(f"{m['counts'][s]['images']:>11}{m['counts'][s]['instances']:>11}"
                                        for s in splits))
        for n in names:
            print(f"{n:16}" + "".join(f"{m['counts'][s]['images_per_class'].get(n, 0):>11}"
                                      f"{m['counts'][s]['instances_per_class'].get(n, 0):>11}" for s in splits))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
