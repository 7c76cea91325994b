"""One rule for names that become folder names (dataset versions, runs, gallery and list names).

A name such as ``output.name=../../x`` or a version called ``a/b`` would make SegLoop write outside the folder the
user configured (``runs/``, ``data/versions/``). Every stage checks such names here, before anything is written,
so the rule and its message are the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import SegLoopError

MAX_NAME_BYTES = 255  # the longest file name Linux, macOS and Windows file systems accept


def name_problem(value: object, forbidden: str = "") -> str | None:
    """Why ``value`` cannot be a single folder name, or None when it can. ``forbidden`` adds characters that have
    a meaning in the caller's own syntax (``@`` separates a version's name from its hash)."""
    if not isinstance(value, str):
        return f"must be a string, got {value!r}"
    if not value.strip():
        return "must not be empty"
    if value != value.strip():
        return f"must not start or end with spaces, got {value!r}"
    bad = [c for c in "/\\" + forbidden if c in value]
    if bad:
        return f"must not contain {' or '.join(repr(c) for c in bad)}, got {value!r}"
    if value.startswith("."):
        return f"must not start with '.' (hidden or parent folder), got {value!r}"
    if any(ord(c) < 32 for c in value):
        return f"must not contain control characters, got {value!r}"
    if len(value.encode()) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def safe_name(value: object, key: str, path: str | Path | None = None, forbidden: str = "") -> str:
    """``value`` if it is one folder name that stays inside its parent, else a ``SegLoopError`` naming ``key``."""
    problem = name_problem(value, forbidden)
    if problem:
        raise SegLoopError(f"{key} {problem}: it names a folder and may not leave its parent folder", path=path,
                           fix=f"set {key} to a plain name such as 'my-run-1' (letters, digits, '-', '_'; "
                               f"no '/', '\\', '..'{', ' + repr(forbidden) if forbidden else ''}; "
                               f"not starting with '.')")
    return value  # type: ignore[return-value]
