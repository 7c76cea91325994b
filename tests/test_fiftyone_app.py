"""The FiftyOne App, started by ``python -m fiftyone_views app``, renders the run's samples with their masks in
headless Chromium (Debian's chromium driven by Playwright), served on 127.0.0.1 only."""

import io
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.fsio import read_image
from fiftyone_views.dataset import load_run
from tests.browser import launch
from tests.conftest import ROOT, fiftyone_subprocess_env
from tests.netutil import LOOPBACK, free_port, listening_addresses

SHOT = ROOT / ".cache" / "screenshots" / "fiftyone_app.png"


def purple_fraction(rgb: np.ndarray) -> float:
    """Share of pixels tinted like Cityscapes' road (128, 64, 128) / sidewalk (244, 35, 232): red and blue well above
    green. The demo city's own road and pavement are grey, so in the App this comes from the drawn masks."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return float(((r - g > 25) & (b - g > 25)).mean())


def _wait_for_app(proc: subprocess.Popen, timeout: float = 180) -> str:
    """The URL the command prints, once the App answers on it."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the App command exited with {proc.returncode}: {''.join(lines)[-3000:]}")
        url = url or next((ln.rsplit(" at ", 1)[1].strip() for ln in lines if "App serving" in ln), None)
        if url:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return url
            except OSError:
                pass
        time.sleep(1)
    pytest.fail(f"the App did not answer within {timeout} s (URL {url}): {''.join(lines)[-3000:]}")


@pytest.mark.slow
def test_app_renders_samples_with_masks_in_chromium(fiftyone_db, evaluated_run):
    from playwright.sync_api import sync_playwright

    summary = load_run(evaluated_run, "test", progress=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fiftyone_views", "app", str(evaluated_run), "--port", str(port),
                             "--view", "worst_miou"],
                            cwd=ROOT, env=fiftyone_subprocess_env(fiftyone_db), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = _wait_for_app(proc)
        assert url == f"http://127.0.0.1:{port}/datasets/{summary['dataset']}?view=worst-miou"
        listening = listening_addresses(port)
        assert listening and all(a in LOOPBACK for a in listening), listening
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            page.wait_for_selector("[data-cy=looker] canvas", timeout=120_000)  # the grid, not network idle
            dismiss = page.get_by_text("Dismiss", exact=True)
            if dismiss.count():
                dismiss.first.click()
            tiles = page.locator("[data-cy=looker]")
            tinted = 0.0
            for _ in range(60):  # masks are drawn after the images: wait for them
                tile = np.asarray(Image.open(io.BytesIO(tiles.first.screenshot())).convert("RGB"))
                tinted = purple_fraction(tile)
                if tinted > 0.1:
                    break
                page.wait_for_timeout(500)
            page.screenshot(path=str(SHOT))
            n_tiles = tiles.count()
            fields = {f: page.get_by_text(f, exact=True).count() for f in ("ground_truth", "prediction", "worst_miou")}
            html = page.content()
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert n_tiles == summary["views"]["worst_miou"] == summary["samples"]  # every sample of the view has its tile
    assert all(fields.values()) and summary["dataset"] in html, fields
    raw = max(purple_fraction(read_image(p)) for p in _image_files(evaluated_run))
    assert raw < 0.02 and tinted > 0.1, (raw, tinted)  # the road/sidewalk colours come from the masks
    deadline = time.monotonic() + 60
    while listening_addresses(port) and time.monotonic() < deadline:
        time.sleep(1)
    assert not listening_addresses(port)  # the App's server went away with the command


def _image_files(run: Path) -> list[Path]:
    from evaluate.results import EvalResults

    res = EvalResults(run, "test")
    return [res.version.image_path(res.image(r)) for r in res.rows]
