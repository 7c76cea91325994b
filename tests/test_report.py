"""Reports generated from runs: every section present, images written, and the page renders in Chromium."""

import shutil

import pytest

from core.errors import SegLoopError
from evaluate.report import build_report, config_explanations
from evaluate.runner import evaluate_run
from tests.browser import launch

SECTIONS = ["## Problem", "## Dataset", "## Architectures", "## Training", "## Loss and metrics", "## Curves",
            "## Comparison (test split)", "## Worst classes", "## Gallery", "## Runtime environment", "## References"]


def test_config_comments_explain_hyperparameters():
    from evaluate.report import _model_args_help

    expl = config_explanations()
    assert "own arguments" in expl["model.args"] and "minutes" in expl["train.time_limit"]
    args = _model_args_help({"task": "semantic", "name": "resunet", "args": {}})
    assert "number of down-samplings" in args["depth"]
    assert "GroupNorm" in _model_args_help({"task": "instance", "name": "maskrcnn", "args": {}})["norm"]


def test_report_sections_and_browser(tiny_run, tmp_path):
    bare = tmp_path / "bare_run"  # the same run before any evaluation
    shutil.copytree(tiny_run.run_dir, bare, ignore=shutil.ignore_patterns("eval", "predict", "triptychs"))
    with pytest.raises(SegLoopError, match="evaluate run"):
        build_report([bare], tmp_path / "none")
    evaluate_run(tiny_run.run_dir, "test", progress=False)
    out = build_report([tiny_run.run_dir], tmp_path / "report", gallery=2)
    md = (out / "report.md").read_text()
    for s in SECTIONS:
        assert s in md, s
    assert "GFLOPs" in md and "Cordts" in md and "train.epochs" in md
    for img in ("curves.png", "arch_1.png", "example_0.png"):
        assert (out / img).stat().st_size > 1000
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        headings = page.locator("h2").all_inner_texts()
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                               ".map(i => i.src)")
        browser.close()
    assert [h for h in headings if h.startswith("Comparison")] and not broken, broken


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
