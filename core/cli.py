"""Argument types shared by every command line.

Counts such as ``--n``, ``--k``, ``--tag-k`` or ``--workers`` are checked where they are parsed, once, with one
wording: ``--n 0`` or ``--k -1`` would otherwise reach code that silently does nothing (an empty gallery replacing a
full one) or everything (a negative slice taking a whole pool). argparse turns the ``ArgumentTypeError`` raised
here into ``error: argument --n: ...`` and exit status 2, the same status as every other bad input.
"""

from __future__ import annotations

import argparse


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be at least 1 (``--n``, ``--k``, ``--tag-k``, ``--workers``)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value} (fix: pass a whole number >= 1)")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for values where 0 is meaningful but a negative number is not (seeds, offsets)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value} (fix: pass a whole number >= 0)")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=`` for durations and sizes that must be above 0 (and finite)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text} (fix: e.g. 24)")
    return value


def port_number(text: str) -> int:
    """argparse ``type=`` for a TCP port: 1..65535 (0 would let the OS pick one nobody could find)."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 1..65535, got {value} (fix: e.g. 5151 or 8080)")
    return value


def output_folder(text: str) -> str:
    """An output folder option (``--out``): an empty one would be read as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text
