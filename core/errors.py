"""User-facing errors.

A ``SegLoopError`` is bad input, not a bug: the CLIs print it without a traceback and exit with status 2. Each one
names the file (or key) at fault and says what to do about it, because the person reading it is a user at a
terminal, not a developer in a debugger.
"""

from __future__ import annotations

from pathlib import Path


class SegLoopError(Exception):
    """An error caused by the user's input, with the offending path and a suggested fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message
        if self.path and self.path not in text:
            text = f"{self.path}: {text}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ConfigError(SegLoopError):
    """An unknown key, a wrong type or an unreadable configuration file."""


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run a CLI ``main`` and turn ``SegLoopError`` into a one-paragraph message and exit status 2."""
    import sys

    try:
        return int(main(argv) or 0)
    except SegLoopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
