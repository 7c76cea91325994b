"""Debian's headless Chromium, driven through Playwright: the one place that finds it and names its flags. The
report's PDF and the browser tests launch it the same way, and no browser build is ever downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.errors import SegLoopError

# no sandbox (containers run as root), no GPU, and nothing that phones home: updates, sync, first-run pages
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
INSTALL = "apt-get install chromium"


def chromium_path() -> Path | None:
    """The Chromium executable on PATH (Debian's ``chromium``, Ubuntu's ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    fallback = Path("/usr/bin/chromium")
    return fallback if fallback.is_file() else None


def require_chromium(purpose: str) -> Path:
    """The Chromium executable, or a SegLoopError that says what needs it and how to install it."""
    exe = chromium_path()
    if exe is None:
        raise SegLoopError(f"{purpose} needs headless Chromium, which is not installed", path="chromium",
                           fix=INSTALL)
    return exe
