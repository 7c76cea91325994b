"""Checkpoints: model, optimizer, schedule, scaler, epoch, step, RNG states and the config that made them.

A checkpoint also records the model spec and the taxonomy, so loading one into a different model or class list
fails with a message saying what differs, instead of a wall of state_dict key errors or, worse, silently wrong
class indices.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.config import read_yaml
from core.errors import SegLoopError
from core.fsio import atomic_path
from train.models import build_model, model_kwargs


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: Path, **payload: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SegLoopError("checkpoint not found", path=path, fix="train first (python -m train.run) or check the run")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SegLoopError(f"cannot read checkpoint ({type(exc).__name__}: {exc})", path=path,
                           fix="it is truncated or not a SegLoop checkpoint; use another one") from None


def check_compatible(ckpt: dict[str, Any], model_spec: dict[str, Any], class_names: list[str],
                     path: str | Path) -> None:
    """Refuse a checkpoint made for another architecture or another class list."""
    theirs = ckpt.get("model_spec")
    if theirs is None or "model" not in ckpt:
        raise SegLoopError("not a SegLoop checkpoint (no model spec)", path=path, fix="use a checkpoint from runs/")
    if theirs != model_spec:
        raise SegLoopError(f"checkpoint is for model {theirs}, but the config asks for {model_spec}", path=path,
                           fix="use the same model settings as the checkpoint, or another checkpoint")
    their_classes = ckpt.get("taxonomy", {}).get("classes", [])
    their_names = [c["name"] for c in their_classes]
    if their_names != class_names:
        raise SegLoopError(
            f"checkpoint was trained on taxonomy '{ckpt.get('taxonomy', {}).get('name')}' with "
            f"{len(their_names)} classes; this dataset has {len(class_names)} classes", path=path,
            fix="train on a dataset with the checkpoint's taxonomy, or start without it")


def model_spec(model_cfg: dict[str, Any]) -> dict[str, Any]:
    return {"name": model_cfg["name"], **model_kwargs(model_cfg)}


def find_checkpoint(run: str | Path, which: str = "best") -> Path:
    """``runs/x`` + ``best`` -> ``runs/x/checkpoints/best.pt``; a .pt path is taken as is."""
    run = Path(run)
    if run.suffix == ".pt":
        return run
    path = run / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        if not run.is_dir():
            raise SegLoopError("run folder not found", path=run, fix="give a folder under runs/ (ls runs/)")
        raise SegLoopError(f"run has no {which}.pt", path=path, fix="train it (python -m train.run) or resume it")
    return path


def load_model(run: str | Path, which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's model from its checkpoint (architecture from the checkpoint's own spec)."""
    path = find_checkpoint(run, which)
    ckpt = load_checkpoint(path)
    spec = dict(ckpt["model_spec"])
    model = build_model(spec.pop("name"), num_classes=len(ckpt["taxonomy"]["classes"]), **spec)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def run_config(run: str | Path) -> dict[str, Any]:
    return read_yaml(Path(run) / "config.yaml")
