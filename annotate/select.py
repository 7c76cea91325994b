"""Choosing what to label next: rank unlabelled pool images by the model's uncertainty, keep the batch diverse.

Scores come from the prediction index a run wrote for the pool (``python -m evaluate predict RUN --images POOL``):
``entropy`` ranks by mean normalised entropy of the class probabilities, ``margin`` by 1 - mean top-2 margin,
``random`` by a seeded shuffle (the baseline every active-learning claim should beat). Diversity: no group (a video
sequence, from the file name) may take more than ``max_share`` of the batch while other groups still have candidates.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from core.errors import SegLoopError
from core.fsio import sha256_file
from core.runs import INDEX, read_index
from ingest.images import BROWSER_EXTS, list_images
from tasks import get as get_task

STRATEGIES = ("entropy", "margin", "random")


def pool_scores(run_dir: Path, pool: str | Path, strategy: str, seed: int = 0) -> list[dict[str, Any]]:
    if strategy not in STRATEGIES:
        raise SegLoopError(f"unknown strategy '{strategy}'", fix=f"use one of: {', '.join(STRATEGIES)}")
    index: dict[str, dict] = {}
    regions: dict[str, Any] = {}  # sha256 -> the Label Studio part of the task that predicted it
    for idx in sorted(run_dir.glob(f"predict/*/{INDEX}")):
        pset = read_index(idx)
        part = get_task(pset["task"]).labelstudio()
        index.update(pset["images"])
        regions.update(dict.fromkeys(pset["images"], part))
    files = list_images(pool, BROWSER_EXTS)
    rng = random.Random(seed)
    out, missing = [], []
    for f in files:
        sha = sha256_file(f)
        entry = index.get(sha)
        if entry is None and strategy != "random":
            missing.append(f)
            continue
        if strategy == "entropy":
            score = entry["mean_uncertainty"]
        elif strategy == "margin":
            problem = regions[sha].margin_problem(entry)
            if problem:
                raise SegLoopError(f"run {run_dir.name} cannot be ranked by margin: {problem}",
                                   fix="use --strategy entropy (the mean uncertainty of each image)")
            score = 1.0 - entry["mean_margin"]
        else:
            score = rng.random()
        out.append({"file": str(f.resolve()), "sha256": sha, "score": float(score)})
    if missing:
        raise SegLoopError(f"{len(missing)} pool images have no prediction from run {run_dir.name} "
                           f"(e.g. {missing[0]})", fix=f"python -m evaluate predict {run_dir} --images {pool}")
    return out


def diverse_top_k(candidates: list[dict[str, Any]], k: int, group: str = r"^(.*?)_",
                  max_share: float = 0.34) -> list[dict[str, Any]]:
    """Highest scores first, but no group beyond ``ceil(k * max_share)`` picks unless nothing else is left."""
    pattern = re.compile(group)
    for c in candidates:
        m = pattern.search(Path(c["file"]).stem)
        c["group"] = m.group(1) if m and m.groups() else Path(c["file"]).stem
    ranked = sorted(candidates, key=lambda c: (-c["score"], c["sha256"]))
    cap = max(1, math.ceil(k * max_share))
    picked, count = [], Counter()
    for c in ranked:
        if len(picked) == k:
            break
        if count[c["group"]] < cap:
            picked.append(c)
            count[c["group"]] += 1
    for c in ranked:  # too few groups to honour the cap: fill up with the best of the rest
        if len(picked) == k:
            break
        if c not in picked:
            picked.append(c)
    for rank, c in enumerate(picked, 1):
        c["rank"] = rank
    return picked


def next_batch(client, project: dict, run_dir: Path, pool: str | Path, taxonomy, k: int = 50,
               strategy: str = "entropy", seed: int = 0, group: str = r"^(.*?)_", max_share: float = 0.34,
               record_dir: Path | None = None) -> dict[str, Any]:
    """Pick the next ``k`` pool images not yet in the project, import them pre-annotated by the run, and record
    the picks and their scores in ``<record_dir>/next-<UTC time>.json``; returns counts and the record's path.

    ``record_dir`` defaults to ``data/labelstudio/<project>/next/``: records are kept out of the project's
    snapshot folder, where ingest looks for exports (and ignores any file not named like one)."""
    from datetime import UTC, datetime

    from annotate.project import check_run_classes, import_images, project_hashes, push_predictions, records_dir
    from core.fsio import write_json_atomic

    if k < 1:
        raise SegLoopError(f"k must be at least 1, got {k}", fix="pass --k 1 or more (how many images to pick)")
    if not 0 < max_share <= 1:
        raise SegLoopError(f"max_share must be in (0, 1], got {max_share}",
                           fix="pass --max-share as a fraction of the batch, e.g. 0.34")
    check_run_classes(project, taxonomy, run_dir)  # before anything is imported

    have = project_hashes(client, project["id"])  # the paged listing of ids and data: no regions
    candidates = [c for c in pool_scores(run_dir, pool, strategy, seed) if c["sha256"] not in have]
    picked = diverse_top_k(candidates, k, group, max_share)
    if not picked:
        return {"picked": [], "candidates": len(candidates), "record": None}
    counts = import_images(client, project, [Path(c["file"]) for c in picked],
                           extra={"picked_by": strategy, "run": run_dir.name})
    shas = {c["sha256"] for c in picked}
    ids = {t["id"] for t in client.iter_tasks(project["id"], include="id,data") if t["data"].get("sha256") in shas}
    pushed = push_predictions(client, project, run_dir, taxonomy, ids)
    folder = record_dir or records_dir(project["title"])
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%f}Z"
    record, n = folder / f"next-{stamp}.json", 0
    while record.exists():
        n += 1
        record = folder / f"next-{stamp}-{n}.json"
    write_json_atomic(record, {"project": project["title"], "run": run_dir.name, "strategy": strategy, "k": k,
                               "pool": str(pool), "candidates": len(candidates), "max_share": max_share,
                               "picked": picked})
    return {"picked": picked, "candidates": len(candidates), "record": record, "imported": counts["added"],
            "pre_annotated": pushed["predicted"]}
