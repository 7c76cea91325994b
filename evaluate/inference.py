"""What every task's evaluation part shares: a run's model loaded for inference, timing, the header each
``metrics.json`` starts with, and the figure formats of the CSVs and the terminal.

The stages (``evaluate run``, ``evaluate predict``, the app) load a checkpoint here once and hand the task's
evaluation part an ``Inference``; what is predicted, scored and written is the task's (``tasks/<name>/evaluate.py``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import tasks
from train.checkpoint import load_model
from train.infer import pick_device


@dataclass
class Inference:
    """A run's model ready to predict: the checkpoint it came from, the device and layout it runs in."""

    checkpoint: Path
    ckpt: dict[str, Any]
    model: torch.nn.Module
    device: torch.device
    channels_last: bool

    @property
    def task(self) -> str:
        return self.ckpt["model_spec"]["task"]

    @property
    def plugin(self) -> tasks.TaskPlugin:
        return tasks.get(self.task)

    @property
    def amp(self) -> bool:
        return bool(self.ckpt["config"]["train"]["amp"])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.ckpt["config"]["data"]["image_size"])

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.ckpt["taxonomy"]["classes"]]

    @property
    def ignore_index(self) -> int:
        return int(self.ckpt["taxonomy"].get("ignore_index", 255))

    def timed(self, fn: Callable[[], Any], times: list[float]) -> Any:
        """``fn()``, its seconds appended to ``times`` (the GPU synchronised on both sides, so they are the
        model's own)."""
        sync = self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        return out


def load_for_inference(ckpt_path: Path, device: str = "auto", task: str | None = None) -> Inference:
    """A checkpoint's model on the chosen device, in the memory layout its task runs best in there. With ``task``, a
    checkpoint of another task is refused."""
    model, ckpt = load_model(ckpt_path, task=task)
    dev = pick_device(device)
    requested = bool(ckpt["config"]["train"]["channels_last"])
    evaluation = tasks.get(ckpt["model_spec"]["task"]).evaluation()
    channels_last = evaluation.channels_last(model, dev, requested)
    model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return Inference(Path(ckpt_path), ckpt, model, dev, channels_last)


def model_size(model: torch.nn.Module) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    return {"parameters": params, "size_mb": round(nbytes / 2**20, 3)}


def figures_problem(result: dict[str, Any], numbers: tuple[str, ...], per_class: str,
                    worst: Any = None, prefix: str = "", entry: tuple[type, ...] = (dict,)) -> str | None:
    """Whether an evaluation's figures are of the kinds its readers compute with: ``numbers`` numbers (or null),
    ``per_class`` a map of class names to ``entry`` values, the worst classes (``worst``, default
    ``result["worst_classes"]``) names of that map."""
    for k in numbers:
        v = result.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"has {prefix}{k} = {v!r}, not a number"
        if v is not None and not 0 <= v <= 1:  # NaN fails this too: it would show as "not evaluated"
            return f"has {prefix}{k} = {v!r}, outside [0, 1]"
    pc = result.get(per_class)
    if not isinstance(pc, dict) or not all(isinstance(v, entry) and not isinstance(v, bool) for v in pc.values()):
        return f"has a {prefix}{per_class} that is not a map of class names to their figures"
    worst = result.get("worst_classes") if worst is None else worst
    if not isinstance(worst, list) or not all(isinstance(n, str) and n in pc for n in worst):
        return "has worst_classes that are not names of its classes"
    return None


def timing(times: list[float], device: torch.device, input_size: Any) -> dict[str, Any]:
    """Seconds per image as ``metrics.json`` records them; the first image (warm-up) is left out when there are more."""
    steady = times[1:] or times
    return {"device": str(device), "batch_size": 1, "input_size": input_size,
            "ms_per_image_mean": 1000 * statistics.fmean(steady),
            "ms_per_image_median": 1000 * statistics.median(steady),
            "images_per_second": len(steady) / sum(steady)}


def fmt(v: float | None) -> str:
    """A figure for a CSV cell: empty where it is undefined."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6f}"


def show(v: float | None) -> str:
    """A figure for the terminal; '-' where it is undefined (no ground truth of that kind)."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

