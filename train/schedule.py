"""Learning-rate schedule: linear warmup, then cosine, poly or constant.

Progress is the larger of steps done / planned steps and, under a time limit, time spent / time allowed, so a run
stopped by its wall-clock budget still ends at the bottom of its schedule instead of at full learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from core.errors import SegLoopError

SCHEDULES = ("cosine", "poly", "constant")


class WarmupSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int,
                 time_limit_s: float | None = None) -> None:
        if cfg["name"] not in SCHEDULES:
            raise SegLoopError(f"unknown schedule '{cfg['name']}'", fix=f"schedule.name: one of {', '.join(SCHEDULES)}")
        self.opt, self.cfg = optimizer, cfg
        self.total = max(total_steps, 1)
        self.time_limit_s = time_limit_s
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.step_count = 0
        self.elapsed = 0.0
        self._apply()

    def factor(self) -> float:
        warm = self.cfg["warmup_steps"]
        if self.step_count < warm:
            return 0.01 + 0.99 * self.step_count / warm
        progress = (self.step_count - warm) / max(self.total - warm, 1)
        if self.time_limit_s:
            progress = max(progress, self.elapsed / self.time_limit_s)
        progress = min(progress, 1.0)
        name = self.cfg["name"]
        if name == "cosine":
            floor = self.cfg["min_lr_ratio"]
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if name == "poly":
            return (1 - progress) ** self.cfg["power"]
        return 1.0

    def _apply(self) -> None:
        f = self.factor()
        for g, base in zip(self.opt.param_groups, self.base, strict=True):
            g["lr"] = base * f

    def step(self, elapsed: float | None = None) -> None:
        self.step_count += 1
        if elapsed is not None:
            self.elapsed = elapsed
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.opt.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "elapsed": self.elapsed, "total": self.total, "base": self.base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count, self.elapsed = state["step_count"], state["elapsed"]
        self.base = state["base"]
        self._apply()
