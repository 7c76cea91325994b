"""Checkpoints: model, optimizer, schedule, scaler, epoch, step, RNG states and the config that made them.

A checkpoint also records the model spec (task, model name, arguments) and the taxonomy, so loading one into a
different model or class list fails with a message saying what differs, instead of a wall of state_dict key errors
or, worse, silently wrong class indices.

Checkpoints hold tensors and plain data only (dicts, lists, strings, numbers) and are read with
``torch.load(weights_only=True)``: a ``.pt`` file is a pickle, and unpickling an arbitrary object can run code, so
a file handed over by someone else must never be unpickled in full. NumPy's RNG state is stored as a tensor for
that reason.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import tasks
from core.errors import SegLoopError, article
from core.runs import DEFAULT_TASK, find_checkpoint

# NumPy arrays in checkpoints of earlier SegLoop versions (their RNG state): array reconstruction only, no code
_LEGACY_NUMPY = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    else:
        np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _refused_global(exc: BaseException) -> str | None:
    """The callable a pickle asked for that ``weights_only`` loading refused (``os.system``, a class), or None."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def refused_pickle_message(exc: BaseException, what: str) -> str | None:
    """``what`` refused because it asks to run code while loading, naming that code, or None for another error."""
    found = _refused_global(exc) if isinstance(exc, pickle.UnpicklingError) else None
    if found is None:
        return None
    return (f"refused to load {what}: the file asks to run {found} while loading, and unpickling anything but "
            f"tensors could run code")


def quiet_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` without torch's warnings about the file (a plain pickle's, say): SegLoop's
    own message says what is wrong with it and what to give instead."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects; anything else is refused with the reason."""
    path = Path(path)
    if not path.is_file():
        raise SegLoopError("checkpoint not found", path=path, fix="train first (python -m train.run) or check the run")
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            ckpt = quiet_load(path)
    except pickle.UnpicklingError as exc:
        found = _refused_global(exc)
        if found is None:
            raise SegLoopError("cannot read checkpoint (not a checkpoint, or truncated)", path=path,
                               fix="use another checkpoint from runs/<run>/checkpoints/") from None
        if found.startswith("ultralytics."):
            raise SegLoopError(
                f"{path.name} is an Ultralytics checkpoint, a pickle of Ultralytics' classes ({found}), "
                f"not a SegLoop checkpoint; SegLoop never unpickles it", path=path,
                fix="start a YOLO model from it with model.init_from=PATH (its tensors are read without running "
                    "its code), or give a SegLoop run's checkpoint") from None
        raise SegLoopError(
            f"refused to load: the file asks to run {found} while loading; a SegLoop checkpoint holds "
            f"tensors and plain data only, and unpickling anything else could run code", path=path,
            fix="use a checkpoint written by python -m train.run; never load .pt files from an untrusted source"
        ) from None
    except Exception as exc:
        raise SegLoopError(f"cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]})", path=path,
                           fix="it is truncated or not a SegLoop checkpoint; use another one") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_spec" not in ckpt:
        raise SegLoopError("not a SegLoop checkpoint (no model and model spec)", path=path,
                           fix="use a checkpoint from runs/<run>/checkpoints/")
    problem = checkpoint_problem(ckpt)
    if problem:
        raise SegLoopError(f"not a usable SegLoop checkpoint: its {problem}", path=path,
                           fix="use a checkpoint written by python -m train.run (runs/<run>/checkpoints/), unedited")
    ckpt["model_spec"] = normalize_spec(ckpt["model_spec"])
    # a checkpoint written before its task's models took today's layout is renamed by the task
    return tasks.get(ckpt["model_spec"]["task"]).training().upgrade_checkpoint(ckpt)


class _Inert:
    """What a foreign pickle's classes and functions become when read by ``read_module_pickle``: constructing one,
    or restoring its state, only records what the pickle gave it. No code of the pickle's choosing runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self._state = state


# the only callables a foreign pickle may reach: the tensor and parameter rebuilders (as torch's own weights_only
# loader allows), the containers an nn.Module's state is made of, and dtype constants
_REBUILDERS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
               ("torch._utils", "_rebuild_parameter_with_state"), ("collections", "OrderedDict"),
               ("builtins", "set"), ("builtins", "frozenset"), ("torch", "Size")}


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 names Python 2's module
        if (module, name) in _REBUILDERS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Inert,), {"__module__": f"inert.{module}"})


class _InertPickle:
    """A pickle module for ``torch.load`` whose unpickler turns every class into ``_Inert``."""

    Unpickler = _InertUnpickler

    @staticmethod
    def load(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("legacy (non-zip) checkpoints are not read")


def read_module_pickle(path: Path) -> Any:
    """A ``torch.save`` file of pickled objects (another framework's checkpoint of whole ``nn.Module`` objects), read
    without running any of its code: every class it names becomes an inert record of its state, and only tensors are
    rebuilt. ``module_tensors`` turns such a record of a module into its state dict."""
    try:
        # weights_only=True cannot take an unpickler of its own; _InertUnpickler resolves no global but torch's
        # tensor rebuilders and plain containers, so nothing the file names is ever called
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_InertPickle)
    except Exception as exc:
        raise SegLoopError(f"cannot read {path.name} ({type(exc).__name__}: {str(exc)[:200]})", path=path,
                           fix="it is truncated or not a checkpoint; use another one") from None


def module_tensors(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The parameters and persistent buffers of an inert module record, under their state-dict names."""
    state = getattr(record, "_state", None)
    if not isinstance(state, dict):
        return {}
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, torch.Tensor) and k not in skip:
                out[prefix + k] = v.detach()
    for k, child in (state.get("_modules") or {}).items():
        out.update(module_tensors(child, f"{prefix}{k}."))
    return out


def checkpoint_problem(ckpt: dict[str, Any]) -> str | None:
    """What makes a checkpoint's parts of the wrong kind for its readers (an edited or foreign file), or None."""
    state, spec, taxonomy = ckpt["model"], ckpt["model_spec"], ckpt.get("taxonomy")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        return "'model' is not a state dict (names to tensors)"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return f"'model_spec' is {spec!r}, not {{task, name, args}}"
    if not isinstance(spec.get("args", {}), dict) or not isinstance(spec.get("task", ""), str):
        return f"'model_spec' has args {spec.get('args')!r} / task {spec.get('task')!r}: args map names to values"
    if taxonomy is not None and not (isinstance(taxonomy, dict) and isinstance(taxonomy.get("classes"), list) and all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in taxonomy["classes"])):
        return f"'taxonomy' is {str(taxonomy)[:60]!r}, not a taxonomy with its classes"
    for key, kind in (("epoch", int), ("step", int), ("config", dict), ("best", dict)):
        if key in ckpt and not isinstance(ckpt[key], kind):
            return f"'{key}' is {str(ckpt[key])[:60]!r}, not {'a mapping' if kind is dict else 'an integer'}"
    return None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """A checkpoint's weights into its model, or one message naming the tensors that do not fit (missing,
    unexpected, of another shape) instead of torch's."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shaped:
        parts = [f"{len(missing)} missing ({', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})" if unexpected else "",
                 f"{len(shaped)} of another shape ({'; '.join(shaped[:2])})" if shaped else ""]
        raise SegLoopError("the checkpoint's weights do not fit its model: " + ", ".join(p for p in parts if p),
                           path=path, fix="the file was edited or is another model's: use the run's own checkpoint")
    model.load_state_dict(state)


def normalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``{task, name, args}``; checkpoints written before tasks existed stored ``{name, **args}`` (semantic)."""
    if "args" in spec and "task" in spec:
        return spec
    return {"task": DEFAULT_TASK, "name": spec["name"],
            "args": {k: v for k, v in spec.items() if k not in ("name", "task", "args")}}


def model_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    """The spec a training config asks for: task, model name and its arguments."""
    return {"task": cfg["task"], "name": cfg["model"]["name"], "args": dict(cfg["model"]["args"] or {})}


def check_compatible(ckpt: dict[str, Any], spec: dict[str, Any], class_names: list[str], path: str | Path) -> None:
    """Refuse a checkpoint made for another task, architecture or class list."""
    theirs = ckpt["model_spec"]
    if theirs["task"] != spec["task"]:
        raise SegLoopError(f"checkpoint is {article(theirs['task'])} {theirs['task']} model ({theirs['name']}), "
                           f"but this is {article(spec['task'])} {spec['task']} "
                           f"{'command' if spec.get('name') is None else 'config'}", path=path,
                           fix=f"use a {spec['task']} run's checkpoint, or set task={theirs['task']}")
    if spec.get("name") is not None and (theirs["name"], architecture(theirs)) != (spec["name"], architecture(spec)):
        raise SegLoopError(f"checkpoint is for model {theirs['name']} {theirs['args']}, but the config asks for "
                           f"{spec['name']} {spec['args']}", path=path,
                           fix="use the same model settings as the checkpoint, or another checkpoint")
    their_names = [c["name"] for c in ckpt.get("taxonomy", {}).get("classes", [])]
    if their_names != class_names:
        raise SegLoopError(
            f"checkpoint was trained on taxonomy '{ckpt.get('taxonomy', {}).get('name')}' with "
            f"{len(their_names)} classes; this dataset has {len(class_names)} classes", path=path,
            fix="train on a dataset with the checkpoint's taxonomy, or start without it")


def check_run_checkpoint(run_dir: str | Path, ckpt: dict[str, Any], path: str | Path) -> None:
    """The checkpoint must be the run's own: a ``best.pt`` / ``last.pt`` of another model (or of the same model with
    other arguments) copied into the folder would be evaluated, predicted with or resumed under this run's name.
    The run's ``run.json`` records the model it trained."""
    from core.runs import Run

    run = Run(run_dir)
    if not run.info_path.is_file():
        return
    spec, theirs = ckpt["model_spec"], run.info().get("model")
    if theirs is None:
        return
    theirs = tasks.get(spec["task"]).training().upgrade_spec(normalize_spec({"task": spec["task"], **theirs}))
    same = (theirs["task"], theirs["name"]) == (spec["task"], spec["name"]) and (
        spec["name"] not in tasks.get(spec["task"]).training().models or architecture(theirs) == architecture(spec))
    if not same:
        raise SegLoopError(f"{Path(path).name} is {article(spec['task'])} {spec['task']} {spec['name']} model "
                           f"{spec['args']}, but run.json says this run trained {theirs['task']} {theirs['name']} "
                           f"{theirs['args']}: the checkpoint is not this run's, or run.json was edited",
                           path=path, fix="put the run's own checkpoint (or its run.json) back, or use the run the "
                                          "checkpoint came from")


def architecture(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's arguments with the model's defaults filled in and initialisation-only ones left out: what two
    checkpoints must share to hold weights of the same shapes (``{}`` and ``{width: 16}`` are the same resunet)."""
    models = tasks.get(spec["task"]).training().models
    if spec["name"] not in models:
        return dict(spec["args"])
    full = {**models.defaults(spec["name"], ("num_classes",)), **spec["args"]}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in full.items()
            if k not in models.init_only(spec["name"])}


def build_from_spec(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """A checkpoint's model with its initial weights untouched (the checkpoint's own replace them)."""
    task = tasks.get(spec["task"]).training()
    args = {k: v for k, v in spec["args"].items() if k not in task.models.init_only(spec["name"])}
    return task.models.build(spec["name"], args, num_classes=num_classes)


def load_model(run: str | Path, which: str = "best", task: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's model from its checkpoint (architecture from the checkpoint's own spec). With ``task``, a
    checkpoint of another task is refused, naming both."""
    path = find_checkpoint(run, which)
    ckpt = load_checkpoint(path)
    spec = ckpt["model_spec"]
    if task is not None and spec["task"] != task:
        raise SegLoopError(f"checkpoint is {article(spec['task'])} {spec['task']} model ({spec['name']}); "
                           f"this command needs {article(task)} {task} "
                           f"model", path=path, fix=f"give a {task} run")
    model = build_from_spec(spec, len(ckpt["taxonomy"]["classes"]))
    load_state(model, ckpt["model"], path)
    model.eval()
    return model, ckpt
