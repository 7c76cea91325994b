"""Every CLI answers --help, and bad input ends with a one-paragraph error and exit status 2 (no traceback)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=300)


@pytest.mark.parametrize("module", ["ingest", "train.run", "evaluate", "annotate", "fiftyone_views"])
def test_help(module):
    proc = _run(module, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_unknown_train_key_is_a_clean_error():
    proc = _run("train.run", "train.epoch=3")
    assert proc.returncode == 2
    assert "error: command line: unknown config key 'train.epoch'" in proc.stderr and "train.epochs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ingest_cli_round_trip(tmp_path, demo_city):
    data = tmp_path / "data.yaml"
    data.write_text(f"base: {ROOT}/configs/data/default.yaml\nname: clidemo\nsources:\n"
                    f"  - {{type: cityscapes, root: '{demo_city}'}}\n")
    proc = _run("ingest", "build", "--config", str(data), f"output={tmp_path / 'v'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "built: clidemo@" in proc.stdout
    again = _run("ingest", "build", "--config", str(data), f"output={tmp_path / 'v'}", cwd=tmp_path)
    assert "up to date" in again.stdout
    ls = _run("ingest", "list", "--root", str(tmp_path / "v"))
    assert "clidemo@" in ls.stdout and "train:" in ls.stdout
    show = _run("ingest", "show", "clidemo", "--root", str(tmp_path / "v"))
    assert show.returncode == 0 and "person" in show.stdout and "car" in show.stdout
    missing = _run("ingest", "show", "nothere", "--root", str(tmp_path / "v"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_evaluate_cli_missing_run(tmp_path):
    proc = _run("evaluate", "run", str(tmp_path / "ghost"), cwd=tmp_path)
    assert proc.returncode == 2 and "not found" in proc.stderr


@pytest.mark.parametrize("module,args,option", [
    ("fiftyone_views", ["triptychs", "runs/none", "--n", "0"], "--n"),
    ("ingest", ["demo", "--n", "-1"], "--n"),
])
def test_counts_below_one_are_refused_by_python_m(tmp_path, module, args, option):
    proc = _run(module, *args, cwd=tmp_path)
    assert proc.returncode == 2 and f"argument {option}: must be at least 1" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []
