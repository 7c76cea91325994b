"""The labeling loop at scale against a real Label Studio: SegLoop beside label-studio-sdk in the same run.

A throwaway Label Studio (its own data folder under a temporary directory) gets ``--n`` generated street images;
SegLoop imports them, pushes ``--n`` pre-annotations (synthetic predictions in SegLoop's prediction-file format:
the scene's own classes, pushed as brushes and per-instance polygons by ``annotate.project.push_predictions``),
labels ``--label`` tasks through the API as a labeler would (``tools/simulate_labeler.py``: brushes and polygons),
exports a snapshot (the snapshot export API) and ingests it merged with a demo city. Seconds and memory are printed
per stage: the peak RSS of this process during the stage and its growth over the RSS at the stage's start (sampled
every 10 ms). The same import and pre-annotation push are then done by label-studio-sdk (in .venv-labelstudio, as
a subprocess, into other projects of the same server) with the same tasks and regions: its per-task
``predictions.create`` (the SDK's documented path) and its bulk ``projects.import_predictions``; its import, like
SegLoop's, first adds the local-file storage that lets Label Studio serve the images. The SDK side is
given the regions precomputed, SegLoop's push computes them from the prediction files inside its timing.

Memory that does not grow with the number of tasks: compare the growth columns of a run at --n 250 and --n 1000.

  python bench/labelstudio_scale.py --n 1000 --label 600
  python bench/labelstudio_scale.py --n 250 --label 150 --keep-server   # leaves the server up, prints its URL
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """Peak resident memory of this process during a ``with`` block, sampled every ``period`` seconds."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> RssPeak:
        self.start_mb = self.peak_mb = self.rss_mb()
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())

    def row(self) -> dict:
        return {"s": self.seconds, "peak_mb": self.peak_mb, "growth_mb": self.peak_mb - self.start_mb}


# ------------------------------------------------------------------------------------------- the SDK's side
def sdk_side(argv: list[str]) -> None:
    """Run by .venv-labelstudio's python: the SDK imports the tasks and pushes the regions; JSON rows on stdout."""
    url, token, per_task_project, bulk_project, tasks_file, preds_file, folder = argv
    from label_studio_sdk import LabelStudio as SDK

    ls = SDK(base_url=url, api_key=token, timeout=600)
    with open(tasks_file) as fh:
        tasks = [json.loads(line) for line in fh]
    rows = {}
    for name, pid in (("per_task", int(per_task_project)), ("bulk", int(bulk_project))):
        with RssPeak() as m:  # the storage that lets Label Studio serve the images, then the tasks
            ls.import_storage.local.create(project=pid, path=folder, title="images", use_blob_urls=True,
                                           regex_filter=r".*\.(png|jpe?g)$")
            ls.projects.import_tasks(id=pid, request=tasks)
        rows[f"sdk import ({name})"] = m.row()
        with RssPeak() as m, open(preds_file) as fh:
            ids = {t.data["sha256"]: t.id for t in ls.tasks.list(project=pid, include="id,data", page_size=500)}
            preds = ({"task": ids[p["sha256"]], "result": p["result"], "score": p["score"], "model_version": "bench"}
                     for p in map(json.loads, fh))
            if name == "per_task":
                for p in preds:
                    ls.predictions.create(**p)
            else:
                ls.projects.import_predictions(id=pid, request=list(preds))
        rows[f"sdk push ({name})"] = m.row()
    print(json.dumps(rows))


# ------------------------------------------------------------------------------------------- SegLoop's side
def image_size(text: str) -> tuple[int, int]:
    """argparse ``type=`` for ``WxH`` (both at least 32 pixels: the generated scenes need room for their objects)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r} (fix: e.g. 256x128)") from None
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"both sides must be at least 32 pixels, got {text} (fix: e.g. 256x128)")
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import _common  # noqa: F401 - the project root on sys.path

    from core.cli import port_number, positive_int

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=positive_int, default=1000, help="images imported and pre-annotated")
    p.add_argument("--label", type=positive_int, default=600, help="tasks labelled through the API (at most --n)")
    p.add_argument("--size", type=image_size, default=(256, 128), help="image size WxH (small keeps the run short)")
    p.add_argument("--demo", type=positive_int, default=30, help="frames of the demo city merged at ingest")
    p.add_argument("--port", type=port_number, default=None, help="Label Studio port (default: a free one)")
    p.add_argument("--keep-server", action="store_true", help="leave Label Studio and the temporary folder in place")
    p.add_argument("--no-sdk", action="store_true", help="skip the label-studio-sdk reference")
    args = p.parse_args(argv)
    if args.label > args.n:
        p.error(f"--label {args.label} is more than --n {args.n}: only imported tasks can be labelled")
    return args


def synthetic_run(run: Path, city: Path) -> Path:
    """A run folder holding one prediction set (``predict/bench/``): each image's ground truth as its prediction,
    with a flat uncertainty, in the layout ``evaluate predict`` writes."""
    import numpy as np

    from core.fsio import read_label, save_png, sha256_file
    from core.runs import write_index
    from ingest.taxonomy import cityscapes_labels, load_taxonomy

    tax = load_taxonomy("cityscapes")
    lut = np.full(256, 255, np.uint8)
    for lb in cityscapes_labels():
        if 0 <= lb.id < 256:
            lut[lb.id] = tax.map_source_label("cityscapes", lb.name, tax.path)
    out = run / "predict" / "bench"
    (out / "pred").mkdir(parents=True)
    (out / "uncertainty").mkdir()
    index = {}
    for img in sorted(city.glob("leftImg8bit/*/*/*_leftImg8bit.png")):
        gt = img.parent.parent.parent.parent / "gtFine" / img.parent.parent.name / img.parent.name / \
            img.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        sha = sha256_file(img)
        pred = lut[read_label(gt)]
        save_png(out / "pred" / f"{sha}.png", pred)
        save_png(out / "uncertainty" / f"{sha}.png", np.full(pred.shape, 40, np.uint8))
        index[sha] = {"image": str(img), "prediction": f"pred/{sha}.png", "uncertainty": f"uncertainty/{sha}.png",
                      "mean_uncertainty": 40 / 255}
    write_index(out, run.name, "semantic", tax.names, index)
    return run


def sdk_inputs(files: list[Path], run: Path, project: dict, work: Path) -> tuple[Path, Path]:
    """The same task data and regions SegLoop sends, as JSON lines for the SDK's side."""
    from annotate.labeling_config import config_labels
    from annotate.project import _local_url
    from annotate.server import document_root
    from core.fsio import read_json, read_label, sha256_file
    from ingest.taxonomy import load_taxonomy
    from tasks.semantic.labelstudio import semantic_regions

    tax = load_taxonomy("cityscapes")
    tools = [t for t in ("polygon", "brush") if t in config_labels(project["label_config"])]
    root = document_root()
    index = read_json(run / "predict" / "bench" / "index.json")["images"]
    tasks_file, preds_file = work / "sdk_tasks.jsonl", work / "sdk_preds.jsonl"
    with open(tasks_file, "w") as tf, open(preds_file, "w") as pf:
        for f in files:
            sha = sha256_file(f)
            tf.write(json.dumps({"image": _local_url(f.resolve(), root), "sha256": sha,
                                 "file": str(f.resolve().relative_to(root))}) + "\n")
            entry = index[sha]
            folder = run / "predict" / "bench"
            result, score = semantic_regions(read_label(folder / entry["prediction"]),
                                              read_label(folder / entry["uncertainty"]), tax, tools)
            pf.write(json.dumps({"sha256": sha, "result": result, "score": score}) + "\n")
    return tasks_file, preds_file


def main() -> None:
    args = parse_args()
    import shutil
    import subprocess
    import tempfile

    import _common
    import yaml

    work = Path(tempfile.mkdtemp(prefix="ls-scale-"))
    files_root = work / "files"
    os.environ.update({"SEGLOOP_LOCAL_FILES_ROOT": str(files_root), "SEGLOOP_LABEL_STUDIO_DIR": str(work / "server"),
                       "SEGLOOP_SNAPSHOT_ROOT": str(work / "snapshots")})
    from annotate import server
    from annotate.client import LabelStudio
    from annotate.project import ensure_project, export_snapshot, import_images, labelled_count, push_predictions
    from core.services import free_port
    from ingest.demo import generate
    from ingest.taxonomy import load_taxonomy
    from ingest.version import build, load_data_config

    sys.path.insert(0, str(_common.ROOT / "tools"))
    from simulate_labeler import label_tasks

    w, h = args.size
    rows: dict[str, dict] = {}

    def stage(name: str):
        m = RssPeak()
        rows[name] = m
        print(f"== {name}", flush=True)
        return m

    t_all = time.perf_counter()
    try:
        with stage("generate images"):
            city = generate(files_root / "city", n=args.n, seed=1, size=(w, h), progress=False)
            demo = generate(work / "demo_city", n=args.demo, seed=0, size=(w, h), progress=False)
        files = sorted(city.glob("leftImg8bit/*/*/*_leftImg8bit.png"))
        with stage("start Label Studio"):
            template = _common.ROOT / ".cache" / "labelstudio-template"
            if (template / "token").is_file():
                shutil.copytree(template, work / "server")
            state = server.start(args.port or free_port(), work / "server")
        client = LabelStudio(state["url"], (work / "server" / "token").read_text().strip())
        tax = load_taxonomy("cityscapes")
        tools = ["polygon", "brush"]
        project, _ = ensure_project(client, "scale-segloop", tax, tools)
        run = synthetic_run(work / "run", city)
        # untimed warm-up: the server's first import and prediction requests load code paths; neither side pays it
        warm, _ = ensure_project(client, "scale-warm-up", tax, tools)
        import_images(client, warm, files[:2])
        push_predictions(client, warm, run, tax)
        with stage("import (SegLoop)"):
            counts = import_images(client, project, files)
        assert counts["added"] == len(files), counts
        with stage("pre-annotate (SegLoop)"):
            pushed = push_predictions(client, project, run, tax)
        assert pushed["predicted"] == len(files), pushed
        sdk_rows: dict = {}
        if not args.no_sdk:
            tasks_file, preds_file = sdk_inputs(files, run, project, work)
            per_task, _ = ensure_project(client, "scale-sdk-per-task", tax, tools)
            bulk, _ = ensure_project(client, "scale-sdk-bulk", tax, tools)
            print("== label-studio-sdk (subprocess)", flush=True)
            proc = subprocess.run([str(server.LS_VENV / "bin" / "python"), __file__, "--sdk-side", state["url"],
                                   client.token, str(per_task["id"]), str(bulk["id"]), str(tasks_file),
                                   str(preds_file), str(city.resolve())], capture_output=True, text=True,
                                  env={**os.environ, "NO_PROXY": "127.0.0.1"})
            if proc.returncode != 0:
                raise SystemExit(f"the SDK side failed:\n{proc.stderr[-3000:]}")
            sdk_rows = json.loads(proc.stdout.strip().splitlines()[-1])
        with stage(f"label {args.label} (API)"):
            labelled = label_tasks(client, project, n=args.label)
        assert labelled == args.label, labelled
        with stage("export snapshot"):
            snap = export_snapshot(client, project, work / "snapshots")
        assert labelled_count(snap) == args.label
        config = work / "data.yaml"
        config.write_text(yaml.safe_dump({
            "base": str(_common.ROOT / "configs" / "data" / "default.yaml"), "name": "scale",
            "output": str(work / "versions"),
            "taxonomy": str(_common.ROOT / "configs" / "taxonomy" / "cityscapes.yaml"),
            "sources": [{"type": "cityscapes", "name": "demo_city", "root": str(demo)},
                        {"type": "labelstudio", "name": "custom", "root": str(snap.parent),
                         "images_root": str(files_root), "group": r"^(.*?_\d+)_"}],
            "split": {"mode": "source", "ratios": {"train": 0.7, "val": 0.15, "test": 0.15}}}))
        with stage("ingest (merged with the demo city)"):
            version = build(load_data_config(config), progress=False).path
        manifest = json.loads((version / "manifest.json").read_text())
        snap_mb = snap.stat().st_size / 2**20
    finally:  # Label Studio and the temporary folder never outlive a failed run (unless kept on purpose)
        if not args.keep_server:
            if (work / "server").is_dir():  # stops a server that started, even one whose start then failed
                server.stop(work / "server")
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_all

    print(f"\nLabel Studio scale: {args.n} images {w}x{h}, {args.label} labelled, demo city {args.demo}; "
          f"{os.cpu_count()} CPUs (shared: figures vary with the machine's load)")
    print(f"{'stage':42s} {'seconds':>8s} {'peak RSS MB':>12s} {'growth MB':>10s}")
    for name, m in rows.items():
        r = m.row()
        print(f"{name:42s} {r['s']:8.1f} {r['peak_mb']:12.0f} {r['growth_mb']:10.0f}")
    for name, r in sdk_rows.items():
        print(f"{name:42s} {r['s']:8.1f} {r['peak_mb']:12.0f} {r['growth_mb']:10.0f}")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'whole loop':42s} {total:8.1f}   (max RSS of the process {max_rss:.0f} MB)")
    if sdk_rows:
        ours_import, ours_push = rows["import (SegLoop)"].row(), rows["pre-annotate (SegLoop)"].row()
        print("\nratios SegLoop / SDK (time; < 1 means SegLoop is faster):")
        for name in ("per_task", "bulk"):
            print(f"  import vs sdk ({name}): {ours_import['s'] / sdk_rows[f'sdk import ({name})']['s']:.2f}   "
                  f"pre-annotate vs sdk ({name}): {ours_push['s'] / sdk_rows[f'sdk push ({name})']['s']:.2f}")
        print("ratios SegLoop / SDK (peak RSS growth):")
        for name in ("per_task", "bulk"):
            ri, rp = sdk_rows[f"sdk import ({name})"], sdk_rows[f"sdk push ({name})"]
            print(f"  import vs sdk ({name}): {ours_import['growth_mb'] / max(ri['growth_mb'], 0.1):.2f}   "
                  f"pre-annotate vs sdk ({name}): {ours_push['growth_mb'] / max(rp['growth_mb'], 0.1):.2f}")
    print(f"\nsnapshot {snap.name}: {snap_mb:.1f} MB; dataset version {version.name} "
          f"({sum(c['images'] for c in manifest['counts'].values())} images)")
    if args.keep_server:
        print(f"Label Studio left running at {state['url']} (data in {work / 'server'}); stop it with "
              f"SEGLOOP_LABEL_STUDIO_DIR={work / 'server'} python -m annotate server stop")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sdk-side"]:
        sdk_side(sys.argv[2:])
    else:
        main()
