"""Reports generated from runs: every section present, images written, and the page renders in Chromium."""

import shutil

import pytest

from core.errors import SegLoopError
from evaluate.report import build_report, config_explanations, print_pdf
from evaluate.runner import evaluate_run
from evaluate.tables import code as _code
from evaluate.tables import inline as _inline
from tests.browser import launch

SECTIONS = ["## Problem", "## Dataset", "## Architectures", "## Training", "## Coverage", "## Loss and metrics",
            "## Curves",
            "## Comparison (test split)", "## Worst classes", "## Gallery", "## Runtime environment", "## References"]


def test_config_comments_explain_hyperparameters():
    from evaluate.report import _model_args_help

    expl = config_explanations()
    assert "own arguments" in expl["model.args"] and "minutes" in expl["train.time_limit"]
    args = _model_args_help({"task": "semantic", "name": "resunet", "args": {}})
    assert "number of down-samplings" in args["depth"]
    assert "GroupNorm" in _model_args_help({"task": "instance", "name": "maskrcnn", "args": {}})["norm"]


@pytest.mark.parametrize("value", ["`a", "a``b", "x`", "[1](2)", "**b**", "<script>", "plain"])
def test_a_value_shown_as_code_stays_code(value):
    """Config values are user input: whatever they hold renders as the same text in one code element."""
    import html as html_lib

    rendered = _inline(_code(value))
    assert rendered.startswith("<code>") and rendered.endswith("</code>") and rendered.count("<code>") == 1
    assert html_lib.unescape(rendered[len("<code>"):-len("</code>")]) == value


def test_a_chromium_that_does_not_start_is_a_clear_error(tmp_path):
    page = tmp_path / "report.html"
    page.write_text("<p>x</p>")
    with pytest.raises(SegLoopError, match="Chromium could not print the report") as err:
        print_pdf(page, tmp_path / "report.pdf", "/bin/false")
    assert "leave out --pdf" in err.value.fix and not (tmp_path / "report.pdf").exists()


def test_only_web_and_relative_links_render():
    assert _inline("[x](https://a.example/b)") == '<a href="https://a.example/b">x</a>'
    assert _inline("![i](img/a.png)") == '<img src="img/a.png" alt="i" />'
    assert "<a" not in _inline("[click](javascript:alert(1))") and "<img" not in _inline("![i](data:x)")


def test_report_sections_and_browser(tiny_run, tmp_path):
    import json

    from core.errors import run_cli
    from evaluate.__main__ import main as evaluate_main

    bare = tmp_path / "bare_run"  # the same run before any evaluation
    shutil.copytree(tiny_run.run_dir, bare, ignore=shutil.ignore_patterns("eval", "predict", "triptychs"))
    with pytest.raises(SegLoopError, match=f"python -m evaluate run {bare} --split test"):
        build_report([bare], tmp_path / "none")
    assert run_cli(evaluate_main, ["report", str(bare), "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
    # a value holding '|', a reason for it, and an old run's command (the absolute path of train/run.py)
    info = json.loads((tiny_run.run_dir / "run.json").read_text())
    evaluate_run(tiny_run.run_dir, "test", progress=False)
    run = tmp_path / "piped"
    shutil.copytree(tiny_run.run_dir, run)
    from core.runs import save_checkpoint
    from train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    ckpt["config"]["data"]["config"] = "configs/data/a|b.yaml"
    ckpt["config"]["why"] = {"optim.lr": "halved | the loss spiked"}
    save_checkpoint(run / "checkpoints" / "best.pt", ckpt)
    (run / "run.json").write_text(json.dumps({**info, "command": "/srv/x/train/run.py optim.lr=0.003"}))
    out = build_report([run], tmp_path / "report", gallery=2, pdf=True)
    md = (out / "report.md").read_text()
    for s in SECTIONS:
        assert s in md, s
    assert "GFLOPs" in md and "Cordts" in md and "train.epochs" in md
    assert "python -m train.run optim.lr=0.003" in md and "/srv/x" not in md
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    metrics = sorted(k for k, v in lines[-1].items() if k.startswith("val_") and k != "val_loss"
                     and isinstance(v, float))
    assert metrics == ["val_mDice", "val_mIoU", "val_pixel_acc"]
    for img in ("loss_curves.png", "arch_1.png", "example_0.png", "class_curves_1.png",
                *(f"curve_{k}.png" for k in metrics)):
        assert (out / img).stat().st_size > 1000, img
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        headings = page.locator("h2").all_inner_texts()
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                               ".map(i => i.src)")
        hp = page.evaluate("""() => { const t = [...document.querySelectorAll('table')]
            .find(t => t.rows[0].innerText.includes('meaning'));
            return [...t.rows].map(r => [...r.cells].map(c => c.innerText)); }""")
        boxes = page.locator("input[type=checkbox]").count()
        browser.close()
    assert [h for h in headings if h.startswith("Comparison")] and not broken, broken
    assert hp[0] == ["key", "value", "meaning", "why"] and all(len(r) == 4 for r in hp)
    rows = {r[0]: r for r in hp[1:]}
    assert rows["data.config"][1] == "configs/data/a|b.yaml"
    assert rows["optim.lr"][3] == "halved | the loss spiked" and rows["train.seed"][3] == "default"
    assert boxes == 9  # model, loss, data, augmentations, metrics, TTA, folds, training images, stopping


def test_report_compares_semantic_and_instance_runs(evaluated_run, evaluated_instance_run, tmp_path):
    run, result = evaluated_instance_run
    out = build_report([run, evaluated_run], tmp_path / "both", gallery=2)  # the gallery is the first run's
    md = (out / "report.md").read_text()
    table = md.split("## Comparison (test split)")[1].split("## Worst classes")[0]
    rows = [r for r in table.splitlines() if r.startswith("| ")]
    assert "mask AP" in rows[0] and "thing-class mIoU" in rows[0]
    inst = next(r for r in rows if r.startswith(f"| {run.name} |"))
    assert "| instance | maskrcnn |" in inst and f"{result['segm']['AP']:.4f}" in inst
    assert f"{result['things_mIoU']:.4f}" in inst
    assert f"### {run.name} (mask AP per class)" in md
    assert "`model.args.backbone`" in md and "FPN" in md
    assert (out / "arch_2.png").stat().st_size > 1000
    assert len(list((out / "gallery").glob("*.png"))) == 2
