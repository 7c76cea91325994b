"""The run folder contract (core.runs, no torch), and the loop's edges: worker seeding, old run configs, names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from core.errors import SegLoopError
from core.runs import OWNER, Run, create_run_dir, is_abandoned, plan_run_dir, resolve_run
from tests.conftest import ROOT


def test_runs_module_imports_no_torch():
    code = "import sys, core.runs; assert 'torch' not in sys.modules, 'core.runs pulled in torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_names_suffixes_and_claims(tmp_path):
    first = create_run_dir(plan_run_dir(tmp_path, "r", exist_ok=False), exist_ok=False)
    assert first == tmp_path / "r" and json.loads((first / OWNER).read_text())["pid"] == os.getpid()
    assert not is_abandoned(first), "a run in its first epoch (owner alive) is not abandoned"
    assert plan_run_dir(tmp_path, "r", exist_ok=False) == tmp_path / "r-2"
    # two trainings that planned the same name: the second to create it gets the next free one
    assert create_run_dir(tmp_path / "r", exist_ok=False) == tmp_path / "r-2"
    import socket

    (first / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": "another-machine"}))
    assert not is_abandoned(first), "an owner on another machine may still run: only it can tell"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (first / OWNER).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    assert is_abandoned(first)
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "last.pt").write_bytes(b"x")
    assert not is_abandoned(first), "a folder with a checkpoint is never abandoned"
    with pytest.raises(SegLoopError, match="output.name"):
        plan_run_dir(tmp_path, "../x", exist_ok=False)


def test_resolve_and_metrics_truncation(tmp_path):
    run = Run(tmp_path / "a")
    (run.dir / "checkpoints").mkdir(parents=True)
    run.checkpoint_path("last").write_bytes(b"x")
    assert resolve_run("last", tmp_path) == run.dir and resolve_run("a", tmp_path) == run.dir
    with pytest.raises(SegLoopError, match=r"or a run under .*: a$"):
        resolve_run("b", tmp_path)
    run.metrics_path.write_text('{"epoch": 1, "step": 10}\n{"epoch": 2, "step": 20}\n{"epoch": 3, "st')
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2], "a line torn by a kill is skipped"
    run.truncate_metrics(10)
    assert run.metrics_path.read_text() == '{"epoch": 1, "step": 10}\n'


def test_worker_processes_get_their_own_augmentation_stream(demo_version):
    import torch
    from torch.utils.data import DataLoader

    from train.data import worker_init
    from train.instance_data import InstanceDataset, collate_instances

    aug = {"hflip": 0.5, "copy_paste": 0.5, "color": 0.0}
    ds = InstanceDataset(demo_version, "train", aug, progress=False)
    ds.images = ds.images[:1] * 16  # one image, so any difference comes from the augmentation draws
    ds.anns = ds.anns[:1] * 16
    ds.records = ds.records[:1] * 16
    loader = DataLoader(ds, batch_size=8, num_workers=2, worker_init_fn=worker_init, collate_fn=collate_instances,
                        generator=torch.Generator().manual_seed(0))
    batches = [torch.stack(b["image"]) for b in loader]
    assert len(batches) == 2 and not torch.equal(batches[0], batches[1]), "both workers drew the same augmentations"


def test_runs_from_before_model_args_still_resume(tmp_path):
    from train.config import load_train_config, upgrade_run_config

    old = yaml.safe_load((ROOT / "configs" / "train" / "default.yaml").read_text())
    old["model"] = {"name": "resunet", "width": 16, "depth": 4, "stem_stride": 1, "dropout": 0.0, "weights": None}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_train_config(upgrade_run_config(path), [])
    assert cfg["model"]["name"] == "resunet" and cfg["model"]["weights"] is None
    assert cfg["model"]["args"] == {"width": 16, "depth": 4, "stem_stride": 1, "dropout": 0.0}
    assert yaml.safe_load(path.read_text())["model"]["width"] == 16, "the run's own file is left as it was"


def test_spelled_out_defaults_are_the_same_architecture():
    from train.checkpoint import architecture

    a = {"task": "semantic", "name": "resunet", "args": {}}
    b = {"task": "semantic", "name": "resunet", "args": {"width": 16, "depth": 4}}
    assert architecture(a) == architecture(b)
    assert architecture({**a, "args": {"width": 24}}) != architecture(a)
    m = {"task": "instance", "name": "maskrcnn", "args": {"backbone": "resnet18"}}
    assert architecture(m) == architecture({**m, "args": {"backbone": "resnet18", "weights_backbone": "/x.pth"}})


def test_upload_paths_may_not_leave_the_media_folder():
    from ingest.labelstudio import upload_relpath

    assert upload_relpath("/data/upload/3/a b.png") == "upload/3/a b.png"
    for bad in ("/data/upload/1/../../../etc/x.png", "/data/upload/1//abs.png"):
        with pytest.raises(SegLoopError, match="leaves Label Studio's upload folder"):
            upload_relpath(bad)
