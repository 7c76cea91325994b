"""Training curves of one or more runs from their ``metrics.jsonl`` records: the losses, each validation metric with
its training-batch counterpart, and each run's peak (its best checkpoint) starred. Used by the report and by
``evaluate compare``; matplotlib only (no torch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LEGEND_MAX = 12


def plot(path: Path, title: str, ylabel: str, series: list[tuple[str, list[int], list[Any], str]],
          peaks: list[tuple[str, int, float]] = (), boundaries: list[float] = ()) -> None:
    """One curve figure: (label, epochs, values, line style) per series; missing values (None) leave gaps.
    ``peaks``: (label, epoch, value) points drawn as stars, the epoch each run's best checkpoint is from;
    ``boundaries``: epochs drawn as dotted vertical lines (where one run of a history hands over to the next)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for x in boundaries:
        ax.axvline(x, linestyle=":", color="grey", linewidth=1)
    for label, epochs, values, style in series:
        ax.plot(epochs, [np.nan if v is None else v for v in values], style, marker=".", label=label)
    for label, epoch, value in peaks:
        ax.plot([epoch], [value], "*", markersize=12, color="black")
        ax.annotate(f"{label} peak", (epoch, value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) <= LEGEND_MAX:  # beyond a dozen lines a legend hides the plot; the series are the table's rows
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def peak(run: dict[str, Any], key: str) -> list[tuple[str, int, float]]:
    """The run's best checkpoint on the curve of the metric that chose it (``best_metric``), as a point."""
    info = run["info"]
    epoch, value = info.get("best_epoch"), info.get("best_value")
    if key != f"val_{info.get('best_metric')}" or not isinstance(epoch, int) or epoch < 1 or not isinstance(
            value, (int, float)):
        return []
    return [(run["name"], epoch, float(value))]


def curve_pngs(runs: list[dict[str, Any]], out: Path) -> list[tuple[str, str]]:
    """``loss_curves.png`` (train loss solid, validation loss dashed) and one ``curve_val_<metric>.png`` per scalar
    validation metric any run recorded, with the training batches' own score dashed where the task records it
    (``train_mIoU``) and each run's peak (its best checkpoint) starred; returns (file, caption) pairs."""
    files = [("loss_curves.png", "training loss (solid) and validation loss (dashed)")]
    series = []
    for r in runs:
        ep = [m["epoch"] for m in r["curve"]]
        series.append((f"{r['name']} train", ep, [m.get("train_loss") for m in r["curve"]], "-"))
        if any("val_loss" in m for m in r["curve"]):
            series.append((f"{r['name']} val", ep, [m.get("val_loss") for m in r["curve"]], "--"))
    plot(out / files[0][0], "loss", "loss", series)
    keys = sorted({k for r in runs for m in r["curve"] for k, v in m.items()
                   if k.startswith("val_") and k != "val_loss" and isinstance(v, (int, float))})
    for key in keys:
        name = f"curve_{re.sub(r'[^A-Za-z0-9_]', '_', key)}.png"
        train_key = "train_" + key.removeprefix("val_")
        series = []
        for r in runs:
            ep = [m["epoch"] for m in r["curve"]]
            if any(key in m for m in r["curve"]):
                series.append((f"{r['name']} val", ep, [m.get(key) for m in r["curve"]], "-"))
            if any(train_key in m for m in r["curve"]):
                series.append((f"{r['name']} train", ep, [m.get(train_key) for m in r["curve"]], "--"))
        metric = key.removeprefix("val_")
        plot(out / name, metric, metric, series, [p for r in runs for p in peak(r, key)])
        trained = any(train_key in m for r in runs for m in r["curve"])
        files.append((name, f"validation {metric}" + (" (solid) and on the training batches (dashed)" if trained
                                                      else "") + ("; a star marks each run's peak, its best.pt"
                                                                  if any(peak(r, key) for r in runs) else "")))
    return files
