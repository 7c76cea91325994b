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
  backend RUN [--port 9090] [--host 127.0.0.1] [--learn DATA_CONFIG]
                                            serve a run as Label Studio's ML backend (Model -> Connect model);
                                            with --learn, fine-tune from submitted labels and serve the result
                                            when it is not worse on validation
  backend connect --project N --url URL     register a running backend with a project through the API

Against another server, set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (legacy token or personal access token).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.cli import non_negative_int, port_number, positive_int
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
    bk = sub.add_parser("backend", help="serve a run as Label Studio's ML backend, or connect one to a project",
                        description="python -m annotate backend RUN serves RUN; python -m annotate backend connect "
                                    "--project N --url URL registers a running backend with project N.")
    bk.add_argument("run", help="run folder, a name under runs/, or 'last'; or 'connect'")
    bk.add_argument("--port", type=port_number, default=None, help="port to listen on (default 9090)")
    bk.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, this machine only)")
    bk.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default auto)")
    bk.add_argument("--label-studio", default=None, metavar="URL",
                    help="Label Studio's URL, for task images given as its paths (default LABEL_STUDIO_URL, the "
                         "local server, else the host Label Studio names in /setup)")
    bk.add_argument("--learn", default=None, metavar="DATA_CONFIG",
                    help="fine-tune from submitted labels: the data config (ingest build) whose labelstudio source "
                         "reads the project's snapshots, e.g. configs/data/loop.yaml")
    bk.add_argument("--train-after", type=non_negative_int, default=None,
                    help="with --learn: new annotations that start a job (default 20; 0: only START_TRAINING)")
    bk.add_argument("--epochs", type=positive_int, default=None, help="with --learn: fine-tuning epochs (default 2)")
    bk.add_argument("--train-set", action="append", default=None, metavar="KEY=VALUE",
                    help="with --learn: a train.run override for the fine-tuning (repeatable)")
    bk.add_argument("--project", default=None, help="connect: the project's name")
    bk.add_argument("--url", default=None, help="connect: the backend's URL, e.g. http://127.0.0.1:9090")
    bk.add_argument("--title", default=None, help="connect: the name Label Studio shows (default SegLoop)")
    args = p.parse_args(argv)
    if args.cmd == "backend":
        return _backend(args)

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
        taxonomy = load_taxonomy(args.taxonomy or proj.run_taxonomy(run_dir))
        proj.check_taxonomy_is_the_runs(taxonomy, run_dir)
        counts = proj.push_predictions(client, _project(client, args.project), run_dir, taxonomy, progress=True)
        print(f"pre-annotated {counts['predicted']} tasks with {proj.prediction_version(run_dir)} "
              f"({counts['already_predicted']} already had this checkpoint's prediction); "
              f"{counts['without_prediction']} tasks have no prediction (python -m evaluate predict ...)")
    elif args.cmd == "next":
        from annotate.select import next_batch

        run_dir = _run_dir(args.run)
        r = next_batch(client, _project(client, args.project), run_dir, args.pool,
                       load_taxonomy(proj.run_taxonomy(run_dir)), args.k, args.strategy, args.seed, args.group,
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


SERVE_OPTIONS = ("port", "host", "device", "label_studio", "learn", "train_after", "epochs", "train_set")
CONNECT_OPTIONS = ("project", "url", "title")
LEARN_OPTIONS = ("train_after", "epochs", "train_set")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]


def _backend(args: argparse.Namespace) -> int:
    """``backend RUN`` (serve) and ``backend connect`` (register): an option of the other one is refused, not
    ignored."""
    import logging

    from annotate import backend as bk

    if args.run == "connect":
        wrong = _given(args, SERVE_OPTIONS)
        if wrong:
            raise SegLoopError(f"{', '.join(wrong)} do(es) not apply to backend connect",
                               fix="give them to python -m annotate backend RUN, which serves the run")
        if not args.project or not args.url:
            raise SegLoopError("backend connect needs --project and --url",
                               fix="python -m annotate backend connect --project NAME --url http://127.0.0.1:9090")
        if not args.url.startswith(("http://", "https://")):
            raise SegLoopError(f"--url {args.url!r} is not an http(s) URL", fix="e.g. --url http://127.0.0.1:9090")
        client = _client()
        project = _project(client, args.project)
        ml, created = bk.connect(client, project, args.url, args.title or "SegLoop")
        print(f"{'connected' if created else 'already connected:'} backend {ml.get('url')} to project "
              f"'{args.project}' (ML backend id {ml.get('id')}, state {ml.get('readable_state') or ml.get('state')}); "
              "opening a task without a prediction now asks it for one")
        return 0
    wrong = _given(args, CONNECT_OPTIONS) + ([] if args.learn else _given(args, LEARN_OPTIONS))
    if wrong:
        raise SegLoopError(f"{', '.join(wrong)} do(es) not apply here",
                           fix="--project/--url/--title belong to backend connect; --train-after, --epochs and "
                               "--train-set to --learn")
    run_dir = _run_dir(args.run)
    label_studio, token = args.label_studio or os.environ.get("LABEL_STUDIO_URL"), os.environ.get(
        "LABEL_STUDIO_API_KEY")
    if not label_studio or not token:
        from annotate.server import local_server

        local = local_server()
        if local is not None and (not label_studio or label_studio.rstrip("/") == local[0]):
            label_studio, token = label_studio or local[0], token or local[1]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = bk.Backend(run_dir, device=args.device or "auto", label_studio=label_studio, token=token)
    if args.learn:
        from annotate.learn import Learner

        learner = Learner(backend, Path(args.learn), 20 if args.train_after is None else args.train_after,
                          args.epochs or 2, args.train_set)
        backend.training_status = learner.status
    host, port = args.host or "127.0.0.1", args.port or 9090
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("BASIC_AUTH_USER"):
        print(f"warning: listening on {host} without BASIC_AUTH_USER / BASIC_AUTH_PASS: anyone who reaches it can "
              "use the model")
    print(f"serving run {run_dir.name} ({backend.served.version}) as a Label Studio ML backend at "
          f"http://{host}:{port} (connect: python -m annotate backend connect --project NAME --url "
          f"http://{host}:{port})", flush=True)
    bk.serve(backend, host, port)
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


if __name__ == "__main__":
    sys.exit(run_cli(main))
