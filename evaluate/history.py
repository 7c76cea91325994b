"""A run's training history across the runs it started from: one curve from the first epoch.

A long experiment is often trained in stages: a run trains, a second starts from its weights (``model.weights``
for more epochs of the same model, ``model.init_from`` for a new head or taxonomy), a third from that one. A resumed
run is one folder and already one curve; a run started from another's weights begins again at epoch 1. Its history
follows ``run.json``'s ``weights`` / ``init_from`` back to the first run and lays the stages end to end: each stage's
epochs and steps are shifted by what its ancestors trained up to the checkpoint it started from (recorded in
``run.json`` when the run started), so the loss reads as one curve whose first point is the first epoch ever
trained. ``python -m evaluate history RUN`` prints the chain, the totals and the loss drop, and draws the curve;
the report's training section gives the same figures. JSON and matplotlib only: no model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import SegLoopError
from core.fsio import sha256_file
from core.runs import ENSEMBLE, GROUP, Run, inside_run_problem, resolve_run, run_of_checkpoint

MAX_STAGES = 100  # a chain longer than this is a loop of runs started from each other


@dataclass
class Stage:
    """One run of the chain: how it started, and its records shifted onto the whole history's epochs and steps."""

    run: Path
    started: str  # "from scratch", or "model.weights <checkpoint> (epoch N)" / "model.init_from ..."
    epoch_offset: int
    step_offset: int
    records: list[dict[str, Any]] = field(default_factory=list)
    loss_kind: str | None = None  # its taxonomy and loss in words: two runs' losses compare only where they agree

    @property
    def epochs(self) -> tuple[int, int] | None:
        """The first and last epoch of this stage on the history's scale (None: it logged no epoch)."""
        if not self.records:
            return None
        return self.records[0]["epoch"] + self.epoch_offset, self.records[-1]["epoch"] + self.epoch_offset


def _source(info: dict[str, Any]) -> tuple[str, Path, int | None, int | None, str | None] | None:
    """The checkpoint this run started from: (key, checkpoint path, its epoch, its step, its sha256 then), or None
    (from scratch)."""
    for key in ("weights", "init_from"):
        rec = info.get(key)
        if isinstance(rec, dict) and isinstance(rec.get("from"), str):
            epoch, step, sha = rec.get("epoch"), rec.get("step"), rec.get("sha256")
            return (f"model.{key}", Path(rec["from"]), epoch if isinstance(epoch, int) else None,
                    step if isinstance(step, int) else None, sha if isinstance(sha, str) else None)
    return None


def _run_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<name>.pt``), where it is one."""
    folder = run_of_checkpoint(checkpoint)
    return folder if folder is not None and Run(folder).info_path.is_file() else None


def history(run: str | Path) -> tuple[list[Stage], list[str]]:
    """The chain of runs ending at ``run``, first run first, and notes on what could not be followed (an ancestor
    moved or deleted, a checkpoint from outside any run, a start recorded without its epoch)."""
    chain: list[tuple[Path, tuple[str, Path, int | None, int | None, str | None] | None]] = []
    notes: list[str] = []
    seen: set[Path] = set()
    current: Path | None = resolve_run(run)
    if current.parent.name == "members" and (current.parent.parent / ENSEMBLE).is_file():
        raise SegLoopError(f"is a member's copy inside the ensemble {current.parent.parent.name}, where it was scored",
                           path=current, fix="give the member's own run folder (ensemble.json names it)")
    while current is not None:
        if current.resolve() in seen or len(chain) >= MAX_STAGES:
            raise SegLoopError("the runs' starting points form a loop (each run.json names another as its start)",
                               path=current, fix="repair the 'weights' / 'init_from' entries of those run.json files")
        seen.add(current.resolve())
        source = _source(Run(current).info())
        chain.append((current, source))
        current = None
        if source is not None:
            parent = _run_of(source[1])
            if parent is None:
                notes.append(f"{chain[-1][0].name} started from {source[1]}, which is not in a run folder (moved, "
                             f"deleted, or a checkpoint from elsewhere): the history starts at {chain[-1][0].name}")
            elif source[4] and source[1].is_file() and sha256_file(source[1]) != source[4]:
                notes.append(f"{source[1]} is not the checkpoint {chain[-1][0].name} started from (its content "
                             f"changed since: {parent.name} was trained again or replaced): the curve before "
                             f"{chain[-1][0].name} is of another model")
            current = parent
    chain.reverse()
    stages: list[Stage] = []
    epoch_offset = step_offset = 0
    for i, (folder, source) in enumerate(chain):
        if i > 0 and source is not None:  # continue from where the ancestor's checkpoint had got to
            before = stages[-1]
            epoch, step = source[2], source[3]
            if epoch is None or step is None:  # a run started before the start's epoch was recorded
                last = before.records[-1] if before.records else {"epoch": 0, "step": 0}
                epoch, step = last["epoch"], last["step"]
                notes.append(f"{folder.name}'s run.json does not say which epoch of {before.run.name} it started "
                             f"from: taken as its last logged epoch ({epoch})")
            if source[2] is not None and source[3] is not None and before.records and not any(
                    r["epoch"] == epoch and r["step"] == step for r in before.records) and any(
                    r["epoch"] >= epoch for r in before.records):
                notes.append(f"{before.run.name} logged no epoch {epoch} at step {step}, where {folder.name} "
                             f"started from it: it was trained again or replaced since, and its curve may not be "
                             f"the one {folder.name} continued")
            if source[2] is not None and before.records and before.records[-1]["epoch"] < epoch:
                notes.append(f"{before.run.name} logged epochs up to {before.records[-1]['epoch']} only, but "
                             f"{folder.name} started from its epoch {epoch}: it was replaced or cut short since, and "
                             f"the history has a gap before {folder.name}")
            # the ancestor's records after that checkpoint were not inherited: they leave the history
            kept = [r for r in before.records if r["epoch"] <= epoch]
            if len(kept) < len(before.records):
                notes.append(f"{before.run.name} trained to epoch {before.records[-1]['epoch']}, {folder.name} started "
                             f"from its epoch {epoch}: the epochs after it are not part of this history")
            before.records = kept
            epoch_offset, step_offset = before.epoch_offset + epoch, before.step_offset + step
        started = "from scratch" if source is None else (
            f"{source[0]} {source[1]}" + (f" (epoch {source[2]})" if source[2] is not None else ""))
        if (folder / ENSEMBLE).is_file():
            started = "an ensemble of trained runs (python -m evaluate ensemble): it trains no epoch itself"
        stages.append(Stage(folder, started, epoch_offset, step_offset, Run(folder).read_metrics(),
                            _loss_kind(folder)))
    return stages, notes


def _loss_kind(folder: Path) -> str | None:
    """The run's taxonomy and loss, as its task describes the loss (None where its files do not say)."""
    import tasks
    from core.config import read_yaml

    run = Run(folder)
    try:
        info, cfg = run.info(), read_yaml(run.config_path)
        return f"{info.get('taxonomy')}: {tasks.get(run.task).report().loss(cfg, [])}"
    except (SegLoopError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _loss(rec: dict[str, Any]) -> float | None:
    """An epoch's training loss; None where it is missing or not finite (a diverged step: NaN is no figure)."""
    value = rec.get("train_loss")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def summary(stages: list[Stage], notes: list[str]) -> dict[str, Any]:
    """The figures of a history: its runs, total epochs and steps, and the first and last training loss. The first
    loss is of the earliest run whose taxonomy and loss are the last run's: another loss's numbers do not compare."""
    notes = list(notes)
    points = [(r["epoch"] + s.epoch_offset, r["step"] + s.step_offset, _loss(r)) for s in stages for r in s.records]
    bad = [r["epoch"] + s.epoch_offset for s in stages for r in s.records
           if r.get("train_loss") is not None and _loss(r) is None]
    if bad:
        notes.append(f"the training loss of epoch(s) {', '.join(map(str, bad[:5]))} is not a finite number (the "
                     f"run diverged there): left out of the figures")
    start = len(stages) - 1
    while start > 0 and (None in (stages[start - 1].loss_kind, stages[-1].loss_kind)
                         or stages[start - 1].loss_kind == stages[-1].loss_kind):  # an unknown kind: taken as same
        start -= 1
    if start > 0 and stages[start - 1].loss_kind is not None and stages[-1].loss_kind is not None:
        notes.append(f"{stages[start].run.name} trains another taxonomy or loss than {stages[start - 1].run.name} "
                     f"({stages[start].loss_kind} / {stages[start - 1].loss_kind}): their losses do not compare, so "
                     f"the loss drop is from {stages[start].run.name}'s first epoch")
    first_epoch = stages[start].epoch_offset
    losses = [(e, v) for e, _, v in points if v is not None and e > first_epoch]
    first, last = (losses[0], losses[-1]) if losses else (None, None)
    drop = (100.0 * (first[1] - last[1]) / first[1]) if first and last and first[1] > 0 and last[0] > first[0] \
        else None  # one epoch has no drop
    return {
        "run": str(stages[-1].run),
        "runs": [{"run": str(s.run), "started": s.started, "epochs": list(s.epochs) if s.epochs else None,
                  "epoch_offset": s.epoch_offset, "step_offset": s.step_offset} for s in stages],
        "total_epochs": points[-1][0] if points else 0,
        "total_steps": points[-1][1] if points else 0,
        "first_loss": {"epoch": first[0], "value": first[1]} if first else None,
        "last_loss": {"epoch": last[0], "value": last[1]} if last else None,
        "loss_drop_percent": drop,
        "notes": notes,
    }


def plot_history(stages: list[Stage], path: Path) -> None:
    """Training loss (solid) and validation loss (dashed) over the whole history's epochs, one colour per run,
    a vertical line where each later run started."""
    from evaluate.curves import plot

    series = []
    for s in stages:
        epochs = [r["epoch"] + s.epoch_offset for r in s.records]
        series.append((f"{s.run.name} train", epochs, [_loss(r) for r in s.records], "-"))
        if any("val_loss" in r for r in s.records):
            series.append((f"{s.run.name} val", epochs, [r.get("val_loss") for r in s.records], "--"))
    starts = [s.epoch_offset + 0.5 for s in stages[1:]]
    plot(path, f"training history of {stages[-1].run.name}", "loss", series, boundaries=starts)


def _shown(run: Path) -> str:
    """A run as a listing names it: a fold run with its group (``cv/fold1``), any other by its folder."""
    return f"{run.parent.name}/{run.name}" if (run.parent / GROUP).is_file() else run.name


def describe(figures: dict[str, Any]) -> list[str]:
    """The history in lines, as the terminal and the report show it."""
    lines = [f"{len(figures['runs'])} run(s), {figures['total_epochs']} epochs, {figures['total_steps']} steps "
             f"in total"]
    for i, r in enumerate(figures["runs"], 1):
        span = f"epochs {r['epochs'][0]}-{r['epochs'][1]}" if r["epochs"] else "no epoch logged"
        lines.append(f"{i}. {_shown(Path(r['run']))}: {span}, {r['started']}")
    first, last = figures["first_loss"], figures["last_loss"]
    if first and last:
        drop = figures["loss_drop_percent"]
        lines.append(f"training loss {first['value']:.4f} at epoch {first['epoch']} -> {last['value']:.4f} at epoch "
                     f"{last['epoch']}" + (f" ({-drop:+.1f}%)" if drop is not None else ""))
    return lines + [f"note: {n}" for n in figures["notes"]]


def run_history(run: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """``python -m evaluate history``: the figures of ``run``'s history, its plot written to ``out`` (a PNG file;
    default ``history.png`` in the run folder) when any epoch was logged, its path under ``plot``."""
    if out is not None and not str(out).strip():
        raise SegLoopError("--out is empty", fix="give the plot's file name (.png), or leave --out out")
    stages, notes = history(run)
    figures = summary(stages, notes)
    own = stages[-1].run / "history.png"
    png = Path(out) if out else own
    if png.is_dir():
        raise SegLoopError(f"--out {png} is a folder; the plot is a file", path=png,
                           fix=f"give a file name ending in .png, e.g. {png / 'history.png'}")
    if png.resolve().parent == stages[-1].run.resolve():  # its own folder takes history.png, which it owns
        if png.name != own.name:
            raise SegLoopError(f"--out {png}: a run folder holds only what SegLoop writes there (its history plot "
                               f"is {own.name}; another file would keep output.exist_ok from replacing the run)",
                               path=png, fix=f"leave --out out ({own}), or give a file outside the run")
    else:
        inside_run_problem(png, what="file")
    if png.suffix.lower() != ".png":
        raise SegLoopError(f"--out {png}: the plot is a PNG file", path=png, fix="give a file name ending in .png")
    if not png.parent.is_dir():
        raise SegLoopError("--out: its folder does not exist", path=png.parent, fix="create the folder first")
    if any(s.records for s in stages):
        plot_history(stages, png)
        figures["plot"] = str(png)
    return figures
