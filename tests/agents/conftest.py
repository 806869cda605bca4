"""The real agents endpoint, started inside the test's own event loop
(``asyncio.run`` in a sync test) against the test store, and the helpers the
agents tests share: an HTTP client for the API, a look at what the store keeps
about a CVM's agent, and gRPC channels presenting chosen credentials.

The endpoint's settings have a free ``agents_port`` and a short heartbeat, so
that disconnectReq after a delete arrives quickly; what agents say reaches the
store by batched flushes (every ~0.5 s), so assertions on it poll with a
deadline, or call ``hub.flush()`` where the point is that nothing was written.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from google.protobuf.message import Message
from sqlalchemy import func, select

from prism_backends.agents.models import AgentEvent, AgentSession
from prism_backends.agents.server import AgentsEndpoint
from prism_backends.config import Settings
from prism_backends.cvms.models import CVM
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth

HEARTBEAT_SECONDS = 0.2
DEADLINE_SECONDS = 10.0
DOMAIN = "dom-1"
SERVER_NAME = "localhost"  # in the endpoint's certificate (agents_server_names)

T = TypeVar("T")
R = TypeVar("R", bound=Message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# A stand-in for an Azure Attestation provider: its key signs the tokens agents
# relay, and its JWKS is what the service is configured to trust.
AZURE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
AZURE_KID = "maa-test-key"


def azure_token(claims: dict[str, object] | None = None) -> str:
    body = {"iss": "https://sharedeus2.eus2.attest.azure.net", "x-ms-attestation-type": "sevsnpvm"}
    return jwt.encode(
        {**body, **(claims or {})}, AZURE_KEY, algorithm="RS256", headers={"kid": AZURE_KID}
    )


def _azure_jwks(path: Path) -> Path:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(AZURE_KEY.public_key()))
    path.write_text(json.dumps({"keys": [{**jwk, "kid": AZURE_KID, "alg": "RS256"}]}))
    return path


@pytest.fixture
def runtime(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Runtime]:
    """The root ``runtime``, with the agents endpoint on a free port and a fast heartbeat,
    offline attestation, and a trusted Azure Attestation key."""
    rt = Runtime(
        make_settings(
            agents_host="127.0.0.1",
            agents_port=free_port(),
            heartbeat_seconds=HEARTBEAT_SECONDS,
            attestation_fetch=False,
            azure_attestation_jwks_file=_azure_jwks(tmp_path / "maa-jwks.json"),
        )
    )
    yield rt
    rt.close()


@asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[AgentsEndpoint]:
    """The agents endpoint of ``runtime``, on the running loop; stopped (and flushed) after."""
    endpoint = AgentsEndpoint(
        runtime.settings, runtime.sessions, runtime.agent_ca, runtime.appraiser
    )
    port = await endpoint.start()
    assert port == runtime.settings.agents_port
    try:
        yield endpoint
    finally:
        await endpoint.stop(grace=1.0)


# --- the HTTP API ------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What a CVM's agent dials in with, as GET .../agent_config hands it out."""

    cvm_id: str
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes


@dataclass(frozen=True)
class Api:
    """Blocking calls on the HTTP app; from async code, wrap them in ``asyncio.to_thread``."""

    client: TestClient
    headers: dict[str, str]

    def create(self, name: str) -> str:
        response = self.client.post(
            f"/backends/{DOMAIN}/cvms/external/2/sev-snp", json={"name": name}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        cvm_id: str = response.json()["id"]
        return cvm_id

    def cvm(self, cvm_id: str) -> dict[str, Any]:
        response = self.client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def events(self, cvm_id: str) -> list[dict[str, Any]]:
        """Newest first."""
        response = self.client.get(
            f"/backends/{DOMAIN}/cvms/{cvm_id}/events",
            params={"limit": "100"},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def delete(self, cvm_id: str) -> None:
        response = self.client.delete(f"/backends/{DOMAIN}/cvms/{cvm_id}", headers=self.headers)
        assert response.status_code == 204, response.text

    def credential(self, cvm_id: str) -> Credential:
        response = self.client.get(
            f"/backends/{DOMAIN}/cvms/{cvm_id}/agent_config", headers=self.headers
        )
        assert response.status_code == 200, response.text
        config = response.json()
        assert config["cvm_id"] == cvm_id
        return Credential(
            cvm_id=cvm_id,
            ca_cert=config["ca_cert"].encode(),
            client_cert=config["client_cert"].encode(),
            client_key=config["client_key"].encode(),
        )


@pytest.fixture
def api(client: TestClient, token: TokenFactory) -> Api:
    return Api(client, auth(token(DOMAIN)))


# --- what the store keeps about an agent ---------------------------------------------


@dataclass(frozen=True)
class Footprint:
    sessions: int
    events: int
    status: str


def footprint(runtime: Runtime, cvm_id: str) -> Footprint:
    """Read straight from the store: it works for deleted CVMs too."""
    with unit_of_work(runtime.sessions) as session:
        sessions = session.scalar(
            select(func.count()).select_from(AgentSession).where(AgentSession.cvm_id == cvm_id)
        )
        events = session.scalar(
            select(func.count()).select_from(AgentEvent).where(AgentEvent.cvm_id == cvm_id)
        )
        status = session.scalar(select(CVM.status).where(CVM.id == cvm_id))
    assert status is not None, f"no CVM row {cvm_id}"
    return Footprint(sessions=int(sessions or 0), events=int(events or 0), status=status)


async def eventually(probe: Callable[[], T | None], what: str) -> T:
    """Poll a blocking ``probe`` (in a thread) until it gives something truthy."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    last: T | None = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(probe)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"within {DEADLINE_SECONDS} s: {what} (last seen: {last!r})")


# --- gRPC clients ----------------------------------------------------------------------


def secure_channel(
    port: int,
    ca_cert: bytes,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
) -> grpc.aio.Channel:
    """A channel to the endpoint trusting ``ca_cert``, presenting a client certificate if given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_cert, private_key=client_key, certificate_chain=client_cert
    )
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        options=[("grpc.ssl_target_name_override", SERVER_NAME)],
    )


def channel_of(port: int, credential: Credential) -> grpc.aio.Channel:
    return secure_channel(port, credential.ca_cert, credential.client_cert, credential.client_key)


async def receive(call: grpc.aio.StreamStreamCall[Any, R], kind: str) -> R:
    """The next server message of this ``oneof message`` kind, skipping others
    (heartbeat agentStateReqs); fails at the end of the stream or the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind} within {DEADLINE_SECONDS} s")
        message = await asyncio.wait_for(call.read(), remaining)
        if message is grpc.aio.EOF:
            raise AssertionError(f"the stream ended before a {kind}")
        assert isinstance(message, Message), message
        if message.WhichOneof("message") == kind:
            return cast(R, message)  # read() is typed ``object | R`` (EOF is an object)
