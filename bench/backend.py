"""The ML backend's predict latency against ``annotate predict``'s per-image cost on the same run and images.

The bulk side is what a push costs per image once the model is loaded: ``evaluate predict`` over the images (the
task's prediction files) plus the task's Label Studio regions for each. The backend side is ``python -m annotate
backend`` answering ``POST /predict`` over HTTP, one task per request as Label Studio sends them: cold (the first
request, the model still loading), warm (new images, the model loaded) and cached (an image asked for again).
Images are served by a plain HTTP server on loopback. Sizes: the demo city's (128x256) and 1024x2048. Target: warm
backend <= 1.1x the bulk path per image. Then 20 concurrent requests, counted for errors.

  python bench/backend.py [--n 12] [--epochs 2]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common


def _post(url: str, body: dict) -> tuple[int, dict, float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    t0 = time.perf_counter()
    try:
        with opener.open(req, timeout=300) as resp:
            out = json.loads(resp.read())
            return resp.status, out, time.perf_counter() - t0
    except urllib.error.HTTPError as exc:
        return exc.code, {}, time.perf_counter() - t0


def _resized(src: list[Path], folder: Path, size: tuple[int, int] | None) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in src:
        dst = folder / f.name
        with Image.open(f) as im:
            (im.resize(size, Image.BILINEAR) if size else im.copy()).save(dst)
        out.append(dst)
    return out


def bulk_per_image(run: Path, images: Path, xml_tools: list[str]) -> float:
    """Seconds per image of the bulk path with the model loaded: predictions, then regions."""
    from annotate.project import run_taxonomy
    from core.runs import INDEX, find_checkpoint, read_index
    from evaluate.inference import load_for_inference
    from ingest.images import list_images
    from ingest.taxonomy import load_taxonomy

    inf = load_for_inference(find_checkpoint(run, "best"), "cpu")
    taxonomy = load_taxonomy(run_taxonomy(run))
    files = list_images(images)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        inf.plugin.evaluation().predict_images(inf, files, out, run.name, "bulk", progress=False)
        part = inf.plugin.labelstudio()
        for entry in read_index(out / INDEX)["images"].values():
            part.regions(out, entry, taxonomy, xml_tools)
        return (time.perf_counter() - t0) / len(files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=12, help="images per size")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the demo model served")
    args = p.parse_args()
    from annotate.labeling_config import labeling_config
    from core.services import free_port
    from ingest.taxonomy import load_taxonomy
    from ingest.version import DatasetVersion, build, load_data_config
    from train.config import load_train_config
    from train.engine import train

    work = Path(tempfile.mkdtemp(prefix="segloop-bench-backend-"))
    city = _common.demo_city(max(24, args.n), work)
    dcfg = load_data_config(_common.ROOT / "configs" / "data" / "demo.yaml",
                            [f"sources=[{{type: cityscapes, name: demo_city, root: '{city}'}}]",
                             f"output={work / 'versions'}"])
    ds = DatasetVersion(build(dcfg, progress=False).path)
    run = train(load_train_config(_common.ROOT / "configs" / "experiments" / "demo.yaml",
                                  [f"data.version={ds.path}", f"train.epochs={args.epochs}",
                                   f"output.runs_dir={work / 'runs'}", "output.name=served", "train.device=cpu"]),
                progress=False).run_dir
    tools = ["polygon", "brush"]
    xml = labeling_config(load_taxonomy("cityscapes"), tools)
    src = [ds.image_path(im) for im in ds.images("test") + ds.images("train")][: args.n * 2]
    sets = {"demo size": _resized(src, work / "img-demo", None),
            "1024x2048": _resized(src, work / "img-big", (2048, 1024))}

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
        directory=str(work)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    files_url = f"http://127.0.0.1:{srv.server_address[1]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": "",
           "SEGLOOP_LABEL_STUDIO_DIR": str(work / "no-server")}
    t_start = time.perf_counter()
    with open(work / "backend.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "annotate", "backend", str(run), "--port", str(port),
                                 "--device", "cpu"], cwd=_common.ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            try:
                urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit((work / "backend.log").read_text()[-2000:]) from None
                time.sleep(0.05)
        up = time.perf_counter() - t_start
        print(f"backend up (answers /health) {up:.2f}s after start; model loading in the background")

        def task(i: int, f: Path) -> dict:
            return {"id": i, "data": {"image": f"{files_url}/{f.relative_to(work)}"}}

        print(f"{'size':<11}{'bulk ms/img':>12}{'cold ms':>10}{'warm ms':>10}{'cached ms':>11}{'warm/bulk':>11}")
        first = True
        for label, files in sets.items():
            bulk = bulk_per_image(run, files[0].parent, tools)
            warm_files, cold_file = files[1:args.n + 1], files[0]
            status, _, cold = _post(url + "/predict", {"tasks": [task(0, cold_file)], "project": "1.1",
                                                      "label_config": xml})
            assert status == 200, status
            warm = []
            for i, f in enumerate(warm_files, 1):
                status, out, dt = _post(url + "/predict", {"tasks": [task(i, f)], "project": "1.1",
                                                          "label_config": xml})
                assert status == 200 and "result" in out["results"][0], out
                warm.append(dt)
            cached = [_post(url + "/predict", {"tasks": [task(i, f)], "project": "1.1", "label_config": xml})[2]
                      for i, f in enumerate(warm_files[:5], 1)]
            w = statistics.median(warm)
            print(f"{label:<11}{1e3 * bulk:>12.1f}{1e3 * cold:>10.1f}{1e3 * w:>10.1f}"
                  f"{1e3 * statistics.median(cached):>11.1f}{w / bulk:>10.2f}x"
                  + ("   (cold: first request, includes the model load)" if first else "   (cold: first of this size)"))
            first = False

        big = sets["1024x2048"]

        def one(i: int) -> int:
            return _post(url + "/predict", {"tasks": [task(100 + i, big[i % len(big)])], "project": "1.1",
                                            "label_config": xml})[0]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(one, range(20)))
        print(f"20 concurrent requests at 1024x2048: {sum(c == 200 for c in codes)} answered 200, "
              f"{sum(c != 200 for c in codes)} errors, {time.perf_counter() - t0:.1f}s in all")
    finally:
        proc.terminate()
        proc.wait(30)
        srv.shutdown()


if __name__ == "__main__":
    main()
