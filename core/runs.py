"""The run folder contract, in one place that imports no torch.

A run is ``runs/<name>/``: ``config.yaml``, ``run.json``, ``checkpoints/{last,best}.pt``, ``metrics.jsonl``,
``tb/``, ``eval/<split>/``, ``predict/<name>/``. Training creates it; evaluation, triage, reports and the labeling
loop resolve and read it. Those readers must not need model code (or torch) just to find a file, so every path
rule, the ``last`` alias, the ``-2`` suffix and the reading of ``run.json`` live here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from core.config import read_yaml
from core.errors import SegLoopError
from core.fsio import read_json, write_json_atomic
from core.names import safe_name
from core.services import owner_alive

RUN_JSON = "run.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAMES = ("best", "last")
INDEX = "index.json"  # under eval/<split>/ and predict/<name>/: what the labeling loop reads of a prediction set
GROUP = "group.json"  # a k-fold group's folder (train.folds): its fold runs beside it
ENSEMBLE = "ensemble.json"  # an ensemble's folder (evaluate.ensemble): evaluation only, its members' copies inside
DEFAULT_TASK = "semantic"  # the task of runs, checkpoints and prediction sets written before tasks were recorded


class Run:
    """Paths inside one run folder, and its ``run.json``."""

    def __init__(self, path: str | Path) -> None:
        self.dir = Path(path)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG

    @property
    def info_path(self) -> Path:
        return self.dir / RUN_JSON

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS

    @property
    def tb_dir(self) -> Path:
        return self.dir / "tb"

    def checkpoint_path(self, which: str = "best") -> Path:
        return self.dir / CHECKPOINTS / f"{which}.pt"

    def eval_dir(self, split: str) -> Path:
        return self.dir / "eval" / split

    def predict_dir(self, name: str) -> Path:
        return self.dir / "predict" / safe_name(name, "--name")

    def info(self) -> dict[str, Any]:
        """``run.json``: dataset version and path, task, command, device, parameters, final figures."""
        if not self.dir.exists():
            raise SegLoopError("run folder not found", path=self.dir,
                               fix="give a folder written by python -m train.run (ls runs/)")
        if not self.info_path.is_file():
            run_folder_problem(self.dir)
            raise SegLoopError("not a run folder (no run.json)", path=self.dir,
                               fix="give a folder written by python -m train.run (ls runs/)")
        info = read_json(self.info_path, "run.json")
        if not isinstance(info, dict):  # valid JSON, but every reader expects its keys
            kinds = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
            kind = kinds.get(type(info), "a number")
            raise SegLoopError(f"run.json is not a JSON object (it holds {kind})", path=self.info_path,
                               fix="restore run.json from a backup, or train the run again (python -m train.run)")
        problem = _info_problem(info)
        if problem:
            raise SegLoopError(f"run.json {problem}", path=self.info_path,
                               fix="restore run.json from a backup, or train the run again (python -m train.run)")
        return info

    def update_info(self, **fields: Any) -> None:
        info = json.loads(self.info_path.read_text()) if self.info_path.is_file() else {}
        info.update(fields)
        write_json_atomic(self.info_path, info)

    @property
    def versions_root(self) -> str:
        """Where the run's config looked for dataset versions (``data.versions_root``; the default before)."""
        cfg = read_yaml(self.config_path) if self.config_path.is_file() else {}
        return str((cfg.get("data") or {}).get("versions_root") or "data/versions")

    def dataset_ref(self, version: str | None = None) -> str | Path:
        """The dataset version the run trained on (or ``version``), as a reference to resolve under
        ``versions_root``."""
        info = self.info()
        return version or dataset_ref(info.get("dataset_path", ""), info["dataset_version"])

    @property
    def task(self) -> str:
        """The run's task name (``tasks.get`` finds its plugin); runs written before tasks existed are semantic."""
        return self.info().get("task", DEFAULT_TASK)

    def find_checkpoint(self, which: str = "best") -> Path:
        path = self.checkpoint_path(which)
        if not path.is_file():
            run_folder_problem(self.dir)
            if (self.dir / ENSEMBLE).is_file():
                raise SegLoopError(f"an ensemble has no {which}.pt: its best.pt holds every member's weights",
                                   path=path, fix="use its best checkpoint (--checkpoint best)")
            if not (self.dir / RUN_JSON).is_file() and not (self.dir / CONFIG).is_file():
                raise SegLoopError("is not a run folder (no run.json, no config.yaml, no checkpoints)", path=self.dir,
                                   fix="give a run folder written by python -m train.run (ls runs/)")
            raise SegLoopError(f"run has no {which}.pt", path=path,
                               fix="train it (python -m train.run) or resume it (python -m train.run resume=RUN)")
        return path

    def read_metrics(self) -> list[dict[str, Any]]:
        """The validation records of ``metrics.jsonl`` (one per evaluation); a last line torn by a kill is skipped
        (``torn_metrics_line`` says whether there was one)."""
        return [rec for _, rec in self._records()]

    def torn_metrics_line(self) -> bool:
        """Whether the last line of ``metrics.jsonl`` is a write cut short (a kill mid-line): it is left out."""
        lines = self.metrics_path.read_text().splitlines() if self.metrics_path.is_file() else []
        return bool(lines) and len(self._records()) < len(lines)

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        """Every line of ``metrics.jsonl`` as (text, record). Only the last line may be unreadable (a kill cuts a
        write short there, nowhere else); any other unreadable line, or a line that is not a record of an epoch
        (a JSON object with integer ``epoch`` and ``step``), is a damaged file, said with its line number."""
        if self.metrics_path.exists() and not self.metrics_path.is_file():
            raise SegLoopError("metrics.jsonl is not a file", path=self.metrics_path,
                               fix="move it away: metrics.jsonl is the run's record of its validations, a text file")
        if not self.metrics_path.is_file():
            return []
        try:
            lines = self.metrics_path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SegLoopError(f"metrics.jsonl cannot be read ({type(exc).__name__})", path=self.metrics_path,
                               fix="restore it, or delete it (the run's curves are then empty)") from None
        out = []
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except ValueError:
                if n == len(lines):
                    continue
                raise SegLoopError(f"line {n} of {len(lines)} is not JSON: only the last line can be a write cut "
                                   f"short by a kill, so the file was damaged", path=self.metrics_path,
                                   fix=METRICS_FIX.format(n=n)) from None
            problem = _metrics_record_problem(rec)
            if problem:
                raise SegLoopError(f"line {n} is not a metrics record: {problem}", path=self.metrics_path,
                                   fix=METRICS_FIX.format(n=n))
            out.append((line, rec))
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop records written after ``step`` (and lines torn by a kill): a run killed between its metrics line
        and its checkpoint would otherwise repeat that epoch's line after resume."""
        if not self.metrics_path.is_file():
            return
        keep = [line for line, rec in self._records() if rec.get("step", 0) <= step]
        if len(keep) != len(self.metrics_path.read_text().splitlines()):
            tmp = self.metrics_path.with_name(f".{METRICS}.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, self.metrics_path)


_NUMBER = (int, float)
INFO_KINDS: dict[str, tuple[type, ...]] = {
    "task": (str,), "dataset_version": (str,), "dataset_path": (str,), "model": (dict,), "command": (str,),
    "best_metric": (str,), "best_value": _NUMBER, "best_epoch": (int,), "best_step": (int, type(None)),
    "steps": (int,), "parameters": (int,), "train_seconds": _NUMBER, "train_images_per_second": _NUMBER,
    "taxonomy": (str,), "train_images": (dict,), "overfit": (dict,), "early_stop": (dict,), "init_from": (dict,),
    "weights": (dict,)}
KIND_WORDS = {str: "a string", dict: "a JSON object", int: "an integer", float: "a number"}


def _info_problem(info: dict[str, Any]) -> str | None:
    """What makes a ``run.json`` object unusable by its readers: its keys of the wrong kind."""
    for key, kinds in INFO_KINDS.items():
        if key in info and (not isinstance(info[key], kinds) or isinstance(info[key], bool)):
            return f"has {key!r} = {info[key]!r}, not {KIND_WORDS[float if float in kinds else kinds[0]]}"
    if "model" in info and not isinstance(info["model"].get("name"), str):
        return "has a 'model' without its name"
    if "model" in info and not isinstance(info["model"].get("args", {}), dict):
        return f"has model args {info['model']['args']!r}, not a JSON object"
    return None


METRICS_FIX = ("delete or repair line {n}: each line of metrics.jsonl is one JSON object per validated epoch, with "
               "integer 'epoch' and 'step' (the training loop writes them; TensorBoard in tb/ holds the same values)")


def _metrics_record_problem(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    for key in ("epoch", "step"):
        if key not in rec:
            return f"it has no {key!r}"
        v = rec[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return f"its {key!r} is {v!r}, not an integer >= 0"
    for key, v in rec.items():  # figures are numbers (null where undefined), per-class figures maps of them
        if not key.startswith(("val_", "train_")) or key in ("train_losses", "val_losses"):
            continue
        values = list(v.values()) if isinstance(v, dict) else [v]
        if not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in values):
            return f"its {key!r} is {v!r}, not a number (or a map of class names to numbers)"
    return None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """A checkpoint file, written atomically (a kill mid-write leaves the previous one)."""
    import torch

    from core.fsio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


CHECKPOINT_KEYS = ("model", "model_spec", "taxonomy", "epoch", "step", "best", "config", "dataset_version")


class RunWriter:
    """The one writer of a run folder while it trains: ``config.yaml``, ``run.json``, ``metrics.jsonl`` lines,
    TensorBoard scalars and the checkpoints. SegLoop's own loop calls it from its hooks and a delegated trainer (one
    that runs its own epochs, as Ultralytics does) from that trainer's callbacks, so every run folder has one form,
    whoever ran the epochs, and every reader (report, app, ``evaluate run``, resume) finds the same files.

    ``resume_step`` is the step of the checkpoint a resumed run continues from: ``metrics.jsonl`` lines and
    TensorBoard events written after it (by the session that was killed) are dropped, so no epoch appears twice.
    TensorBoard is imported only when the writer opens, so a reader of run folders never needs torch.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.run = Run(run_dir)
        self.resume_step = resume_step
        self.tb: Any = None

    @property
    def dir(self) -> Path:
        return self.run.dir

    def start(self, config_text: str, info: dict[str, Any], command: str) -> bool:
        """Write the config and ``run.json`` and open TensorBoard; True when this is the run's first session (the
        caller then writes what is written once per run, such as the hparams session start)."""
        from torch.utils.tensorboard import SummaryWriter

        from core.fsio import write_text_atomic

        resumed = self.resume_step is not None
        if resumed:
            self.run.truncate_metrics(self.resume_step)
        write_text_atomic(self.run.config_path, config_text)
        old = self.run.info() if resumed and self.run.info_path.is_file() else {}
        if resumed and old.get("command"):  # the first command made the config; a resume continues it
            old["resume_command"] = command
        else:
            old["command"] = command
        old.update(info)
        write_json_atomic(self.run.info_path, old)
        self.tb = SummaryWriter(str(self.run.tb_dir), purge_step=self.resume_step if resumed else None)
        return not resumed

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.tb.add_scalar(tag, value, step)

    def log(self, record: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` line (``epoch``, ``step``, ``time_s``, ``lr``, ``train_loss``, optional
        ``train_losses`` and ``val_loss``, the task's ``train_*`` scores of the training batches and its ``val_*``
        figures) and its TensorBoard scalars: ``val_x`` as ``val/x``, ``train_x`` as ``train/x``, per-class maps as
        ``val_x/<class>``."""
        with open(self.run.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        step = record["step"]
        self.tb.add_scalar("train/epoch_loss", record["train_loss"], step)
        for key, value in record.items():
            if key.startswith("train_") and key not in ("train_loss", "train_losses") and isinstance(value, float):
                self.tb.add_scalar(key.replace("train_", "train/", 1), value, step)  # train/mIoU beside val/mIoU
            if not key.startswith("val_"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.tb.add_scalar(key.replace("val_", "val/", 1), value, step)
            elif isinstance(value, dict):
                for name, v in value.items():
                    if v is not None:
                        self.tb.add_scalar(f"{key}/{name}", v, step)

    def checkpoint(self, name: str, payload: dict[str, Any]) -> Path:
        """``checkpoints/<name>`` (``best.pt``, ``last.pt``), written atomically. A checkpoint holds tensors and
        plain data only, read back with ``weights_only=True``, and always the model spec, taxonomy and config, so
        evaluation rebuilds the model without the training code that made it."""
        missing = [k for k in CHECKPOINT_KEYS if k not in payload]
        if missing:
            raise ValueError(f"checkpoint {name} lacks {', '.join(missing)}")
        path = self.run.checkpoint_path(name.removesuffix(".pt"))
        save_checkpoint(path, payload)
        return path

    def finish(self, **fields: Any) -> None:
        """The final figures into ``run.json``; TensorBoard flushed and closed."""
        if self.tb is not None:
            self.tb.close()
        self.run.update_info(**fields)


def write_index(folder: Path, run: str, task: str, classes: list[str], images: dict[str, dict[str, Any]]) -> None:
    """The one writer of a prediction set's ``index.json``: image sha256 -> its entry, every entry with ``image``
    (the file predicted), ``prediction`` (the painted train-index PNG, relative to ``folder``), ``uncertainty`` (a
    per-pixel map or None) and ``mean_uncertainty`` (the image's one number for choosing what to label next, in
    [0, 1]); a task adds its own keys (``mean_margin``, ``image_id``, ...). ``task`` names the plugin that reads the
    rest of the folder (``tasks.get(task)``), so no reader guesses a task from which keys or files are present."""
    for sha, entry in images.items():
        missing = [k for k in ("image", "prediction", "uncertainty", "mean_uncertainty") if k not in entry]
        if missing:
            raise ValueError(f"index entry {sha} lacks {', '.join(missing)}")
    write_json_atomic(folder / INDEX, {"run": run, "task": task, "classes": classes, "images": images})


def read_index(path: Path) -> dict[str, Any]:
    """A prediction set's ``index.json`` (``task`` filled in for sets written before it was recorded)."""
    index = read_json(path, "prediction index")
    if not isinstance(index, dict) or not isinstance(index.get("images"), dict):
        raise SegLoopError("not a prediction index (no 'images' map)", path=path,
                           fix=f"delete {path.parent} and write it again (python -m evaluate run / predict)")
    index.setdefault("task", DEFAULT_TASK)
    return index


def dataset_ref(path: str | Path, version: str) -> str | Path:
    """What a run recorded about its dataset, as a reference: the version folder it trained on while that still
    holds a version (it may lie outside data/versions), else its ``name@hash``, found again under the versions root,
    because a run pulled into another clone (DVC, a copied folder) records a path of the machine that trained it."""
    return path if path and (Path(path) / "manifest.json").is_file() else version


def resolve_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run folder from a path or a name under ``runs/``; ``last`` is the most recently trained run."""
    p = Path(run)
    if p.is_dir():
        run_folder_problem(p)
        return p
    if p.is_file():
        owner = run_of_checkpoint(p)
        raise SegLoopError("is a file, not a run folder", path=p,
                           fix=f"give the run folder: {owner}" if owner else "give a run folder (runs/<name>)")
    root = Path(runs_dir)
    if str(run) == "last":
        runs = [d for d in run_folders(root) if Run(d).checkpoint_path("last").is_file()]  # folds of groups too
        if not runs:
            raise SegLoopError("no trained runs", path=root, fix="train one: python -m train.run")
        return max(runs, key=lambda d: Run(d).checkpoint_path("last").stat().st_mtime)
    if (root / str(run)).is_dir():
        return root / str(run)
    known = sorted(d.name for d in root.glob("*") if (d / RUN_JSON).is_file() or (d / CHECKPOINTS).is_dir()
                   ) if root.is_dir() else []
    raise SegLoopError(f"run '{run}' not found", path=root,
                       fix=f"give a run folder, 'last', or a run under {root}/: {', '.join(known)}" if known else
                       f"give a run folder written by python -m train.run ({root}/ holds no run)")


def run_of_checkpoint(path: Path) -> Path | None:
    """The run folder a checkpoint file sits in (``<run>/checkpoints/<name>.pt``), or None."""
    return path.parent.parent if path.parent.name == CHECKPOINTS else None


def run_folders(root: Path) -> list[Path]:
    """The folders under a runs folder that may be runs: each entry, with a k-fold group's folder standing for its
    fold runs (``<group>/fold0`` ...), so that listings offer the folds as the runs they are."""
    out: list[Path] = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        out += sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("fold")) if (d / GROUP).is_file() \
            else [d]
    return out


def group_problem(path: Path) -> None:
    """A k-fold group's folder (``group.json``: ``train.run data.fold=all``) given where one run is expected is
    said as such, with its fold runs, rather than as a run that has not trained."""
    if (path / GROUP).is_file():
        folds = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("fold"))
        raise SegLoopError(f"is a k-fold group of {len(folds)} runs, not one run", path=path,
                           fix=f"give its fold runs ({path}/fold0 ...; {path}/fold* for all), or resume the group "
                               f"with python -m train.run resume={path}")


def run_folder_problem(path: Path) -> None:
    """A folder given where one run is expected that is a k-fold group, or a part of a run (its ``eval/<split>``,
    ``predict/<name>`` or ``checkpoints`` folder), is said as such, with the folder to give instead."""
    group_problem(path)
    part_of_run_problem(path)


def part_of_run_problem(path: Path) -> None:
    """A run's ``eval/<split>``, ``predict/<name>`` or ``checkpoints`` folder given for the run itself."""
    parts = [path.parent.parent, "evaluation"] if path.parent.name == "eval" else (
        [path.parent.parent, "prediction set"] if path.parent.name == "predict" else (
            [path.parent, "checkpoints"] if path.name == CHECKPOINTS else None))
    if parts and (parts[0] / RUN_JSON).is_file() and not (path / RUN_JSON).is_file():
        raise SegLoopError(f"is the {parts[1]} folder of run {parts[0].name}, not a run", path=path,
                           fix=f"give the run folder: {parts[0]}")


def inside_run_problem(out: str | Path, flag: str = "--out", what: str = "folder") -> None:
    """An output folder inside a run folder is refused: a run holds only what its training and its own evaluations
    write, so ``output.exist_ok`` can replace it whole and readers know its parts. (A run folder given as the output
    itself is an existing folder of another kind, which each command refuses in its own words.)"""
    out = Path(out).resolve()
    for folder in out.parents:
        if (folder / RUN_JSON).is_file() or ((folder / CONFIG).is_file() and (folder / CHECKPOINTS).is_dir()):
            raise SegLoopError(f"{flag} {out} is inside the run folder {folder}", path=out,
                               fix=f"give a {what} outside every run, e.g. beside it: {folder.parent / 'NAME'}")
        if (folder / GROUP).is_file():  # a group holds its config, group.json and its fold runs only
            raise SegLoopError(f"{flag} {out} is inside the k-fold group {folder}", path=out,
                               fix=f"give a {what} outside the group, e.g. beside it: {folder.parent / 'NAME'}")


def check_output_folder(out: str | Path, kind: str, marker: str, names: set[str],
                        suffixes: tuple[str, ...] = ()) -> Path:
    """An output folder a command replaces whole (a report, a comparison, a panoptic result), checked before
    anything is read: not inside a run or a k-fold group, and, where it exists, an earlier output of this kind
    (``marker`` in it) holding only what the command writes (``names``, files ending in ``suffixes``). A user's own
    file there would be lost with the folder: it is named instead."""
    out = Path(out)
    inside_run_problem(out)
    if not out.exists():
        return out
    if not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file()):
        raise SegLoopError(f"--out {out} exists and is not {kind} folder ({kind} replaces its folder whole)",
                           path=out, fix=f"give a new folder, or the folder of an earlier {kind.split()[-1]}")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in names and not p.name.endswith(suffixes))
    if foreign:
        raise SegLoopError(f"--out {out} holds files {kind} does not write, which replacing it would delete: "
                           f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}", path=out,
                           fix="move them out of the folder, or give a new --out")
    return out


def new_run_problem(run_dir: Path, fold: Any, version: str) -> None:
    """Where a new run may go: not inside another run, and inside a k-fold group only as that group's own fold
    (``fold<k>`` trained on ``data.fold=k`` of the group's version), so a group's resume finds its folds as it
    left them."""
    parent = run_dir.resolve().parent
    if (parent / GROUP).is_file():
        group = read_json(parent / GROUP, "group.json")
        own = isinstance(group, dict) and group.get("dataset_version") == version
        if not (own and isinstance(fold, int) and run_dir.name == f"fold{fold}"):
            raise SegLoopError(f"output.runs_dir {parent} is a k-fold group: the runs in it are its folds",
                               path=parent, fix=f"train into another folder (output.runs_dir={parent.parent}), or "
                                                f"continue the group: python -m train.run resume={parent}")
        return
    inside_run_problem(run_dir, "output.runs_dir")


def training_start_problem(path: str | Path, key: str) -> None:
    """A folder given to train from (``resume``, ``model.weights``, ``model.init_from``) that is an ensemble or a
    k-fold group is said as such, before any data is read: neither has one set of weights that trains."""
    path = Path(path)
    if (path / ENSEMBLE).is_file():
        raise SegLoopError(f"{key}: this is an ensemble of trained runs (python -m evaluate ensemble), not a run that "
                           f"trains", path=path,
                           fix=(f"give one of its members (its {ENSEMBLE} names them)"
                                + (", then build the ensemble again" if key == "resume" else "")))
    if key != "resume":  # resume= of a group continues all its folds
        try:
            group_problem(path)
        except SegLoopError as exc:
            raise SegLoopError(f"{key}: this {exc.message}", path=path,
                               fix=f"give one of its fold runs ({path}/fold0 ...)") from None
    try:
        part_of_run_problem(path)
    except SegLoopError as exc:
        raise SegLoopError(f"{key}: this {exc.message}", path=path, fix=exc.fix) from None
    if path.parent.name == "members" and (path.parent.parent / ENSEMBLE).is_file():
        raise SegLoopError(f"{key}: this is a member's copy inside the ensemble {path.parent.parent.name}, where it "
                           f"was scored", path=path, fix="give the member's own run folder (ensemble.json names it)")
    if key != "resume" and not (path / CHECKPOINTS).is_dir():
        raise SegLoopError(f"{key}: not a run folder (it has no {CHECKPOINTS}/)", path=path,
                           fix="give a run folder written by python -m train.run, or a checkpoint file (.pt)")


def find_checkpoint(run: str | Path, which: str = "best") -> Path:
    """``runs/x`` + ``best`` -> ``runs/x/checkpoints/best.pt``; a ``.pt`` path is taken as is."""
    run = Path(run)
    if run.suffix == ".pt":
        return run
    if not run.is_dir():
        raise SegLoopError("run folder not found", path=run, fix="give a folder under runs/ (ls runs/)")
    return Run(run).find_checkpoint(which)


def has_results(path: Path) -> bool:
    """Whether a run folder holds anything worth keeping: a checkpoint or an evaluation."""
    return any((path / CHECKPOINTS).glob("*.pt")) or (path / "eval").exists()


OWNER = ".owner.json"  # pid and host of the training that created the folder, until its first checkpoint


def is_abandoned(path: Path) -> bool:
    """A run folder SegLoop created (its ``.owner.json``) that holds no checkpoint and no evaluation, and whose
    training is gone: a run that failed before its first epoch ended, or an empty folder. Reusing its name is safe;
    nothing of value would be lost. A run still in its first epoch (its owner alive on this host) is not abandoned,
    and neither is a folder SegLoop did not make (a user's folder that happens to have the run's name)."""
    if not path.is_dir() or has_results(path):
        return False
    if not any(path.iterdir()):
        return True
    try:
        owner = json.loads((path / OWNER).read_text())
    except (OSError, ValueError):
        return False
    return not isinstance(owner, dict) or not owner_alive(owner.get("pid"), owner.get("host"))


# what a run folder holds: its own files, and what evaluate, fiftyone_views and the labeling loop add to it (the
# last two: the DVC pipeline's)
RUN_ENTRIES = {CONFIG, "run.json", METRICS, CHECKPOINTS, "tb", OWNER, "eval", "predict", "relabel", "fiftyone",
               "triptychs", "augment_preview.png", "history.png", "curves.json", ".gitignore"}


def replaceable(path: Path) -> list[str]:
    """What ``output.exist_ok`` replaces of an earlier run of this name (its entries), checked before anything is
    built: only a SegLoop run folder is replaced, and only whole (an earlier model's evaluations would otherwise sit
    beside the new model); a folder that is no run, or that holds files no run writes, is refused."""
    entries = sorted(p.name for p in path.iterdir())
    foreign = [e for e in entries if e not in RUN_ENTRIES]
    for kind, file in (("a k-fold group", GROUP), ("an ensemble", ENSEMBLE)):
        if file in entries:
            raise SegLoopError(f"output.exist_ok=true would replace {kind} ({file}) with one run", path=path,
                               fix="choose another output.name, or move the folder away")
    if foreign and not ({CONFIG, "run.json", OWNER} & set(entries)):
        raise SegLoopError(f"output.exist_ok=true would replace this folder, but it is not a run folder (no "
                           f"run.json or config.yaml; it holds {', '.join(foreign[:3])})", path=path,
                           fix="choose another output.name, or move the folder away")
    if foreign:
        raise SegLoopError(f"output.exist_ok=true replaces the run folder whole, and it holds files no run writes: "
                           f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}", path=path,
                           fix="move those files out of the run folder, or choose another output.name")
    return entries


def plan_run_dir(runs_dir: str | Path, name: str, exist_ok: bool) -> Path:
    """The folder a new run will use, chosen before anything is written (the folder itself is created only when
    training starts). An existing name gets ``-2``, ``-3``, ... unless ``exist_ok`` (an earlier run of that name is
    then replaced: see ``replaceable``); an abandoned folder of a run that failed before its first checkpoint, or
    an empty one, is reused rather than skipped."""
    name = safe_name(name, "output.name")
    root = Path(runs_dir)
    path = root / name
    if path.exists() and not path.is_dir():
        if exist_ok:
            raise SegLoopError("output.exist_ok=true, but the run folder's name is a file", path=path,
                               fix="choose another output.name, or move the file away")
    elif path.exists() and exist_ok:
        replaced = [e for e in replaceable(path) if e not in (OWNER,)]
        if replaced:
            print(f"note: output.exist_ok=true: the earlier run {path} is replaced when training starts "
                  f"({', '.join(replaced)})")
        return path
    if not path.exists() or is_abandoned(path):
        return path
    i = 2
    while (root / f"{name}-{i}").exists() and not is_abandoned(root / f"{name}-{i}"):
        i += 1
    return root / f"{name}-{i}"


def replaced_path(path: Path) -> Path:
    """Where ``output.exist_ok`` keeps the earlier run of a name until the new one has its first checkpoint."""
    return path.parent / f".{path.name}.replaced"


def settle_replaced(path: Path, restore: bool) -> None:
    """The earlier run ``create_run_dir`` set aside: dropped once the new run has a checkpoint, or put back
    (``restore``) when the new run failed before its first, so a failed replacement loses nothing."""
    aside = replaced_path(path)
    if not aside.is_dir():
        return
    if restore:
        if path.exists():
            shutil.rmtree(path)
        os.replace(aside, path)
        print(f"note: the earlier run {path} is back as it was (the new run failed before its first checkpoint)")
    else:
        shutil.rmtree(aside, ignore_errors=True)


def create_run_dir(path: Path, exist_ok: bool) -> Path:
    """Claim the planned run folder (``mkdir`` is atomic: of two trainings started together, one gets the name and
    the other the next free ``-N``); with ``exist_ok`` an earlier run of that name is replaced (its metrics must not
    mix with the new ones). The folder records its owner until the first checkpoint."""
    if replaced_path(path).is_dir() and not (path.is_dir() and has_results(path)):
        settle_replaced(path, restore=True)  # an earlier replacement killed before its first checkpoint
    if path.is_dir() and exist_ok and any(path.iterdir()):
        replaceable(path)  # checked again: the folder may have changed while the data was prepared
        aside = replaced_path(path)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(path, aside)  # kept until the new run's first checkpoint: a run that fails before restores it
    elif path.is_dir() and (exist_ok or is_abandoned(path)):
        shutil.rmtree(path)
    base, i = path, 2
    while True:
        try:
            path.mkdir(parents=True)
            break
        except FileExistsError:
            if exist_ok:
                raise SegLoopError("another training is writing this run folder", path=path,
                                   fix="wait for it, or choose another output.name") from None
            path = base.parent / f"{base.name}-{i}"
            i += 1
    (path / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return path
