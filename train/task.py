"""The training half of the task seam: what the training loop asks of a task.

The training loop (train/engine.py) knows nothing of labels, models or metrics. A task's training part supplies its
datasets and collate, its model registry, a train step returning named losses, a detectron2-style evaluator
(reset / process / evaluate) with the inference that feeds it, and the metric that picks ``best.pt``. Each task's
subclass lives in its own package under ``tasks/`` (``tasks/<name>/train.py``), beside that task's evaluation and
reader parts; ``tasks.get(name).training()`` finds it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from ingest.taxonomy import Taxonomy
from ingest.version import DatasetVersion
from train.registry import Registry


class DatasetEvaluator(Protocol):
    """detectron2's evaluator protocol: one instance per benchmark, fed batch by batch."""

    def reset(self) -> None: ...

    def process(self, inputs: Any, outputs: Any) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


class Task(ABC):
    """One kind of segmentation. ``cfg`` is the resolved training config; ``dataset`` the version trained on."""

    name: ClassVar[str]
    models: ClassVar[Registry[nn.Module]]
    best_metric: ClassVar[str]  # a key of the validation record (without 'val_'); higher is better
    metric_names: ClassVar[tuple[str, ...]]  # the validation metrics train.best_metric may name

    def __init__(self, cfg: dict[str, Any], taxonomy: Taxonomy, device: torch.device, amp: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.taxonomy, self.device, self.amp, self.progress = cfg, taxonomy, device, amp, progress

    @classmethod
    def delegated_trainer(cls, cfg: dict[str, Any]) -> type | None:
        """The trainer that runs this config's epochs when it is not SegLoop's loop (``train.engine.Trainer``), or
        None. A delegated trainer takes ``(cfg, progress)``, has ``fit() -> TrainResult``, and writes its run folder
        through ``core.runs.RunWriter``, so its runs read like any other."""
        return None

    @classmethod
    def upgrade_checkpoint(cls, ckpt: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint of this task written by an earlier SegLoop, in today's layout (renamed layers, moved
        arguments); as it is when it already is."""
        return ckpt

    @classmethod
    def upgrade_spec(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """A model spec (``{task, name, args}``, as ``run.json`` records it) of an earlier layout in today's."""
        return spec

    @classmethod
    def unused_settings(cls, cfg: dict[str, Any]) -> dict[str, str]:
        """Config keys this task's training does not read, with why: a non-default value of one is said (and kept
        in run.json) rather than silently ignored."""
        return {}

    # ------------------------------------------------------------------------------------------------- data
    @abstractmethod
    def datasets(self, version: DatasetVersion, train_ids: list[int] | None, val_split: str,
                 val_ids: list[int] | None, augment: bool = True) -> tuple[Dataset, Dataset]:
        """The training set (augmented unless ``augment`` is False: the overfit check learns fixed images) and
        the validation set (labels at full resolution)."""

    @abstractmethod
    def collate(self, batch: list[Any]) -> Any: ...

    def check_dataset(self, version: DatasetVersion, split: str) -> None:  # noqa: B027  (optional check)
        """Refuse a dataset version this task cannot learn from (before anything is written)."""

    def batch_sampler(self, dataset: Dataset, sampler: Sampler, batch_size: int) -> Sampler | None:
        """A batch sampler (e.g. aspect-ratio groups), or None for plain batches of ``batch_size``."""
        return None

    def start_epoch(self, train_set: Dataset, seed: int) -> None:  # noqa: B027  (optional hook)
        """Re-seed the augmentation stream of an epoch (deterministic resume)."""

    # ------------------------------------------------------------------------------------------------ model
    def model_args(self) -> dict[str, Any]:
        return dict(self.cfg["model"]["args"] or {})

    def build_model(self, initialise: bool = True) -> nn.Module:
        """The configured model; ``initialise=False`` when a checkpoint's weights will replace the initial ones
        (resume, ``model.weights``), so initialisation-only arguments (a backbone weights file) are not read."""
        name, args = self.cfg["model"]["name"], self.model_args()
        if not initialise:
            args = {k: v for k, v in args.items() if k not in self.models.init_only(name)}
        return self.models.build(name, args, num_classes=self.taxonomy.num_classes)

    def channels_last(self, model: nn.Module, requested: bool) -> bool:
        return False

    def setup_loss(self, train_set: Dataset) -> None:  # noqa: B027  (optional hook)
        """Build what the train step needs from the training data (class weights, say)."""

    def run_info(self, model: nn.Module) -> dict[str, Any]:
        """What this run's ``run.json`` records of the task's choices (the class weights computed from the data,
        say), beyond what every run records."""
        return {}

    def before_train(self, run_dir: Any, train_set: Dataset) -> None:  # noqa: B027  (optional hook)
        """Called once the run folder exists, before the first step (an augmentation preview, say)."""

    @abstractmethod
    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward pass on a training batch; the named losses (their sum is optimised)."""

    def train_record(self) -> dict[str, Any]:
        """The training batches' own scores since the epoch started (``train_<metric>``, the counterpart of a
        ``val_<metric>``), where the train step's outputs can be scored; ``start_epoch`` starts them afresh."""
        return {}

    # ------------------------------------------------------------------------------------------- validation
    @abstractmethod
    def evaluator(self, version: DatasetVersion, split: str) -> DatasetEvaluator: ...

    @abstractmethod
    def inference(self, model: nn.Module, batch: Any) -> Any:
        """Predictions for a validation batch, in the form the evaluator's ``process`` takes."""

    @abstractmethod
    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The evaluator's result as ``metrics.jsonl`` fields (``val_<metric>``; per-class maps allowed)."""

    def validation_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor] | None:
        """The training loss's named terms on a validation batch (called under ``no_grad``, with the model in eval
        mode, which it must leave as it found it, and no running statistic changed), or None where a task cannot
        compute one. Its mean over the split is ``val_loss`` beside ``train_loss``: the gap shows over-fitting."""
        return None

    def validation_step(self, model: nn.Module, batch: Any) -> tuple[Any, dict[str, torch.Tensor] | None]:
        """The batch's predictions for the evaluator and its validation losses. A task whose loss and predictions
        come from one forward pass overrides this, so validation does not pay for the model twice."""
        return self.inference(model, batch), self.validation_loss(model, batch)

    def panels(self, batch: Any, outputs: Any, limit: int) -> list[np.ndarray]:
        """Up to ``limit`` image | ground truth | prediction panels for TensorBoard."""
        return []

    def summary(self, record: dict[str, Any]) -> str:
        return f"val {self.best_metric} {record.get('val_' + self.best_metric, float('nan')):.4f}"
