"""Debian's Chromium, headless, driven by Playwright (never a browser Playwright downloads):
for the dashboard's tests. ``CHROMIUM`` names another binary; ``make test`` installs
Debian's package when it is missing. Screenshots go to ``test-artifacts/`` (or
``SHARDFLOW_TEST_ARTIFACTS``), kept after the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        raise AssertionError(
            f"the dashboard tests need Chromium at {path}: `make test` installs Debian's "
            "chromium package (apt-get install chromium), or set CHROMIUM to a binary"
        )
    return path


def artifacts() -> Path:
    folder = Path(os.environ.get("SHARDFLOW_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def browser_page() -> Iterator[tuple[Page, list[str]]]:
    """A fresh page, and the page's errors and failed requests as they happen."""
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "response",
                lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            yield page, problems
        finally:
            browser.close()
