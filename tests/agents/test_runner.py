"""The agents endpoint on a thread of its own (inside ``serve``): stopping it
leaves nothing open, whether or not it was started."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from prism_backends.agents.runner import AgentsThread
from prism_backends.config import Settings
from prism_backends.runtime import Runtime
from tests.agents.conftest import free_port


@pytest.mark.parametrize("started", [True, False], ids=["started", "never-started"])
def test_stopping_the_thread_closes_its_loop(
    make_settings: Callable[..., Settings], started: bool
) -> None:
    runtime = Runtime(make_settings(agents_host="127.0.0.1", agents_port=free_port()))
    try:
        agents = AgentsThread(runtime)
        if started:
            agents.start()
        agents.stop()
        agents.stop()  # again: nothing to do
        del agents
        # An event loop left open warns (ResourceWarning, an error here) when it
        # is collected, in whichever test happens to run then.
        gc.collect()
    finally:
        runtime.close()
