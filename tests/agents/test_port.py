"""The agents port is bound exclusively: a second endpoint on it fails at
start with a clear message (unless sharing is asked for)."""

from __future__ import annotations

import asyncio

import pytest

from prism_backends.agents.server import AgentsEndpoint, PortInUse
from prism_backends.runtime import Runtime
from tests.agents.conftest import serving


def _second(runtime: Runtime) -> AgentsEndpoint:
    return AgentsEndpoint(runtime.settings, runtime.sessions, runtime.agent_ca, runtime.appraiser)


def test_a_second_endpoint_on_the_port_fails_at_start(runtime: Runtime) -> None:
    async def scenario() -> None:
        async with serving(runtime):
            with pytest.raises(PortInUse, match="in use"):
                await _second(runtime).start()

    asyncio.run(scenario())


def test_sharing_the_port_is_allowed_when_asked_for(runtime: Runtime) -> None:
    shared = runtime.settings.model_copy(update={"agents_share_port": True})

    async def scenario() -> None:
        first = AgentsEndpoint(shared, runtime.sessions, runtime.agent_ca, runtime.appraiser)
        await first.start()
        second = AgentsEndpoint(shared, runtime.sessions, runtime.agent_ca, runtime.appraiser)
        try:
            assert await second.start() == first.port
        finally:
            await second.stop(grace=0.1)
            await first.stop(grace=0.1)

    asyncio.run(scenario())
