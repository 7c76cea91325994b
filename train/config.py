"""The training configuration: ``configs/train/default.yaml`` is the schema; files and ``key=value`` override it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import resolve_config

ROOT = Path(__file__).resolve().parent.parent
TRAIN_DEFAULT = ROOT / "configs" / "train" / "default.yaml"

# keys whose default is null, and the types they accept otherwise
NULLABLE: dict[str, tuple[type, ...]] = {
    "data.fold": (int,),
    "model.weights": (str,),
    "loss.class_weights": (str, list),
    "train.time_limit": (float,),
    "output.name": (str,),
    "resume": (str,),
}


def load_train_config(config: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    return resolve_config(TRAIN_DEFAULT, config, overrides, NULLABLE)
