"""One headless Chromium for the session's browser tests (Debian's, driven by
Playwright); each test gets a fresh context, so nothing in sessionStorage
carries over. Without a Chromium the browser tests are skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.console.browser import Browser, BrowserContext, chromium_path, launch


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium found (PRISM_BACKENDS_TEST_CHROMIUM, chromium or chromium-browser on "
            "the PATH): scripts/test installs Debian's 'chromium' when run as root"
        )
    with launch(executable) as running:
        yield running


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    made.set_default_timeout(15_000)
    try:
        yield made
    finally:
        made.close()
