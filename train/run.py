"""``python -m train.run [--config FILE] [key=value ...]``: train a segmentation model.

With no arguments it trains configs/train/default.yaml on the demo dataset (generated and ingested first if
missing). Keys are those of configs/train/default.yaml, dotted: ``train.epochs=5 model.args.width=32 optim.lr=1e-3``.
``resume=runs/NAME`` continues a run from its last checkpoint (further overrides, e.g. more epochs, still apply).
Under torchrun (``torchrun --nproc_per_node=N -m train.run ...``) it trains with DistributedDataParallel.
``train.overfit_batch=4`` runs the overfit check instead: exit status 1 when the model does not learn those images.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from core.errors import SegLoopError, run_cli
from core.runs import GROUP, run_of_checkpoint, training_start_problem
from train.config import load_train_config, upgrade_run_config
from train.engine import train


def _print_entries(registry: Any, key: str, args_key: str, fixed: tuple[str, ...]) -> None:
    for name in registry.names():
        help_ = registry.describe(name)
        print(f"  {key}={name:<20} {registry.summary(name)}")
        for arg, default in registry.defaults(name, fixed).items():
            shown = f"{args_key.replace('<name>', name)}.{arg}={default!r}"
            print(f"    {shown:<52} {help_.get(arg, '')}")


def models_task(overrides: list[str]) -> str | None:
    """The one override ``--models`` takes: ``task=NAME``, to list that task's models only."""
    import tasks

    task = None
    for o in overrides:
        key, _, value = o.partition("=")
        if key != "task":
            raise SegLoopError(f"--models lists the models; it takes no override but task=NAME, got {o!r}",
                               fix=f"python -m train.run --models [task={'|'.join(tasks.TASK_NAMES)}]")
        if value not in tasks.TASK_NAMES:
            raise SegLoopError(f"--models task={value}: there is no task {value!r}",
                               fix=f"task is one of: {', '.join(tasks.TASK_NAMES)}")
        task = value
    return task


def print_models(only: str | None = None) -> None:
    """Every registered model per task (or of task ``only``), with each argument's default and meaning
    (``model.name``, ``model.args``), then the encoders the semantic architectures take and the losses of
    semantic training."""
    import tasks
    from train.losses import FIXED, LOSSES
    from train.models import ENCODERS

    for task in tasks.TASK_NAMES:
        if only in (None, task):
            print(f"task={task}  ({tasks.get(task).description})")
            _print_entries(tasks.get(task).training().models, "model.name", "model.args", ("num_classes",))
    if only not in (None, "semantic"):
        return
    print("encoders of the semantic architectures (unet, linknet)")
    _print_entries(ENCODERS, "model.args.encoder", "model.args.encoder_args", ("weights",))
    print("semantic losses (combine with +; each term's weight and arguments under loss.args.<term>)")
    _print_entries(LOSSES, "loss.name", "loss.args.<name>", FIXED)


def _folds(cfg: dict[str, Any], progress: bool) -> int:
    """``data.fold=all``: one run per fold, then one line per fold."""
    from train.folds import train_folds

    results = train_folds(cfg, progress)
    failed = [i for i, r in enumerate(results) if r is not None and r.overfit is not None and not r.overfit["reached"]]
    if int(os.environ.get("RANK", "0")) == 0:
        print("\nfold  best val          epoch  steps  run")
        for i, r in enumerate(results):
            print(f"{i:>4}  " + ("(finished before)" if r is None else
                                 f"{r.best_metric} {r.best_value:.4f}  {r.best_epoch:>5}  {r.steps:>5}  {r.run_dir}"))
    return 1 if failed else 0  # an overfit check that failed on a fold fails the command, as on one run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML (may start with 'base: ...'); default configs/train/default.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--models", action="store_true", help="list the models of each task with their arguments")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_intermixed_args(argv)  # key=value on either side of --config, as users type them
    if args.models:
        print_models(models_task(args.overrides))
        return 0
    config = args.config
    resume = next((o.split("=", 1)[1] for o in args.overrides if o.split("=", 1)[0].lstrip("-") == "resume"), None)
    if resume and args.config:
        raise SegLoopError(f"--config {args.config} with resume=: a resumed run continues with its own config.yaml, "
                           f"so the file would be ignored", path=args.config,
                           fix="drop --config; give the settings a resume may change as key=value (train.epochs=N)")
    if resume:
        cfg_file = Path(resume) / "config.yaml"
        if Path(resume).is_file():
            folder = run_of_checkpoint(Path(resume))
            raise SegLoopError("resume takes a run folder, not a file", path=resume,
                               fix=f"resume={folder}" if folder else "give the run folder (it holds checkpoints/)")
        if not Path(resume).is_dir():
            raise SegLoopError("resume: run folder not found", path=resume,
                               fix="give a run folder written by python -m train.run (ls runs/)")
        training_start_problem(resume, "resume")
        if not cfg_file.is_file():
            raise SegLoopError("resume: run has no config.yaml", path=resume,
                               fix="give a run folder written by python -m train.run")
        cfg_file = upgrade_run_config(cfg_file)
        config = cfg_file
    cfg = load_train_config(config, args.overrides)
    # a resume continues what the folder is (a group, one run); a data.fold that says otherwise is refused there
    if (Path(resume) / GROUP).is_file() if resume else cfg["data"]["fold"] == "all":
        return _folds(cfg, not args.quiet)
    result = train(cfg, progress=not args.quiet)
    if result.run_dir is not None and int(os.environ.get("RANK", "0")) == 0:
        unit = "step" if result.overfit is not None else "epoch"  # the overfit check's epochs are steps
        print(f"\n{'the fixed images' if result.overfit is not None else 'best val'} {result.best_metric} "
              f"{result.best_value:.4f} ({unit} {result.best_epoch}), "
              f"{result.steps} steps, "
              f"{result.train_seconds:.0f}s, {result.images_per_second:.1f} img/s\n"
              f"run folder:  {result.run_dir}\n"
              f"checkpoints: {result.run_dir / 'checkpoints'}\n"
              f"metrics:     {result.run_dir / 'metrics.jsonl'}\n"
              f"tensorboard: tensorboard --logdir {result.run_dir / 'tb'}\n"
              f"evaluate:    python -m evaluate run {result.run_dir} --split test")
    if result.overfit is not None and not result.overfit["reached"]:
        return 1  # the overfit check failed: a script or CI job running it must see that
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
