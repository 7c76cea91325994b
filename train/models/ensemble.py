"""An ensemble of trained semantic models as one model: the mean of the members' class probabilities.

``evaluate ensemble`` writes it as an ordinary checkpoint (``model_spec`` name ``ensemble``, the members' specs as
its arguments, their weights under ``members.<i>.``), so every reader of a run (``evaluate run``, the report, the
app, ``evaluate predict``, triage) takes it as it takes one model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from train.models.heads import SigmoidDecoding, decoding_of
from train.models.registry import SEMANTIC_MODELS


class Ensemble(nn.Module):
    """Members of one decoding (softmax over the same classes, or one sigmoid logit) whose probabilities are
    averaged; the output is the logits of that mean (log-probabilities, or the sigmoid's logit), so the decoding
    of the first member reads it as it reads one model's."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.decoding = decoding_of(members[0])
        kinds = {(type(decoding_of(m)).__name__, decoding_of(m).num_classes) for m in members}
        if len(kinds) > 1:
            raise ValueError(f"the members decode differently ({sorted(kinds)}): their probabilities do not average")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.decoding, SigmoidDecoding):
            p = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(0).clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)
        p = torch.stack([torch.softmax(m(x).float(), 1) for m in self.members]).mean(0)
        return torch.log(p.clamp_min(1e-12))


@SEMANTIC_MODELS.register("ensemble")
def ensemble(num_classes: int, members: list[dict[str, Any]]) -> Ensemble:
    """Mean of several models' class probabilities (python -m evaluate ensemble makes one of trained runs).

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        members: the members' model specs ({name, args}), as their checkpoints record them
    """
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"] != "ensemble" for m in members):
        raise ValueError("members must be a list of model specs ({name, args}) of trained models")
    built = []
    for spec in members:
        args = {k: v for k, v in (spec.get("args") or {}).items() if k not in SEMANTIC_MODELS.init_only(spec["name"])}
        built.append(SEMANTIC_MODELS.build(spec["name"], args, num_classes=num_classes))
    return Ensemble(built)
