"""Grouped train/val/test splits and k folds.

Whole groups move together (a city, a video sequence), and images with identical content are merged into one
group first, so no near-copy of a test image can sit in train. Group order comes from a seeded hash of the group
name, not from a shuffle of a list, so the assignment depends only on the seed and the groups themselves.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from core.errors import SegLoopError

SPLITS = ("train", "val", "test")


def merge_duplicate_groups(groups: list[str], hashes: list[str]) -> list[str]:
    """Union-find over groups that share an image hash; returns the merged group of every image."""
    parent: dict[str, str] = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_group: dict[str, str] = {}
    for g, h in zip(groups, hashes, strict=True):
        if h in first_group:
            a, b = find(first_group[h]), find(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first_group[h] = g
    return [find(g) for g in groups]


def _order(groups: list[str], seed: int) -> list[str]:
    return sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())


def ratio_split(groups: list[str], ratios: dict[str, float], seed: int) -> list[str]:
    """Assign each image a split so that the image shares approach ``ratios``, moving whole groups.

    Groups are visited in seeded-hash order and each goes to the split furthest below its target, relative to that
    target, so every split with a share gets a group as soon as there are enough groups.
    """
    total = sum(ratios.values())
    if total <= 0:
        raise SegLoopError("split ratios must sum to more than 0", fix="e.g. split.ratios: {train: 0.7, val: 0.15, "
                                                                       "test: 0.15}")
    target = {s: r / total for s, r in ratios.items()}
    size: dict[str, int] = defaultdict(int)
    for g in groups:
        size[g] += 1
    n = len(groups)
    count = dict.fromkeys(target, 0)
    assign: dict[str, str] = {}
    for g in _order(groups, seed):
        deficit = {s: (target[s] * n - count[s]) / (target[s] * n) for s in target if target[s] > 0}
        best = max(deficit, key=lambda s: (deficit[s], -list(target).index(s)))
        assign[g] = best
        count[best] += size[g]
    return [assign[g] for g in groups]


def k_folds(groups: list[str], k: int, seed: int) -> list[int]:
    """Fold index of every image, whole groups per fold, folds balanced by image count."""
    if k < 2:
        raise SegLoopError(f"folds must be 0 (none) or at least 2, got {k}")
    size: dict[str, int] = defaultdict(int)
    for g in groups:
        size[g] += 1
    if len(size) < k:
        raise SegLoopError(f"{k} folds need at least {k} groups but the train split has {len(size)}",
                           fix="ask for fewer folds or use a finer group")
    load = [0] * k
    fold_of: dict[str, int] = {}
    for g in sorted(_order(groups, seed), key=lambda g: -size[g]):  # largest first: balanced folds
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[g] = f
        load[f] += size[g]
    return [fold_of[g] for g in groups]
