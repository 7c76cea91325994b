"""Which images a run trains and validates on: the whole train split, one fold of it, a chosen subset
(``data.train_ids`` / ``data.train_list``), or the overfit check's few fixed images (``train.overfit_batch``).

One selection serves SegLoop's loop and a delegated trainer (Ultralytics) alike, so every way of choosing images is
checked once against the version, and recorded the same way in ``run.json`` (``train_images``: how they were
chosen, how many, and a digest of their ids, so two runs can be told to have trained on the same images).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SegLoopError
from ingest.version import DatasetVersion

HASH_DIGITS = 12  # the shortest content-hash prefix taken (as `ingest show` and the version names print hashes)
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass
class Selection:
    """``train_ids`` / ``val_ids``: image ids of ``train_split`` / ``val_split`` (None: the whole split);
    ``augment``: whether training batches are augmented; ``info``: what ``run.json`` records."""

    train_split: str
    val_split: str
    train_ids: list[int] | None = None
    val_ids: list[int] | None = None
    augment: bool = True
    info: dict[str, Any] = field(default_factory=dict)


def ids_digest(ids: list[int]) -> str:
    """The sha256 of the sorted ids: equal for two runs that trained on the same images of one version."""
    return hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()


def read_train_list(path: str | Path) -> list[str]:
    """The entries of a ``data.train_list`` file: one image id or content hash per line; blank lines and text after
    ``#`` are skipped."""
    p = Path(path)
    if p.is_dir():
        raise SegLoopError("data.train_list is a folder", path=p,
                           fix="give a text file with one image id or content hash per line")
    if not p.is_file():
        raise SegLoopError("data.train_list: file not found", path=p,
                           fix="give a text file with one image id or content hash per line")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is no part of the first entry
    except UnicodeDecodeError:
        raise SegLoopError("data.train_list is not a text file", path=p,
                           fix="give a text file with one image id or content hash per line") from None
    entries = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    entries = [e for e in entries if e]
    if not entries:
        raise SegLoopError("data.train_list names no image", path=p,
                           fix="put one image id or content hash per line, or leave data.train_list empty")
    return entries


def resolve_entries(entries: list[Any], version: DatasetVersion, split: str, source: str,
                    path: Path | None = None) -> list[int]:
    """Image ids of ``split`` for ids or content hashes (a prefix of 12+ hex digits). An entry of another split, an
    entry of no split, a hash prefix shared by two images, or a long number (a hash that YAML read as one) is
    refused, naming the entries."""
    images = version.images(split)
    by_id = {im["id"]: im for im in images}
    hashes = {im["sha256"]: im["id"] for im in images}
    elsewhere = {im["id"]: s for s in ("train", "val", "test") if s != split for im in version.images(s)}
    elsewhere_sha = {im["sha256"]: s for s in ("train", "val", "test") if s != split for im in version.images(s)}
    ids: list[int] = []
    unknown: list[str] = []
    other: list[str] = []
    for entry in entries:
        text = str(entry).strip().lower()
        if isinstance(entry, float) or (isinstance(entry, int) and len(text) >= HASH_DIGITS):
            raise SegLoopError(f"{source} holds the number {entry}, which looks like a content hash read as a "
                               f"number", path=path, fix="quote hashes in YAML lists: data.train_ids=['3f2a9c...']")
        if text.isdigit() and len(text) < HASH_DIGITS:
            i = int(text)
            if i in by_id:
                ids.append(i)
            elif i in elsewhere:
                other.append(f"{entry} ({elsewhere[i]})")
            else:
                unknown.append(str(entry))
            continue
        if len(text) < HASH_DIGITS or not _HEX.match(text):
            unknown.append(str(entry))
            continue
        found = [i for sha, i in hashes.items() if sha.startswith(text)]
        if len(found) > 1:
            raise SegLoopError(f"{source}: the hash prefix {entry} matches {len(found)} images", path=path,
                               fix="give more digits of the content hash (ingest show lists them)")
        if found:
            ids.append(found[0])
        elif (s := next((s for sha, s in elsewhere_sha.items() if sha.startswith(text)), None)) is not None:
            other.append(f"{entry} ({s})")
        else:
            unknown.append(str(entry))
    if other:
        raise SegLoopError(f"{source} names {len(other)} image(s) of another split of {version.version}, not "
                           f"{split}: {', '.join(other[:5])}{' ...' if len(other) > 5 else ''}", path=path,
                           fix=f"train on images of the {split} split only: an image of val or test in training "
                               f"would make their scores meaningless")
    if unknown:
        raise SegLoopError(f"{source}: {len(unknown)} of {len(entries)} entries are no image of "
                           f"{version.version}: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}",
                           path=path, fix=f"give image ids or content hashes (12+ hex digits) of the {split} split "
                                          f"(python -m ingest show {version.version.split('@')[0]})")
    unique = sorted(set(ids))
    if len(unique) < len(ids):
        repeated = sum(1 for i in unique if ids.count(i) > 1)
        print(f"note: {source} names {repeated} image(s) more than once ({len(ids) - len(unique)} repeated "
              f"entries, by id or hash); each trains once")
    return unique


def select_images(cfg: dict[str, Any], version: DatasetVersion) -> Selection:
    """The images of this run, from ``data.fold``, ``data.train_ids`` / ``data.train_list`` and
    ``train.overfit_batch``, checked against ``version``."""
    dc, tc = cfg["data"], cfg["train"]
    split = dc["train_split"]
    sel = Selection(split, dc["val_split"])
    subset = [k for k in ("train_ids", "train_list") if dc[k]]
    if len(subset) == 2:
        raise SegLoopError("data.train_ids and data.train_list both set: one run trains on one list",
                           fix="give the images in one of them")
    if subset and dc["fold"] is not None:
        raise SegLoopError(f"data.{subset[0]} with data.fold: the fold already chooses the training images",
                           fix=f"drop data.fold to train on a subset, or data.{subset[0]} to train on the fold")
    if dc["fold"] == "all":
        raise SegLoopError("data.fold=all trains one run per fold, as a group", fix="python -m train.run "
                           "data.fold=all ... (from Python: train.folds.train_folds)")
    if dc["fold"] is not None:
        from train.folds import folds_of

        k = folds_of(version)
        if dc["fold"] >= k:
            raise SegLoopError(f"data.fold={dc['fold']}, but {version.version} has "
                               + (f"folds 0..{k - 1}" if k else "no folds"), path=version.path,
                               fix=f"data.fold=0..{k - 1} (or all)" if k else "build a version with folds, e.g. "
                                                                           "python -m ingest build folds=5")
        over = (version.manifest.get("folds") or {}).get("over", "train")
        if split != over:
            raise SegLoopError(f"data.fold={dc['fold']} with data.train_split={split}: the folds of "
                               f"{version.version} divide its '{over}' split", path=version.path,
                               fix=f"drop data.train_split (the fold trains on part of '{over}' and validates on "
                                   f"the rest), or drop data.fold")
        f = version.fold(dc["fold"])
        sel.train_ids, sel.val_ids, sel.val_split = f["train"], f["val"], split
        sel.info = {"from": f"data.fold={dc['fold']}"}
    elif subset:
        key = subset[0]
        path = Path(dc[key]) if key == "train_list" else None
        entries = read_train_list(path) if path is not None else list(dc[key])
        sel.train_ids = resolve_entries(entries, version, split, f"data.{key}", path)
        sel.info = {"from": f"data.train_list={dc[key]}" if path else "data.train_ids"}
    n = tc["overfit_batch"]
    if n:
        pool = sel.train_ids if sel.train_ids is not None else [im["id"] for im in version.images(split)]
        if n > len(pool):
            raise SegLoopError(f"train.overfit_batch={n} is larger than the training images ({len(pool)})",
                               path=version.path, fix=f"set train.overfit_batch={min(4, len(pool))} (a few images "
                                                      f"are the point of the check)")
        rng = np.random.default_rng(tc["seed"])
        sel.train_ids = sorted(int(i) for i in rng.choice(sorted(pool), n, replace=False))
        sel.val_split, sel.val_ids, sel.augment = split, list(sel.train_ids), False
        sel.info = {"from": f"train.overfit_batch={n}" + (f" of {sel.info['from']}" if sel.info else "")}
    if sel.val_ids is None and not version.images(sel.val_split):
        from train.folds import folds_of

        k = folds_of(version)  # a version split train / test takes validation from its folds of train
        raise SegLoopError(f"{version.version} has no image in its '{sel.val_split}' split to validate on",
                           path=version.path,
                           fix=(f"validate on a fold of train: data.fold=0 .. {k - 1}, or data.fold=all for all {k}"
                                if k >= 2 else "give data.val_split a split with images, or rebuild the version "
                                               "with a val share (or folds: 5 and data.fold)"))
    if sel.train_ids is not None:
        sel.info.update(count=len(sel.train_ids), ids_sha256=ids_digest(sel.train_ids), ids=sel.train_ids)
    return sel
