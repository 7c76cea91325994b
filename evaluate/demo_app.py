"""The model demo behind ``python -m evaluate app``: everything the Streamlit page shows, as plain functions.

The page (``evaluate/app_page.py``) only lays out widgets; picking runs, loading a model once, decoding an upload
safely, predicting one image, blending the prediction over it, the legend with pixel shares and the uncertainty
picture all live here, so tests call them directly and the browser test can compare the page's pixels with the
library's own overlay of the same image.

Semantic runs show the argmax classes and the normalised softmax entropy (as ``evaluate run`` writes it). Instance
runs show the detections scored at least the chosen threshold, painted and outlined with their scores, and an
uncertainty map where each detection's pixels hold 1 - its score (the per-image figure is
``evaluate.instance_eval.instance_uncertainty``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from core.errors import SegLoopError
from core.runs import Run, dataset_ref
from evaluate.app_server import check_trained
from evaluate.gallery import _font, outline
from evaluate.instance_eval import SCORE_THRESHOLD, instance_uncertainty, paint_instances, predict_instances
from evaluate.runner import load_for_inference, normalised_entropy
from ingest.coco import decode_rle, train_index
from ingest.taxonomy import ClassDef, Taxonomy
from ingest.version import DatasetVersion, resolve_version
from train.data import resize_image
from train.infer import predict_logits

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
    model: torch.nn.Module
    device: torch.device
    channels_last: bool
    task: str
    taxonomy: Taxonomy
    image_size: tuple[int, int]
    amp: bool
    dataset_ref: str | Path
    versions_root: str
    checkpoint_mtime_ns: int = 0  # the checkpoint file version loaded: predictions are remembered per version


@dataclass
class Prediction:
    """One image's model output at the displayed size; ``labels`` are train indices (ignore where nothing)."""

    image: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray  # float32 in [0, 1], same size as the image
    seconds: float
    task: str
    results: list[dict[str, Any]] = field(default_factory=list)  # COCO results of an instance run
    score_threshold: float = SCORE_THRESHOLD

    @property
    def image_uncertainty(self) -> float:
        """One number per image: mean entropy (semantic) or 1 - mean confident score (instance)."""
        if self.task == "instance":
            return instance_uncertainty(self.results, self.score_threshold)
        return float(self.uncertainty.mean())


@dataclass(frozen=True)
class LegendRow:
    name: str
    index: int
    color: tuple[int, int, int]
    pixels: int
    share: float

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


# ----------------------------------------------------------------------------------------------------- runs


def describe_run(path: str | Path, which: str = "best") -> RunChoice:
    """What the page lists for a run folder (``run.json`` only: no torch, no checkpoint read)."""
    run = Run(path)
    info = run.info()
    return RunChoice(run.dir, run.name, info.get("task", "semantic"), str(info.get("dataset_version", "?")),
                     run.checkpoint_path(which).is_file())


def list_runs(runs_dir: str | Path = "runs", which: str = "best") -> tuple[list[RunChoice], list[str]]:
    """Every run folder under ``runs_dir`` (trained or not: the page says why an untrained one cannot be shown),
    trained runs first, then by name; and one note per run whose ``run.json`` cannot be read, so that one corrupt
    run costs its own entry, not the whole page."""
    root = Path(runs_dir)
    if not root.is_dir():
        return [], []
    found, problems = [], []
    for d in sorted(root.iterdir()):
        if not Run(d).info_path.is_file():
            continue
        try:
            found.append(describe_run(d, which))
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
    model, ckpt, dev, channels_last = load_for_inference(ckpt_path, device)
    cfg = ckpt["config"]
    t = ckpt["taxonomy"]
    taxonomy = Taxonomy(t["name"], [ClassDef(c["name"], c["index"], tuple(c["color"]), c.get("instances", False))
                                    for c in t["classes"]], int(t.get("ignore_index", 255)))
    return DemoModel(Path(path), ckpt_path, model, dev, channels_last, ckpt["model_spec"]["task"], taxonomy,
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
            img.load()
            # a phone photo is stored sideways with an EXIF orientation tag: show it the way up the camera saw it
            return np.array(ImageOps.exif_transpose(img).convert("RGB"))
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
    if dm.task == "instance":
        return _predict_instance(dm, image, score_threshold)
    x = torch.from_numpy(resize_image(image, dm.image_size))[None]
    sync = dm.device.type == "cuda"
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    logits = predict_logits(dm.model, x, image.shape[:2], dm.device, dm.amp, dm.channels_last)
    if sync:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    probs = logits.softmax(1)[0]
    labels = probs.argmax(0).byte().cpu().numpy()
    ent = normalised_entropy(probs, math.log(dm.taxonomy.num_classes)).float().cpu().numpy()
    return Prediction(image, labels, ent, seconds, "semantic")


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
    if pred is None:
        pred = predict(dm, image)
        with _LOCK:
            _PREDICTIONS[key] = pred
            while len(_PREDICTIONS) > 8:
                _PREDICTIONS.popitem(last=False)
    return with_threshold(pred, dm.taxonomy, score_threshold)


def _predict_instance(dm: DemoModel, image: np.ndarray, score_threshold: float) -> Prediction:
    from metrics.coco import outputs_to_results

    sync = dm.device.type == "cuda"
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = predict_instances(dm.model, image, dm.device, dm.amp)
    if sync:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    results = outputs_to_results(0, out)
    pred = Prediction(image, np.empty(0, np.uint8), np.empty(0, np.float32), seconds, "instance", results)
    return with_threshold(pred, dm.taxonomy, score_threshold)


def with_threshold(pred: Prediction, taxonomy: Taxonomy, score_threshold: float) -> Prediction:
    """An instance prediction re-painted at another score threshold (no second pass through the model)."""
    if pred.task != "instance":
        return pred
    shape = pred.image.shape[:2]
    labels = paint_instances(pred.results, shape, taxonomy.ignore_index, score_threshold)
    unc = np.zeros(shape, np.float32)
    for r in sorted(pred.results, key=lambda r: r["score"]):  # higher scores on top, as painted
        if r["score"] >= score_threshold and "segmentation" in r:
            unc[decode_rle(r["segmentation"])] = 1 - r["score"]
    return Prediction(pred.image, labels, unc, pred.seconds, "instance", pred.results, score_threshold)


# ----------------------------------------------------------------------------------------------------- drawing


def overlay(pred: Prediction, taxonomy: Taxonomy, opacity: float = 0.6, scores: bool = True) -> np.ndarray:
    """The image with the predicted classes blended in at ``opacity`` (1: taxonomy colours only, 0: the image);
    pixels without a class (ignore, no instance) keep the image. Instance runs get each kept detection outlined
    in white, with its score at its box."""
    opacity = float(np.clip(opacity, 0, 1))
    img = pred.image.astype(np.float32)
    colours = taxonomy.colorize(pred.labels).astype(np.float32)
    painted = (pred.labels != taxonomy.ignore_index)[..., None]
    out = np.where(painted, img * (1 - opacity) + colours * opacity, img).round().astype(np.uint8)
    if pred.task != "instance":
        return out
    kept = [r for r in pred.results if r["score"] >= pred.score_threshold and "segmentation" in r]
    out = outline(out, [decode_rle(r["segmentation"]) for r in kept])
    if not scores or not kept:
        return out
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for r in kept:
        x, y = r.get("bbox", [0, 0, 0, 0])[:2]
        name = taxonomy.classes[train_index(r["category_id"])].name
        draw.text((x + 2, y + 1), f"{name} {r['score']:.2f}", fill=(255, 255, 255), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
    return np.asarray(canvas)


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
    """An instance prediction's detections at or above its threshold, highest score first."""
    rows = [{"class": taxonomy.classes[train_index(r["category_id"])].name, "score": round(r["score"], 3),
             "pixels": int(decode_rle(r["segmentation"]).sum()) if "segmentation" in r else 0}
            for r in pred.results if r["score"] >= pred.score_threshold]
    return sorted(rows, key=lambda r: -r["score"])
