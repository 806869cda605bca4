"""One headless Chromium for the session's browser tests (Debian's, driven by
Playwright); each test gets a fresh context, so nothing in sessionStorage
carries over. Without a Chromium the browser tests are skipped.

Playwright runs on a thread of its own (``PlaywrightThread``), and so does the
body of every test that uses the browser: the main thread keeps no asyncio loop
of Playwright's, so the tests after these may call asyncio.run."""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.console.browser import Browser, BrowserContext, PlaywrightThread, chromium_path


@pytest.fixture(scope="session")
def playwright_thread() -> Iterator[PlaywrightThread]:
    thread = PlaywrightThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="session")
def browser(playwright_thread: PlaywrightThread) -> Browser:
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium found (PRISM_BACKENDS_TEST_CHROMIUM, chromium or chromium-browser on "
            "the PATH): scripts/test installs Debian's 'chromium' when run as root"
        )
    return playwright_thread.launch(executable)


@pytest.fixture
def context(browser: Browser, playwright_thread: PlaywrightThread) -> Iterator[BrowserContext]:
    made = playwright_thread.call(
        browser.new_context, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    playwright_thread.call(made.set_default_timeout, 15_000)
    try:
        yield made
    finally:
        playwright_thread.call(made.close)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A test that uses the browser runs on the Playwright thread."""
    if "browser" not in pyfuncitem.fixturenames:
        return (yield)
    thread = pyfuncitem.funcargs["playwright_thread"]
    assert isinstance(thread, PlaywrightThread)
    body = pyfuncitem.obj

    @functools.wraps(body)
    def on_the_playwright_thread(**arguments: Any) -> object:
        return thread.call(body, **arguments)

    pyfuncitem.obj = on_the_playwright_thread
    try:
        return (yield)
    finally:
        pyfuncitem.obj = body
