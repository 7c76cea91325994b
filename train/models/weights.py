"""Pretrained weights from a file on this machine: a torchvision state dict by path, or a file a package ships.

Nothing is downloaded. A file is read with ``weights_only=True`` (a pickle asking to run code is refused, naming the
call it asked for), its keys and shapes are checked against the module, and what does not fit is named. The file's
sha256 comes back so that a run records exactly which weights it started from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import SegLoopError
from core.fsio import sha256_file

STATE_DICT_FIX = "give a torchvision state dict saved with torch.save(model.state_dict(), PATH)"


def read_state_dict(path: str | Path, what: str, fix: str = STATE_DICT_FIX) -> dict[str, torch.Tensor]:
    """The tensors of a state dict file (a ``{"model": state_dict}`` wrapper accepted), or one message whose fix
    is ``fix`` (what the caller accepts)."""
    path = Path(path)
    if path.is_dir():
        raise SegLoopError(f"is a folder, not a {what} file", path=path, fix=fix)
    if not path.is_file():
        raise SegLoopError(f"{what} file not found", path=path, fix=fix)
    try:
        from train.checkpoint import quiet_load

        state = quiet_load(path)
    except Exception as exc:
        from train.checkpoint import refused_pickle_message

        refused = refused_pickle_message(exc, f"the {what}")
        if refused:
            raise SegLoopError(refused, path=path, fix="give a plain state dict (tensors only): "
                                                       "torch.save(model.state_dict(), PATH)") from None
        # torch's own text would suggest turning weights-only loading off, which SegLoop never does
        raise SegLoopError(f"cannot read the {what}: not a PyTorch state dict file (truncated, damaged, or another "
                           f"format; {type(exc).__name__})", path=path,
                           fix=f"{fix}; a state dict is written by torch.save(model.state_dict(), PATH)") from None
    if isinstance(state, dict) and "model_spec" in state:
        raise SegLoopError(f"is a SegLoop checkpoint, not {what}", path=path,
                           fix="start a model from a SegLoop run with model.init_from=PATH (or model.weights=PATH "
                               "for the same model and taxonomy)")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegLoopError(f"the {what} file is not a state dict (names to tensors)", path=path,
                           fix="save model.state_dict()")
    return state


def load_weights_file(module: nn.Module, path: str | Path, what: str, strip: Iterable[str] = (),
                      drop: Iterable[str] = (), fix: str = "use weights of the same architecture",
                      rename: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Load a state dict file into ``module``: every tensor the module has must be there with its shape.

    ``strip``: key prefixes removed first (``backbone.body.``); ``drop``: key prefixes neither side needs (a
    classifier's ``fc.``: the file's are not loaded, the module's are not required); ``rename``: the module's name
    of each remaining key, where the file comes from another library's layout. Returns ``{"file", "sha256"}`` for
    the run's record."""
    path = Path(path)
    state = read_state_dict(path, what, fix)
    for prefix in strip:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    drop = tuple(drop)
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    own = {k: v for k, v in module.state_dict().items() if not (drop and k.startswith(drop))}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    # a BatchNorm's step counter is not a weight: frozen norms have none, and a module may lack it either way
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
        raise SegLoopError(f"{what} do not match the {type(module).__name__}: {', '.join(parts)}", path=path,
                           fix=fix)
    module.load_state_dict(state, strict=False)
    return {"file": str(path.resolve()), "sha256": sha256_file(path)}
