"""Headless Debian chromium for the browser tests, driven by Playwright (no browser is ever downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def launch(pw):
    """A headless chromium browser; fails the test with the fix when Debian's chromium is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is needed for browser tests: apt-get install chromium (.ci/run does it)")
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
