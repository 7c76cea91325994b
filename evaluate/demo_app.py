"""The model demo behind ``python -m evaluate app``: everything the Streamlit page shows, as plain functions.

The page (``evaluate/app_page.py``) only lays out widgets; picking runs, loading a model once, decoding an upload
safely, predicting one image, blending the prediction over it, the legend with pixel shares and the uncertainty
picture all live here, so tests call them directly and the browser test can compare the page's pixels with the
library's own overlay of the same image.

What is predicted and drawn for a run is its task's app part (``tasks/<name>/app.py``): a semantic run's classes
and the entropy of its class probabilities, an instance run's detections above the chosen score threshold with
their outlines, scores and table. The page lays out whatever the task gives it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import tasks
from core.errors import SegLoopError
from core.fsio import deep_colour, deep_colour_rgb8, to_rgb8, turned_upright
from core.runs import DEFAULT_TASK, GROUP, Run, dataset_ref, run_folders
from evaluate.app_server import check_trained
from evaluate.inference import Inference, load_for_inference
from ingest.taxonomy import ClassDef, Taxonomy, hex_color
from ingest.version import DatasetVersion, resolve_version
from tasks.instance.results import SCORE_THRESHOLD
from train.data import resize_image

MAX_PIXELS = 40_000_000  # uploads above this (e.g. 8000 x 5000) are refused before they are decoded

DISPLAY_SIDE = 1024  # images are shown (and predicted) at most this long on their longer side


@dataclass(frozen=True)
class RunChoice:
    """A run the page can offer: its folder, task, dataset version and whether it has the checkpoint."""

    path: Path
    name: str
    task: str
    dataset: str
    trained: bool


@dataclass
class DemoModel:
    """A run's model ready for single-image inference, with what the page needs to draw its output."""

    run: Path
    checkpoint: Path
    inference: Inference
    task: str
    taxonomy: Taxonomy
    image_size: tuple[int, int]
    amp: bool
    dataset_ref: str | Path
    versions_root: str
    checkpoint_mtime_ns: int = 0  # the checkpoint file version loaded: predictions are remembered per version

    @property
    def model(self) -> torch.nn.Module:
        return self.inference.model

    @property
    def device(self) -> torch.device:
        return self.inference.device

    @property
    def app(self) -> Any:
        """The run's task's app part: what is predicted and drawn."""
        return tasks.get(self.task).app()


@dataclass
class Prediction:
    """One image's model output at the displayed size; ``labels`` are train indices (ignore where nothing)."""

    image: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray  # float32 in [0, 1], same size as the image
    seconds: float
    task: str
    results: list[dict[str, Any]] = field(default_factory=list)  # COCO results of a detecting run
    score_threshold: float = SCORE_THRESHOLD

    @property
    def image_uncertainty(self) -> float:
        """One number per image, as the labeling loop ranks images (the task's own measure)."""
        return tasks.get(self.task).app().image_uncertainty(self)


@dataclass(frozen=True)
class LegendRow:
    name: str
    index: int
    color: tuple[int, int, int]
    pixels: int
    share: float

    @property
    def hex(self) -> str:
        return hex_color(self.color)


# ----------------------------------------------------------------------------------------------------- runs


def describe_run(path: str | Path, which: str = "best") -> RunChoice:
    """What the page lists for a run folder (``run.json`` only: no torch, no checkpoint read)."""
    run = Run(path)
    info = run.info()
    return RunChoice(run.dir, run.name, info.get("task", DEFAULT_TASK), str(info.get("dataset_version", "?")),
                     run.checkpoint_path(which).is_file())


def list_runs(runs_dir: str | Path = "runs", which: str = "best") -> tuple[list[RunChoice], list[str]]:
    """Every run folder under ``runs_dir`` (trained or not: the page says why an untrained one cannot be shown),
    trained runs first, then by name; and one note per run whose ``run.json`` cannot be read, so that one corrupt
    run costs its own entry, not the whole page."""
    root = Path(runs_dir)
    if not root.is_dir():
        return [], []
    found, problems = [], []
    for d in run_folders(root):
        if not Run(d).info_path.is_file():
            continue
        try:
            choice = describe_run(d, which)
            if (d.parent / GROUP).is_file():  # a fold of a k-fold group: fold0 of two groups read apart
                choice = dataclasses.replace(choice, name=f"{d.parent.name}/{d.name}")
            found.append(choice)
        except SegLoopError as exc:
            problems.append(f"run '{d.name}' is left out: {exc}")
    return sorted(found, key=lambda r: (not r.trained, r.name)), problems


def load_demo_model(run: str | Path, which: str = "best", device: str = "auto") -> DemoModel:
    """A run's model, loaded once per checkpoint file version (a retrained run is loaded again)."""
    path = check_trained(run, which)
    ckpt_path = Run(path).checkpoint_path(which)
    return _load_cached(str(path.resolve()), which, device, ckpt_path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, which: str, device: str, mtime_ns: int) -> DemoModel:
    ckpt_path = Run(path).checkpoint_path(which)
    inf = load_for_inference(ckpt_path, device)
    ckpt = inf.ckpt
    cfg = ckpt["config"]
    t = ckpt["taxonomy"]
    taxonomy = Taxonomy(t["name"], [ClassDef(c["name"], c["index"], tuple(c["color"]), c.get("instances", False))
                                    for c in t["classes"]], int(t.get("ignore_index", 255)))
    return DemoModel(Path(path), ckpt_path, inf, inf.task, taxonomy,
                     tuple(cfg["data"]["image_size"]), bool(cfg["train"]["amp"]),
                     dataset_ref(ckpt["dataset_path"], ckpt["dataset_version"]), cfg["data"]["versions_root"],
                     mtime_ns)


def dataset_images(dm: DemoModel, split: str = "test") -> tuple[DatasetVersion | None, list[dict[str, Any]], str]:
    """The run's dataset version and the images of ``split`` (falling back to val), or a note saying why none."""
    try:
        ds = DatasetVersion(resolve_version(dm.dataset_ref, dm.versions_root))
    except SegLoopError as exc:
        return None, [], f"the run's dataset version is not here ({exc.message}); upload an image instead"
    for s in (split, "val"):
        images = ds.images(s)
        if images:
            return ds, images, f"{len(images)} {s} images of {ds.version}"
    return ds, [], f"{ds.version} has no {split} or val images; upload an image instead"


# ----------------------------------------------------------------------------------------------------- input


def decode_upload(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An uploaded file as an RGB array; not an image, or more than ``max_pixels`` pixels, is a ``SegLoopError``.
    The size is read from the header before anything is decoded, so a huge file costs no memory."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise SegLoopError(f"image is {w} x {h} = {w * h / 1e6:.0f} megapixels, above the demo's limit of "
                                   f"{max_pixels / 1e6:.0f}", path=name,
                                   fix="downscale it (e.g. to 2048 pixels wide) and upload it again")
            if deep_colour(img):  # 16 bits per channel: Pillow would keep each sample's high byte only
                return turned_upright(deep_colour_rgb8(data, img, name), img)
            img.load()
            # a phone photo is stored sideways with an EXIF orientation tag: show it the way up the camera saw it
            return to_rgb8(ImageOps.exif_transpose(img))
    except SegLoopError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses it at open, before our own check
        raise SegLoopError(f"image is above the demo's limit of {max_pixels / 1e6:.0f} megapixels ({exc})",
                           path=name, fix="downscale it (e.g. to 2048 pixels wide) and upload it again") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SegLoopError(f"not a readable image ({type(exc).__name__}: {str(exc)[:120]})", path=name,
                           fix="upload a PNG or JPEG photo") from None


def display_size(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image shrunk so its longer side is at most ``side`` (prediction and overlay work at this size)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    return resize_image(image, (max(1, round(h * scale)), max(1, round(w * scale))))


# ----------------------------------------------------------------------------------------------------- predict


def predict(dm: DemoModel, image: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> Prediction:
    """One image through the run's model, at the displayed size; ``seconds`` is the model's time alone."""
    image = display_size(image)
    return with_threshold(dm.app.predict(dm, image), dm.taxonomy, score_threshold)


_PREDICTIONS: OrderedDict[tuple[str, int, str, str], Prediction] = OrderedDict()
_LOCK = threading.Lock()


def predict_cached(dm: DemoModel, image: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> Prediction:
    """``predict``, remembered for the last few (model, image) pairs: moving the opacity or threshold slider reruns
    the page, and only the drawing should run again, not the model (seconds per image for Mask R-CNN on a CPU).
    The model is named by its checkpoint file and that file's version, not by ``id(dm)``: a model evicted from the
    load cache frees its id for the next one, whose predictions must not be taken for its own."""
    key = (str(dm.checkpoint.resolve()), dm.checkpoint_mtime_ns, str(dm.device),
           hashlib.sha1(np.ascontiguousarray(image).data).hexdigest() + str(image.shape))
    with _LOCK:  # each browser session runs the page in its own thread
        pred = _PREDICTIONS.get(key)
    if pred is None:  # the model's output, kept before any threshold: each rerun draws at the slider's
        pred = dm.app.predict(dm, display_size(image))
        with _LOCK:
            _PREDICTIONS[key] = pred
            while len(_PREDICTIONS) > 8:
                _PREDICTIONS.popitem(last=False)
    return with_threshold(pred, dm.taxonomy, score_threshold)


def with_threshold(pred: Prediction, taxonomy: Taxonomy, score_threshold: float) -> Prediction:
    """The prediction as shown at another score threshold (no second pass through the model); a prediction
    without scores is shown as it is."""
    return tasks.get(pred.task).app().with_threshold(pred, taxonomy, score_threshold)


# ----------------------------------------------------------------------------------------------------- drawing


def overlay(pred: Prediction, taxonomy: Taxonomy, opacity: float = 0.6, scores: bool = True) -> np.ndarray:
    """The image with the predicted classes blended in at ``opacity`` (1: taxonomy colours only, 0: the image);
    pixels without a class (ignore, no instance) keep the image. The task adds its own marks (a detecting run's
    outlines, and with ``scores`` each detection's class and score)."""
    opacity = float(np.clip(opacity, 0, 1))
    img = pred.image.astype(np.float32)
    colours = taxonomy.colorize(pred.labels).astype(np.float32)
    painted = (pred.labels != taxonomy.ignore_index)[..., None]
    out = np.where(painted, img * (1 - opacity) + colours * opacity, img).round().astype(np.uint8)
    return tasks.get(pred.task).app().decorate(out, pred, taxonomy, scores)


def legend(pred: Prediction, taxonomy: Taxonomy) -> list[LegendRow]:
    """The predicted classes with their taxonomy colour and share of the image's pixels, largest first."""
    counts = np.bincount(pred.labels.ravel(), minlength=256)
    total = max(1, pred.labels.size)
    rows = [LegendRow(c.name, c.index, tuple(c.color), int(counts[c.index]), float(counts[c.index] / total))
            for c in taxonomy.classes if counts[c.index]]
    return sorted(rows, key=lambda r: (-r.pixels, r.index))


def uncertainty_image(pred: Prediction) -> np.ndarray:
    """The uncertainty map as RGB (inferno: black certain, yellow uncertain), fixed scale 0..1 so two runs'
    maps compare by colour."""
    grey = (np.clip(pred.uncertainty, 0, 1) * 255).round().astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def detections_table(pred: Prediction, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """A detecting run's detections at or above its threshold, highest score first (empty for a class map)."""
    return tasks.get(pred.task).app().detections(pred, taxonomy)
