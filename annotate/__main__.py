"""``python -m annotate``: the labeling loop with Label Studio.

  server start|stop|status [--port 8080]     a local Label Studio on 127.0.0.1 (make labelstudio installs it)
  project create --name N --taxonomy configs/taxonomy/X.yaml [--tools polygon,brush]
  import --project N --images DIR|LIST.txt  one task per new image (content hash recorded)
  predict --project N --run RUN             pre-annotations from a run's prediction files
  export --project N                        snapshot -> data/labelstudio/<N>/<UTC export time>Z.json (ingest
                                            reads the latest); uploaded images are recorded or downloaded
  fetch-media --snapshot FILE               download the uploaded images of an export saved from Label Studio's UI
                                            into media/ beside it (ingest looks there), hash checked
  next --project N --run RUN --pool DIR --k 50 --strategy entropy|margin|random
                                            import the most uncertain, diverse pool images, pre-annotated;
                                            the picks are recorded in data/labelstudio/<N>/next/

Against another server, set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (legacy token or personal access token).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import port_number, positive_int
from core.errors import SegLoopError, run_cli


def _client():
    from annotate.client import LabelStudio

    return LabelStudio.from_env()


def _project(client, name: str) -> dict:
    p = client.project_by_title(name)
    if p is None:
        raise SegLoopError(f"no project named '{name}' on {client.url}",
                           fix=f"create it: python -m annotate project create --name {name} --taxonomy ...")
    return p


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server", help="start, stop or show the local Label Studio")
    s.add_argument("action", choices=["start", "stop", "status"])
    s.add_argument("--port", type=port_number, default=8080)
    pc = sub.add_parser("project", help="create a project from a taxonomy (idempotent)")
    pc.add_argument("action", choices=["create"])
    pc.add_argument("--name", required=True)
    pc.add_argument("--taxonomy", default="configs/taxonomy/cityscapes.yaml")
    pc.add_argument("--tools", default="polygon,brush", help="comma-separated: polygon, brush")
    project = argparse.ArgumentParser(add_help=False)  # shared by the commands that work on one project
    project.add_argument("--project", required=True, help="project name (title in Label Studio)")
    im = sub.add_parser("import", help="import images as tasks (only new ones)", parents=[project])
    im.add_argument("--images", required=True, help="folder of images or a .txt list of paths")
    pr = sub.add_parser("predict", help="push a run's predictions as pre-annotations", parents=[project])
    pr.add_argument("--run", required=True)
    pr.add_argument("--taxonomy", default=None, help="default: the run's taxonomy")
    ex = sub.add_parser("export", help="write a snapshot of the project's annotations", parents=[project])
    ex.add_argument("--out", default=None, help="snapshot root (default data/labelstudio)")
    ex.add_argument("--timeout", type=positive_int, default=1800,
                    help="seconds to wait for Label Studio to build the export (large projects take minutes)")
    fm = sub.add_parser("fetch-media", help="download the uploaded images of a snapshot (e.g. one saved from the UI)")
    fm.add_argument("--snapshot", required=True, help="a Label Studio JSON export")
    nx = sub.add_parser("next", help="choose, import and pre-annotate the next batch to label", parents=[project])
    nx.add_argument("--run", required=True)
    nx.add_argument("--pool", required=True, help="folder (or .txt list) of unlabelled images")
    nx.add_argument("--k", type=positive_int, default=50, help="how many images to pick (>= 1)")
    nx.add_argument("--strategy", default="entropy", choices=["entropy", "margin", "random"])
    nx.add_argument("--seed", type=int, default=0)
    nx.add_argument("--group", default=r"^(.*?)_", help="regex on the file name: its group 1 is the sequence")
    nx.add_argument("--max-share", type=_share, default=0.34,
                    help="largest share of the batch one sequence may take, in (0, 1]")
    args = p.parse_args(argv)

    if args.cmd == "server":
        from annotate import server

        if args.action == "start":
            st = server.start(args.port)
            token = Path(st["token_file"]).read_text().strip()
            print(f"Label Studio running at {st['url']} (pid {st['pid']})\n"
                  f"admin user: {server.ADMIN}; API token {server.masked(token)} in {st['token_file']} (mode 0600)")
        elif args.action == "stop":
            print("stopped" if server.stop() else "not running")
        else:
            st = server.status()
            print(f"running at {st['url']} (pid {st['pid']}), data in {st['data_dir']}" if st.get("running")
                  else f"not running (data dir {st['data_dir']})")
        return 0

    from annotate import project as proj
    from ingest.taxonomy import load_taxonomy

    if args.cmd == "fetch-media":
        from ingest.labelstudio import read_snapshot

        snap = Path(args.snapshot)
        tasks, _ = read_snapshot(snap)  # the file is checked before any server is asked for
        n = proj.download_uploads(_client(), tasks, snap.parent / "media")
        print(f"{n or 0} uploaded images downloaded into {snap.parent / 'media'}" if n is not None
              else "no task of the snapshot has an uploaded image")
        return 0
    if args.cmd == "predict":  # the run is checked before any server is asked for
        run_dir = _run_dir(args.run)
        if not proj.has_predictions(run_dir):
            raise SegLoopError("run has no predictions to push (no eval/<split>/ nor predict/<name>/ set)",
                               path=run_dir, fix=f"python -m evaluate predict {run_dir} --images DIR, or python -m "
                                                 f"evaluate run {run_dir} --split test")
    client = _client()
    if args.cmd == "project":
        tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        project, created = proj.ensure_project(client, args.name, load_taxonomy(args.taxonomy), tools)
        print(f"{'created' if created else 'exists, matches the taxonomy:'} project '{args.name}' (id {project['id']})"
              f" at {client.url}/projects/{project['id']}")
    elif args.cmd == "import":
        counts = proj.import_images(client, _project(client, args.project), args.images, progress=True)
        for dup, kept in counts["duplicates"]:
            print(f"duplicate image (imported once): {dup} is the same file as {kept}")
        print(f"{counts['added']} new tasks, {counts['skipped']} images already in the project"
              + (f", {len(counts['duplicates'])} duplicates listed once" if counts["duplicates"] else ""))
    elif args.cmd == "predict":
        taxonomy = load_taxonomy(args.taxonomy or _run_taxonomy(run_dir))
        _check_taxonomy_is_the_runs(taxonomy, run_dir)
        counts = proj.push_predictions(client, _project(client, args.project), run_dir, taxonomy, progress=True)
        print(f"pre-annotated {counts['predicted']} tasks with {proj.prediction_version(run_dir)} "
              f"({counts['already_predicted']} already had this checkpoint's prediction); "
              f"{counts['without_prediction']} tasks have no prediction (python -m evaluate predict ...)")
    elif args.cmd == "next":
        from annotate.select import next_batch

        run_dir = _run_dir(args.run)
        r = next_batch(client, _project(client, args.project), run_dir, args.pool,
                       load_taxonomy(_run_taxonomy(run_dir)), args.k, args.strategy, args.seed, args.group,
                       args.max_share, proj.records_dir(args.project))
        if not r["picked"]:
            print("nothing to pick: every pool image is already in the project")
            return 0
        groups = sorted({c["group"] for c in r["picked"]})
        print(f"picked {len(r['picked'])} of {r['candidates']} candidates by {args.strategy} from {len(groups)} "
              f"sequences; imported {r['imported']}, pre-annotated {r['pre_annotated']}; why: {r['record']}")
    elif args.cmd == "export":
        path = proj.export_snapshot(client, _project(client, args.project), Path(args.out) if args.out else None,
                                    timeout=args.timeout)
        print(f"snapshot written: {path} ({proj.labelled_count(path)} labelled tasks)")
    return 0


def _run_dir(run: str) -> Path:
    """A run folder (path, name under runs/, or ``last``) that has a run.json: the run folder contract of core.runs."""
    from core.runs import Run, resolve_run

    run_dir = resolve_run(run)
    Run(run_dir).info()  # not a run folder: the error names it
    return run_dir


def _share(text: str) -> float:
    """argparse ``type=`` for ``--max-share``: a fraction of the batch in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value} (fix: e.g. 0.34, a third of the batch)")
    return value


def _manifest(run_dir: Path) -> dict:
    from core.fsio import read_json
    from core.runs import Run

    info = Run(run_dir).info()
    try:
        return read_json(Path(info["dataset_path"]) / "manifest.json", "dataset manifest")
    except (KeyError, TypeError):
        raise SegLoopError("run.json names no dataset_path", path=run_dir / "run.json",
                           fix="use a run folder written by python -m train.run") from None


def _run_taxonomy(run_dir: Path) -> str:
    try:
        return _manifest(run_dir)["taxonomy"]["path"]
    except (KeyError, TypeError):
        raise SegLoopError("the run's dataset manifest names no taxonomy", path=run_dir,
                           fix="use a run trained on a dataset version built by python -m ingest build") from None


def _check_taxonomy_is_the_runs(taxonomy, run_dir: Path) -> None:
    """``--taxonomy`` may only restate the run's classes: prediction files hold the run's class indices."""
    classes = (_manifest(run_dir).get("taxonomy") or {}).get("classes")
    names = [c["name"] if isinstance(c, dict) else str(c) for c in classes or []]
    if names and names != list(taxonomy.names):
        raise SegLoopError(f"taxonomy '{taxonomy.name}' has classes {', '.join(taxonomy.names)}, but run "
                           f"{run_dir.name} was trained on {', '.join(names)}", path=taxonomy.path,
                           fix="leave out --taxonomy (the run's own is used)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
