"""The task seam: every task is one package under ``tasks/`` from training to every reader, found by name alone."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import tasks
from core.errors import SegLoopError
from tasks.base import PART_MODULES
from tests.conftest import ROOT

PARTS = tuple(PART_MODULES)
# a module that compares a task name, or asks which task it holds
BRANCH = re.compile(r"""(==|!=)\s*['"](semantic|instance|detection|panoptic)['"]|in \(['"](semantic|instance)['"]""")


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_every_task_brings_every_part(name):
    plugin = tasks.get(name)
    assert plugin.name == name and set(plugin.parts) == set(PARTS)
    for part in PARTS:
        assert plugin.part(part) is not None
    assert plugin.training().name == name
    assert plugin.evaluation().task == name
    key, label = plugin.per_class_metric
    assert key.startswith("val_") and label


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(SegLoopError, match="unknown task 'panoptik'") as err:
        tasks.get("panoptik")
    assert all(n in err.value.fix for n in tasks.TASK_NAMES)


def test_no_module_outside_the_task_packages_asks_which_task_it_holds():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tasks", "tests", ".venv", ".venv-labelstudio", "data", "runs") or \
                rel.parts[0].startswith("."):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_readers_find_a_task_without_loading_torch():
    """The labeling loop and the registry stay light: ``annotate`` never loads model code."""
    code = ("import sys, tasks, annotate.project, annotate.select\n"
            "for name in tasks.TASK_NAMES:\n"
            "    tasks.get(name).labelstudio()\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
