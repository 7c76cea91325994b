"""Triptychs: image | ground truth | prediction panels of test images, with a colour legend and the image's score.

The random sample is drawn from the images' identity (a seeded hash of their content hash), not from a list
position, so the same images come out whenever the dataset is rebuilt from the same version, and mostly the same
ones after images are added. Writes ``runs/<run>/triptychs/<split>-<random|worst>/`` with one PNG per image and an
``index.html`` gallery sortable by score. An existing gallery is replaced only by a complete new one: the new one is
written beside it and swapped in at the end, and a request that would produce an empty gallery is refused.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import tasks
from core.errors import SegLoopError
from core.fsio import atomic_dir, read_image
from evaluate.results import EvalResults
from ingest.taxonomy import Taxonomy

LEGEND_H = 22
SORT_JS = """
function sortBy(key, numeric) {
  const grid = document.getElementById('grid');
  const items = Array.from(grid.children);
  const dir = grid.dataset.sort === key ? -1 : 1;
  grid.dataset.sort = dir === 1 ? key : '';
  items.sort((a, b) => {
    const x = a.dataset[key], y = b.dataset[key];
    return dir * (numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y));
  });
  items.forEach(i => grid.appendChild(i));
}
"""


def identity_order(shas: list[str], seed: int) -> list[int]:
    """Indices ordered by a seeded hash of each image's content hash."""
    return sorted(range(len(shas)), key=lambda i: hashlib.sha256(f"{seed}:{shas[i]}".encode()).hexdigest())


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def outline(panel: np.ndarray, masks: list[np.ndarray], color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Each instance mask's outline drawn on a colour panel (touching instances of one class stay apart)."""
    panel = np.ascontiguousarray(panel)
    for m in masks:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(panel, contours, -1, color, 1)
    return panel


def triptych(image: np.ndarray, label: np.ndarray, pred: np.ndarray, taxonomy: Taxonomy, title: str,
             instances: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> Image.Image:
    """One panel: original | ground truth | prediction, a title line and a legend of the classes shown; with
    ``instances`` (ground-truth masks, predicted masks) each instance is outlined on its panel."""
    h, w = label.shape
    if image.shape[:2] != (h, w):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    gt_panel, pred_panel = taxonomy.colorize(label), taxonomy.colorize(pred)
    if instances is not None:
        gt_panel, pred_panel = outline(gt_panel, instances[0]), outline(pred_panel, instances[1])
    strip = np.concatenate([image, gt_panel, pred_panel], 1)
    present = [c for c in taxonomy.classes if (label == c.index).any() or (pred == c.index).any()]
    canvas = Image.new("RGB", (3 * w, h + 2 * LEGEND_H), (255, 255, 255))
    canvas.paste(Image.fromarray(strip), (0, LEGEND_H))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for i, name in enumerate(("image", "ground truth", "prediction")):
        draw.text((i * w + 4, LEGEND_H + 4), name, fill=(255, 255, 255), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
    x = 4
    for c in present:
        draw.rectangle([x, h + LEGEND_H + 5, x + 12, h + LEGEND_H + 17], fill=tuple(c.color), outline=(0, 0, 0))
        draw.text((x + 16, h + LEGEND_H + 5), c.name, fill=(0, 0, 0), font=font)
        x += 22 + int(draw.textlength(c.name, font=font))
    return canvas


def make_triptychs(run: str | Path, split: str = "test", n: int = 100, seed: int = 0, worst: bool = False,
                   out: str | Path | None = None) -> tuple[Path, list[dict[str, Any]], str]:
    """Write the panels and index.html; returns the folder, the picked rows and a note for the user."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SegLoopError(f"the number of triptychs must be at least 1, got {n!r}",
                           fix="pass --n with a whole number >= 1 (an existing gallery is kept as it is)")
    res = EvalResults(run, split)
    rows, ds = res.rows, res.version
    if not rows:
        raise SegLoopError(f"split '{split}' of the evaluation has no images", path=res.dir,
                           fix=f"re-run python -m evaluate run {res.run_dir} --split {split}")
    note = ""
    if n > len(rows):
        note = f"--n {n} is more than the {len(rows)} images of '{split}': all of them are used"
        n = len(rows)
    if worst:
        picked = sorted(rows, key=lambda r: (np.nan_to_num(res.score(r), nan=2.0), r["key"]))[:n]
    else:
        order = identity_order([res.image(r)["sha256"] for r in rows], seed)
        picked = [rows[i] for i in order[:n]]
    kind = "worst" if worst else f"random-seed{seed}"
    dest = Path(out) if out else res.run_dir / "triptychs" / f"{split}-{kind}"
    triage = tasks.get(res.metrics.get("task")).triage(res)
    with atomic_dir(dest, replace=True) as tmp:
        cards = []
        for rank, row in enumerate(picked, 1):
            im = res.image(row)
            score = res.score(row)
            name = f"{rank:03d}_{row['key'].replace('/', '__')}.png"
            triptych(read_image(ds.image_path(im)), ds.load_semantic(im), res.prediction(row), ds.taxonomy,
                     triage.title(row, score), triage.outlines(im)).save(tmp / name)
            cards.append((rank, row, score, name))
        (tmp / "index.html").write_text(_index_html(res.run_dir.name, split, kind, cards, res.metrics,
                                                    triage.summary()))
    return dest, picked, note


def _index_html(run: str, split: str, kind: str, cards: list, metrics: dict, summary: str) -> str:
    score_name = str(metrics.get("per_image_score") or "mIoU")  # the per-image score the evaluation ranks by
    items = "\n".join(
        f'<figure data-rank="{rank}" data-score="{score:.6f}" data-key="{html.escape(row["key"])}">'
        f'<img src="{html.escape(name)}" loading="lazy" alt="{html.escape(row["key"])}">'
        f'<figcaption>#{rank} {html.escape(row["key"])} — {html.escape(score_name)} {score:.3f}</figcaption></figure>'
        for rank, row, score, name in cards)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(run)} — {split} triptychs ({kind})</title>
<style>body{{font-family:sans-serif;margin:1em}} #grid{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{margin:0;width:100%;max-width:900px}} img{{width:100%}} button{{margin-right:.5em}}</style>
<script>{SORT_JS}</script></head>
<body><h1>{html.escape(run)}: {len(cards)} {split} images ({kind})</h1>
<p>image | ground truth | prediction. {summary} ({metrics['dataset_version']}).</p>
<p><button onclick="sortBy('score', true)">sort by score</button><button onclick="sortBy('rank', true)">sort by
pick order</button><button onclick="sortBy('key', false)">sort by name</button></p>
<div id="grid">
{items}
</div></body></html>
"""
