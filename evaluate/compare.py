"""``python -m evaluate compare RUN...``: every run in one table, from its files alone.

Each row is read from the run folder (``run.json``, ``config.yaml``, ``metrics.jsonl`` and the split's
``eval/<split>/metrics.json``): task, model, encoder, loss terms, augmentations, parameters, weights, train time,
inference ms per image, the best validation score and the split's scores, per-class IoU or AP. No model is loaded
unless FLOPs are asked for (``--flops``), so fifty runs compare in a second or two. Runs of different taxonomies go
in separate tables (their per-class columns and scores do not compare); a folder that is no run is named and left
out, the others still compared. The report's comparison table is this one.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tasks
from core.config import read_yaml
from core.errors import SegLoopError
from core.fsio import atomic_dir
from core.runs import Run, check_output_folder
from evaluate.curves import curve_pngs
from evaluate.results import read_eval_metrics, stale_evaluation
from evaluate.tables import html_page, num, table

# the scores every task's evaluation writes where they apply (the same COCO evaluator and painted-mask mIoU for
# every model), as (column, path in metrics.json)
SCORES = (("mIoU", ("mIoU",)), ("thing-class mIoU", ("things_mIoU",)), ("mask AP", ("segm", "AP")),
          ("mask AP50", ("segm", "AP50")), ("box AP", ("bbox", "AP")), ("PQ", ("PQ",)))
COLUMNS = ("run", "task", "model", "encoder", "loss", "augmentations", "parameters (M)", "weights (MB)", "GFLOPs",
           "train (s)", "ms / image", "best val", "epoch")
CSV_ONLY = ("model args",)


@dataclass
class Row:
    """One run's line of the comparison, and what the per-class table and the curves need."""

    dir: Path
    values: dict[str, Any]
    taxonomy: str
    per_class_label: str = ""
    per_class: dict[str, float | None] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    test_version: str | None = None
    note: str | None = None  # why its figures are left out (an evaluation older than the run)

    @property
    def name(self) -> str:  # what evaluate.curves labels a series with: the table's own name for the run
        return str(self.values["run"])


def _dig(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def read_row(run_dir: Path, split: str = "test", flops: bool = False) -> Row:
    """One run folder as a comparison row; a folder that is no SegLoop run raises ``SegLoopError`` naming it."""
    run = Run(run_dir)
    info = run.info()
    if not isinstance(info.get("model"), dict):
        raise SegLoopError("run.json does not say which model the run trained (no 'model')", path=run.info_path,
                           fix="restore the run's run.json (python -m train.run writes it)")
    if not run.config_path.is_file():
        raise SegLoopError("run has no config.yaml", path=run_dir, fix="give run folders written by "
                                                                         "python -m train.run")
    cfg = read_yaml(run.config_path)
    sections = {"data": dict, "loss": dict, "augment": dict, "model": dict, "train": dict}
    wrong = [k for k, kind in sections.items() if not isinstance(cfg.get(k), kind)]
    if wrong:
        raise SegLoopError(f"config.yaml is not a training config (its {', '.join(wrong)} missing or not sections)",
                           path=run.config_path, fix="restore the run's config.yaml (python -m train.run writes it)")
    curve = run.read_metrics()
    spec = info["model"]
    part = tasks.get(run.task).report()
    evaluated = run.dir / "eval" / split / "metrics.json"
    test = read_eval_metrics(evaluated, run.dir, split) if evaluated.is_file() else {}
    problem = tasks.get(run.task).evaluation().result_problem(test) if test else None
    if problem:
        raise SegLoopError(f"the {split} metrics.json {problem}", path=evaluated,
                           fix=f"evaluate the run again: python -m evaluate run {run.dir} --split {split}")
    stale = stale_evaluation(run.dir, test) if test else None
    if stale:  # another model's figures: left out of the row, and said
        test = {}
    model = test.get("model") or {}
    params = info.get("parameters")
    args = ", ".join(f"{k}={v}" for k, v in (spec.get("args") or {}).items() if k != "encoder")
    values: dict[str, Any] = {
        "run": run.dir.name, "task": run.task, "model": spec["name"], "model args": args or None,
        "encoder": part.encoder(spec, info), "loss": part.loss_terms(cfg, curve),
        "augmentations": "none (the overfit check)" if info.get("overfit") else (
            "; ".join(part.augmentations(spec, cfg)) or "none"),
        "parameters (M)": round(params / 1e6, 3) if isinstance(params, int) else None,
        "weights (MB)": model.get("size_mb"), "GFLOPs": _gflops(run_dir, cfg) if flops else None,
        "train (s)": info.get("train_seconds"), "ms / image": (test.get("timing") or {}).get("ms_per_image_mean"),
        "best val": (f"{info.get('best_metric')} {info['best_value']:.4f}"
                     if isinstance(info.get("best_value"), (int, float)) else None),
        "epoch": info.get("best_epoch"),
        "evaluated": (Path(str(test.get("checkpoint", "best.pt"))).name + (" + TTA" if test.get("tta") else "")
                      ) if test else None,
    }
    for column, path in SCORES:
        values[f"{split} {column}"] = _dig(test, path)
    label, per_class = part.per_class(test) if test else ("", {})
    note = (f"{run.dir}: {stale}; its {split} figures are left out (python -m evaluate run {run.dir} --split "
            f"{split})") if stale else None
    return Row(run.dir, values, str(info.get("taxonomy", "?")), label, per_class, curve, info,
               test.get("dataset_version"), note)


def _gflops(run_dir: Path, cfg: dict[str, Any]) -> float:
    """GFLOPs of one forward pass at the run's training size (loads the model: only with ``--flops``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from core.runs import find_checkpoint
    from train.checkpoint import load_model

    model, ckpt = load_model(find_checkpoint(run_dir, "best"))
    hw = tuple(cfg["data"]["image_size"])
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(tasks.get(ckpt["model_spec"]["task"]).evaluation().flops_input(hw))
    return round(fc.get_total_flops() / 1e9, 3)


def compare_runs(runs: list[str | Path], split: str = "test", flops: bool = False) -> tuple[list[Row], list[str]]:
    """The rows of the runs that read, and one line per folder left out (which, and why). Two runs of one folder
    name (``fold0`` of two groups) are told apart by their parent folder."""
    rows, skipped, seen = [], [], set()
    for r in runs:
        key = Path(r).resolve()
        if key in seen:
            skipped.append(f"{r}: given twice, compared once")
            continue
        seen.add(key)
        try:
            rows.append(read_row(Path(r), split, flops))
        except SegLoopError as exc:
            skipped.append(str(exc).splitlines()[0])
    for r, name in zip(rows, shown_names([r.dir for r in rows]), strict=True):
        r.values["run"] = name
    return rows, skipped


def shown_names(dirs: list[Path]) -> list[str]:
    """What a table or a report calls each run: its folder name, or ``parent/name`` where two runs share a folder
    name (``fold0`` of two k-fold groups), so that no two rows or sections read alike."""
    parts = [Path(d).resolve().parts for d in dirs]
    depth = [1] * len(dirs)
    while True:  # each name that two runs share takes one more folder of its path, until none is shared
        names = ["/".join(p[-n:]) for p, n in zip(parts, depth, strict=True)]
        shared = [i for i, name in enumerate(names) if names.count(name) > 1 and depth[i] < len(parts[i])]
        if not shared:
            return names
        for i in shared:
            depth[i] += 1


def _columns(rows: list[Row]) -> list[str]:
    """The table's columns: those any row fills (a column every run leaves empty, GFLOPs without --flops say, is
    left out), the model's arguments in the CSV only (the report lists them beside their meaning)."""
    keys = list(rows[0].values)
    return [k for k in keys if k not in CSV_ONLY and (k == "run" or any(r.values.get(k) is not None for r in rows))]


FORMATS = {"parameters (M)": "{:.2f}", "weights (MB)": "{:.1f}", "GFLOPs": "{:.2f}", "train (s)": "{:.0f}",
           "ms / image": "{:.1f}"}


def _shown(column: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return FORMATS[column].format(v) if column in FORMATS else num(v)
    return str(v)


def groups(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by taxonomy, in the order given."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.taxonomy, []).append(r)
    return out


def markdown(rows: list[Row], split: str = "test", curves: list[tuple[str, str]] | None = None) -> str:
    """The comparison as Markdown: one table per taxonomy, then the per-class table, then the curves."""
    lines: list[str] = []
    for tax, group in groups(rows).items():
        cols = _columns(group)
        if len(groups(rows)) > 1:
            lines += [f"### Taxonomy '{tax}'", ""]
        lines += [table(cols, [[_shown(c, r.values.get(c)) for c in cols] for r in group]), ""]
        versions = {r.test_version for r in group if r.test_version}
        if len(versions) > 1:
            lines += [f"Note: the {split} figures come from different dataset versions ({', '.join(sorted(versions))})"
                      f" and do not rank the runs on one set.", ""]
        classes = list(dict.fromkeys(c for r in group for c in r.per_class))
        if classes:
            label = " / ".join(dict.fromkeys(r.per_class_label for r in group if r.per_class_label))
            lines += [f"Per-class {split} {label}:", "",
                      table(["class", *(r.values["run"] for r in group)],
                            [[c, *(num(r.per_class.get(c)) for r in group)] for c in classes]), ""]
    lines += [f"![{caption}]({name})" for name, caption in curves or []]
    return "\n".join(lines).rstrip() + "\n"


def to_csv(rows: list[Row]) -> str:
    """Every column of every row, per-class figures as ``<label>/<class>`` columns; blank where none."""
    cols = list(dict.fromkeys(k for r in rows for k in r.values))
    classes = list(dict.fromkeys(f"{r.per_class_label}/{c}" for r in rows for c in r.per_class))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["taxonomy", *cols, *classes])
    for r in rows:
        pc = {f"{r.per_class_label}/{c}": v for c, v in r.per_class.items()}
        w.writerow([r.taxonomy, *("" if r.values.get(c) is None else r.values[c] for c in cols),
                    *("" if pc.get(c) is None else pc[c] for c in classes)])
    return buf.getvalue()


def check_out(out: str | Path) -> Path:
    """``--out`` checked before anything is read: only an earlier comparison, holding only its own files, is
    replaced."""
    return check_output_folder(out, "a comparison", "compare.md", {"compare.md", "compare.csv", "compare.html"},
                               (".png",))


def write_comparison(rows: list[Row], out: str | Path, split: str = "test") -> Path:
    """``compare.md``, ``compare.csv``, ``compare.html`` and the overlaid curves into ``out``, all at once."""
    out = check_out(out)
    with atomic_dir(out, replace=True) as tmp:
        with_curves = [r for r in rows if r.curve]
        curves = curve_pngs([{"name": r.name, "curve": r.curve, "info": r.info} for r in with_curves], tmp
                            ) if with_curves else []
        md = f"# SegLoop comparison: {len(rows)} runs\n\n" + markdown(rows, split, curves)
        (tmp / "compare.md").write_text(md)
        (tmp / "compare.csv").write_text(to_csv(rows))
        (tmp / "compare.html").write_text(html_page(md, f"SegLoop comparison of {len(rows)} runs"))
    return out
