"""A store migrated from one credential per CVM (revision 0005) keeps its
agents: the credentials issued then still connect, and are listed active."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from prism_backends.agents.proto import cvms_pb2_grpc
from prism_backends.config import Settings
from prism_backends.db import migrate
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime
from tests.agents.conftest import (
    DOMAIN,
    HEARTBEAT_SECONDS,
    Api,
    Credential,
    channel_of,
    free_port,
    receive,
    serving,
)
from tests.conftest import TokenFactory, auth
from tests.db.test_migrations import _insert_cvm, empty_engine  # noqa: F401 - a fixture

CVM_ID = "4a3c1f52-0d0e-4d8e-9a59-2d5b6c1e7a10"


def _runtime(engine: Engine, data_dir: Path) -> Runtime:
    return Runtime(
        Settings(
            data_dir=data_dir,
            database_url=engine.url.render_as_string(hide_password=False),
            rate_limit_per_source=0,
            rate_limit_per_principal=0,
            agents_host="127.0.0.1",
            agents_port=free_port(),
            heartbeat_seconds=HEARTBEAT_SECONDS,
            attestation_fetch=False,
        )
    )


def test_credentials_from_before_the_migration_still_connect(
    empty_engine: Engine,  # noqa: F811 - the fixture imported above
    data_dir: Path,
    token: TokenFactory,
) -> None:
    runtime = _runtime(empty_engine, data_dir)
    issued = runtime.agent_ca.issue_client(CVM_ID, DOMAIN, runtime.credentials.validity)
    migrate.upgrade(empty_engine, "0005")
    with empty_engine.begin() as connection:
        _insert_cvm(connection, CVM_ID)
        connection.execute(text("UPDATE cvms SET domain_id = :domain"), {"domain": DOMAIN})
        connection.execute(
            text(
                "INSERT INTO agent_credentials (cvm_id, serial, cert_pem, sealed_key, not_after)"
                " VALUES (:cvm_id, :serial, :pem, :key, :not_after)"
            ),
            {
                "cvm_id": CVM_ID,
                "serial": format(issued.serial, "x"),
                "pem": issued.cert_pem.decode(),
                "key": runtime.sealer.seal(issued.key_pem, bound_to=CVM_ID),
                "not_after": issued.not_after,
            },
        )
    migrate.upgrade(empty_engine)

    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            api = Api(client, auth(token(DOMAIN)))
            handed_out = api.credential(CVM_ID)
            assert handed_out == Credential(
                CVM_ID, runtime.agent_ca.cert_pem, issued.cert_pem, issued.key_pem
            )

            async def scenario() -> None:
                async with (
                    serving(runtime) as endpoint,
                    channel_of(endpoint.port, handed_out) as channel,
                ):
                    call = cvms_pb2_grpc.ServiceStub(channel).Process(
                        metadata=(("job-id", CVM_ID),)
                    )
                    await receive(call, "agentStateReq")
                    call.cancel()

            asyncio.run(scenario())
            listed = client.get(
                f"/backends/{DOMAIN}/cvms/{CVM_ID}/certificates", headers=api.headers
            ).json()["certificates"]
            assert [(c["serial"], c["state"]) for c in listed] == [
                (format(issued.serial, "x"), "active")
            ]
    finally:
        runtime.close()
