"""The training configuration: ``configs/train/default.yaml`` is the schema; files and ``key=value`` override it.

``RULES`` holds what the types cannot say (positive sizes, counts and rates, the names of losses, optimisers and
schedules, a device that exists, folder-safe names), checked by ``core.config`` on every layer before anything is
built, so a bad value fails in a second with the key's name rather than minutes later inside the training loop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.config import Rule, resolve_config
from core.names import name_problem
from tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parent.parent
TRAIN_DEFAULT = ROOT / "configs" / "train" / "default.yaml"

# keys whose default is null, and the types they accept otherwise
NULLABLE: dict[str, tuple[type, ...]] = {
    "data.fold": (int, str),
    "data.train_list": (str,),
    "model.weights": (str,),
    "model.init_from": (str,),
    "loss.class_weights": (str, list),
    "train.time_limit": (float,),
    "output.name": (str,),
    "resume": (str,),
}

# the registries' names (train/losses.py LOSSES, train/schedule.py, the optimisers of train/engine.py); a test checks
# they agree, and they are spelled out here so that reading a config never imports torch
LOSS_NAMES = ("cross_entropy", "bce", "dice", "jaccard", "focal", "lovasz", "tversky")
LOSS_ALIASES = ("ce_dice",)  # cross_entropy+dice
CLASS_WEIGHT_SCHEMES = ("auto", "enet", "inverse", "median")
OPTIM_NAMES = ("adamw", "sgd")
SCHEDULE_NAMES = ("cosine", "poly", "constant")
SPLIT_NAMES = ("train", "val", "test")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_problem(value: Any) -> str | None:
    """A device that this machine has: ``cuda`` without a visible GPU (or ``cuda:3`` on a 2-GPU machine) would
    otherwise fail after the dataset is loaded, or, worse, silently train on the CPU."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        return f"must be auto, cpu, cuda or cuda:N, got {value!r}"
    if not value.startswith("cuda"):
        return None
    import torch  # only when a GPU is asked for: reading a CPU config stays torch-free

    if not torch.cuda.is_available():
        return f"is {value!r} but torch sees no CUDA GPU on this machine"
    index = int(value.split(":")[1]) if ":" in value else 0
    if index >= torch.cuda.device_count():
        return f"is {value!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s) (cuda:0..)"
    return None


def version_ref_problem(value: Any) -> str | None:
    """``data.version`` is a name, ``name@hash`` or the path of an existing version folder; a name that is not a path
    may not climb out of the versions folder (``../x``)."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        if (Path(value) / "manifest.json").is_file():
            return None
        return f"is a path but {value!r} is not a dataset version folder (no manifest.json)"
    name = value.split("@", 1)[0] if isinstance(value, str) else value
    problem = name_problem(name)
    return f"{problem} (a version name)" if problem else None


def class_weights_problem(value: Any) -> str | None:
    if isinstance(value, str) and value not in CLASS_WEIGHT_SCHEMES:
        return f"must be one of {', '.join(CLASS_WEIGHT_SCHEMES)}, a list of weights or null, got {value!r}"
    if isinstance(value, list) and not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                                           for w in value):
        return f"must hold numbers >= 0 (one per class), got {value!r}"
    if isinstance(value, list) and value and not any(w > 0 for w in value):
        return "has no weight above 0: every pixel would count for nothing (the loss is 0 / 0)"
    return None


def loss_name_problem(value: Any) -> str | None:
    """``loss.name`` is one term or terms joined by ``+``, each a registered loss."""
    import difflib

    if not isinstance(value, str) or not value:
        return f"must name a loss, got {value!r}"
    if value in LOSS_ALIASES:
        return None
    terms = [t.strip() for t in value.split("+")]
    for t in terms:
        if t not in LOSS_NAMES:
            close = difflib.get_close_matches(t, LOSS_NAMES, n=1)
            return (f"names the loss {t!r}, which does not exist" + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f"; losses: {', '.join(LOSS_NAMES)}, combined with +")
    if len(set(terms)) != len(terms):
        return f"names a term twice ({value!r}); weight a term with loss.args.<term>.weight"
    return None


def transforms_problem(value: Any) -> str | None:
    """``augment.transforms`` is a list of ``{name: <albumentations transform>, <its arguments>}``; the names and
    arguments are checked against albumentations when the augmentation is built."""
    if not isinstance(value, list):
        return f"must be a list of {{name: Transform, ...arguments}}, got {value!r}"
    for i, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            return f"item {i} must be a mapping with the transform's name, e.g. {{name: GaussianBlur, p: 0.2}}, " \
                   f"got {t!r}"
    return None


def train_ids_problem(value: Any) -> str | None:
    """``data.train_ids`` lists image ids (integers) or content hashes (hex strings); which of them the version's
    train split holds is checked once the version is read."""
    if not isinstance(value, list):
        return f"must be a list of image ids or content hashes, got {value!r}"
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, int) and v < 0) or v == "":
            return f"holds {v!r}: each entry is an image id (an integer >= 0) or a content hash (hex digits)"
    return None


def _names_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of class names, got {value!r}"
    return None


def _path_given(value: Any) -> str | None:
    """An empty path is a typo, not "not set" (which is null): ``model.init_from=''`` would train from scratch."""
    return "is empty" if isinstance(value, str) and not value.strip() else None


def _ordered_range(value: Any) -> str | None:
    return None if value[0] <= value[1] else f"must be [low, high] with low <= high, got {value!r}"


RULES: dict[str, Rule] = {
    "task": Rule(choices=TASK_NAMES),
    "data.version": Rule(check=version_ref_problem,
                         fix="set data.version to a version name (demo), name@hash, or a version folder"),
    "data.image_size": Rule(length=2, min=1, check=lambda v: None if all(isinstance(x, int) and not isinstance(
        x, bool) for x in v) else f"must be two whole numbers of pixels, got {v!r}",
        fix="set data.image_size to [height, width], two integers >= 1"),
    "data.train_split": Rule(choices=SPLIT_NAMES),
    "data.val_split": Rule(choices=SPLIT_NAMES),
    "data.fold": Rule(check=lambda v: None if v == "all" or (isinstance(v, int) and v >= 0) else
                      f"must be a fold number (0, 1, ...) or all, got {v!r}",
                      fix="set data.fold=k to train on fold k, or data.fold=all for one run per fold"),
    "data.train_ids": Rule(check=train_ids_problem),
    "data.workers": Rule(min=0),
    "loss.name": Rule(check=loss_name_problem, fix="set loss.name to a loss or losses joined by +, e.g. "
                                                   "cross_entropy, bce+dice+jaccard"),
    "loss.class_weights": Rule(check=class_weights_problem),
    "optim.name": Rule(choices=OPTIM_NAMES),
    "optim.lr": Rule(above=0),
    "optim.weight_decay": Rule(min=0),
    "optim.momentum": Rule(min=0, below=1),
    "schedule.name": Rule(choices=SCHEDULE_NAMES),
    "schedule.warmup_steps": Rule(min=0),
    "schedule.min_lr_ratio": Rule(min=0, max=1),
    "schedule.power": Rule(above=0),
    "augment.hflip": Rule(min=0, max=1),
    "augment.scale": Rule(length=2, above=0, check=_ordered_range),
    "augment.color": Rule(min=0, max=1),
    "augment.brightness": Rule(min=0),
    "augment.contrast": Rule(min=0),
    "augment.saturation": Rule(min=0),
    "augment.hue": Rule(min=0, max=0.5),
    "augment.copy_paste": Rule(min=0, max=1),
    "augment.transforms": Rule(check=transforms_problem),
    "augment.copy_blob.p": Rule(min=0, max=1),
    "augment.copy_blob.classes": Rule(check=_names_list),
    "augment.copy_blob.max_blobs": Rule(min=1),
    "augment.copy_blob.band": Rule(min=0, max=1),
    "augment.preview": Rule(min=0),
    "train.epochs": Rule(min=1),
    "train.batch_size": Rule(min=1),
    "train.time_limit": Rule(above=0),
    "train.seed": Rule(min=0),
    "train.device": Rule(check=device_problem, fix="set train.device to auto (a GPU when there is one), cpu, or a "
                                                   "cuda:N this machine has (nvidia-smi lists them)"),
    "train.eval_every": Rule(min=1),
    "train.log_every": Rule(min=1),
    "train.log_images": Rule(min=0),
    "train.grad_clip": Rule(min=0),
    "train.freeze_encoder_epochs": Rule(min=0),
    "train.early_stop.patience": Rule(min=0),
    "train.early_stop.min_delta": Rule(min=0, below=1),  # the validation metrics are in [0, 1]
    "train.overfit_batch": Rule(min=0),
    "train.overfit_target": Rule(above=0, max=1),
    "train.overfit_steps": Rule(min=1),
    "output.name": Rule(name=True),
    **{key: Rule(check=_path_given, fix=f"give {key} a path, or null (leave it out) for none")
       for key in ("model.weights", "model.init_from", "data.train_list", "resume", "data.config",
                   "data.versions_root", "output.runs_dir")},
}


MODEL_KEYS = ("name", "args", "weights", "init_from")


def upgrade_run_config(path: Path) -> Path:
    """A run's ``config.yaml`` in today's schema. Runs trained before models took their own ``model.args`` stored
    the arguments beside the name (``model.width``); such a file is rewritten into a temporary copy with them
    under ``model.args`` (the run folder is not touched), so those runs still resume."""
    import tempfile

    from core.config import dump_yaml, read_yaml

    cfg = read_yaml(path)
    model = cfg.get("model") or {}
    legacy = {k: v for k, v in model.items() if k not in MODEL_KEYS}
    if not legacy:
        return path
    cfg["model"] = {**{k: model[k] for k in MODEL_KEYS if k in model}, "name": model.get("name", "resunet"),
                    "args": {**(model.get("args") or {}), **legacy}}
    fd, tmp = tempfile.mkstemp(prefix="segloop-run-config-", suffix=".yaml")
    with open(fd, "w") as fh:
        fh.write(dump_yaml(cfg))
    return Path(tmp)


# ------------------------------------------------------------------------------------------------ reasons (why:)
def _why_keys(schema: dict[str, Any]) -> list[str]:
    from core.config import _all_prefixes, flatten

    return sorted(k for k in set(flatten(schema)) | _all_prefixes(schema) if k != WHY and not k.startswith(WHY + "."))


def why_problem(value: Any) -> str | None:
    """``why:`` maps config keys (dotted, or nested like the config) to the reason for their value: every key must be
    one the config has (a reason for a misspelt key would silently explain nothing), every reason a string."""
    import difflib

    from core.config import _under_free_section, flatten, load_with_bases

    if not isinstance(value, dict):
        return f"must map config keys to reasons, e.g. {{optim.lr: \"...\"}}, got {value!r}"
    schema = load_with_bases(TRAIN_DEFAULT)
    valid = _why_keys(schema)
    for key, reason in flatten(value).items():
        if key not in valid and not _under_free_section(key, schema):
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            return f"names '{key}', which is not a config key{hint}"
        if not isinstance(reason, str) or not reason.strip():
            return f"gives '{key}' the reason {reason!r}: a reason is a non-empty string"
    return None


WHY = "why"
RULES[WHY] = Rule(check=why_problem, fix="give each reason under the config key it explains, e.g. "
                                         "why: {optim.lr: \"halved: the loss diverged at 0.006\"}")


def _drop_changed(why: dict[str, str], keys: list[str], kept: set[str] | dict[str, str]) -> None:
    """Remove the reasons of ``keys`` (and of the keys under them) that ``kept`` does not give again. A layer that
    names a model or a loss (``model.name``) starts its ``args`` afresh (``core.config.deep_merge``): the reasons
    for the arguments it replaced go too."""
    keys = [*keys, *(k.removesuffix(".name") + ".args" for k in keys if k in ("model.name", "loss.name"))]
    for key in keys:
        for explained in [w for w in why if (w == key or w.startswith(key + ".")) and w not in kept]:
            del why[explained]


def file_reasons(path: str | Path) -> dict[str, str]:
    """The ``why:`` reasons of a config file and its ``base:`` chain, flat. A layer that sets a key without giving
    a reason drops the reason its bases gave for that key: it explained the value the layer replaced."""
    from core.config import BASE_KEY, flatten, project_path, read_yaml

    path = project_path(path)
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    why: dict[str, str] = {}
    for b in [base] if isinstance(base, str) else list(base or []):
        why.update(file_reasons(path.parent / b))
    own = flatten(data.pop(WHY, None) or {})
    _drop_changed(why, list(flatten(data)), own)
    why.update(own)
    return why


def load_train_config(config: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved config. ``why`` comes back as a flat ``{dotted key: reason}`` map; a reason given for a key that
    a later layer (a config file over its base, the command line over the file) changes without a reason of its own
    is dropped: it explained another value."""
    from core.config import flatten, parse_override

    cfg = resolve_config(TRAIN_DEFAULT, config, overrides, NULLABLE, RULES)
    why = file_reasons(config if config is not None else TRAIN_DEFAULT)
    given: dict[str, str] = {}  # reasons on the command line: why.KEY="..." or why={KEY: "..."}
    changed: list[str] = []
    for key, value in map(parse_override, overrides or []):
        if key == WHY or key.startswith(WHY + "."):
            given.update(flatten({key.removeprefix(WHY).lstrip("."): value}) if key != WHY else flatten(value or {}))
        else:
            changed.append(key)
    _drop_changed(why, changed, given)
    why.update(given)
    cfg[WHY] = why
    return cfg


# ------------------------------------------------------------------------------------------------- the command
COMMAND = "python -m train.run"
_RUN_PY = re.compile(r"^(?:\S*python[\d.]*\s+(?:-\S+\s+)*)?\S*train/run\.py(?=\s|$)")


def train_command(argv: list[str], cfg: dict[str, Any]) -> str:
    """The command as a user types it: ``python -m train.run --config ... key=value`` (shell-quoted). Under
    ``python -m train.run`` (or torchrun) ``argv[0]`` is the absolute path of train/run.py on this machine, which
    says nothing to a reader elsewhere; a run started from Python (``train(cfg)``) gets the command that rebuilds its
    config: every key that differs from the default as ``key=value``."""
    import shlex

    import yaml

    if argv and argv[0].replace("\\", "/").endswith("train/run.py"):
        return " ".join([COMMAND, *(shlex.quote(a) for a in argv[1:])])
    from core.config import flatten, load_with_bases

    default = flatten(load_with_bases(TRAIN_DEFAULT))
    args = []
    for key, value in flatten({k: v for k, v in cfg.items() if k != WHY}).items():
        if key not in default or default[key] != value:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
            args.append(shlex.quote(f"{key}={text}"))
    return " ".join([COMMAND, *args])


def shown_command(recorded: str) -> str:
    """A recorded command for display: older runs stored ``/abs/path/train/run.py args``; shown as typed."""
    return _RUN_PY.sub(COMMAND, recorded.strip(), count=1)
