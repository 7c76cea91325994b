"""The DVC pipeline (dvc.yaml, params.yaml, configs/dvc/data.yaml) with the real DVC, offline, in a throw-away git
repository holding a copy of the project: repro, metrics, plots, push to a local remote, a fresh clone's pull, a
no-op repro, and which stages a change invalidates (and which it must not)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tools.dvc_curves import scalar_records
from tools.dvc_demo import (
    METRICS,
    Sandbox,
    differing_files,
    dvc,
    make_repo,
    metrics,
    run,
    stages_run,
)

pytestmark = pytest.mark.slow


def _status(sb: Sandbox, cwd: Path) -> dict:
    """``dvc status --json``: the stages whose dependencies or outputs changed (empty when all are up to date)."""
    return json.loads(dvc(sb, cwd, "status", "--json", echo=False) or "{}")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_dvc_pipeline_round_trip(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "work")
    repo = make_repo(sb)

    # 1. the whole pipeline runs, in order
    first = dvc(sb, repo, "repro", echo=False)
    assert stages_run(first) == ["ingest", "train", "evaluate", "report"]
    run_dir = repo / "runs" / "dvc"
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (repo / "reports" / "dvc" / "report.html").is_file()
    versions = list((repo / "data" / "dvc" / "versions").iterdir())
    assert [v.name.split("@")[0] for v in versions] == ["demo"] and (versions[0] / "manifest.json").is_file()
    manifest = json.loads((versions[0] / "manifest.json").read_text())
    assert sum(manifest["counts"][s]["images"] for s in ("train", "val", "test")) == 24  # configs/dvc/data.yaml n

    # 2. metrics as DVC shows them are the evaluation's file; plots are the run's metrics.jsonl records
    evaluation = json.loads((repo / METRICS).read_text())
    shown = metrics(sb, repo)
    assert shown["mIoU"] == pytest.approx(evaluation["mIoU"]) and shown["pixel_acc"] == evaluation["pixel_acc"]
    assert shown["dataset_version"] == versions[0].name
    epochs = yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]
    curves = json.loads((run_dir / "curves.json").read_text())
    assert [c["epoch"] for c in curves] == list(range(1, epochs + 1)) == [r["epoch"] for r in scalar_records(run_dir)]
    assert [c["val_mIoU"] for c in curves] == [r["val_mIoU"] for r in
                                               map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
    dvc(sb, repo, "plots", "show", "--out", str(tmp_path / "plots"), echo=False)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "runs/dvc/curves.json" in html and "val_mIoU" in html

    # 3. push to the local remote, commit dvc.lock, clone, pull: the same bytes; repro there runs nothing
    dvc(sb, repo, "push", echo=False)
    assert any(sb.storage.rglob("*")), "the remote is empty after dvc push"
    run(sb, repo, "git", "add", "--all", echo=False)
    run(sb, repo, "git", "commit", "--quiet", "-m", "outputs", echo=False)
    run(sb, sb.workdir, "git", "clone", "--quiet", str(repo), str(sb.clone), echo=False)
    assert not (sb.clone / "runs").exists()
    dvc(sb, sb.clone, "pull", echo=False)
    assert differing_files(repo, sb.clone) == []
    assert stages_run(dvc(sb, sb.clone, "repro", echo=False)) == []
    assert _status(sb, sb.clone) == {}

    # 4. what must not invalidate anything: a comment, a key of configs/data/demo.yaml that configs/dvc/data.yaml
    #    overrides (its 300-frame source), a file no stage reads
    params = sb.clone / "params.yaml"
    _edit(params, "train:\n", "# tried a few settings\ntrain:\n")
    _edit(sb.clone / "configs" / "data" / "demo.yaml", "n: 300", "n: 301")
    (sb.clone / "README.md").write_text("changed\n")
    assert _status(sb, sb.clone) == {}

    # 5. a data parameter invalidates ingest (the rest follows from its outputs once it reruns)
    data_cfg = sb.clone / "configs" / "dvc" / "data.yaml"
    saved = data_cfg.read_text()
    _edit(data_cfg, "n: 24", "n: 27")
    assert set(_status(sb, sb.clone)) == {"ingest"}
    data_cfg.write_text(saved)
    assert _status(sb, sb.clone) == {}

    # 6. a training parameter through `dvc exp run -S`: params.yaml edited, train/evaluate/report rerun, not ingest
    run(sb, sb.clone, "git", "commit", "--quiet", "-am", "comment", echo=False)
    out = dvc(sb, sb.clone, "exp", "run", "-S", "train.epochs=1", echo=False)
    assert stages_run(out) == ["train", "evaluate", "report"]
    assert yaml.safe_load(params.read_text())["train"]["epochs"] == 1
    assert "# tried a few settings" in params.read_text()  # DVC's edit keeps the file's comments
    assert [r["epoch"] for r in scalar_records(sb.clone / "runs" / "dvc")] == [1]  # trained from scratch
    rerun = json.loads((sb.clone / METRICS).read_text())
    assert metrics(sb, sb.clone)["mIoU"] == pytest.approx(rerun["mIoU"]) and rerun["epoch"] == 1
    assert _status(sb, sb.clone) == {}

    # 7. a pulled clone rebuilds the report when the repository it came from is gone (run.json's dataset_path
    #    names that repository's folder; the version is found again by name@hash under data.versions_root)
    clone2 = sb.workdir / "clone2"
    run(sb, sb.workdir, "git", "clone", "--quiet", str(repo), str(clone2), echo=False)
    dvc(sb, clone2, "pull", echo=False)
    shutil.rmtree(repo)
    dvc(sb, clone2, "repro", "--force", "--single-item", "report", echo=False)
    assert (clone2 / "reports" / "dvc" / "report.html").is_file()
