"""k-fold training: one command trains one run per fold of a version built with ``folds: k``
(``python -m train.run data.fold=all ...``), as a group under one experiment name, resumable as a whole.

The group is a folder (``runs/<name>/``) holding ``group.json`` (what the group is: its folds, version, command),
the group's ``config.yaml`` (the config every fold starts from) and one complete run per fold (``fold0/``,
``fold1/``, ...), so every reader of runs (``evaluate run``, the report, ``evaluate compare``, triage) reads each
fold as any run, and its curves are the fold's own. ``resume=runs/<name>`` continues the group: a finished fold is
left as it is, an interrupted one resumes from its ``last.pt``, one not started yet starts.
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

from core.config import dump_yaml
from core.errors import SegLoopError
from core.fsio import read_json, write_json_atomic, write_text_atomic
from core.names import safe_name
from core.runs import GROUP, plan_run_dir
from train.config import train_command


def folds_of(version: Any) -> int:
    """The number of folds a version was built with (0 for none)."""
    return int(((version.manifest.get("folds") or {}).get("k")) or 0)


def fold_count(version: Any) -> int:
    """The number of folds a version was built with; a version without folds cannot train them all."""
    k = folds_of(version)
    if k < 2:
        raise SegLoopError(f"data.fold=all, but {version.version} was built without folds", path=version.path,
                           fix="build a version with folds, e.g. python -m ingest build folds=5, and train on it")
    return k


def _fold_done(run_dir: Path, epochs: int) -> bool:
    """Whether a fold's run has finished: its last checkpoint has all its epochs, or the run stopped itself."""
    from train.checkpoint import load_checkpoint

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    ckpt = load_checkpoint(last)
    return ckpt["epoch"] >= epochs or bool(ckpt.get("stopped"))


def train_folds(cfg: dict[str, Any], progress: bool = True) -> list[Any]:
    """Train (or, with ``resume`` naming the group, continue) one run per fold; the fold runs' results in order."""
    import os

    from core.config import read_yaml
    from train.engine import check_resume_overrides, ensure_dataset

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise SegLoopError("data.fold=all under torchrun: the folds train one after another, each in one process",
                           fix="train the folds without torchrun, or each fold under torchrun with data.fold=k")
    resume = cfg["resume"]
    created = False
    if resume:
        group_dir = Path(resume)
        group = read_json(group_dir / GROUP, "group.json")
        if not isinstance(group, dict) or not isinstance(group.get("folds"), int):
            raise SegLoopError("group.json does not say how many folds the group has", path=group_dir / GROUP,
                               fix="restore group.json, or start the group again without resume=")
        k = group["folds"]
        # the folds of one group train alike: a setting a resume may not change is refused for the whole group
        check_resume_overrides(cfg, read_yaml(group_dir / "config.yaml"))
    else:
        version = ensure_dataset(cfg)
        k = fold_count(version)
        name = safe_name(cfg["output"]["name"] or f"{cfg['model']['name']}-{version.version.split('@')[0]}-folds",
                         "output.name")
        wanted = Path(cfg["output"]["runs_dir"]) / name
        if cfg["output"]["exist_ok"] and wanted.exists():  # a whole group of trained folds is not thrown away
            raise SegLoopError("output.exist_ok=true with data.fold=all: an existing folder is not replaced by a "
                               "k-fold group", path=wanted,
                               fix=(f"continue the group with resume={wanted}, or remove it first" if (wanted / GROUP)
                                    .is_file() else "remove it first, or give another output.name"))
        group_dir = plan_run_dir(cfg["output"]["runs_dir"], name, exist_ok=False)  # an existing name gets -2, ...
        if group_dir != wanted and (wanted / GROUP).is_file():
            print(f"note: {wanted} holds an earlier group (resume={wanted} continues it): this one is {group_dir}")
        group_dir.mkdir(parents=True, exist_ok=True)
        created = True
        write_text_atomic(group_dir / "config.yaml", dump_yaml({**cfg, "resume": None}))
        write_json_atomic(group_dir / GROUP, {"kind": "folds", "folds": k, "dataset_version": version.version,
                                              "runs": [f"fold{i}" for i in range(k)],
                                              "command": train_command(sys.argv, cfg)})
    if resume:
        _check_folds(cfg, group_dir, k)
    try:
        return _train_each(cfg, group_dir, k, progress)
    except BaseException:
        # a group whose first fold failed before its first checkpoint holds nothing: the retry keeps its name
        if created and not any(p.is_dir() and p.name.startswith("fold") for p in group_dir.iterdir()):
            shutil.rmtree(group_dir, ignore_errors=True)
        raise


def _epochs(cfg: dict[str, Any]) -> int:
    return cfg["train"]["overfit_steps"] if cfg["train"]["overfit_batch"] else cfg["train"]["epochs"]


def _check_folds(cfg: dict[str, Any], group_dir: Path, k: int) -> None:
    """Before a group resumes: every fold's ``last.pt`` reads (a damaged one fails now, not after the folds before
    it trained), and a group whose every fold has finished has nothing to do, said as for one run."""
    from train.checkpoint import load_checkpoint

    done = 0
    for i in range(k):
        last = group_dir / f"fold{i}" / "checkpoints" / "last.pt"
        if last.is_file():
            ckpt = load_checkpoint(last)
            done += ckpt["epoch"] >= _epochs(cfg) or bool(ckpt.get("stopped"))
    if done == k:
        raise SegLoopError(f"nothing to do: every fold of the group has finished its {_epochs(cfg)} "
                           f"{'steps' if cfg['train']['overfit_batch'] else 'epochs'}", path=group_dir,
                           fix=f"resume with more: python -m train.run resume={group_dir} "
                               f"train.epochs={cfg['train']['epochs'] + 10}")


def _train_each(cfg: dict[str, Any], group_dir: Path, k: int, progress: bool) -> list[Any]:
    from core.config import read_yaml
    from train.engine import train

    results = []
    for i in range(k):
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg["data"]["fold"] = i
        fold_cfg["output"] = {**cfg["output"], "runs_dir": str(group_dir), "name": f"fold{i}", "exist_ok": False}
        run_dir = group_dir / f"fold{i}"
        fold_cfg["resume"] = None
        if (run_dir / "checkpoints" / "last.pt").is_file():
            if _fold_done(run_dir, _epochs(cfg)):
                print(f"fold {i + 1}/{k}: {run_dir} has finished; left as it is")
                results.append(None)
                continue
            fold_cfg["resume"] = str(run_dir)
            # a group copied or moved elsewhere: the fold resumes in place, its own runs_dir as recorded
            recorded = (read_yaml(run_dir / "config.yaml").get("output") or {}) if (run_dir / "config.yaml").is_file() \
                else {}
            fold_cfg["output"]["runs_dir"] = recorded.get("runs_dir", fold_cfg["output"]["runs_dir"])
        print(f"fold {i + 1}/{k}: {'resuming' if fold_cfg['resume'] else 'training'} {run_dir}")
        results.append(train(fold_cfg, progress))
    return results
