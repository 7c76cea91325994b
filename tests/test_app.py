"""The model demo (``python -m evaluate app``): the library it is built on, checked against what ``evaluate run``
wrote for the same images, and the real Streamlit page in headless Chromium, whose overlay must be the library's
overlay of the uploaded image."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from core.errors import SegLoopError, run_cli
from core.fsio import read_label
from evaluate import demo_app as lib
from evaluate.__main__ import main as evaluate_main
from tasks.instance.results import instance_uncertainty, paint_instances
from tests.browser import launch
from tests.conftest import ROOT
from tests.netutil import LOOPBACK, free_port, listening_addresses

SHOT = ROOT / ".cache" / "screenshots" / "model_demo.png"


def _test_image(run: Path) -> tuple[lib.DemoModel, dict, np.ndarray]:
    dm = lib.load_demo_model(run)
    ds, images, _ = lib.dataset_images(dm)
    im = images[0]
    return dm, im, ds.load_image(im)


def test_semantic_prediction_matches_evaluate_run(evaluated_run):
    dm, im, image = _test_image(evaluated_run)
    assert lib.load_demo_model(evaluated_run) is dm  # loaded once
    pred = lib.predict(dm, image)
    name = im["key"].replace("/", "__") + ".png"
    eval_pred = read_label(evaluated_run / "eval" / "test" / "pred" / name)
    eval_unc = read_label(evaluated_run / "eval" / "test" / "uncertainty" / name)
    assert pred.labels.shape == image.shape[:2] == eval_pred.shape
    assert (pred.labels == eval_pred).mean() > 0.999  # same model, same image, same resolution
    assert np.abs((pred.uncertainty * 255).round() - eval_unc.astype(float)).max() <= 1
    assert pred.seconds > 0 and pred.task == "semantic"
    assert pred.image_uncertainty == pytest.approx(float(pred.uncertainty.mean()))

    rows = lib.legend(pred, dm.taxonomy)
    assert sum(r.share for r in rows) == pytest.approx(1.0)  # a semantic model labels every pixel
    for r in rows:
        assert r.pixels == int((pred.labels == r.index).sum())
        assert r.color == dm.taxonomy.classes[r.index].color
        assert r.hex == "#{:02x}{:02x}{:02x}".format(*r.color)
    assert [r.pixels for r in rows] == sorted((r.pixels for r in rows), reverse=True)

    np.testing.assert_array_equal(lib.overlay(pred, dm.taxonomy, 1.0), dm.taxonomy.colorize(pred.labels))
    np.testing.assert_array_equal(lib.overlay(pred, dm.taxonomy, 0.0), image)
    half = lib.overlay(pred, dm.taxonomy, 0.5).astype(int)
    expected = (image.astype(float) + dm.taxonomy.colorize(pred.labels)) / 2
    assert np.abs(half - expected).max() <= 1
    unc = lib.uncertainty_image(pred)
    assert unc.shape == (*image.shape[:2], 3) and unc.dtype == np.uint8
    certain = pred.uncertainty < 0.05
    if certain.any() and (~certain).any():  # inferno: uncertain pixels are brighter
        assert unc[~certain].mean() > unc[certain].mean()


def test_large_image_is_predicted_at_display_size(evaluated_run):
    dm, _, image = _test_image(evaluated_run)
    big = np.repeat(np.repeat(image, 6, 0), 6, 1)  # 1536 x 768
    pred = lib.predict(dm, big)
    assert max(pred.labels.shape) == lib.DISPLAY_SIDE
    assert pred.image.shape[:2] == pred.labels.shape == pred.uncertainty.shape


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def test_instance_run_prediction_threshold_and_uncertainty(instance_run):
    dm, _, image = _test_image(instance_run.run_dir)
    assert dm.task == "instance"
    pred = lib.predict(dm, image, 0.05)
    assert pred.labels.shape == pred.uncertainty.shape == image.shape[:2] and pred.seconds > 0
    np.testing.assert_array_equal(pred.labels, paint_instances(pred.results, image.shape[:2], 255, 0.05))
    assert pred.image_uncertainty == instance_uncertainty(pred.results, 0.05)
    assert lib.overlay(pred, dm.taxonomy, 0.6).shape == image.shape
    again = lib.predict_cached(dm, image, 0.05)
    assert lib.predict_cached(dm, image, 0.9).seconds == again.seconds  # the model ran once for both thresholds
    np.testing.assert_array_equal(lib.predict_cached(dm, image, 0.9).labels,
                                  paint_instances(again.results, image.shape[:2], 255, 0.9))

    # Remembered per checkpoint file version, not per Python object: another object for the same file finds the
    # prediction (an id freed by an evicted model is not what names it), another version of the file does not.
    import dataclasses

    same = dataclasses.replace(dm)
    assert same is not dm and lib.predict_cached(same, image, 0.05).seconds == again.seconds
    retrained = dataclasses.replace(dm, checkpoint_mtime_ns=dm.checkpoint_mtime_ns + 1)
    assert lib.predict_cached(retrained, image, 0.05).seconds != again.seconds  # the model ran again

    # The drawing rules, on detections whose scores are known: two cars overlapping, a person below threshold.
    h, w = image.shape[:2]
    a, b, c = (np.zeros((h, w), bool) for _ in range(3))
    a[10:40, 10:60], b[30:60, 40:90], c[70:100, 100:120] = True, True, True
    car, person = dm.taxonomy.index_of("car") + 1, dm.taxonomy.index_of("person") + 1
    results = [{"category_id": car, "score": 0.9, "segmentation": _rle(a), "bbox": [10, 10, 50, 30]},
               {"category_id": car, "score": 0.6, "segmentation": _rle(b), "bbox": [40, 30, 50, 30]},
               {"category_id": person, "score": 0.3, "segmentation": _rle(c), "bbox": [100, 70, 20, 30]}]
    base = lib.Prediction(image, np.empty(0, np.uint8), np.empty(0, np.float32), 0.1, "instance", results)
    high = lib.with_threshold(base, dm.taxonomy, 0.5)
    assert not (high.labels[c] != 255).any()  # the person is below the threshold
    assert (high.labels[a] == car - 1).all() and (high.labels[b & ~a] == car - 1).all()
    np.testing.assert_allclose(high.uncertainty[a], 0.1, atol=1e-6)  # the higher score is on top
    np.testing.assert_allclose(high.uncertainty[b & ~a], 0.4, atol=1e-6)
    assert (high.uncertainty[~(a | b)] == 0).all()
    assert high.image_uncertainty == pytest.approx(1 - (0.9 + 0.6) / 2)
    low = lib.with_threshold(base, dm.taxonomy, 0.2)
    assert (low.labels[c] == person - 1).all()
    assert [r["class"] for r in lib.detections_table(low, dm.taxonomy)] == ["car", "car", "person"]
    shares = {r.name: r.share for r in lib.legend(high, dm.taxonomy)}
    assert list(shares) == ["car"] and shares["car"] == pytest.approx((a | b).sum() / (h * w))
    drawn = lib.overlay(high, dm.taxonomy, 1.0, scores=False)
    inside = a & ~b
    inner = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
    assert (drawn[inner] == dm.taxonomy.classes[car - 1].color).all()
    assert (drawn[~(a | b)] == image[~(a | b)]).all()
    assert (drawn[a | b] == 255).all(-1).sum() > 100  # white outlines
    with_text = lib.overlay(high, dm.taxonomy, 1.0)
    assert (with_text != drawn).any(-1)[5:45, 10:80].sum() > 20  # "car 0.90" written at the box


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (its pixels are never read: the size check comes first)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def test_upload_that_is_not_an_image_or_too_large_is_refused():
    with pytest.raises(SegLoopError, match="not a readable image") as exc:
        lib.decode_upload(b"street scene, honestly\n", "notes.png")
    assert "notes.png" in str(exc.value) and "PNG or JPEG" in str(exc.value)
    with pytest.raises(SegLoopError, match="above the demo's limit") as exc:
        lib.decode_upload(_png_header(20_000, 20_000), "huge.png")
    assert "huge.png" in str(exc.value) and "400000000 pixels" in str(exc.value)  # Pillow's own bomb limit
    with pytest.raises(SegLoopError, match="above the demo's limit") as exc:
        lib.decode_upload(_png_header(8000, 6250), "big.png")
    assert "big.png" in str(exc.value) and "8000 x 6250 = 50 megapixels" in str(exc.value)
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30), 7, np.uint8)).save(buf, "PNG")  # greyscale comes back as RGB
    img = lib.decode_upload(buf.getvalue(), "grey.png")
    assert img.shape == (20, 30, 3) and (img == 7).all()
    with pytest.raises(SegLoopError, match="above the demo's limit"):
        lib.decode_upload(buf.getvalue(), "grey.png", max_pixels=500)


def test_upload_is_turned_the_way_its_exif_orientation_says():
    """A phone photo stored landscape with orientation 6 (turn 90 degrees clockwise to view) is shown portrait,
    its stored left edge at the top."""
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :15] = (255, 0, 0)  # left half red, right half blue
    stored[:, 15:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    img = lib.decode_upload(buf.getvalue(), "phone.jpg")
    assert img.shape == (30, 20, 3)
    top, bottom = img[:12].reshape(-1, 3).mean(0), img[-12:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50
    plain = io.BytesIO()
    Image.fromarray(stored).save(plain, "JPEG", quality=95)  # no tag: as stored
    assert lib.decode_upload(plain.getvalue(), "plain.jpg").shape == (20, 30, 3)


def test_cli_refuses_a_run_without_checkpoints(evaluated_run, tmp_path, capsys):
    run = tmp_path / "runs" / "untrained"
    run.mkdir(parents=True)
    shutil.copy(evaluated_run / "run.json", run / "run.json")
    assert run_cli(evaluate_main, ["app", str(run)]) == 2
    err = capsys.readouterr().err
    assert "untrained" in err and "best.pt" in err and "python -m train.run" in err
    assert run_cli(evaluate_main, ["app", "--runs-dir", str(tmp_path / "runs")]) == 2  # nothing trained there
    assert "no trained run" in capsys.readouterr().err
    choices, problems = lib.list_runs(tmp_path / "runs")
    assert [(c.name, c.trained) for c in choices] == [("untrained", False)] and problems == []
    assert run_cli(evaluate_main, ["app", str(evaluated_run), "--port", "0"]) == 2  # argparse: not a port
    capsys.readouterr()
    somefile = tmp_path / "notes.txt"
    somefile.write_text("not a run\n")
    assert run_cli(evaluate_main, ["app", str(somefile)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "is a file, not a run folder" in err and "not found" not in err


def test_cli_refuses_a_device_it_cannot_use(evaluated_run, capsys):
    """``--device`` is checked at the terminal (spelling, no torch in the launcher) and again where the model is
    loaded (a GPU this machine lacks): an error message either way, never torch's RuntimeError in the page."""
    import torch

    from train.infer import pick_device

    assert run_cli(evaluate_main, ["app", str(evaluated_run), "--device", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--device" in err and "'bogus'" in err and "auto, cpu, cuda or cuda:N" in err
    # a GPU the machine lacks is said at the terminal too, still without importing torch into the launcher
    code = ("import sys\nfrom core.errors import SegLoopError\nfrom evaluate.app_server import app_args\n"
            f"try:\n    app_args([{str(evaluated_run)!r}], 'runs', 'best', 'cuda:7')\n"
            "except SegLoopError as e:\n    assert 'cuda:7' in str(e), e\nelse:\n    raise SystemExit('accepted')\n"
            "assert 'torch' not in sys.modules, 'the launcher imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    with pytest.raises(SegLoopError, match="must be auto, cpu, cuda or cuda:N"):
        pick_device("bogus")
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(SegLoopError, match="nvidia-smi"):
        pick_device(missing)
    with pytest.raises(SegLoopError, match="CUDA GPU"):
        lib.load_demo_model(evaluated_run, device=missing)
    assert pick_device("cpu").type == "cpu"


def _as_unprivileged_user(check) -> str:
    """The message of the ``SegLoopError`` that ``check`` raises as a user who is not root (run as such, or in a
    forked child that drops to ``nobody``), or ``bound`` when it raises none."""
    def outcome() -> str:
        try:
            check()
        except SegLoopError as exc:
            return str(exc)
        return "bound"

    if os.geteuid() != 0:
        return outcome()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only drops its user, binds and reports: no exec, no other thread
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, outcome().encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_cli_says_why_a_port_cannot_be_used(evaluated_run, capsys):
    import socket

    from evaluate.app_server import check_port

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert run_cli(evaluate_main, ["app", str(evaluated_run), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"port {port} on 127.0.0.1 is in use" in err and "privileged" not in err
    check_port(port)  # free again
    # port 80 as a user who is not root: privileged, which is not "in use"
    out = _as_unprivileged_user(lambda: check_port(80))
    if out == "bound":
        pytest.skip("this machine lets every user listen on port 80 (net.ipv4.ip_unprivileged_port_start)")
    assert "port 80 on 127.0.0.1 is privileged" in out and "1024 or above" in out and "in use" not in out


def _start(run: Path, port: int, home: Path) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "HOME": str(home), "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "evaluate", "app", str(run), "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def _wait_for_url(proc: subprocess.Popen, lines: list[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"python -m evaluate app exited with {proc.returncode}: {''.join(lines)[-3000:]}")
        url = next((ln.split(" at ", 1)[1].split()[0] for ln in lines if "model demo serving at" in ln), None)
        if url:
            return url
        time.sleep(0.5)
    pytest.fail(f"the demo did not start within {timeout} s: {''.join(lines)[-3000:]}")


def _main_images(page):
    return page.locator("[data-testid=stImage] img")


@pytest.mark.slow
def test_page_overlays_an_uploaded_image_in_chromium(evaluated_run, demo_version, tmp_path):
    from playwright.sync_api import sync_playwright

    im = demo_version.images("test")[-1]
    upload = tmp_path / "street.png"
    Image.fromarray(demo_version.load_image(im)).save(upload)
    dm = lib.load_demo_model(evaluated_run)
    expected_pred = lib.predict(dm, lib.decode_upload(upload.read_bytes(), upload.name))
    expected = lib.overlay(expected_pred, dm.taxonomy, 1.0)
    bad = tmp_path / "notes.png"
    bad.write_text("a text file renamed .png\n")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    proc, lines = _start(evaluated_run, port, home)
    try:
        url = _wait_for_url(proc, lines)
        assert url == f"http://127.0.0.1:{port}"
        listening = listening_addresses(port)
        assert listening and all(a in LOOPBACK for a in listening), listening
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/?opacity=1.0")  # the opacity slider is bound to the query string
            page.wait_for_selector("text=Overlay opacity", timeout=120_000)
            page.locator("input[type=file]").first.set_input_files(str(upload))
            page.wait_for_selector(f"text={upload.name}: prediction", timeout=120_000)
            overlay_img = _main_images(page).first
            overlay_img.wait_for(timeout=60_000)
            src = overlay_img.get_attribute("src")
            served = np.asarray(Image.open(io.BytesIO(page.request.get(f"{url}{src}" if src.startswith("/")
                                                                       else src).body())).convert("RGB"))
            assert served.shape == expected.shape
            assert (served == expected).all(-1).mean() > 0.995  # the page shows the library's overlay
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT), full_page=True)
            shot = np.asarray(Image.open(io.BytesIO(overlay_img.screenshot())).convert("RGB")).astype(int)
            rows = lib.legend(expected_pred, dm.taxonomy)
            palette = np.array([r.color for r in rows])
            near = np.abs(shot[:, :, None, :] - palette[None, None]).max(-1)  # (H, W, classes)
            is_class = near.min(-1) <= 12
            assert is_class.mean() > 0.85, is_class.mean()  # at opacity 1 only taxonomy colours are shown
            shares = np.bincount(near.argmin(-1)[is_class], minlength=len(rows)) / is_class.sum()
            for r, share in zip(rows, shares, strict=True):
                assert abs(share - r.share) < 0.03, (r.name, share, r.share)
            body = page.inner_text("body")
            assert f"{rows[0].name}: {rows[0].share:.1%}" in body
            assert "inference" in body and f"ms on {dm.device.type}" in body
            assert "entropy of the class probabilities" in body

            page.locator("input[type=file]").first.set_input_files(str(bad))
            page.wait_for_selector("text=Cannot use this upload", timeout=60_000)
            message = page.inner_text("body")
            assert "notes.png" in message and "not a readable image" in message
            assert page.locator("[data-testid=stException]").count() == 0  # an error message, not a traceback
            browser.close()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the command stops Streamlit and exits cleanly
        assert proc.wait(timeout=60) == 0
        assert not listening_addresses(port)
        assert not (home / ".streamlit").exists()  # no telemetry id or credentials written to ~
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_page_lists_runs_with_task_and_training_state(evaluated_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(evaluated_run, runs / "tiny", ignore=shutil.ignore_patterns("eval", "tb"))
    (runs / "later").mkdir()
    info = json.loads((evaluated_run / "run.json").read_text())
    (runs / "later" / "run.json").write_text(json.dumps({**info, "task": "instance"}))
    (runs / "not-a-run").mkdir()
    for name, text in (("torn", '{"task": "semantic", "data'), ("listed", "[1, 2]")):
        (runs / name).mkdir()
        (runs / name / "run.json").write_text(text)
    choices, problems = lib.list_runs(runs)
    assert [(c.name, c.task, c.trained) for c in choices] == [("tiny", "semantic", True),
                                                              ("later", "instance", False)]
    assert choices[0].dataset == info["dataset_version"]
    assert len(problems) == 2, problems  # one note per unreadable run, in name order
    assert "'listed'" in problems[0] and "not a JSON object" in problems[0] and "an array" in problems[0]
    assert "'torn'" in problems[1] and "does not parse as JSON" in problems[1]


def test_page_says_why_an_untrained_run_cannot_be_shown(evaluated_run, tmp_path, monkeypatch):
    """The real page script, run by Streamlit's own script runner (no browser needed for a message)."""
    from streamlit.testing.v1 import AppTest

    runs = tmp_path / "runs"
    (runs / "untrained").mkdir(parents=True)
    shutil.copy(evaluated_run / "run.json", runs / "untrained" / "run.json")
    monkeypatch.setattr(sys, "argv", ["app_page.py", "--runs-dir", str(runs)])
    at = AppTest.from_file(str(ROOT / "evaluate" / "app_page.py"), default_timeout=60).run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "untrained" in errors and "best.pt" in errors and "python -m train.run" in errors
    assert not at.get("image")  # nothing drawn

    shutil.copytree(evaluated_run, runs / "tiny", ignore=shutil.ignore_patterns("eval", "tb"))
    at = AppTest.from_file(str(ROOT / "evaluate" / "app_page.py"), default_timeout=60).run()
    assert not at.exception and not at.error
    assert len(at.get("image")) == 2  # the trained run listed first: its overlay and uncertainty of a test image

    (runs / "torn").mkdir()
    (runs / "torn" / "run.json").write_text("[]")  # valid JSON, not an object: that run's note, not a traceback
    at = AppTest.from_file(str(ROOT / "evaluate" / "app_page.py"), default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error if "torn" in e.value and "not a JSON object" in e.value]
    assert len(at.get("image")) == 2  # the readable runs are still offered and shown


def test_page_shows_a_semantic_and_an_instance_run_side_by_side(evaluated_run, instance_run, monkeypatch):
    """Two runs named on the command line: both are picked, each gets its column with its heading, overlay and
    uncertainty map of the same test image, and the instance run its detections table."""
    from streamlit.testing.v1 import AppTest

    inst = instance_run.run_dir
    monkeypatch.setattr(sys, "argv", ["app_page.py", str(evaluated_run), str(inst)])
    at = AppTest.from_file(str(ROOT / "evaluate" / "app_page.py"), default_timeout=180).run()
    assert not at.exception and not at.error
    assert len(at.multiselect[0].value) == 2
    columns = at.columns
    assert len(columns) == 2
    for col, (name, task) in zip(columns, ((evaluated_run.name, "semantic"), (inst.name, "instance")), strict=True):
        assert [h.value for h in col.subheader] == [f"{name} ({task})"]
        images = col.get("image")
        assert len(images) == 2  # overlay and uncertainty
    assert not columns[0].dataframe and len(columns[1].dataframe) == 1
