"""Triptych galleries from a run's evaluation: reproducible picks, panels with legend and score, sortable index."""

import numpy as np
import pytest
from PIL import Image

from core.errors import SegLoopError
from evaluate.gallery import identity_order, make_triptychs


def test_random_sample_is_reproducible_and_drawn_from_identity(evaluated_run, tmp_path):
    a_dir, a, note = make_triptychs(evaluated_run, n=3, seed=0, out=tmp_path / "a")
    _, b, _ = make_triptychs(evaluated_run, n=3, seed=0, out=tmp_path / "b")
    assert [r["key"] for r in a] == [r["key"] for r in b] and note == ""
    _, all0, _ = make_triptychs(evaluated_run, n=1000, seed=0, out=tmp_path / "c0")
    _, all1, _ = make_triptychs(evaluated_run, n=1000, seed=1, out=tmp_path / "c1")
    assert [r["key"] for r in all0] != [r["key"] for r in all1]  # another seed, another order
    # order depends on content hashes only: a permutation of the input order gives the same picks
    shas = ["aa", "bb", "cc", "dd"]
    first = [shas[i] for i in identity_order(shas, 0)]
    assert [shas[::-1][i] for i in identity_order(shas[::-1], 0)] == first
    pngs = sorted(a_dir.glob("*.png"))
    assert len(pngs) == 3
    img = np.asarray(Image.open(pngs[0]))
    assert img.shape[1] == 3 * 256 and img.shape[0] > 128  # three 256-wide panels plus title and legend rows
    page = (a_dir / "index.html").read_text()
    assert page.count("<figure") == 3 and "sortBy('score'" in page and "mIoU" in page


def test_worst_and_n_larger_than_split(evaluated_run, tmp_path):
    _, picked, note = make_triptychs(evaluated_run, n=1000, worst=True, out=tmp_path / "w")
    scores = [float(r["mIoU"]) for r in picked]
    assert scores == sorted(scores) and "all of them are used" in note and len(picked) == len(scores)


def test_run_without_predictions_says_which_command(evaluated_run):
    with pytest.raises(SegLoopError, match="python -m evaluate run .* --split val"):
        make_triptychs(evaluated_run, split="val")


def test_gallery_replaced_only_by_a_complete_one(evaluated_run, tmp_path, monkeypatch):
    import evaluate.gallery

    dest, first, _ = make_triptychs(evaluated_run, n=2, out=tmp_path / "g")
    before = sorted(p.name for p in dest.iterdir())
    with pytest.raises(SegLoopError, match="at least 1"):
        make_triptychs(evaluated_run, n=0, out=dest)
    calls = {"n": 0}
    real = evaluate.gallery.triptych

    def fails_on_the_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise SegLoopError("cannot draw")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate.gallery, "triptych", fails_on_the_second)
    with pytest.raises(SegLoopError, match="cannot draw"):
        make_triptychs(evaluated_run, n=3, out=dest)
    assert sorted(p.name for p in dest.iterdir()) == before  # the previous gallery, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temporary folder left beside it
