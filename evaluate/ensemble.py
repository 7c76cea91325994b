"""``python -m evaluate ensemble RUN... --out runs/NAME``: several trained runs as one model, scored beside each.

The members (the runs of a k-fold group, say) must be of one task and taxonomy, trained on one dataset version at
one input size; what differs is said, naming the runs. The ensemble is written as a run folder of its own
(``run.json``, ``config.yaml``, ``ensemble.json`` and ``checkpoints/best.pt`` holding every member's weights, see
``train.models.ensemble``), then evaluated on the split like any run, so its ``eval/<split>/`` is what the report,
``evaluate compare``, triage and the triptychs read. Each member (and a ``--reference`` run, a model trained on all
of train) is evaluated on the same split, and ``ensemble.json`` records the table: the
ensemble beside each member, and the overlap of the members' worst images ("do they fail on the same samples?").
Members are scored inside the ensemble's folder (``members/<i>-<name>/``, their ``best.pt`` linked), as the ensemble
is: nothing is written into their own folders.

Semantic members are averaged as probabilities; instance members' detections are fused (weighted boxes and masks,
scored by the members' agreement; ``train.models.ensemble``).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from core.config import dump_yaml
from core.errors import SegLoopError
from core.fsio import read_json, write_json_atomic, write_text_atomic
from core.runs import ENSEMBLE, Run, find_checkpoint, inside_run_problem, resolve_run
from evaluate.results import EvalResults

ENSEMBLE_TASKS = ("semantic", "instance")  # the tasks whose models register an "ensemble"


def _member(run: str | Path) -> dict[str, Any]:
    from train.checkpoint import check_run_checkpoint, load_checkpoint

    run_dir = resolve_run(run)
    path = find_checkpoint(run_dir, "best")
    ckpt = load_checkpoint(path)
    check_run_checkpoint(run_dir, ckpt, path)
    return {"dir": run_dir, "ckpt": ckpt, "path": path}


def check_members(members: list[dict[str, Any]]) -> None:
    """One task, taxonomy, dataset version and input size for all; otherwise the message names what differs."""
    if len(members) < 2:
        raise SegLoopError("an ensemble needs at least two runs", fix="give two or more run folders")
    first = members[0]

    def differs(what: str, value: Any) -> None:
        theirs = {m["dir"].name: value(m) for m in members}
        if len(set(map(json.dumps, theirs.values()))) > 1:
            shown = ", ".join(f"{k}: {v}" for k, v in theirs.items())
            raise SegLoopError(f"the runs differ in {what} ({shown}): their predictions do not combine",
                               path=first["dir"], fix=f"ensemble runs of one {what}")

    differs("task", lambda m: m["ckpt"]["model_spec"]["task"])
    differs("taxonomy", lambda m: [c["name"] for c in m["ckpt"]["taxonomy"]["classes"]])
    differs("dataset version", lambda m: m["ckpt"]["dataset_version"])
    differs("input size (data.image_size)", lambda m: m["ckpt"]["config"]["data"]["image_size"])
    import tasks

    task = first["ckpt"]["model_spec"]["task"]
    if "ensemble" not in tasks.get(task).training().models:
        raise SegLoopError(f"the {task} task has no ensemble model: its outputs are not combined",
                           path=first["dir"], fix=f"ensemble runs of a task that has one ({', '.join(ENSEMBLE_TASKS)})")
    if any(m["ckpt"]["model_spec"]["name"] == "ensemble" for m in members):
        raise SegLoopError("an ensemble cannot be a member of another", path=first["dir"],
                           fix="give the trained runs themselves")


def write_ensemble(members: list[dict[str, Any]], out: Path) -> Path:
    """The ensemble's run folder ``out`` (made by the caller): its checkpoint (every member's weights under
    ``members.<i>.``), ``run.json``, ``config.yaml`` (the first member's, with the ensemble as its model) and
    ``ensemble.json``."""
    import tasks
    from core.runs import save_checkpoint

    first = members[0]["ckpt"]
    specs = [{"name": m["ckpt"]["model_spec"]["name"], "args": m["ckpt"]["model_spec"]["args"]} for m in members]
    spec = {"task": first["model_spec"]["task"], "name": "ensemble", "args": {"members": specs}}
    state = {f"members.{i}.{k}": v for i, m in enumerate(members) for k, v in m["ckpt"]["model"].items()}
    # the members' shared settings; what one member alone trained on (its fold, its subset, its name) is no
    # setting of the ensemble, whose members ensemble.json names
    config = {**first["config"], "model": {**first["config"]["model"], "name": "ensemble", "args": spec["args"],
                                           "weights": None, "init_from": None},
              "data": {**first["config"]["data"], "fold": None, "train_ids": [], "train_list": None},
              "output": {**first["config"]["output"], "runs_dir": str(out.parent), "name": out.name,
                         "exist_ok": False}, "resume": None}
    # a reason explains a value: those of the keys the ensemble set itself (its model, data, output) go
    reasons = first["config"].get("why") or {}
    if isinstance(reasons, dict):
        changed = ("model.", "data.fold", "data.train_ids", "data.train_list", "output.", "resume")
        config["why"] = {k: v for k, v in reasons.items() if not str(k).startswith(changed)}
    info = {"task": spec["task"], "model": spec, "dataset_version": first["dataset_version"],
            "dataset_path": first["dataset_path"], "taxonomy": first["taxonomy"]["name"],
            "parameters": sum(int(Run(m["dir"]).info().get("parameters") or 0) for m in members),
            "command": "python -m evaluate ensemble " + " ".join(str(m["dir"]) for m in members)}
    (out / "checkpoints").mkdir(parents=True)
    save_checkpoint(out / "checkpoints" / "best.pt", {
        "model": state, "model_spec": spec, "taxonomy": first["taxonomy"], "config": config, "epoch": 0,
        "step": 0, "best": {"metric": "", "value": -1.0, "epoch": -1},
        "dataset_version": first["dataset_version"], "dataset_path": first["dataset_path"]})
    write_text_atomic(out / "config.yaml", dump_yaml(config))
    write_json_atomic(out / "run.json", info)
    write_json_atomic(out / ENSEMBLE, {"members": [str(m["dir"]) for m in members],
                                       "combined": tasks.get(spec["task"]).training().models.summary("ensemble")})
    return out


def member_copy(member: dict[str, Any], out: Path, label: str) -> Path:
    """A member as a run folder inside the ensemble's (``members/<label>/``: its run.json and config.yaml, its
    best.pt linked), so that each member is scored exactly as the ensemble is (best.pt, no TTA, the same version)
    without writing into the member's own folder."""
    import shutil

    dest = out / "members" / label
    (dest / "checkpoints").mkdir(parents=True)
    for name in ("run.json", "config.yaml"):
        if (member["dir"] / name).is_file():
            shutil.copy2(member["dir"] / name, dest / name)
    # relative: the ensemble and its members moved together (a runs/ folder copied elsewhere) still link up
    target = member["path"].resolve()
    (dest / "checkpoints" / "best.pt").symlink_to(os.path.relpath(target, (dest / "checkpoints").resolve()))
    return dest


def worst_overlap(runs: list[Path], split: str, n: int) -> dict[str, Any]:
    """The members' ``n`` worst images of the split (each evaluation's ``per_image.csv`` is worst first): those in
    every member's worst, and the mean Jaccard overlap of two members' worst sets."""
    worst = {r.name: [row["key"] for row in EvalResults(r, split).rows[:n]] for r in runs}
    sets = [set(v) for v in worst.values()]
    pairs = [len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2) if a | b]
    return {"n": n, "in_every_member": sorted(set.intersection(*sets)) if sets else [],
            "mean_pairwise_jaccard": sum(pairs) / len(pairs) if pairs else None, "worst": worst}


def build_ensemble(runs: list[str | Path], out: str | Path, split: str = "test", reference: str | Path | None = None,
                   worst: int = 10, progress: bool = True) -> dict[str, Any]:
    """Write the ensemble of ``runs`` to ``out``, evaluate it and its members (and ``reference``) on ``split`` inside
    it, and return (and record in ``ensemble.json``) the comparison. Nothing is written into the members' folders;
    a failure leaves no ``out`` behind."""
    import shutil

    from evaluate.runner import evaluate_run

    out = Path(out)
    if out.exists():
        raise SegLoopError("--out exists" + ("" if out.is_dir() else " as a file"), path=out,
                           fix="give a new --out folder: the ensemble is a run folder of its own")
    inside_run_problem(out)
    seen: set[Path] = set()
    for r in runs:
        if Path(r).resolve() in seen:
            raise SegLoopError(f"run {r} is given twice", path=r, fix="name each member once")
        seen.add(Path(r).resolve())
    if reference is not None and Path(reference).resolve() in seen:
        raise SegLoopError("--reference is one of the members", path=reference,
                           fix="give as --reference a run trained on all of train, apart from the members")
    members = [_member(r) for r in runs]
    check_members(members)
    ref = _member(reference) if reference else None
    if ref is not None:  # shown beside, not combined: one task and taxonomy, scored on the ensemble's version
        for what, value in (("task", lambda m: m["ckpt"]["model_spec"]["task"]),
                            ("taxonomy", lambda m: [c["name"] for c in m["ckpt"]["taxonomy"]["classes"]])):
            if value(ref) != value(members[0]):
                raise SegLoopError(f"--reference {ref['dir'].name} is of another {what} than the members "
                                   f"({value(ref)} vs {value(members[0])}): its figures do not compare",
                                   path=ref["dir"], fix=f"give as --reference a run of the members' {what}")
    out.mkdir(parents=True)
    try:
        write_ensemble(members, out)
        result = evaluate_run(out, split, progress=progress)
        copies = [member_copy(m, out, f"{i}-{m['dir'].name}") for i, m in enumerate(members)]
        if ref is not None:
            copies.append(member_copy(ref, out, f"reference-{ref['dir'].name}"))
        rows = []
        for m, copy in zip([*members, *([ref] if ref else [])], copies, strict=True):
            other = m["ckpt"]["dataset_version"] != members[0]["ckpt"]["dataset_version"]  # the reference's own
            figures = evaluate_run(copy, split, progress=progress,
                                   version=str(members[0]["ckpt"]["dataset_path"]) if other else None)
            rows.append({"run": str(m["dir"]), "role": "reference" if m is ref else "member",
                         "evaluated": str(copy / "eval" / split), "figures": _headline(figures)})
        n = min(worst, result["images"])
        if n < worst:
            print(f"note: --worst {worst}: the {split} split has {result['images']} images; the worst {n} compared")
        table = {"split": split, "dataset_version": result["dataset_version"], "ensemble": _headline(result),
                 "runs": rows, "worst_overlap": worst_overlap(copies[:len(members)], split, n)}
        info = read_json(out / ENSEMBLE, "ensemble.json")
        write_json_atomic(out / ENSEMBLE, {**info, "comparison": table})
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return table


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The split's headline figures every task writes where they apply (mIoU, mask AP), and the timing."""
    out = {k: metrics[k] for k in ("mIoU", "things_mIoU", "pixel_acc") if isinstance(metrics.get(k), (int, float))}
    if isinstance((metrics.get("segm") or {}).get("AP"), (int, float)):
        out["mask_AP"] = metrics["segm"]["AP"]
    if isinstance((metrics.get("timing") or {}).get("ms_per_image_mean"), (int, float)):
        out["ms_per_image"] = metrics["timing"]["ms_per_image_mean"]
    return out


def print_comparison(table: dict[str, Any], out: Path) -> None:
    keys = list(table["ensemble"])
    print(f"ensemble {out} on {table['split']} ({table['dataset_version']}):")
    print("  " + f"{'run':<40}" + "".join(f"{k:>14}" for k in keys))
    print("  " + f"{'ensemble':<40}" + "".join(f"{table['ensemble'][k]:>14.4f}" for k in keys))
    for r in table["runs"]:
        name = f"{Path(r['run']).name} ({r['role']})"
        print("  " + f"{name:<40}" + "".join(f"{r['figures'].get(k, float('nan')):>14.4f}" for k in keys))
    w = table["worst_overlap"]
    jac = w["mean_pairwise_jaccard"]
    print(f"  worst {w['n']} images: {len(w['in_every_member'])} in every member's worst; mean pairwise overlap "
          f"(Jaccard) {'-' if jac is None else f'{jac:.2f}'}")
    print(f"  details: {out / ENSEMBLE}")
