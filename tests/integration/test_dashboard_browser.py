"""The dashboard in a real headless browser (Debian's Chromium, driven by Playwright).

The story: a user opens the page ``shardflow serve`` serves over ten minutes of page views.
It shows the top keys of the latest window (still open), a line per top key with final
windows drawn filled and open ones hollow, and the latest windows with their state. The
user picks another aggregate and types two keys; the page follows. With a token, the page
asks for it. And while ``shardflow demo`` runs, the windows fill up as the user watches.
Screenshots are kept in test-artifacts/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import Page

from tests.conftest import AwsEnv
from tests.integration.browser import artifacts, browser_page
from tests.integration.served import load_recent, serving
from tests.integration.test_demo import demo_env

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

TOKEN = "browser-token-0123456789"


def wait_for_refreshes(page: Page, at_least: int, timeout_ms: int = 20_000) -> None:
    page.wait_for_function(
        f"Number(document.body.dataset.refreshes || 0) >= {at_least}", timeout=timeout_ms
    )


def test_final_and_open_windows_are_told_apart(aws: AwsEnv) -> None:
    load_recent(aws)
    with serving(aws) as url, browser_page() as (page, problems):
        page.goto(f"{url}/")
        wait_for_refreshes(page, 1)
        assert page.input_value("#pipeline") == "page-views"
        assert page.input_value("#aggregate") == "views"
        assert "final through" in page.inner_text("#status")

        top_rows = page.locator("#top tbody tr")
        assert top_rows.count() == 10
        assert top_rows.nth(0).inner_text().split() == ["1", "/p11", "36"]
        assert page.locator("#top-title .badge-open").count() == 1  # the latest window is open

        series = page.locator("#chart g.series")
        assert series.count() == 5  # the five top keys
        assert page.locator("#chart circle.final").count() == 5 * 9
        assert page.locator("#chart circle.open").count() == 5
        assert page.locator("#windows .badge-final").count() > 0
        assert page.locator("#windows .badge-open").count() == 5
        page.screenshot(path=str(artifacts() / "dashboard.png"), full_page=True)

        page.select_option("#aggregate", "latency_max")
        page.wait_for_function(
            "document.getElementById('series-title').textContent.startsWith('latency_max')"
        )
        assert page.locator("#top tbody tr").nth(0).inner_text().split()[1:] == ["/p11", "119"]
        page.fill("#keys", "/p00, /p01")
        page.dispatch_event("#keys", "change")
        page.wait_for_function("document.querySelectorAll('#chart g.series').length === 2")
        keys = page.locator("#chart g.series").evaluate_all("gs => gs.map(g => g.dataset.key)")
        assert keys == ["/p00", "/p01"]
        assert problems == []


def test_with_a_token_the_page_asks_for_it(aws: AwsEnv) -> None:
    load_recent(aws, minutes=2)
    with serving(aws, env={"SHARDFLOW_SERVE_TOKEN": TOKEN}) as url, browser_page() as (page, _):
        page.goto(f"{url}/")
        page.wait_for_selector("#token-form:not([hidden])")
        assert "token" in page.inner_text("#status")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        wait_for_refreshes(page, 1)
        assert page.locator("#top tbody tr").count() == 10
        # A link with the token in its fragment works too (the fragment never reaches
        # the server); the page drops it from the address bar once read.
        assert page.context.browser is not None
        linked = page.context.browser.new_page()  # a new session: nothing remembered
        linked.goto(f"{url}/#token={TOKEN}")
        wait_for_refreshes(linked, 1)
        assert "#token" not in linked.url
        assert linked.locator("#token-form").is_hidden()


def test_windows_fill_while_the_demo_runs() -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardflow",
            "demo",
            "--duration",
            "40",
            "--rate",
            "80",
            "--dashboard-port",
            "0",
        ],
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            found = re.search(r"dashboard: open (http://[0-9.:]+)/", line)
            url = found.group(1) if found else None
        assert url, "the demo did not print its dashboard's address"
        with browser_page() as (page, problems):
            page.goto(f"{url}/")
            page.wait_for_function(
                "document.querySelectorAll('#windows tbody tr:not(:has(.empty))').length > 0"
                " && !document.querySelector('#windows .empty')",
                timeout=30_000,
            )
            first = shown_views(page)
            refreshes = int(page.evaluate("document.body.dataset.refreshes"))
            wait_for_refreshes(page, refreshes + 3)
            later = shown_views(page)
            assert later > first, "the open windows did not fill while the demo ran"
            page.screenshot(path=str(artifacts() / "dashboard-demo.png"), full_page=True)
            assert problems == []
        demo.stdout.read()
        assert demo.wait(timeout=90) == 0
    finally:
        demo.kill()


def shown_views(page: Page) -> int:
    """The views of every window the table shows, summed."""
    cells = page.locator("#windows tbody td.num").all_inner_texts()
    return sum(int(cell.replace(",", "")) for cell in cells if cell.strip() not in ("", "\u2013"))
