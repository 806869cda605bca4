"""The session's browser leaves the main thread free for asyncio: a test that
runs after the browser tests (in the same process) may call asyncio.run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.console.browser import Browser, PlaywrightThread


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_asyncio_run_works_beside_the_open_browser(request: pytest.FixtureRequest) -> None:
    # Asked for here, not as an argument: this body stays on the main thread.
    browser: Browser = request.getfixturevalue("browser")
    thread: PlaywrightThread = request.getfixturevalue("playwright_thread")
    assert thread.call(lambda: browser.is_connected())
    assert threading.current_thread() is threading.main_thread()
    assert asyncio.run(_answer()) == 42
