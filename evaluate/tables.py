"""The words and tables of the report and the comparison of runs: one Markdown table renderer (every cell escaped),
inline code, figures, SegLoop's augmentation pipeline in words, and the Markdown-to-HTML page (CommonMark through
markdown-it-py, raw HTML off). No torch: ``evaluate compare`` reads run folders in a second."""

from __future__ import annotations

import functools
import html
import re
from typing import Any

import numpy as np
from markdown_it import MarkdownIt


def cell(value: Any) -> str:
    """A table cell's Markdown: ``|`` escaped (GitHub's rule, inside code spans too), line breaks as spaces."""
    return re.sub(r"\s*\n\s*", " ", str(value)).replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """The one table renderer: every cell escaped, so a value holding ``|`` stays in its column."""
    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def code(value: Any) -> str:
    """Inline code holding ``value`` (a longer backtick fence when the value itself holds backticks)."""
    text = str(value)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def standard_augmentations(a: dict[str, Any], geometric: list[str], mixing: list[str]) -> list[str]:
    """SegLoop's own augmentation pipeline in words: flip, the task's geometric steps, colour jitter, mixing."""
    augs = [f"horizontal flip p={a['hflip']}"] if a.get("hflip") else []
    augs += geometric
    if a.get("color"):
        augs.append(f"colour jitter p={a['color']} (brightness {a['brightness']}, contrast {a['contrast']}, "
                    f"saturation {a['saturation']}, hue {a['hue']})")
    return augs + mixing


def num(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


_SAFE_URL = re.compile(r"^(https?://|[^:]*$)")  # web links and relative paths only (no javascript:, data:, ...)


@functools.cache
def markdown() -> MarkdownIt:
    """CommonMark with tables, raw HTML off (a config value or a reason is user input, shown as text), and links and
    images only to web or relative addresses."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.validateLink = lambda url: bool(_SAFE_URL.match(url.strip()))
    return md


def inline(text: str) -> str:
    """One line of Markdown as inline HTML."""
    return markdown().renderInline(text)


def html_page(md: str, title: str) -> str:
    """The report's Markdown as one self-contained page; a reviewer's ``[ ]`` table cell becomes a checkbox."""
    body = markdown().render(md).replace("<td>[ ]</td>", '<td><input type="checkbox"></td>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + body + "\n</body></html>\n")
