"""Running the agents endpoint: on its own event loop in a thread (inside
``serve``), or as the main loop of the ``agents`` command."""

from __future__ import annotations

import asyncio
import signal
import threading
from concurrent.futures import Future

from prism_backends.agents.server import AgentsEndpoint
from prism_backends.runtime import Runtime


class AgentsThread:
    """The endpoint on a private event loop, so it can live beside uvicorn's."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.endpoint = AgentsEndpoint(
            runtime.settings, runtime.sessions, runtime.agent_ca, runtime.appraiser
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agents", daemon=True)

    def start(self) -> int:
        self._thread.start()
        started: Future[int] = asyncio.run_coroutine_threadsafe(self.endpoint.start(), self._loop)
        port = started.result(timeout=30)
        self._runtime.agents_replicas.add(self.endpoint.hub.replica)
        return port

    def stop(self) -> None:
        """Stop the endpoint and close its loop (also when it never started);
        calling it again does nothing."""
        if self._thread.is_alive():
            self._runtime.agents_replicas.discard(self.endpoint.hub.replica)
            asyncio.run_coroutine_threadsafe(self.endpoint.stop(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()


async def serve_forever(runtime: Runtime) -> None:
    """The ``agents`` command: until SIGINT or SIGTERM."""
    endpoint = AgentsEndpoint(
        runtime.settings, runtime.sessions, runtime.agent_ca, runtime.appraiser
    )
    await endpoint.start()
    runtime.agents_replicas.add(endpoint.hub.replica)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    runtime.agents_replicas.discard(endpoint.hub.replica)
    await endpoint.stop()
