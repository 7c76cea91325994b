"""Mask-folder sources (CamVid-style): value maps, sequence groups, and the real CamVid when it is present."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import SegLoopError
from ingest.version import DatasetVersion, build, load_data_config
from tests.conftest import ROOT

CAMVID = Path(os.environ.get("SEGLOOP_CAMVID", ROOT.parent / "shared" / "data" / "camvid"))


def _make_folder(root: Path, n_seq=4, per_seq=5, bad_value=None):
    rng = np.random.default_rng(0)
    for s in range(n_seq):
        for f in range(per_seq):
            stem = f"seq{s}_{f:04d}"
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
            mask = rng.integers(0, 12, (24, 32), dtype=np.uint8)
            if bad_value is not None and s == 0 and f == 0:
                mask[0, 0] = bad_value
            Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def _cfg(root, out, *extra):
    return load_data_config(ROOT / "configs/data/default.yaml", [
        "name=folder", "taxonomy=configs/taxonomy/camvid.yaml", f"output={out}", "split.mode=ratio",
        f"sources=[{{type: mask_folder, name: camvid, root: '{root}', group: '^(seq\\d+)_'}}]", *extra])


def test_values_map_and_sequences_stay_together(tmp_path):
    _make_folder(tmp_path / "f")
    ds = DatasetVersion(build(_cfg(tmp_path / "f", tmp_path / "v"), progress=False).path)
    where = {}
    for split in ("train", "val", "test"):
        for im in ds.images(split):
            assert where.setdefault(im["group"], split) == split
            raw = np.asarray(Image.open(ds.path / im["annotation_files"][0]))
            sem = ds.load_semantic(im)
            np.testing.assert_array_equal(sem, np.where(raw == 11, 255, raw))
    assert len(where) == 4


def test_value_not_in_map_names_file_and_value(tmp_path):
    _make_folder(tmp_path / "f", bad_value=77)
    with pytest.raises(SegLoopError) as e:
        build(_cfg(tmp_path / "f", tmp_path / "v"), progress=False)
    assert "[77]" in str(e.value) and "seq0_0000.png" in str(e.value) and "sources.camvid" in str(e.value)
    assert not (tmp_path / "v").exists() or not list((tmp_path / "v").iterdir())


def test_image_without_mask(tmp_path):
    _make_folder(tmp_path / "f")
    (tmp_path / "f" / "masks" / "seq1_0002.png").unlink()
    with pytest.raises(SegLoopError, match="has no mask seq1_0002.png"):
        build(_cfg(tmp_path / "f", tmp_path / "v"), progress=False)


def test_duplicate_images_never_cross_splits(tmp_path):
    _make_folder(tmp_path / "f", n_seq=6, per_seq=2)
    src = tmp_path / "f" / "images" / "seq0_0000.png"
    (tmp_path / "f" / "images" / "seq5_0001.png").write_bytes(src.read_bytes())
    ds = DatasetVersion(build(_cfg(tmp_path / "f", tmp_path / "v"), progress=False).path)
    split_of = {im["key"].split("/")[-1]: s for s in ("train", "val", "test") for im in ds.images(s)}
    assert split_of["seq0_0000"] == split_of["seq5_0001"]


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID} (set SEGLOOP_CAMVID)")
def test_real_camvid(tmp_path):
    cfg = load_data_config(ROOT / "configs/data/camvid.yaml", [f"output={tmp_path}"])
    cfg["sources"][0]["root"] = str(CAMVID)
    ds = DatasetVersion(build(cfg, progress=False).path)
    m = ds.manifest["counts"]
    assert (m["train"]["images"], m["val"]["images"], m["test"]["images"]) == (367, 101, 101)
    assert ds.manifest["split"]["groups_crossing_splits"] == ["camvid:0016E5"]  # SegNet's own split
    assert m["train"]["pixels_per_class"]["road"] > m["train"]["pixels_per_class"]["bicyclist"] > 0
