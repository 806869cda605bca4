"""Driving the console in a real browser: where Chromium is, starting it, and
what a test does often (sign in, watch for script errors and CSP refusals).
Shared by the browser tests and ``scripts/screenshots``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

__all__ = [
    "Browser",
    "BrowserContext",
    "Page",
    "PlaywrightError",
    "PlaywrightThread",
    "chromium_path",
    "launch",
]

CHROMIUM_ENV = "PRISM_BACKENDS_TEST_CHROMIUM"

P = ParamSpec("P")
T = TypeVar("T")


def chromium_path() -> str | None:
    """Debian's Chromium (or the one named by PRISM_BACKENDS_TEST_CHROMIUM); None if absent."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named if Path(named).exists() else None
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


@contextmanager
def launch(executable: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PlaywrightThread:
    """Playwright's sync API on a thread of its own, for a browser that outlives a test.

    While sync_playwright is open, the asyncio loop it drives counts as running on
    the thread that opened it, so there every asyncio.run (in any later test) would
    refuse to start. Its objects work only on that thread: whatever touches them
    goes through ``call``."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="playwright")
        self._opened = ExitStack()

    def launch(self, executable: str) -> Browser:
        return self.call(self._opened.enter_context, launch(executable))

    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on the Playwright thread; its result or its error."""
        return self._thread.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        try:
            self.call(self._opened.close)
        finally:
            self._thread.shutdown()


def watch(page: Page) -> list[str]:
    """Collect the page's uncaught errors and console errors (a CSP refusal is one)."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A 4xx the console handles on purpose (a 404 search, a 409 policy) is logged
        # by Chromium as a failed resource; that is not a fault of the page.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console: {message.text}")

    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", on_console)
    return problems


def sign_in(page: Page, console_url: str, token: str) -> None:
    """Sign in with the Access token field; on the dashboard after it."""
    page.goto(console_url)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
