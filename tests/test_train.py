"""Real training steps on small generated images: outputs, checkpoints, resume, and refusal of wrong inputs."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.errors import SegLoopError
from tests.conftest import tiny_overrides
from train.checkpoint import load_checkpoint
from train.config import load_train_config
from train.engine import Trainer, train

CKPT_KEYS = {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "best", "rng", "config", "model_spec",
             "taxonomy", "dataset_version", "elapsed_s"}


def test_run_folder_contents(tiny_run, demo_version):
    run = tiny_run.run_dir
    assert (run / "config.yaml").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["dataset_version"] == demo_version.version and info["train_images_per_second"] > 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert all(0 <= x["val_mIoU"] <= 1 and set(x["val_iou"]) == set(demo_version.taxonomy.names) for x in lines)
    assert lines[1]["train_loss"] < lines[0]["train_loss"], "two epochs of real training should lower the loss"
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / "checkpoints" / name)
        assert set(ckpt) >= CKPT_KEYS
        assert ckpt["model_spec"]["name"] == "resunet" and len(ckpt["taxonomy"]["classes"]) == 19
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


def test_tensorboard_has_scalars_and_panels(tiny_run):
    acc = EventAccumulator(str(tiny_run.run_dir / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "val/mIoU", "val/pixel_acc"} <= set(tags["scalars"])
    assert any(t.startswith("val_iou/") for t in tags["scalars"])
    assert "val/panel_0" in tags["images"]
    img = acc.Images("val/panel_0")[-1]
    assert img.width == 3 * 256 and img.height == 128  # image | ground truth | prediction at label size


def test_resume_continues_exactly(demo_version, tmp_path):
    full = train(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "output.name=full")),
                 progress=False)
    interrupted = Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "output.name=half")),
                          progress=False)
    half = interrupted.fit(stop_after_epochs=1)
    assert half.epochs_done == 1
    cfg = load_train_config(half.run_dir / "config.yaml", [f"resume={half.run_dir}"])
    resumed = train(cfg, progress=False)
    assert resumed.run_dir == half.run_dir and resumed.steps == full.steps
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(half.run_dir / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    lines = (half.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_checkpoint_from_another_model_or_taxonomy(tiny_run, demo_version, demo_city, tmp_path):
    ckpt = tiny_run.run_dir / "checkpoints" / "best.pt"
    cfg = load_train_config(None, tiny_overrides(demo_version.path, tmp_path, f"model.weights={ckpt}",
                                                 "model.args={width: 12, depth: 2}"))
    with pytest.raises(SegLoopError, match="checkpoint is for model"):
        train(cfg, progress=False)
    from ingest.version import build
    from tests.conftest import demo_data_config

    person = build(demo_data_config(demo_city, tmp_path / "v", "taxonomy=configs/taxonomy/person.yaml",
                                    "name=persons"), progress=False)
    cfg = load_train_config(None, tiny_overrides(person.path, tmp_path, f"model.weights={ckpt}"))
    with pytest.raises(SegLoopError, match="taxonomy 'cityscapes' with 19 classes"):
        train(cfg, progress=False)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    cfg = load_train_config(None, tiny_overrides(person.path, tmp_path, f"model.weights={tmp_path / 'broken.pt'}"))
    with pytest.raises(SegLoopError, match="cannot read checkpoint"):
        train(cfg, progress=False)


def test_missing_dataset_version(tmp_path):
    cfg = load_train_config(None, ["data.version=nope@1234", f"data.versions_root={tmp_path}"])
    with pytest.raises(SegLoopError, match="does not exist"):
        train(cfg, progress=False)


def test_time_limit_and_folds(demo_city, tmp_path):
    from ingest.version import build
    from tests.conftest import demo_data_config

    v = build(demo_data_config(demo_city, tmp_path / "v", "folds=2", "name=folded"), progress=False)
    cfg = load_train_config(None, tiny_overrides(v.path, tmp_path, "data.fold=1", "train.epochs=50",
                                                 "train.time_limit=0.001", "train.batch_size=2"))
    res = train(cfg, progress=False)
    assert res.epochs_done == 1 and json.loads((res.run_dir / "run.json").read_text())["stopped_by_time_limit"]


def test_batch_larger_than_split(demo_version, tmp_path):
    cfg = load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "train.batch_size=500"))
    with pytest.raises(SegLoopError, match="larger than the training images"):
        train(cfg, progress=False)


def test_failed_run_leaves_no_folder_and_the_name_stays_free(demo_version, tmp_path):
    bad = load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "output.name=x",
                                                 "model.args={width: 16, depth: 2, widht: 3}"))
    with pytest.raises(SegLoopError, match="did you mean 'width'"):
        train(bad, progress=False)
    assert not (tmp_path / "x").exists()

    class Boom(Exception):
        pass

    trainer = Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "output.name=x")),
                      progress=False)

    def explode(batch):
        raise Boom

    trainer._train_step = explode
    with pytest.raises(Boom):
        trainer.fit()
    assert not (tmp_path / "x").exists(), "a run that failed before its first checkpoint leaves nothing behind"
    (tmp_path / "x").mkdir()  # an empty folder left by an older version is reused, not skipped to x-2
    assert Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "output.name=x")),
                   progress=False).run_dir == tmp_path / "x"


def test_malicious_checkpoint_is_refused_without_running_code(demo_version, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_spec": {"name": "resunet"}, "x": Payload()}, evil)
    with pytest.raises(SegLoopError, match="refused to load") as e:
        load_checkpoint(evil)
    assert str(evil) in str(e.value) and "fix:" in str(e.value)
    cfg = load_train_config(None, tiny_overrides(demo_version.path, tmp_path, f"model.weights={evil}"))
    with pytest.raises(SegLoopError, match="refused to load"):
        train(cfg, progress=False)
    assert not marker.exists(), "the pickle's code must never run"


def test_resume_drops_metrics_lines_written_after_the_checkpoint(demo_version, tmp_path):
    half = Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "output.name=k")),
                   progress=False).fit(stop_after_epochs=1)
    metrics = half.run_dir / "metrics.jsonl"
    line = json.loads(metrics.read_text().splitlines()[0])
    # as if killed after writing epoch 2's line but before its checkpoint
    metrics.write_text(metrics.read_text() + json.dumps({**line, "epoch": 2, "step": line["step"] * 2}) + "\n")
    train(load_train_config(half.run_dir / "config.yaml", [f"resume={half.run_dir}"]), progress=False)
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2]


def test_init_from_another_taxonomy_keeps_the_encoder_and_renews_the_head(tiny_run, demo_city, tmp_path):
    from ingest.version import build
    from tests.conftest import demo_data_config
    from train.checkpoint import load_checkpoint as load

    person = build(demo_data_config(demo_city, tmp_path / "v", "taxonomy=configs/taxonomy/person.yaml",
                                    "name=persons"), progress=False)
    t = Trainer(load_train_config(None, tiny_overrides(person.path, tmp_path, f"model.init_from={tiny_run.run_dir}")),
                progress=False)
    ckpt = load(tiny_run.run_dir / "checkpoints" / "best.pt")
    source, their_names = ckpt["model"], [c["name"] for c in ckpt["taxonomy"]["classes"]]
    own = t.model.state_dict()
    assert t.init_report["loaded"] == len(own) and t.init_report["classes_mapped"] == ["person"]
    torch.testing.assert_close(own["encoder.stem.0.0.weight"], source["encoder.stem.0.0.weight"])
    # the head: person's row is Cityscapes' person row, background (which Cityscapes lacks) starts fresh
    for key in ("head.conv.weight", "head.conv.bias"):
        torch.testing.assert_close(own[key][1], source[key][their_names.index("person")])
        assert not any(torch.equal(own[key][0], row) for row in source[key])
    binary = Trainer(load_train_config(None, tiny_overrides(
        person.path, tmp_path, f"model.init_from={tiny_run.run_dir}", "loss.name=bce",
        "model.args={width: 16, depth: 2, head: sigmoid}")), progress=False)
    torch.testing.assert_close(binary.model.state_dict()["head.conv.weight"][0],
                               source["head.conv.weight"][their_names.index("person")])
    cfg = load_train_config(None, tiny_overrides(person.path, tmp_path, "model.name=linknet",
                                                 f"model.init_from={tiny_run.run_dir}"))
    cfg["model"]["args"] = {"encoder_args": {"width": 4, "depth": 2}}
    with pytest.raises(SegLoopError, match="shares no layer"):
        Trainer(cfg, progress=False)


def test_init_from_a_taxonomy_sharing_no_class_is_refused(tiny_run):
    from train.engine import transfer_weights
    from train.models import SEMANTIC_MODELS

    model = SEMANTIC_MODELS.build("resunet", {"width": 16, "depth": 2}, num_classes=2)
    with pytest.raises(SegLoopError, match="shares no class") as e:
        transfer_weights(model, tiny_run.run_dir, ["water", "boat"])
    assert "train without model.init_from" in str(e.value)  # no option the model may lack
