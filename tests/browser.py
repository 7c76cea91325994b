"""Headless Debian chromium for the browser tests, driven by Playwright (no browser is ever downloaded), launched
as the product launches it (core.browser)."""

from __future__ import annotations

import pytest

from core.browser import CHROMIUM_ARGS, INSTALL, chromium_path

CHROMIUM = str(chromium_path() or "/usr/bin/chromium")


def launch(pw):
    """A headless chromium browser; fails the test with the fix when Debian's chromium is missing."""
    if chromium_path() is None:
        pytest.fail(f"Debian chromium is needed for browser tests: {INSTALL} (.ci/run does it)")
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
