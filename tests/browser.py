"""Real-browser fixtures: Debian's Chromium driven by Playwright's sync API.

Use it either as a plugin (``pytest_plugins = [..., "tests.browser"]`` in the
root conftest) or by importing the fixtures into a test module
(``from tests.browser import browser, page  # noqa: F401``); both work, and
the screenshot-on-failure below needs no hook, so it works either way.

Fixtures:
- ``browser`` (session): one headless Chromium for the whole run; the tests
  are skipped, with the reason, when the Chromium binary is missing.
- ``page`` (function): a fresh browser context (own cookies, so no session
  leaks between tests) and page; on a failed test a full-page screenshot is
  saved as ``var/screenshots/<test name>.png`` before the context closes.

Helpers: ``login(page, live_server_url, username, password)`` signs in through
the real login form; ``screenshot(page, name)`` saves
``var/screenshots/<name>.png`` and returns its path.

The app server is pytest-django's ``live_server``; tests that use it run with
``transaction=True`` database semantics, because the server thread must see
rows the test commits.

Never run ``playwright install``: it downloads a browser and fails on this
closed network; Debian's ``/usr/bin/chromium`` is used instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an asyncio event loop in the main thread (its
# greenlets switch in and out of it), so Django's async-safety check sees "a
# running event loop" and raises SynchronousOnlyOperation for every ORM call
# the test body or a fixture makes in that thread (creating alice, checking
# what was saved). Nothing here runs ORM code inside a coroutine, so the check
# only gets in the way. The variable is read at call time; setdefault lets a
# developer still override it. It is process-wide: set only when browser tests
# are loaded.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in a container; the sandbox refuses that
    "--disable-gpu",
    # This machine has no outbound network: stop Chromium phoning home, which
    # only produces refused connections and noise.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
# Every wait is on a page served from loopback: a few seconds is plenty, and a
# broken page fails fast instead of eating the suite's time budget.
DEFAULT_TIMEOUT_MS = 5_000


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=DEFAULT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, request) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    # The call phase's report is logged before teardown starts, so a rise in
    # the session's failure count means this test just failed (no hook needed).
    failed_before = request.session.testsfailed
    try:
        yield page
    finally:
        if request.session.testsfailed > failed_before:
            try:
                print(f"screenshot: {screenshot(page, request.node.name)}")
            except Exception as exc:  # a crashed page must not hide the real failure
                print(f"screenshot failed: {exc}")
        context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as var/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^\w.-]+", "_", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, live_server_url: str, username: str, password: str) -> None:
    """Sign in through the real login form and wait for the page after it."""
    from playwright.sync_api import expect

    page.goto(f"{live_server_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name=f"Sign out {username}")).to_be_visible()
