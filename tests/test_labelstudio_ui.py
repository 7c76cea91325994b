"""SegLoop's pre-annotations must render in Label Studio's labeling UI: headless Chromium takes a screenshot."""

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
