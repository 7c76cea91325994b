"""User-facing errors.

A ``SegLoopError`` is bad input, not a bug: the CLIs print it without a traceback and exit with status 2. Each one
names the file (or key) at fault and says what to do about it, because the person reading it is a user at a
terminal, not a developer in a debugger.
"""

from __future__ import annotations

import errno
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


# errno -> (what happened, what to do): the operating system's errors a user can cause and fix, in their words.
_WRITE_ELSEWHERE = "or point the output option at a folder you can write to"
OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", f"give your user access to it (ls -l, chmod, chown) {_WRITE_ELSEWHERE}"),
    errno.EPERM: ("operation not permitted", f"give your user access to it (ls -l, chmod, chown) {_WRITE_ELSEWHERE}"),
    errno.EROFS: ("the file system is read-only", f"remount it read-write {_WRITE_ELSEWHERE}"),
    errno.ENOSPC: ("no space left on the device", "free disk space (df -h shows which disk is full) or write to "
                                                  "another disk, then run the command again"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota or write to another disk"),
    errno.ELOOP: ("too many levels of symbolic links (a symlink loop)",
                  "repair the symbolic link (ls -l shows where each link points) or use the real path"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter name or a shallower folder"),
    errno.ENOENT: ("not found", "check the path (relative paths start at the current folder)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("is a folder where a file was expected", "give the path of a file"),
    errno.ENOTEMPTY: ("folder is not empty", "remove it or choose another name"),
    errno.EEXIST: ("already exists", "remove it or choose another name"),
    errno.EIO: ("input/output error", "check the disk (dmesg) and retry"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and retry"),
}


def article(word: str) -> str:
    """'a' or 'an' before ``word`` in a message ("an instance model", "a semantic model")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def os_error(exc: OSError, path: str | Path | None = None) -> SegLoopError | None:
    """The ``SegLoopError`` for an operating-system error a user can fix, or None for one that is a bug (a refused
    connection, say, keeps its traceback). The file named is the one the error names, else ``path``."""
    known = OS_ERRORS.get(exc.errno or -1)
    if known is None:
        return None
    what, fix = known
    where = exc.filename if exc.filename is not None else path
    extra = f" (and {exc.filename2})" if getattr(exc, "filename2", None) else ""
    return SegLoopError(f"{what}{extra}", path=where, fix=fix)


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run a CLI ``main`` and turn bad input into a one-paragraph message and exit status 2.

    Bad input is a ``SegLoopError`` or an operating-system error the user can fix (a read-only or full disk, a
    symlink loop, a denied permission): either prints ``error: <file>: <what>`` and ``fix: ...``. argparse's own
    exit (bad option, ``--help``) returns its status, so ``main(argv)`` can be tested in-process.
    """
    import sys

    try:
        return int(main(argv) or 0)
    except SegLoopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        err = os_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
