"""Driving the console in a real browser: where Chromium is, starting it, and
what a test does often (sign in, watch for script errors and CSP refusals).
Shared by the browser tests and ``scripts/screenshots``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

__all__ = ["Browser", "BrowserContext", "Page", "PlaywrightError", "chromium_path", "launch"]

CHROMIUM_ENV = "PRISM_BACKENDS_TEST_CHROMIUM"


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
