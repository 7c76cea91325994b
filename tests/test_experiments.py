"""The experiment toolkit at tiny sizes: deterministic reruns, the overfit check, early stopping on a scripted curve
and in a real run, training on a chosen subset, and the training batches' own mIoU beside the validation one."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import SegLoopError, run_cli
from core.runs import Run
from tests.conftest import tiny_overrides
from train.checkpoint import load_checkpoint
from train.config import load_train_config
from train.engine import Patience, train
from train.run import main as train_main


def _cfg(version, runs, *extra: str) -> dict:
    return load_train_config(None, tiny_overrides(version.path, runs, *extra))


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ reproducibility
def test_deterministic_reruns_are_bitwise_identical(demo_version, tmp_path):
    runs = [train(_cfg(demo_version, tmp_path, f"output.name=r{i}", "train.deterministic=true"), progress=False)
            for i in range(2)]
    a, b = (load_checkpoint(r.run_dir / "checkpoints" / "last.pt")["model"] for r in runs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = [[{k: v for k, v in rec.items() if k != "time_s"} for rec in _records(r.run_dir)] for r in runs]
    assert strip[0] == strip[1]
    assert json.loads((runs[0].run_dir / "run.json").read_text())["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()  # the process-wide switch is put back


# ---------------------------------------------------------------------------------------------- the overfit check
def test_overfit_check_learns_four_images(demo_version, tmp_path, capsys):
    res = train(_cfg(demo_version, tmp_path, "output.name=of", "train.overfit_batch=4", "train.overfit_target=0.8",
                     "train.overfit_steps=200", "train.eval_every=5", "optim.lr=0.01", "schedule.warmup_steps=5"),
                progress=False)
    out = res.overfit
    assert out["reached"] and out["value"] >= 0.8 and out["step"] == res.steps < 200
    assert len(out["images"]) == 4
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["overfit"] == out and info["train_images"]["count"] == 4
    assert info["stopped"].startswith("overfit check passed")
    # the validation scored exactly the four training images, unaugmented
    assert all(r["val_mIoU"] is not None for r in _records(res.run_dir))
    assert f"overfit check passed: mIoU {out['value']:.4f}" in capsys.readouterr().out
    # one checkpoint at the end, not one per step
    assert load_checkpoint(res.run_dir / "checkpoints" / "last.pt")["step"] == res.steps


def test_a_failed_overfit_check_exits_1_and_says_so(demo_version, tmp_path, capsys):
    rc = run_cli(train_main, ["--quiet", *tiny_overrides(demo_version.path, tmp_path, "output.name=fail",
                                                          "train.overfit_batch=2", "train.overfit_steps=2",
                                                          "train.overfit_target=1.0")])
    assert rc == 1
    assert "overfit check FAILED" in capsys.readouterr().out
    info = json.loads((tmp_path / "fail" / "run.json").read_text())
    assert info["overfit"]["reached"] is False and info["overfit"]["step"] is None


def test_overfit_batch_larger_than_the_training_images_is_refused(demo_version, tmp_path):
    with pytest.raises(SegLoopError, match="overfit_batch=99 is larger than the training images"):
        train(_cfg(demo_version, tmp_path, "train.overfit_batch=99"), progress=False)
    assert not (tmp_path / "resunet-demo").exists()


# ------------------------------------------------------------------------------------------------ early stopping
def test_patience_stops_at_the_right_epoch_on_a_scripted_curve():
    curve = [0.10, 0.20, 0.205, 0.30, 0.301, 0.302, 0.29]
    rule = Patience(patience=3, min_delta=0.01)
    stops = [rule.update(epoch, value) for epoch, value in enumerate(curve, 1)]
    # 0.30 at epoch 4 is the last rise above 0.01; epochs 5-7 do not rise enough: stop after epoch 7
    assert stops == [False] * 6 + [True]
    assert rule.state() == {"value": 0.30, "epoch": 4}
    flat = Patience(1, 0.0)
    assert [flat.update(e, v) for e, v in [(1, 0.5), (2, 0.5)]] == [False, True]  # equal is no rise


def test_early_stopping_run_records_its_peak_and_resume_has_nothing_to_do(demo_version, tmp_path):
    # a min_delta no epoch can reach: the run stops `patience` epochs after its first validation
    res = train(_cfg(demo_version, tmp_path, "output.name=es", "train.epochs=20", "train.early_stop.patience=2",
                     "train.early_stop.min_delta=0.99"), progress=False)
    assert res.epochs_done == 3
    info = json.loads((res.run_dir / "run.json").read_text())
    es = info["early_stop"]
    assert es["stopped_at_epoch"] == 3 and es["patience"] == 2
    assert es["peak"] == {"epoch": info["best_epoch"], "step": info["best_step"], "value": info["best_value"]}
    assert info["best_step"] == max(r["step"] for r in _records(res.run_dir) if r["epoch"] == info["best_epoch"])
    before = (res.run_dir / "run.json").read_text()
    with pytest.raises(SegLoopError, match="nothing to do: the run stopped itself"):
        train(load_train_config(res.run_dir / "config.yaml", [f"resume={res.run_dir}"]), progress=False)
    assert (res.run_dir / "run.json").read_text() == before


def test_patience_needs_validation_apart_from_training(demo_version, tmp_path):
    with pytest.raises(SegLoopError, match="validation scores the training split"):
        train(_cfg(demo_version, tmp_path, "train.early_stop.patience=3", "data.val_split=train"), progress=False)


# ------------------------------------------------------------------------------------------- training on a subset
def test_train_list_of_ids_and_hashes(demo_version, tmp_path, capsys):
    images = demo_version.images("train")
    listing = tmp_path / "chosen.txt"
    listing.write_text(f"# two images\n{images[0]['id']}\n{images[3]['sha256'][:12]}  # by content hash\n\n"
                       f"{images[0]['id']}\n")
    res = train(_cfg(demo_version, tmp_path, "output.name=sub", f"data.train_list={listing}", "train.batch_size=2",
                     "train.epochs=1"), progress=False)
    chosen = json.loads((res.run_dir / "run.json").read_text())["train_images"]
    assert chosen["ids"] == sorted([images[0]["id"], images[3]["id"]]) and chosen["count"] == 2
    assert "names 1 image(s) more than once" in capsys.readouterr().out
    # a resume whose list file changed would train on other images: refused, the run untouched
    listing.write_text(f"{images[1]['id']}\n{images[2]['id']}\n")
    with pytest.raises(SegLoopError, match="not those the run started with"):
        train(load_train_config(res.run_dir / "config.yaml", [f"resume={res.run_dir}", "train.epochs=2"]),
              progress=False)


@pytest.mark.parametrize("entries,words", [
    ("[99999]", "entries are no image of"),
    ("['not-a-hash']", "entries are no image of"),
    ("[123456789012345]", "looks like a content hash read as a number"),
])
def test_bad_train_ids(demo_version, tmp_path, entries, words):
    with pytest.raises(SegLoopError, match=words):
        train(_cfg(demo_version, tmp_path, f"data.train_ids={entries}"), progress=False)


def test_train_ids_of_another_split_are_refused(demo_version, tmp_path):
    test_image = demo_version.images("test")[0]
    for entry in (test_image["id"], f"'{test_image['sha256'][:16]}'"):
        with pytest.raises(SegLoopError, match=r"another split .* \(test\)"):
            train(_cfg(demo_version, tmp_path, f"data.train_ids=[{entry}]"), progress=False)


# -------------------------------------------------------------------------------------------------------- curves
def test_train_miou_beside_val_miou(tiny_run):
    records = Run(tiny_run.run_dir).read_metrics()
    assert all(0 <= r["train_mIoU"] <= 1 for r in records)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(tiny_run.run_dir / "tb")).Reload().Tags()["scalars"]
    assert {"train/mIoU", "val/mIoU"} <= set(tags)


# ------------------------------------------------------------------------------------------------------ compare
def test_compare_reads_runs_of_both_tasks_and_names_what_is_no_run(evaluated_run, evaluated_instance_run,
                                                                    tmp_path, capsys):
    import csv

    from evaluate.__main__ import main as evaluate_main

    inst, result = evaluated_instance_run
    semantic = json.loads((evaluated_run / "eval" / "test" / "metrics.json").read_text())
    stray = tmp_path / "notes"
    stray.mkdir()
    out = tmp_path / "cmp"
    rc = run_cli(evaluate_main, ["compare", str(evaluated_run), str(inst), str(stray), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"left out {stray}" in captured.err  # named, and the others still compared
    rows = captured.out.split("\n\n")[0].splitlines()  # the runs' table (the per-class one follows)
    rows = [r for r in rows if not r.startswith("|---")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert {"encoder", "loss", "augmentations", "parameters (M)", "test mIoU", "test mask AP"} <= set(header)
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in rows[1:]}
    sem, ins = cells[evaluated_run.name], cells[inst.name]
    assert sem[header.index("test mIoU")] == f"{semantic['mIoU']:.4f}"
    assert ins[header.index("test mask AP")] == f"{result['segm']['AP']:.4f}"
    assert ins[header.index("encoder")] == "resnet18-FPN" and ins[header.index("task")] == "instance"
    with open(out / "compare.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [t["run"] for t in table] == [evaluated_run.name, inst.name]
    road = semantic["per_class"]["road"]["iou"]
    assert float(table[0]["IoU/road"]) == pytest.approx(road) and table[1]["IoU/road"] == ""
    assert "mask AP/car" in table[1]
    assert (out / "compare.html").read_text().count("<table>") >= 2 and list(out.glob("curve_*.png"))
    # an --out that is a file the user has is refused and left as it was
    (tmp_path / "keep.txt").write_text("mine")
    rc = run_cli(evaluate_main, ["compare", str(evaluated_run), "--out", str(tmp_path / "keep.txt")])
    assert rc == 2 and (tmp_path / "keep.txt").read_text() == "mine"
    # nothing to compare at all is an error
    assert run_cli(evaluate_main, ["compare", str(stray)]) == 2
    assert "none of the 1 folder(s) is a run" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------- k-fold
def test_all_folds_train_as_one_group_resumable_as_a_whole(demo_city, tmp_path, capsys):
    import shutil

    from ingest.version import build
    from tests.conftest import demo_data_config

    version = build(demo_data_config(demo_city, tmp_path / "v", "folds=2", "name=folded"), progress=False)
    runs = tmp_path / "runs"
    argv = ["--quiet", *tiny_overrides(version.path, runs, "output.name=cv", "data.fold=all", "train.epochs=1")]
    assert run_cli(train_main, argv) == 0
    group = runs / "cv"
    info = json.loads((group / "group.json").read_text())
    assert info["folds"] == 2 and info["runs"] == ["fold0", "fold1"]
    folds = [json.loads((group / f"fold{i}" / "run.json").read_text()) for i in range(2)]
    assert [f["train_images"]["from"] for f in folds] == ["data.fold=0", "data.fold=1"]
    assert folds[0]["train_images"]["ids_sha256"] != folds[1]["train_images"]["ids_sha256"]
    # an interrupted group: fold1 lost; the resume leaves fold0 as it is and trains fold1
    shutil.rmtree(group / "fold1")
    before = (group / "fold0" / "run.json").read_text()
    assert run_cli(train_main, ["--quiet", f"resume={group}"]) == 0
    out = capsys.readouterr().out
    assert "fold 1/2: " in out and "has finished; left as it is" in out and "fold 2/2: training" in out
    assert (group / "fold0" / "run.json").read_text() == before and (group / "fold1" / "checkpoints").is_dir()
    # more epochs: every fold resumes from its last.pt
    assert run_cli(train_main, ["--quiet", f"resume={group}", "train.epochs=2"]) == 0
    for i in range(2):
        assert [r["epoch"] for r in _records(group / f"fold{i}")] == [1, 2]
    # a report of fold0 of two groups tells the two apart, and says what a fold run trained and validated on
    from evaluate.__main__ import main as evaluate_main
    from evaluate.report import build_report

    assert run_cli(evaluate_main, ["run", str(group / "fold0"), "--split", "test"]) == 0
    shutil.copytree(group, runs / "cv2")
    md = (build_report([group / "fold0", runs / "cv2" / "fold0"], tmp_path / "rep", gallery=1)
          / "report.md").read_text()
    assert "### cv/fold0" in md and "### cv2/fold0" in md and "### fold0" not in md
    halves = json.loads((version.path / "folds" / "fold0.json").read_text())
    assert (f"trained on fold 0's train, validated on its val ({len(halves['train'])} / {len(halves['val'])} "
            f"images)") in md


def test_all_folds_of_a_version_without_folds_is_refused(demo_version, tmp_path, capsys):
    rc = run_cli(train_main, [*tiny_overrides(demo_version.path, tmp_path, "data.fold=all")])
    assert rc == 2 and "was built without folds" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------- ensembles
def test_an_ensemble_of_two_identical_runs_equals_each_and_every_reader_takes_it(evaluated_run, tmp_path, capsys):
    import shutil

    from core.fsio import read_label
    from evaluate.__main__ import main as evaluate_main
    from evaluate.compare import compare_runs
    from evaluate.report import build_report

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(evaluated_run, a)
    shutil.copytree(evaluated_run, b, ignore=shutil.ignore_patterns("eval"))  # scored inside the ensemble's folder
    out = tmp_path / "ens"
    assert run_cli(evaluate_main, ["ensemble", str(a), str(b), "--out", str(out), "--worst", "3"]) == 0
    assert "in every member's worst" in capsys.readouterr().out
    table = json.loads((out / "ensemble.json").read_text())["comparison"]
    member = json.loads((a / "eval" / "test" / "metrics.json").read_text())
    # the ensemble's output is the log of its mean probabilities, upsampled to the label size as any logits are:
    # on class boundaries, upsampled log-probabilities and the member's upsampled logits may pick another class for
    # a few pixels (softmax's per-pixel normaliser varies across them); everywhere else the two are the same
    assert table["ensemble"]["mIoU"] == pytest.approx(member["mIoU"], abs=1e-4)
    assert [r["figures"]["mIoU"] for r in table["runs"]] == pytest.approx([member["mIoU"]] * 2)
    overlap = table["worst_overlap"]
    assert overlap["mean_pairwise_jaccard"] == 1.0 and len(overlap["in_every_member"]) == 3
    assert not (b / "eval").exists()  # nothing written into a member's own folder
    same = total = 0
    for png in sorted((a / "eval" / "test" / "pred").glob("*.png")):
        ours, theirs = read_label(out / "eval" / "test" / "pred" / png.name), read_label(png)
        same, total = same + int((ours == theirs).sum()), total + ours.size
    assert total > 0 and same / total > 0.9999
    # the ensemble folder reads like any run
    rows, skipped = compare_runs([out, a])
    assert not skipped and rows[0].values["model"] == "ensemble"
    report = build_report([out, a], tmp_path / "rep", gallery=1)
    md = (report / "report.md").read_text()
    assert f"| {out.name} | semantic | ensemble |" in md  # in the report's comparison, beside its member
    assert (report / "arch_1.png").stat().st_size > 1000


def test_ensembles_of_runs_that_do_not_combine_are_refused(evaluated_run, evaluated_instance_run, tmp_path, capsys):
    from evaluate.__main__ import main as evaluate_main

    inst, _ = evaluated_instance_run
    rc = run_cli(evaluate_main, ["ensemble", str(evaluated_run), str(inst), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "differ in task" in err and f"{inst.name}: instance" in err
    rc = run_cli(evaluate_main, ["ensemble", str(inst), str(inst), "--out", str(tmp_path / "e")])
    assert rc == 2 and "given twice" in capsys.readouterr().err

    assert not (tmp_path / "e").exists()


def test_an_instance_ensemble_of_two_identical_runs_equals_each(evaluated_instance_run, tmp_path, capsys):
    import shutil

    from evaluate.ensemble import build_ensemble

    inst, result = evaluated_instance_run
    twin = tmp_path / "twin"
    shutil.copytree(inst, twin, ignore=shutil.ignore_patterns("eval"))
    table = build_ensemble([inst, twin], tmp_path / "ens", "test", progress=False)
    # each object is found by both members with the same box, mask and score: fused, it is that detection again
    assert table["ensemble"]["mask_AP"] == pytest.approx(result["segm"]["AP"], abs=1e-6)
    fused = json.loads((tmp_path / "ens" / "eval" / "test" / "metrics.json").read_text())
    assert fused["segm"]["AP50"] == pytest.approx(result["segm"]["AP50"], abs=1e-6)
    assert json.loads((tmp_path / "ens" / "run.json").read_text())["model"]["name"] == "ensemble"


# ---------------------------------------------------------------------------------------------- training history
def test_a_history_continues_across_resumes_weights_and_init_from(demo_version, tmp_path, capsys):
    from evaluate.__main__ import main as evaluate_main
    from evaluate.history import history, summary

    runs = tmp_path / "runs"
    assert run_cli(train_main, ["--quiet", *tiny_overrides(demo_version.path, runs, "output.name=a",
                                                           "train.epochs=1")]) == 0
    assert run_cli(train_main, ["--quiet", f"resume={runs / 'a'}", "train.epochs=2"]) == 0  # a resume: one folder
    assert run_cli(train_main, ["--quiet", *tiny_overrides(demo_version.path, runs, "output.name=b",
                                                           f"model.weights={runs / 'a'}")]) == 0
    assert run_cli(train_main, ["--quiet", *tiny_overrides(demo_version.path, runs, "output.name=c",
                                                           f"model.init_from={runs / 'b' / 'checkpoints' / 'last.pt'}",
                                                           "train.epochs=1")]) == 0
    capsys.readouterr()
    a, b, c = (_records(runs / n) for n in "abc")
    assert [r["epoch"] for r in a] == [1, 2]
    stages, notes = history(runs / "c")
    assert [s.run.name for s in stages] == ["a", "b", "c"]
    # b started from a's best.pt; c from b's last.pt (epoch 2): every stage continues where its start had got to
    best_a = load_checkpoint(runs / "a" / "checkpoints" / "best.pt")
    assert stages[1].epoch_offset == best_a["epoch"] and stages[1].step_offset == best_a["step"]
    assert stages[2].epoch_offset == best_a["epoch"] + 2 and stages[2].step_offset == best_a["step"] + b[-1]["step"]
    figures = summary(stages, notes)
    assert figures["total_epochs"] == best_a["epoch"] + 2 + 1
    assert figures["total_steps"] == best_a["step"] + b[-1]["step"] + c[-1]["step"]
    assert figures["first_loss"]["value"] == pytest.approx(a[0]["train_loss"])
    assert figures["last_loss"]["value"] == pytest.approx(c[-1]["train_loss"])
    drop = 100 * (a[0]["train_loss"] - c[-1]["train_loss"]) / a[0]["train_loss"]
    assert figures["loss_drop_percent"] == pytest.approx(drop)
    # the CLI: lines and the plot, or the same figures as JSON
    assert run_cli(evaluate_main, ["history", str(runs / "c")]) == 0
    out = capsys.readouterr().out
    assert "3 run(s)" in out and "1. a: epochs 1-" in out and "model.init_from" in out
    assert (runs / "c" / "history.png").stat().st_size > 1000
    assert run_cli(evaluate_main, ["history", str(runs / "c"), "--json", "--out", str(tmp_path / "h.png")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_epochs"] == figures["total_epochs"] and data["plot"] == str(tmp_path / "h.png")
    assert (tmp_path / "h.png").is_file()
    # a run that is its own ancestor (run.json edited by hand) is said, not followed forever
    info = json.loads((runs / "a" / "run.json").read_text())
    info["init_from"] = {"from": str(runs / "c" / "checkpoints" / "best.pt"), "epoch": 1, "step": 1}
    (runs / "a" / "run.json").write_text(json.dumps(info))
    assert run_cli(evaluate_main, ["history", str(runs / "c")]) == 2
    assert "form a loop" in capsys.readouterr().err


def test_an_80_20_split_validates_on_a_fold_of_train(demo_city, tmp_path, capsys):
    from ingest.version import DatasetVersion, build
    from tests.conftest import demo_data_config

    ratios = ["split.mode=ratio", "split.ratios={train: 0.8, val: 0.0, test: 0.2}"]
    with pytest.raises(SegLoopError, match="split 'val' is empty"):  # no val and no folds: nothing to validate on
        build(demo_data_config(demo_city, tmp_path / "v", *ratios), progress=False)
    version = DatasetVersion(build(demo_data_config(demo_city, tmp_path / "v", *ratios, "folds=5", "name=eighty"),
                                   progress=False).path)
    counts = version.manifest["counts"]
    assert counts["val"]["images"] == 0 and counts["train"]["images"] > 2 * counts["test"]["images"] > 0
    runs = tmp_path / "runs"
    assert run_cli(train_main, [*tiny_overrides(version.path, runs, "train.epochs=1")]) == 2
    assert "data.fold=0 .. 4" in capsys.readouterr().err and not runs.exists()
    assert run_cli(train_main, ["--quiet", *tiny_overrides(version.path, runs, "train.epochs=1", "data.fold=0",
                                                           "output.name=f0")]) == 0
    assert json.loads((runs / "f0" / "run.json").read_text())["train_images"]["from"] == "data.fold=0"
    from evaluate.results import EvalResults

    with pytest.raises(SegLoopError) as exc:  # a reader of its val split says why there is none
        EvalResults(runs / "f0", "val")
    assert "has no 'val' images (it validates on a fold of train)" in str(exc.value)
