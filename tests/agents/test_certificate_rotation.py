"""The reference agent picks up a renewed agent_config dropped in place: it
reconnects with the new certificate (which retires the old one) without a
restart, and leaves when its certificate is revoked with nothing newer there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from cryptography import x509

from prism_backends.agent import config
from prism_backends.agent.client import Agent
from prism_backends.agents.server import AgentsEndpoint
from prism_backends.runtime import Runtime
from tests.agents.conftest import DOMAIN, SERVER_NAME, Api, eventually, serving


def _save_config(api: Api, cvm_id: str, path: Path, port: int) -> str:
    """GET .../agent_config saved as the tenant would (pointed at the test endpoint);
    the serial of the certificate in it."""
    response = api.client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}/agent_config", headers=api.headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    document |= {"agents_address": f"127.0.0.1:{port}", "server_name": SERVER_NAME}
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(document))
    staged.replace(path)  # in place at once, as an operator's mv would
    certificate = x509.load_pem_x509_certificate(document["client_cert"].encode())
    return format(certificate.serial_number, "x")


def _connected_with(endpoint: AgentsEndpoint, cvm_id: str, serial: str) -> bool:
    connection = endpoint.hub.connections.get(cvm_id)
    return connection is not None and connection.serial == serial and connection.opened


def _post(api: Api, path: str, status: int) -> dict[str, Any]:
    response = api.client.post(f"/backends/{DOMAIN}/cvms/{path}", headers=api.headers)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_agent_moves_to_a_renewed_certificate_without_a_restart(
    runtime: Runtime, api: Api, tmp_path: Path
) -> None:
    cvm_id = api.create("rotating")
    path = tmp_path / "agent.json"

    async def scenario() -> int:
        async with serving(runtime) as endpoint:
            old = _save_config(api, cvm_id, path, endpoint.port)
            agent = Agent(config.load(path), reload=lambda: config.load(path))
            running = asyncio.create_task(agent.run())
            await eventually(lambda: _connected_with(endpoint, cvm_id, old), "the first stream")

            renewed = await asyncio.to_thread(_post, api, f"{cvm_id}/certificates/{old}/renew", 201)
            # Until the new configuration is in place, the agent stays as it is.
            await asyncio.sleep(5 * runtime.settings.heartbeat_seconds)
            assert _connected_with(endpoint, cvm_id, old)
            new = await asyncio.to_thread(_save_config, api, cvm_id, path, endpoint.port)
            assert new == renewed["serial"]
            await eventually(lambda: _connected_with(endpoint, cvm_id, new), "the renewed stream")

            # Revoked with nothing newer in its configuration: the agent leaves.
            await asyncio.to_thread(_post, api, f"{cvm_id}/certificates/{new}/revoke", 200)
            return await asyncio.wait_for(running, 10)

    assert asyncio.run(scenario()) == 0
    response = api.client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}/certificates", headers=api.headers)
    assert [c["state"] for c in response.json()["certificates"]] == ["revoked", "revoked"]


def test_an_unreadable_configuration_keeps_the_agent_on_its_certificate(
    runtime: Runtime, api: Api, tmp_path: Path
) -> None:
    cvm_id = api.create("garbled")
    path = tmp_path / "agent.json"

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            serial = _save_config(api, cvm_id, path, endpoint.port)
            agent = Agent(config.load(path), reload=lambda: config.load(path))
            running = asyncio.create_task(agent.run())
            await eventually(lambda: _connected_with(endpoint, cvm_id, serial), "the stream")
            path.write_text("{ half written")
            await asyncio.sleep(5 * runtime.settings.heartbeat_seconds)
            assert _connected_with(endpoint, cvm_id, serial)
            assert not running.done()
            running.cancel()

    asyncio.run(scenario())
