"""One configuration mechanism for every stage: YAML files with inheritance, ``key=value`` overrides, strict keys.

The default file of a stage (e.g. ``configs/train/default.yaml``) is the schema: every key that exists is in it,
and its value's type is the key's type. A user file may start with ``base: other.yaml`` (a path relative to
itself) and then only states what differs. Overrides are dotted keys (``optim.lr=0.001``) whose values are parsed as
YAML. An unknown key is rejected with the closest valid keys, and a value of the wrong type is rejected with the
expected type, because a typo that silently falls back to a default wastes a whole training run.

Beyond types, each stage passes a ``rules`` table (``{dotted key or glob: Rule(...)}``, e.g. ``train/config.py:
RULES``) with ranges, choices, list lengths, folder-name safety and custom checks. Every layer (user file, command
line) is checked against it, so ``train.batch_size=0`` fails at once, naming the key and where it was set, instead
of deep inside a training loop after the run folder exists. This is the one validation layer for config values.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError, SegLoopError
from core.fsio import read_text, resolve_path
from core.names import name_problem

BASE_KEY = "base"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(path: str | Path) -> Path:
    """A path as given if it exists, else relative to the project root: shipped configs work from any directory."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    q = PROJECT_ROOT / p
    return q if q.exists() else p


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers: ``1e-3`` and ``5e4`` are floats (YAML 1.1, which PyYAML
    follows, wants ``1.0e-3`` and reads ``1e-3`` as a string, so ``lr: 1e-3`` in a file would be refused as "not a
    number" while the same value on the command line is not)."""


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml_text(text: str) -> Any:
    """YAML text as SegLoop reads every config, override and taxonomy (``ConfigLoader``)."""
    return yaml.load(text, Loader=ConfigLoader)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping, naming the file in any error."""
    path = Path(path)
    try:
        text = read_text(path, "config file")
    except SegLoopError as exc:  # missing, unreadable, not UTF-8: the same message, as a config error
        raise ConfigError(exc.message, path=exc.path, fix=exc.fix) from None
    try:
        data = load_yaml_text(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML does not parse: {exc}", path=path, fix="fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping of keys to values, not {type(data).__name__}", path=path,
                          fix="write the config as key: value lines (sections nested by indentation), as "
                              "configs/train/default.yaml is")
    return data


def load_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load ``path`` and, recursively, the files named by its ``base:`` key (the file's own keys win)."""
    try:
        path = resolve_path(path)
    except SegLoopError as exc:
        raise ConfigError(exc.message, path=exc.path, fix=exc.fix) from None
    if path in _seen:
        raise ConfigError("config inherits from itself through 'base'", path=path)
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else list(base)
    merged: dict[str, Any] = {}
    for b in bases:
        merged = deep_merge(merged, load_with_bases(path.parent / b, (*_seen, path)))
    return deep_merge(merged, data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; mappings merge, everything else (lists included) is replaced.

    A section's ``args`` belong to the thing its ``name`` names (``model: {name, args}``, ``loss: {name, args}``):
    an update that names another one starts its ``args`` afresh, so a recipe or a ``model.name=unet`` over the
    demo's residual UNet does not inherit arguments that UNet does not have."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            if "name" in value and "args" in out[key] and value["name"] != out[key].get("name"):
                out[key] = {**out[key], "args": {}}
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; empty mappings stay as leaves (they are free-form sections)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=1e-3'`` -> ``('optim.lr', 0.001)``; the value is parsed as YAML (so lists and null work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value", fix="write e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):  # train=5 train.epochs=3: the section was set to a value before
            section = ".".join(parts[: i + 1])
            raise ConfigError(f"'{key}' sets a key under '{section}', which an earlier override set to {node!r}",
                              fix=f"set {section} to a mapping, or drop the override {section}={node!r}")
    node[parts[-1]] = value


def _hint(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    close += [k for k in valid if k.rsplit(".", 1)[-1] == leaf and k not in close]
    if not close:
        return "see the default config for valid keys"
    return f"did you mean {', '.join(repr(c) for c in close[:3])}?"


def check_keys(cfg: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    """Reject keys of ``cfg`` that the schema lacks (recursing into sub-mappings the schema defines)."""
    valid = list(flatten(schema).keys()) + [k for k in _all_prefixes(schema)]
    for key, _value in flatten(cfg).items():
        if key in valid or _under_free_section(key, schema):
            continue
        # A mapping given where the schema has a scalar leaf is a type error, reported by check_types.
        if any(key.startswith(v + ".") for v in flatten(schema)):
            continue
        raise ConfigError(f"unknown config key '{key}'", path=where,
                          fix=_free_section_hint(key, schema) or _hint(key, sorted(flatten(schema))))


def _free_section_hint(key: str, schema: Mapping[str, Any]) -> str | None:
    """``model.width`` where ``model.args`` is a free section: the argument belongs under it (``model.args.width``),
    which the closest schema key (``model.weights``) would not say."""
    parent, _, leaf = key.rpartition(".")
    node: Any = schema
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, Mapping) else None
    if not parent or not isinstance(node, Mapping) or difflib.get_close_matches(leaf, list(node), n=1, cutoff=0.8):
        return None  # a misspelt key of the section itself (model.wieghts) gets the closest key
    free = [k for k, v in node.items() if isinstance(v, Mapping) and not v]
    if not free:
        return None
    return "did you mean " + " or ".join(f"'{parent}.{f}.{leaf}'" for f in free) + \
        f"? ('{leaf}' is not a key of {parent}; free arguments go under {', '.join(f'{parent}.{f}' for f in free)})"


def _all_prefixes(schema: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for key in flatten(schema):
        parts = key.split(".")
        for i in range(1, len(parts)):
            out.add(".".join(parts[:i]))
    return out


def _under_free_section(key: str, schema: Mapping[str, Any]) -> bool:
    """Keys under a section whose default is ``{}`` are free-form (e.g. per-class maps)."""
    node: Any = schema
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return False
        if part not in node:
            return False
        node = node[part]
        if isinstance(node, Mapping) and not node:
            return True
    return False


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def check_types(cfg: Mapping[str, Any], schema: Mapping[str, Any], nullable: Mapping[str, tuple[type, ...]],
                where: str) -> None:
    """Every leaf must have the type of its default; ``nullable`` names the keys that may be null and the other
    types they accept (a key whose default is ``auto`` may also take a list, say)."""
    flat_schema = flatten(schema)
    sections = _all_prefixes(schema)
    for key, value in flatten(cfg).items():
        if key not in flat_schema:
            if key in sections and not isinstance(value, Mapping):  # train.early_stop=5, data=null, schedule=[1]
                inner = sorted(k for k in flat_schema if k.startswith(key + "."))
                raise ConfigError(f"config key '{key}' is a section of {len(inner)} keys and must be a mapping, got "
                                  f"{value!r} ({type(value).__name__})", path=where,
                                  fix=f"set the keys under it, e.g. {inner[0]}={flat_schema[inner[0]]!r}, or give "
                                      f"the section as a mapping: {key}={{{inner[0].rsplit('.', 1)[1]}: ...}}")
            continue
        default = flat_schema[key]
        if default is None:
            allowed = nullable.get(key)
            if value is None or allowed is None or _is_type(value, allowed):
                continue
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
        else:
            allowed = (type(default), *nullable.get(key, ()))
            if (value is None and key in nullable) or _is_type(value, allowed):
                continue
            expected = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in allowed))
        raise ConfigError(
            f"config key '{key}' must be {expected}, got {value!r} ({type(value).__name__})", path=where,
            fix=f"set {key} to {expected} (default: {default!r})",
        )


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    for t in types:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is int and isinstance(value, bool):
            continue
        if isinstance(value, t):
            return True
    return False


@dataclass(frozen=True)
class Rule:
    """What a config value must be beyond its type. Bounds apply to a number, or to every item of a list.

    ``min`` / ``max``: inclusive bounds; ``above`` / ``below``: exclusive ones; ``choices``: the allowed values;
    ``length``: a list of exactly that many items; ``name``: one folder name that cannot leave its parent
    (``core.names``), ``forbidden`` adding characters of the caller's syntax; ``check``: a custom test returning the
    problem in words (completing "config key 'k' ...") or None; ``fix``: replaces the generated fix. A null value
    (where the key is nullable) is never checked.
    """

    min: float | None = None
    above: float | None = None
    max: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    length: int | None = None
    name: bool = False
    forbidden: str = ""
    check: Callable[[Any], str | None] | None = None
    fix: str | None = None

    def bounds(self) -> str:
        parts = [f">= {self.min:g}" if self.min is not None else "", f"> {self.above:g}" if self.above is not None
                 else "", f"<= {self.max:g}" if self.max is not None else "",
                 f"< {self.below:g}" if self.below is not None else ""]
        return " and ".join(p for p in parts if p)

    def describe(self) -> str:
        """The rule in words, for the fix line."""
        if self.choices is not None:
            return "one of: " + ", ".join(str(c) for c in self.choices)
        if self.name:
            return "a plain name (no '/', '\\', '..'; not starting with '.')"
        text = f"a number {self.bounds()}" if self.bounds() else "a valid value"
        if self.length is not None:
            text = f"a list of {self.length} numbers, each {self.bounds()}" if self.bounds() else \
                f"a list of {self.length} items"
        return text

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule, or None."""
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"must be one of {', '.join(repr(c) for c in self.choices)}, got {value!r}{hint}"
        if self.name:
            p = name_problem(value, self.forbidden)
            if p:
                return f"{p} (it names a folder and may not leave its parent folder)"
        if self.length is not None and (not isinstance(value, list) or len(value) != self.length):
            return f"must be a list of {self.length} items, got {value!r}"
        if self.bounds():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    return f"must hold numbers {self.bounds()}, got {value!r}"
                if not math.isfinite(item) or not self._in_bounds(item):
                    return f"must be {self.bounds()}" + (" (each item)" if isinstance(value, list) else "") + \
                        f", got {value!r}"
        if self.check is not None:
            return self.check(value)
        return None

    def _in_bounds(self, x: float) -> bool:
        return ((self.min is None or x >= self.min) and (self.above is None or x > self.above)
                and (self.max is None or x <= self.max) and (self.below is None or x < self.below))


def _nodes(cfg: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, value) of a config: the leaves and the sections above them (a rule may judge a whole
    mapping, e.g. that ``split.same_as`` only names splits)."""
    out: list[tuple[str, Any]] = []
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        out.append((full, value))
        if isinstance(value, Mapping):
            out += _nodes(value, full + ".")
    return out


def check_rules(cfg: Mapping[str, Any], rules: Mapping[str, Rule], where: str,
                schema: Mapping[str, Any] | None = None) -> None:
    """Raise a ``ConfigError`` naming the key, the value, where it was set and the fix, for the first value of
    ``cfg`` that breaks its rule. Rule keys are dotted keys or globs (``split.ratios.*``)."""
    defaults = flatten(schema) if schema else {}
    for key, value in _nodes(cfg):
        if value is None:
            continue
        for pattern, rule in rules.items():
            if key != pattern and not fnmatch.fnmatchcase(key, pattern):
                continue
            problem = rule.problem(value)
            if problem:
                default = f" (default: {defaults[key]!r})" if defaults.get(key) is not None else ""
                raise ConfigError(f"config key '{key}' {problem}", path=where,
                                  fix=rule.fix or f"set {key} to {rule.describe()}{default}")


def resolve_config(default_path: str | Path, config_path: str | Path | None = None, overrides: list[str] | None = None,
                   nullable: Mapping[str, tuple[type, ...]] | None = None,
                   rules: Mapping[str, Rule] | None = None) -> dict[str, Any]:
    """Defaults <- user file (with its bases) <- ``key=value`` overrides, each layer checked against the schema
    (keys, types) and the ``rules`` (ranges, choices, names)."""
    schema = load_with_bases(default_path)
    nullable = nullable or {}
    rules = rules or {}
    cfg = copy.deepcopy(schema)
    if config_path is not None:
        config_path = project_path(config_path)
        user = load_with_bases(config_path)
        check_keys(user, schema, str(config_path))
        check_types(user, schema, nullable, str(config_path))
        check_rules(user, rules, str(config_path), schema)
        cfg = deep_merge(cfg, user)
    override_dict: dict[str, Any] = {}
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(override_dict, key, value)
    if override_dict:
        check_keys(override_dict, schema, "command line")
        check_types(override_dict, schema, nullable, "command line")
        check_rules(override_dict, rules, "command line", schema)
        cfg = deep_merge(cfg, override_dict)
    return cfg


def dump_yaml(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)
