"""The labeling loop, two rounds in a row, against the real Label Studio server and through the commands a user
types: label, export, ingest, train, predict, next; label again, export, ingest. The second dataset version must
hold both rounds' images, and the first round's batch record must never be taken for a snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_overrides

PROJECT = "loop-twice"


def _run(args: list[str], env: dict[str, str], timeout: int = 600) -> str:
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _versions(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.is_dir() and "@" in p.name}


def _labelstudio_images(version: Path) -> list[dict]:
    images = []
    for split in ("train", "val", "test"):
        coco = json.loads((version / f"{split}.json").read_text())
        images += [im for im in coco["images"] if im["source"] == "custom"]
    return images


@pytest.mark.slow
def test_two_rounds_in_a_row(label_studio, demo_city, tmp_path):
    from ingest.demo import generate

    py = sys.executable
    custom = generate(label_studio["files_root"] / "custom_city", n=16, seed=7, size=(256, 128), progress=False)
    pool = custom / "leftImg8bit"
    snapshots, versions, runs = tmp_path / "labelstudio", tmp_path / "versions", tmp_path / "runs"
    env = {**os.environ, "LABEL_STUDIO_URL": label_studio["url"], "LABEL_STUDIO_API_KEY": label_studio["token"],
           "SEGLOOP_SNAPSHOT_ROOT": str(snapshots), "NO_ALBUMENTATIONS_UPDATE": "1"}
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(ROOT / "configs" / "data" / "default.yaml"), "name": "loop", "output": str(versions),
        "taxonomy": str(ROOT / "configs" / "taxonomy" / "cityscapes.yaml"),
        "sources": [{"type": "cityscapes", "name": "demo_city", "root": str(demo_city)},
                    {"type": "labelstudio", "name": "custom", "root": str(snapshots / PROJECT),
                     "images_root": str(label_studio["files_root"]), "group": r"^(.*?_\d+)_"}],
        "split": {"mode": "source", "ratios": {"train": 0.7, "val": 0.15, "test": 0.15}}}))

    # round 1: label, export, ingest, train, predict the pool, pick the next batch
    _run([py, "-m", "annotate", "project", "create", "--name", PROJECT], env)
    _run([py, "tools/simulate_labeler.py", "--project", PROJECT, "--images", str(pool / "train"), "--n", "6"], env)
    _run([py, "-m", "annotate", "export", "--project", PROJECT], env)
    _run([py, "-m", "ingest", "build", "--config", str(config)], env)
    (first,) = _versions(versions)
    assert len(_labelstudio_images(first)) == 6
    _run([py, "-m", "train.run", *tiny_overrides(first, runs, "train.epochs=1", "train.log_every=10",
                                                  "output.name=loop")], env)
    run = runs / "loop"
    _run([py, "-m", "evaluate", "predict", str(run), "--images", str(pool), "--name", "pool"], env)
    out = _run([py, "-m", "annotate", "next", "--project", PROJECT, "--run", str(run), "--pool", str(pool),
                "--k", "3"], env)
    assert "picked 3" in out, out
    (record,) = (snapshots / PROJECT / "next").glob("next-*.json")
    picked = {p["sha256"] for p in json.loads(record.read_text())["picked"]}

    # round 2: label the batch, export, ingest again
    _run([py, "tools/simulate_labeler.py", "--project", PROJECT, "--n", "3"], env)
    _run([py, "-m", "annotate", "export", "--project", PROJECT], env)
    _run([py, "-m", "ingest", "build", "--config", str(config)], env)
    (second,) = _versions(versions) - {first}
    round1 = {im["sha256"] for im in _labelstudio_images(first)}
    both = {im["sha256"] for im in _labelstudio_images(second)}
    assert len(both) == 9 and both == round1 | picked and not round1 & picked
    snaps = sorted(p.name for p in (snapshots / PROJECT).glob("*.json"))
    assert len(snaps) == 2
    manifest = json.loads((second / "manifest.json").read_text())
    assert snaps[-1] in json.dumps(manifest["sources"]) or all(
        im["annotation_files"][0].endswith(snaps[-1]) for im in _labelstudio_images(second))
