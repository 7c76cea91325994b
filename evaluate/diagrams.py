"""Diagrams the task report parts share: a model as a row of stages, an ensemble's members and how their outputs are
combined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def ensemble_png(spec: dict[str, Any], path: Path, combined: str) -> None:
    """An ensemble's diagram: each member, and how their outputs are combined (``combined``, in words)."""
    members = spec["args"]["members"]
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(members) + 1.2))
    ax.axis("off")
    for i, m in enumerate(members):
        y = len(members) - 1 - i
        args = ", ".join(f"{k}={v}" for k, v in (m.get("args") or {}).items())
        ax.add_patch(plt.Rectangle((0, y), 4.0, 0.6, color="#4c72b0", alpha=0.85))
        ax.text(2.0, y + 0.3, f"{m['name']} {args}"[:60], ha="center", va="center", color="white", fontsize=7)
        ax.annotate("", xy=(5.0, (len(members) - 1) / 2 + 0.3), xytext=(4.0, y + 0.3),
                    arrowprops={"arrowstyle": "->", "color": "grey"})
    ax.add_patch(plt.Rectangle((5.0, (len(members) - 1) / 2), 2.6, 0.6, color="#dd8452", alpha=0.85))
    ax.text(6.3, (len(members) - 1) / 2 + 0.3, combined, ha="center", va="center", color="white", fontsize=7)
    ax.set_xlim(-0.2, 7.8)
    ax.set_ylim(-0.3, len(members) + 0.1)
    ax.set_title(f"ensemble of {len(members)} models", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def stages_png(stages: list[tuple[str, str]], title: str, path: Path) -> None:
    """A model as a row of stages, left to right: (text, colour) each, joined by arrows."""
    fig, ax = plt.subplots(figsize=(10, 1.8))
    ax.axis("off")
    for i, (text, color) in enumerate(stages):
        ax.add_patch(plt.Rectangle((i * 1.3, 0), 1.1, 0.8, color=color, alpha=0.85))
        ax.text(i * 1.3 + 0.55, 0.4, text, ha="center", va="center", color="white", fontsize=7)
        if i:
            ax.annotate("", xy=(i * 1.3, 0.4), xytext=(i * 1.3 - 0.2, 0.4), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.1, len(stages) * 1.3)
    ax.set_ylim(-0.1, 1.0)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
