"""SegLoop's pre-annotations must render in Label Studio's labeling UI: headless Chromium takes a screenshot."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.client import LabelStudio
from annotate.project import ensure_project, import_images, push_predictions
from ingest.taxonomy import load_taxonomy
from tests.browser import launch

TAX = load_taxonomy("cityscapes")


@pytest.mark.slow
def test_pre_annotations_render_in_the_labeling_ui(label_studio, demo_version, tiny_run, tmp_path):
    from playwright.sync_api import sync_playwright

    from evaluate.predict import predict_images

    client = LabelStudio(label_studio["url"], label_studio["token"])
    folder = label_studio["files_root"] / "ui"
    folder.mkdir()
    im = demo_version.images("test")[0]
    shutil.copy(demo_version.image_path(im), folder / demo_version.image_path(im).name)
    project, _ = ensure_project(client, "ui-check", TAX, ["polygon", "brush"])
    import_images(client, project, folder)
    predict_images(tiny_run.run_dir, folder, name="ui", progress=False)
    push_predictions(client, project, tiny_run.run_dir, TAX)
    task = client.tasks(project["id"])[0]
    password = (label_studio["data_dir"] / "admin_password").read_text().strip()
    shot = Path(__file__).resolve().parent.parent / ".cache" / "screenshots" / "labelstudio_pre_annotations.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{label_studio['url']}/user/login/")
        page.fill("input[name=email]", "admin@segloop.local")
        page.fill("input[name=password]", password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
        page.goto(f"{label_studio['url']}/projects/{project['id']}/data?task={task['id']}")
        page.wait_for_selector("canvas", timeout=90_000)  # the image and region layers are canvases
        page.wait_for_timeout(3000)
        page.screenshot(path=str(shot))
        regions = [t.strip() for t in page.locator(".lsf-outliner-item__title").all_inner_texts()]
        text = page.inner_text("body")
        browser.close()
    # the region list shows one brush per class the model predicted, and the prediction tab names the run
    pred = np.asarray(Image.open(next((tiny_run.run_dir / "predict" / "ui" / "pred").glob("*.png"))))
    predicted = {TAX.names[c] for c in np.unique(pred)}
    assert set(regions) == predicted, (regions, predicted)
    assert tiny_run.run_dir.name in text
    # and the brushes are painted: the image area holds the colour of the largest predicted class
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    biggest = TAX.classes[int(np.bincount(pred.ravel()).argmax())]
    tint = (np.abs(img[100:480, 250:1000] - np.array(biggest.color)).sum(-1) < 90).mean()
    assert tint > 0.05, f"{biggest.name} brush hardly visible ({tint:.2%}) in {shot}"


# ------------------------------------------------------------------------------------------------- paint order
W, H = 400, 200
A = (10, 20, 60, 80)  # x0, y0, x1, y1 in percent: the first region of each case
B = (40, 20, 90, 80)  # the second; A and B overlap in x 40..60 %


def _region(kind: str, label: str, box: tuple[int, int, int, int]) -> dict:
    x0, y0, x1, y1 = box
    base = {"to_name": "image", "original_width": W, "original_height": H, "image_rotation": 0}
    if kind == "polygon":
        return {**base, "from_name": "polygon", "type": "polygonlabels",
                "value": {"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "polygonlabels": [label],
                          "closed": True}}
    from ingest.ls_brush import encode_mask

    m = np.zeros((H, W), bool)
    m[y0 * H // 100:y1 * H // 100, x0 * W // 100:x1 * W // 100] = True
    return {**base, "from_name": "brush", "type": "brushlabels",
            "value": {"format": "rle", "rle": encode_mask(m), "brushlabels": [label]}}


# case: (first region of the result, second region, the label the editor shows on top where they overlap)
PAINT_CASES = {
    "brush_then_polygon": (("brush", "person"), ("polygon", "car"), "car"),  # a polygon over a brush
    "polygon_then_brush": (("polygon", "car"), ("brush", "person"), "car"),  # a brush drawn over it stays below
    "brush_then_brush": (("brush", "person"), ("brush", "car"), "person"),  # within a kind the first is on top
    "polygon_then_polygon": (("polygon", "car"), ("polygon", "person"), "car"),
}


def _login(page, label_studio) -> None:
    password = (label_studio["data_dir"] / "admin_password").read_text().strip()
    page.goto(f"{label_studio['url']}/user/login/")
    page.fill("input[name=email]", "admin@segloop.local")
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)


def _on_top(only_first, only_second, overlap, color_first, color_second) -> tuple[str, float, float]:
    """Which of two translucent regions is drawn on top, from the colours on a black image: region X alone shows
    a_X * C_X; X over Y shows X_alone + (1 - a_X) * Y_alone. Returns (winner, its error, the other's error)."""
    def alpha(seen, color):
        c = np.asarray(color, float)
        return float(np.clip(seen @ c / (c @ c), 0, 1))

    first_top = only_first + (1 - alpha(only_first, color_first)) * only_second
    second_top = only_second + (1 - alpha(only_second, color_second)) * only_first
    e1, e2 = float(np.abs(overlap - first_top).max()), float(np.abs(overlap - second_top).max())
    return ("first" if e1 < e2 else "second"), min(e1, e2), max(e1, e2)


@pytest.mark.slow
def test_overlaps_in_the_editor_match_ingest(label_studio, tmp_path):
    """The editor's paint order, seen in the real UI (headless Chromium), is the order ingest paints in: a
    polygon is drawn over a brush whichever came first; within brushes or within polygons the region that comes
    first in the result is on top."""
    from playwright.sync_api import sync_playwright

    from annotate.project import export_snapshot
    from ingest.version import DatasetVersion, build, load_data_config
    from tests.conftest import ROOT

    client = LabelStudio(label_studio["url"], label_studio["token"])
    folder = label_studio["files_root"] / "paint"
    folder.mkdir()
    for k, case in enumerate(PAINT_CASES):
        img = np.zeros((H, W, 3), np.uint8)
        img[0, 0] = k + 1  # distinct images (import skips identical ones); black where the regions are
        Image.fromarray(img).save(folder / f"{case}.png")
    project, _ = ensure_project(client, "paint-order", TAX, ["polygon", "brush"])
    import_images(client, project, folder)
    tasks = {Path(t["data"]["file"]).stem: t for t in client.tasks(project["id"])}
    for case, (first, second, _) in PAINT_CASES.items():
        client.post(f"/api/tasks/{tasks[case]['id']}/annotations",
                    {"result": [_region(*first, A), _region(*second, B)]})
    shots = Path(__file__).resolve().parent.parent / ".cache" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    seen, measured = {}, {}
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _login(page, label_studio)
        for case, (first, second, _) in PAINT_CASES.items():
            page.goto(f"{label_studio['url']}/projects/{project['id']}/data?task={tasks[case]['id']}")
            page.wait_for_selector(".konvajs-content canvas", timeout=90_000)
            page.wait_for_timeout(2500)
            shot = shots / f"labelstudio_paint_order_{case}.png"
            page.screenshot(path=str(shot))
            box = page.locator(".konvajs-content").first.bounding_box()
            png = np.asarray(Image.open(shot).convert("RGB")).astype(float)

            def at(px: float, py: float, png=png, box=box) -> np.ndarray:
                x, y = box["x"] + box["width"] * px / 100, box["y"] + box["height"] * py / 100
                return png[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3].reshape(-1, 3).mean(0)

            colors = [np.asarray(TAX.classes[TAX.index_of(label)].color, float) for _, label in (first, second)]
            samples = at(25, 50), at(75, 50), at(50, 50)
            winner, err, other = _on_top(*samples, *colors)
            seen[case] = (first if winner == "first" else second)[1]
            measured[case] = {"result": [first, second], "on_top": seen[case], "fit": round(err, 1),
                              "other_order_fit": round(other, 1),
                              "first_alone": samples[0].round(1).tolist(), "second_alone": samples[1].round(1).tolist(),
                              "overlap": samples[2].round(1).tolist()}
            assert err < 0.5 * other, f"{case}: overlap colour fits neither order ({err:.1f} vs {other:.1f}), {shot}"
        browser.close()
    (shots / "labelstudio_paint_order.json").write_text(json.dumps(measured, indent=1))
    assert seen == {case: top for case, (_, _, top) in PAINT_CASES.items()}, seen
    # ingest paints the same regions the same way
    snap = export_snapshot(client, project, tmp_path / "snapshots")
    cfg = load_data_config(ROOT / "configs/data/default.yaml", [
        "name=paint", f"output={tmp_path / 'v'}", "split.mode=ratio",
        f"sources=[{{type: labelstudio, name: paint, root: '{snap}', images_root: '{label_studio['files_root']}', "
        "group: '(.*)'}]"])
    ds = DatasetVersion(build(cfg, progress=False).path)
    for split in ("train", "val", "test"):
        for im in ds.images(split):
            case = ds.image_path(im).stem
            assert TAX.names[ds.load_semantic(im)[H // 2, W // 2]] == seen[case], case
