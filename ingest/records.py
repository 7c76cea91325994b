"""What every source yields: one ``Record`` per labelled image, and its decoded ``Annotation``.

Sources only enumerate files (cheap, so a build can hash inputs and decide whether the version already exists);
decoding happens later, once per image, through ``Source.load``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Instance:
    """One object (or a crowd region) of an instance class, as a full-image boolean mask."""

    category: int  # train index
    mask: np.ndarray
    iscrowd: int = 0
    score: float | None = None


@dataclass
class Annotation:
    semantic: np.ndarray  # uint8 train indices, ignore value for unlabelled pixels
    instances: list[Instance] = field(default_factory=list)


@dataclass
class Record:
    key: str  # unique inside a dataset version: "<source>/<relative stem>"
    source: str
    image: Path
    annotation_files: list[Path]
    split: str | None  # the source's own split, if it has one
    group: str  # images of one group never cross splits (a city, a video sequence)
    extra: dict = field(default_factory=dict)
