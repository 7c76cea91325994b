"""Validation loss beside the training loss, the command as typed, and the hparams plugin's record of each run."""

import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from core.errors import ConfigError
from tests.conftest import ROOT
from train.config import load_train_config, shown_command, train_command


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_semantic_val_loss_is_recorded_and_logged(tiny_run):
    lines = _lines(tiny_run.run_dir)
    assert all(math.isfinite(x["val_loss"]) and x["val_loss"] > 0 for x in lines)
    assert lines[0]["val_loss"] != lines[1]["val_loss"]  # the weights changed between the two validations
    acc = EventAccumulator(str(tiny_run.run_dir / "tb"))
    acc.Reload()
    assert [round(e.value, 5) for e in acc.Scalars("val/loss")] == [round(x["val_loss"], 5) for x in lines]


def test_instance_val_losses_per_term_and_model_untouched(instance_run):
    lines = _lines(instance_run.run_dir)
    terms = lines[-1]["val_losses"]
    assert {"classifier", "box_reg", "mask", "objectness", "rpn_box_reg"} == set(terms)
    assert lines[-1]["val_loss"] == pytest.approx(sum(terms.values()))


def test_instance_validation_loss_keeps_the_rng_and_the_mode(instance_run, demo_version):
    """Computing the loss in train mode changes no running statistic, leaves the model in eval mode, and draws
    nothing from the caller's RNG once the hook isolates it (the engine does so for every validation)."""
    import tasks
    from train.checkpoint import load_model

    model, ckpt = load_model(instance_run.run_dir / "checkpoints" / "last.pt")
    model.eval()
    task = tasks.get("instance").training()(ckpt["config"], demo_version.taxonomy, torch.device("cpu"), False, False)
    _, val = task.datasets(demo_version, None, "val", None)
    batch = task.collate([val[0], val[1]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    with torch.random.fork_rng(devices=[]):
        losses = task.validation_loss(model, batch)
    after_draw = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after_draw, torch.rand(3))
    assert not model.training and all(math.isfinite(float(v)) for v in losses.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_command_is_recorded_as_typed(tiny_run):
    info = json.loads((tiny_run.run_dir / "run.json").read_text())
    assert info["command"].startswith("python -m train.run ") and "train.epochs=2" in info["command"]
    cfg = load_train_config(None, ["optim.lr=0.01", "output.name=a b|c"])
    assert train_command(["/home/x/segloop/train/run.py", "--config", "c.yaml", "output.name=a b|c"], cfg) == \
        "python -m train.run --config c.yaml 'output.name=a b|c'"
    assert train_command(["pytest"], cfg) == "python -m train.run optim.lr=0.01 'output.name=a b|c'"
    assert shown_command("/srv/segloop/train/run.py --config x.yaml") == "python -m train.run --config x.yaml"
    assert shown_command("python -m train.run a=1") == "python -m train.run a=1"


def test_why_reasons_are_validated_and_kept(tmp_path):
    cfg = load_train_config("configs/experiments/camvid.yaml", ["optim.lr=0.01"])
    assert "optim.lr" not in cfg["why"], "a reason for the file's value does not explain the command line's"
    assert cfg["why"]["train.batch_size"].startswith("4: twice the steps of batch 8")
    assert load_train_config(None, ["why.optim.lr=tried 3 rates"])["why"] == {"optim.lr": "tried 3 rates"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("why: {optim.lrr: because}\n")
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="non-empty string"):
        load_train_config(None, ["why.optim.lr=3"])


def test_a_reason_goes_stale_with_its_value_through_every_layer(tmp_path):
    """A base's reason explains the base's value: a child file or the command line that changes the key without
    a reason of its own drops it; one that gives a new reason replaces it; other reasons are inherited."""
    demo = load_train_config("configs/experiments/demo.yaml")["why"]
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {(ROOT / 'configs/experiments/demo.yaml').as_posix()}\n"
                     "optim: {lr: 0.001}\ntrain: {epochs: 5}\nwhy: {train.epochs: \"5 epochs: a smoke test\"}\n")
    why = load_train_config(child)["why"]
    assert "optim.lr" not in why and why["train.epochs"] == "5 epochs: a smoke test"
    assert why["optim.name"] == demo["optim.name"] and why["augment.hflip"] == demo["augment.hflip"]
    cli = load_train_config("configs/experiments/demo.yaml", ["optim.lr=0.01", "why={optim.lr: halved twice}"])
    assert cli["why"]["optim.lr"] == "halved twice"
    assert "augment.hflip" not in load_train_config("configs/experiments/demo.yaml", ["augment={hflip: 0.0}"])["why"]


def test_hparams_plugin_reads_config_and_final_metrics(tiny_run):
    acc = EventAccumulator(str(tiny_run.run_dir / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    # no experiment summary: the plugin then takes its columns from every run's config and scalar tags (one run's
    # experiment summary would impose its columns on the other runs of the logdir)
    assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    cfg = load_train_config(tiny_run.run_dir / "config.yaml")
    assert start.hparams["optim.lr"].number_value == pytest.approx(cfg["optim"]["lr"])
    assert start.hparams["model.name"].string_value == "resunet"
    assert start.hparams["data.image_size"].string_value == "[64, 128]"
    assert {"val/mIoU", "val/loss", "train/epoch_loss", "best/mIoU"} <= set(acc.Tags()["scalars"])
    last = _lines(tiny_run.run_dir)[-1]
    assert acc.Scalars("val/mIoU")[-1].value == pytest.approx(last["val_mIoU"])
