"""Immutable dataset versions: ``data/versions/<name>@<hash>/``.

A version holds ``manifest.json`` (sources and their content hashes, taxonomy, split rule, counts), one COCO file
per split (instances as RLE, images referenced by relative path and SHA-256) and ``semantic/`` PNGs of train
indices (255 = ignore). Its hash covers the inputs' bytes, the taxonomy and the config, so rebuilding from the same
inputs gives the same id and costs nothing; it is written to a temporary folder and renamed when complete.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.config import Rule, check_keys, check_rules, check_types, resolve_config
from core.errors import SegLoopError
from core.fsio import (
    DestinationExists,
    Leftover,
    atomic_dir,
    read_image,
    read_json,
    read_label,
    remove_leftovers,
    save_png,
    sha256_file,
    sha256_json,
    stale_temporaries,
)
from ingest import coco
from ingest.cityscapes import CityscapesSource, DemoCitySource
from ingest.labelstudio import LabelStudioSource
from ingest.maskfolder import MaskFolderSource
from ingest.records import Record
from ingest.splits import SPLITS, k_folds, merge_duplicate_groups, ratio_split
from ingest.taxonomy import Taxonomy, load_taxonomy

FORMAT = 1
ROOT = Path(__file__).resolve().parent.parent
DATA_DEFAULT = ROOT / "configs" / "data" / "default.yaml"
SOURCE_SCHEMAS: dict[str, dict[str, Any]] = {
    "cityscapes": {"type": "", "name": "", "root": "", "annotations": "polygons", "splits": []},
    "demo_city": {"type": "", "name": "", "root": "", "annotations": "polygons", "splits": [], "n": 300, "seed": 0},
    "labelstudio": {"type": "", "name": "", "root": "", "images_root": ".", "image_key": "image",
                    "value_map": "labelstudio", "annotation": "latest", "background": "ignore", "group": "",
                    "check_hash": True},
    "mask_folder": {"type": "", "name": "", "root": "", "value_map": "", "images": "images", "masks": "masks",
                    "group": "", "folders": {}},
}
SPLIT_MODES = ("source", "ratio")


def _same_as_problem(value: Any) -> str | None:
    for target, src in value.items():
        if target not in SPLITS or src not in SPLITS or target == src:
            return f"must map a split to another split ({', '.join(SPLITS)}), got {target!r}: {src!r}"
    return None


def _not_empty(value: Any) -> str | None:
    return None if str(value).strip() else "must not be empty"


def _folds_problem(value: Any) -> str | None:
    return None if value != 1 else "must be 0 (no folds) or at least 2, got 1"


def _splits_problem(value: Any) -> str | None:
    bad = [s for s in value if not isinstance(s, str) or not s.strip() or "/" in s or s.startswith(".")]
    return f"must list split folder names (e.g. [train, val]), got {bad[0]!r}" if bad else None


# the data config's value rules (core.config.Rule); the version name becomes a folder name under 'output'
RULES: dict[str, Rule] = {
    "name": Rule(name=True, forbidden="@"),
    "taxonomy": Rule(check=_not_empty, fix="name a taxonomy file, e.g. configs/taxonomy/cityscapes.yaml"),
    "output": Rule(check=_not_empty, fix="name the versions folder, e.g. data/versions"),
    "split.mode": Rule(choices=SPLIT_MODES),
    "split.ratios.*": Rule(min=0),
    "split.seed": Rule(min=0),
    "split.same_as": Rule(check=_same_as_problem, fix="e.g. split.same_as: {test: val} (test is a copy of val)"),
    "folds": Rule(min=0, check=_folds_problem, fix="set folds to 0 (none) or a whole number >= 2"),
}
_COMMON_SOURCE_RULES: dict[str, Rule] = {"name": Rule(name=True),
                                         "root": Rule(check=_not_empty, fix="set root to the source's folder")}
_CITYSCAPES_RULES: dict[str, Rule] = {
    **_COMMON_SOURCE_RULES, "annotations": Rule(choices=("polygons", "png")),
    "splits": Rule(check=_splits_problem, fix="list split folders, e.g. [train, val, test]")}
SOURCE_RULES: dict[str, dict[str, Rule]] = {
    "cityscapes": _CITYSCAPES_RULES,
    "demo_city": {**_CITYSCAPES_RULES, "n": Rule(min=1), "seed": Rule(min=0)},
    "labelstudio": {**_COMMON_SOURCE_RULES, "annotation": Rule(choices=("latest", "first")),
                    "images_root": Rule(check=_not_empty, fix="set images_root to a folder")},
    "mask_folder": {**_COMMON_SOURCE_RULES, "images": Rule(check=_not_empty, fix="name the images folder"),
                    "masks": Rule(check=_not_empty, fix="name the masks folder")},
}
SOURCE_TYPES = {"cityscapes": CityscapesSource, "demo_city": DemoCitySource, "labelstudio": LabelStudioSource,
                "mask_folder": MaskFolderSource}


def load_data_config(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved data config: keys, types and value rules checked (the sources' against their type's schema)."""
    cfg = resolve_config(DATA_DEFAULT, path, overrides, rules=RULES)
    where = str(path or "defaults")
    if not cfg["sources"]:
        raise SegLoopError("the data config lists no sources", path=where,
                           fix="add a 'sources:' list (see configs/data/demo.yaml)")
    for i, src in enumerate(cfg["sources"]):
        if not isinstance(src, dict) or src.get("type") not in SOURCE_SCHEMAS:
            raise SegLoopError(f"source #{i} has no valid 'type'", path=where,
                               fix=f"type must be one of: {', '.join(SOURCE_SCHEMAS)}")
        schema = SOURCE_SCHEMAS[src["type"]]
        check_keys(src, schema, f"{where} (sources[{i}])")
        check_types(src, schema, {}, f"{where} (sources[{i}])")
        check_rules(src, SOURCE_RULES[src["type"]], f"{where} (sources[{i}])", schema)
        if "root" not in src:
            raise SegLoopError(f"source #{i} has no 'root'", path=where)
        src.setdefault("name", Path(src["root"]).name)
    names = [s["name"] for s in cfg["sources"]]
    if len(set(names)) != len(names):
        raise SegLoopError(f"source names must be unique, got {names}", path=where, fix="give each a 'name'")
    ratios = cfg["split"]["ratios"]
    total = sum(ratios.values())
    if abs(total - 1) > 1e-6:  # shares of the images: scaled silently, 0.5 / 0.1 / 0.1 would build 71 / 14 / 14 %
        shares = ", ".join(f"{k}: {v / total:.3g}" for k, v in ratios.items()) if total > 0 else "train: 0.7, ..."
        raise SegLoopError(f"split.ratios {dict(ratios)} sum to {total:g}, not 1 (each is the share of the images "
                           f"its split gets)", path=where, fix=f"give shares that sum to 1, e.g. split.ratios="
                                                                f"{{{shares}}}")
    return cfg


def make_source(spec: dict[str, Any], taxonomy: Taxonomy):
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "name", "root")}
    return SOURCE_TYPES[spec["type"]](spec["name"], Path(spec["root"]), taxonomy, **kwargs)


@dataclass
class BuildResult:
    path: Path
    version: str
    created: bool


def build(cfg: dict[str, Any], progress: bool = True) -> BuildResult:
    """Build (or find) the dataset version described by a resolved data config."""
    taxonomy = load_taxonomy(cfg["taxonomy"])
    sources = {s["name"]: make_source(s, taxonomy) for s in cfg["sources"]}
    records: list[Record] = []
    for src in sources.values():
        records += src.records()
    hashes: dict[str, dict[str, str]] = {}
    for rec in tqdm(records, desc="hashing inputs", disable=not progress):
        hashes[rec.key] = {"image": sha256_file(rec.image),
                           "annotations": [sha256_file(f) for f in rec.annotation_files]}  # type: ignore[dict-item]
    identity = {
        "format": FORMAT,
        "name": cfg["name"],
        "taxonomy": {"file": sha256_file(taxonomy.path), **taxonomy.to_dict()},
        "sources": [{k: v for k, v in s.items() if k != "root"} for s in cfg["sources"]],
        "split": cfg["split"], "folds": cfg["folds"],
        "inputs": hashes,
    }
    digest = sha256_json(identity)[:12]
    version = f"{cfg['name']}@{digest}"
    out_root = Path(cfg["output"])
    dest = out_root / version
    if (dest / "manifest.json").is_file():
        return BuildResult(dest, version, False)
    for lo in remove_leftovers(stale_temporaries(out_root)):
        print(f"removed {lo.path.name}, the unfinished folder of an interrupted build ({lo.reason})")

    splits = _assign_splits(records, hashes, cfg)
    crossing = _groups_crossing_splits(records, splits)
    if crossing:
        print(f"note: the sources' own splits put these groups in several splits: {', '.join(crossing)} "
              f"(use split.mode: ratio to keep groups together)")
    try:
        with atomic_dir(dest) as tmp:
            _write_version(tmp, dest, version, digest, records, hashes, splits, sources, taxonomy, cfg, progress)
    except DestinationExists:
        if (dest / "manifest.json").is_file():  # a concurrent build of the same inputs finished first: same bytes
            return BuildResult(dest, version, False)
        raise
    return BuildResult(dest, version, True)


def _assign_splits(records: list[Record], hashes: dict[str, dict[str, str]], cfg: dict[str, Any]) -> list[str]:
    groups = [f"{r.source}:{r.group}" for r in records]
    groups = merge_duplicate_groups(groups, [hashes[r.key]["image"] for r in records])
    mode = cfg["split"]["mode"]
    if mode == "source":
        # each source's own split where it has one; images without one (Label Studio snapshots, plain folders)
        # are spread over the splits by the ratio rule, whole groups at a time
        own = [r.split in SPLITS for r in records]
        loose = [g for g, o in zip(groups, own, strict=True) if not o]
        spread = iter(ratio_split(loose, cfg["split"]["ratios"], int(cfg["split"]["seed"])) if loose else [])
        splits = [r.split if o else next(spread) for r, o in zip(records, own, strict=True)]
        # the source's own split is respected (CamVid's puts one sequence in train and val), but identical images
        # must not straddle splits
        dup_groups = merge_duplicate_groups([r.key for r in records], [hashes[r.key]["image"] for r in records])
        seen: dict[str, tuple[str, Record]] = {}
        for g, s, r in zip(dup_groups, splits, records, strict=True):
            first = seen.setdefault(g, (s, r))
            if first[0] != s:
                raise SegLoopError(f"the same image is in '{first[0]}' ({first[1].image}) and in '{s}'",
                                   path=r.image, fix="remove the duplicate or use split.mode: ratio")
    else:
        splits = ratio_split(groups, cfg["split"]["ratios"], int(cfg["split"]["seed"]))
    present = set(splits) | set(cfg["split"]["same_as"])
    for s in SPLITS:
        if s == "val" and s not in present and int(cfg["folds"] or 0) >= 2:
            continue  # validation is taken from train: a run on data.fold=k validates on fold k's held-out part
        if s not in present:
            folds = " (or, for val, folds: 5: runs then validate on folds of train)" if s == "val" else ""
            raise SegLoopError(
                f"split '{s}' is empty", fix=f"use split.mode: ratio with a share for it, add images for it, "
                f"or copy another split with split.same_as: {{{s}: {'val' if s != 'val' else 'test'}}}{folds}")
    return splits


def _groups_crossing_splits(records: list[Record], splits: list[str]) -> list[str]:
    seen: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(records, splits, strict=True):
        seen[f"{r.source}:{r.group}"].add(s)
    return sorted(g for g, s in seen.items() if len(s) > 1)


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _write_version(tmp: Path, dest: Path, version: str, digest: str, records: list[Record],
                   hashes: dict[str, dict[str, str]], splits: list[str], sources: dict[str, Any], taxonomy: Taxonomy,
                   cfg: dict[str, Any], progress: bool) -> None:
    info = {"description": f"SegLoop dataset version {version}", "version": version}
    cocos = {s: coco.empty_coco(taxonomy, {**info, "split": s}) for s in SPLITS}
    counts: dict[str, dict[str, Any]] = {
        s: {"images": 0, "instances": 0, "pixels": defaultdict(int), "images_with": defaultdict(int),
            "instances_per_class": defaultdict(int)} for s in SPLITS}
    (tmp / "semantic").mkdir()
    ann_id = 1
    image_ids = {r.key: i + 1 for i, r in enumerate(sorted(records, key=lambda r: r.key))}
    order = sorted(range(len(records)), key=lambda i: records[i].key)
    for i in tqdm(order, desc=f"writing {version}", disable=not progress):
        rec, split = records[i], splits[i]
        ann = sources[rec.source].load(rec)
        read_image(rec.image)  # a corrupt image must fail the build, not the training run
        sem_rel = f"semantic/{rec.key.replace('/', '__')}.png"
        save_png(tmp / sem_rel, ann.semantic)
        h, w = ann.semantic.shape
        image_id = image_ids[rec.key]
        cocos[split]["images"].append({
            "id": image_id, "file_name": _rel(rec.image, dest), "width": w, "height": h, "key": rec.key,
            "sha256": hashes[rec.key]["image"], "semantic_file": sem_rel, "source": rec.source, "group": rec.group,
            "annotation_files": [_rel(f, dest) for f in rec.annotation_files],
        })
        for inst in ann.instances:
            cocos[split]["annotations"].append(coco.instance_annotation(inst, ann_id, image_id))
            ann_id += 1
            if not inst.iscrowd:
                counts[split]["instances"] += 1
                counts[split]["instances_per_class"][taxonomy.classes[inst.category].name] += 1
        c = counts[split]
        c["images"] += 1
        binc = np.bincount(ann.semantic.reshape(-1), minlength=256)
        for cls in taxonomy.classes:
            if binc[cls.index]:
                c["pixels"][cls.name] += int(binc[cls.index])
                c["images_with"][cls.name] += 1
    for target, src in cfg["split"]["same_as"].items():
        cocos[target] = {**cocos[src], "info": {**cocos[src]["info"], "split": target, "copy_of": src}}
        counts[target] = counts[src]
    for s in SPLITS:
        (tmp / f"{s}.json").write_text(json.dumps(cocos[s]))
    folds_info = None
    if cfg["folds"]:
        train_imgs = cocos["train"]["images"]
        # identical images (in different groups) are one group here too, so none sits on both sides of a fold
        groups = merge_duplicate_groups([f"{im['source']}:{im['group']}" for im in train_imgs],
                                        [im["sha256"] for im in train_imgs])
        fold_of = k_folds(groups, int(cfg["folds"]), int(cfg["split"]["seed"]))
        (tmp / "folds").mkdir()
        for f in range(int(cfg["folds"])):
            val = [im["id"] for im, k in zip(train_imgs, fold_of, strict=True) if k == f]
            train = [im["id"] for im, k in zip(train_imgs, fold_of, strict=True) if k != f]
            (tmp / "folds" / f"fold{f}.json").write_text(json.dumps({"fold": f, "train": train, "val": val}))
        folds_info = {"k": int(cfg["folds"]), "over": "train", "files": [f"folds/fold{f}.json"
                                                                          for f in range(int(cfg["folds"]))]}
    per_source: dict[str, list[str]] = defaultdict(list)
    for r in records:
        per_source[r.source].append(r.key)
    manifest = {
        "format": FORMAT, "version": version, "name": cfg["name"], "hash": digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "taxonomy": {"path": str(taxonomy.path), "sha256": sha256_file(taxonomy.path), **taxonomy.to_dict()},
        "sources": [{**spec, "root": str(spec["root"]), "images": len(per_source[spec["name"]]),
                     "content_hash": sha256_json({k: hashes[k] for k in sorted(per_source[spec["name"]])})}
                    for spec in cfg["sources"]],
        "split": {**cfg["split"], "grouped_by": "source group (city / sequence) + duplicate images",
                  "groups_crossing_splits": _groups_crossing_splits(records, splits)},
        "folds": folds_info,
        "counts": {s: {"images": c["images"], "instances": c["instances"], "pixels_per_class": dict(c["pixels"]),
                       "images_per_class": dict(c["images_with"]),
                       "instances_per_class": dict(c["instances_per_class"])} for s, c in counts.items()},
        "parent": None,
        "config": cfg,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))


# ----------------------------------------------------------------------------------------------- reading versions


class DatasetVersion:
    """Read access to a built version: split images, their paths and semantic masks, and the taxonomy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.version: str = self.manifest["version"]
        t = self.manifest["taxonomy"]
        self.taxonomy = load_taxonomy(t["path"]) if Path(t["path"]).is_file() else _taxonomy_from_manifest(t)
        self._coco: dict[str, dict[str, Any]] = {}

    def coco(self, split: str) -> dict[str, Any]:
        if split not in self._coco:
            if split not in SPLITS and not split.startswith("fold"):
                raise SegLoopError(f"unknown split '{split}'", fix=f"use one of: {', '.join(SPLITS)}")
            self._coco[split] = read_json(self.path / f"{split}.json", f"COCO file of split '{split}'")
        return self._coco[split]

    def images(self, split: str) -> list[dict[str, Any]]:
        return self.coco(split)["images"]

    def image_path(self, image: dict[str, Any]) -> Path:
        return (self.path / image["file_name"]).resolve()

    def semantic_path(self, image: dict[str, Any]) -> Path:
        return self.path / image["semantic_file"]

    def load_image(self, image: dict[str, Any]) -> np.ndarray:
        return read_image(self.image_path(image))

    def load_semantic(self, image: dict[str, Any]) -> np.ndarray:
        return read_label(self.semantic_path(image))

    def fold(self, k: int) -> dict[str, list[int]]:
        return read_json(self.path / "folds" / f"fold{k}.json", f"fold {k}")


MANIFEST_KEYS = ("format", "version", "created", "taxonomy", "sources", "split", "counts")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """A version's manifest.json; a corrupt or truncated one is an error saying to rebuild the version."""
    folder = Path(folder)
    fix = (f"the version folder is damaged: remove {folder} and build it again "
           f"(python -m ingest build --config configs/data/<name>.yaml)")
    m = read_json(folder / "manifest.json", "dataset manifest", fix=fix)
    missing = [k for k in MANIFEST_KEYS if k not in m] if isinstance(m, dict) else list(MANIFEST_KEYS)
    if missing:
        raise SegLoopError(f"dataset manifest lacks {', '.join(missing)}", path=folder / "manifest.json", fix=fix)
    return m


def _taxonomy_from_manifest(t: dict[str, Any]) -> Taxonomy:
    from ingest.taxonomy import ClassDef

    classes = [ClassDef(c["name"], c["index"], tuple(c["color"]), c["instances"]) for c in t["classes"]]
    return Taxonomy(t["name"], classes, t["ignore_index"])


def list_versions(root: str | Path = "data/versions") -> list[dict[str, Any]]:
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        mf = d / "manifest.json"
        if d.is_dir() and not d.name.startswith(".") and mf.is_file():
            m = read_manifest(d)
            out.append({"version": m["version"], "path": d, "created": m["created"], "counts": m["counts"],
                        "taxonomy": m["taxonomy"]["name"]})
    return sorted(out, key=lambda v: v["created"])


def resolve_version(ref: str | Path, root: str | Path = "data/versions") -> Path:
    """A version folder from a path, ``name@hash`` (a hash prefix works) or a bare name (its newest version)."""
    p = Path(ref)
    if (p / "manifest.json").is_file():
        return p
    versions = list_versions(root)
    name, _, h = str(ref).partition("@")
    hits = [v for v in versions if v["version"].split("@")[0] == name and v["version"].split("@")[1].startswith(h)]
    if hits:
        return hits[-1]["path"]
    known = ", ".join(v["version"] for v in versions) or "none yet"
    raise SegLoopError(f"dataset version '{ref}' does not exist", path=root,
                       fix=f"build it with `python -m ingest build --config configs/data/<name>.yaml`; "
                           f"versions here: {known}")


def leftovers(root: str | Path = "data/versions", max_idle_hours: float = 24.0) -> list[Leftover]:
    """Unfinished version folders (``.<name>@<hash>.<pid>-<id>.tmp``) of builds that were killed; a build that is
    still running is left alone (see ``core.fsio.stale_temporaries``)."""
    return stale_temporaries(root, max_idle_hours)
