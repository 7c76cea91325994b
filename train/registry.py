"""Things built by name with their own arguments: models per task, encoders, losses.

A registry maps a name to a constructor. ``build(name, args, **fixed)`` checks ``args`` (the free ``model.args``
section of a config) against the constructor's signature before calling it, so an unknown argument names the valid
ones instead of failing deep inside a constructor, and a model never receives another model's arguments. The
arguments a task supplies itself (``num_classes``) are ``fixed`` and may not be set from the config.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from core.errors import SegLoopError

T = TypeVar("T")


def _kind_problem(annotation: Any, value: Any) -> str | None:
    """Whether ``value`` is of the kind the argument is declared as (``bool``, ``int``, ``float``, ``str``; an
    argument declared otherwise, ``int | list[int]`` say, is checked by its model): ``attention: maybe`` or
    ``width: "8"`` would otherwise reach the model and fail there with Python's own words, or be kept as given."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if kind == "float":
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if kind == "str":
        return None if isinstance(value, str) else "a string"
    return None


class Registry(Generic[T]):
    """Named constructors of one kind (``what`` says which, for messages: 'semantic model')."""

    def __init__(self, what: str, key: str, args_key: str | None = None) -> None:
        self.what = what
        self.key = key  # the config key that selects an entry, for messages ('model.name')
        self.args_key = args_key or f"{key.rsplit('.', 1)[0]}.args"  # where its arguments go ('model.args')
        self._entries: dict[str, Callable[..., T]] = {}
        self._init_only: dict[str, frozenset[str]] = {}

    def register(self, name: str, init_only: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@SEMANTIC_MODELS.register("resunet")`` over a class or a builder function.

        ``init_only``: the entry's arguments that only initialise weights (a pretrained file): a checkpoint's own
        weights replace what they load, so they are not part of the architecture two checkpoints must share, and
        an entry is rebuilt from a checkpoint without them."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.what} '{name}' registered twice")
            unknown = set(init_only) - set(inspect.signature(fn).parameters)
            if unknown:
                raise ValueError(f"{self.what} '{name}': init_only names no argument: {sorted(unknown)}")
            self._entries[name] = fn
            self._init_only[name] = frozenset(init_only)
            return fn

        return deco

    def init_only(self, name: str) -> frozenset[str]:
        """The arguments of ``name`` that only initialise weights (empty for an unknown name)."""
        return self._init_only.get(name, frozenset())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SegLoopError(f"unknown {self.what} '{name}'{hint}",
                               fix=f"{self.key} must be one of: {', '.join(self.names())}")
        return self._entries[name]

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The constructor's configurable parameters (keyword arguments, ``self`` and ``*args`` left out)."""
        fn = self.get(name)
        sig = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn)
        return {p.name: p for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def defaults(self, name: str, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
        """Every configurable argument with its default (required ones as None), for reports and ``--help``."""
        return {k: (None if p.default is p.empty else p.default)
                for k, p in self.parameters(name).items() if k not in fixed}

    def check_args(self, name: str, args: dict[str, Any], fixed: tuple[str, ...] = (),
                   args_key: str | None = None) -> None:
        """Refuse an argument ``name`` does not have, one SegLoop sets, or a missing required one. ``args_key``: the
        config key the arguments were given under, for messages (default: this registry's)."""
        key_of_args = args_key or self.args_key
        params = self.parameters(name)
        valid = [k for k in params if k not in fixed]
        for key in args:
            if key in fixed:
                raise SegLoopError(f"{key_of_args}.{key} is set by SegLoop for {self.what} '{name}'",
                                   fix=f"remove {key} from {key_of_args}")
            if key not in params:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise SegLoopError(f"{self.what} '{name}' has no argument '{key}'",
                                   fix=f"{hint}valid arguments of {name}: {', '.join(valid) or 'none'}")
        for key, value in args.items():
            problem = _kind_problem(params[key].annotation, value)
            if problem:
                raise SegLoopError(f"{key_of_args}.{key} must be {problem}, got {value!r}",
                                   fix=f"python -m train.run --models lists {name}'s arguments and their defaults")
        missing = [k for k, p in params.items() if p.default is p.empty and k not in args and k not in fixed]
        if missing:
            raise SegLoopError(f"{self.what} '{name}' needs {', '.join(missing)}",
                               fix=f"set {key_of_args}.{missing[0]}")

    def build(self, name: str, args: dict[str, Any] | None = None, **fixed: Any) -> T:
        args = dict(args or {})
        self.check_args(name, args, tuple(fixed))
        try:
            return self.get(name)(**fixed, **args)
        except (ValueError, TypeError) as exc:
            raise SegLoopError(f"{self.what} '{name}' refused its arguments: {exc}",
                               fix=f"python -m train.run --models lists {name}'s arguments and their meaning") from None

    def summary(self, name: str) -> str:
        """The first line of the constructor's docstring: what the entry is, for ``--models``."""
        return (inspect.getdoc(self.get(name)) or "").split("\n\n")[0].replace("\n", " ").strip()

    def describe(self, name: str) -> dict[str, str]:
        """Meaning of each argument, from the ``Args:`` block of the constructor's docstring (one line each)."""
        fn = self.get(name)
        doc = inspect.getdoc(fn) or ""
        out: dict[str, str] = {}
        in_args = False
        for line in doc.splitlines():
            if line.strip() == "Args:":
                in_args = True
                continue
            if in_args:
                m = re.match(r"\s+(\w+):\s*(.*)", line)
                if m:
                    out[m.group(1)] = m.group(2)
                elif line.strip() and not line.startswith(" "):
                    break
                elif out and line.strip():
                    last = next(reversed(out))
                    out[last] += " " + line.strip()
        return out
