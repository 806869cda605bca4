"""A real ``serve`` for the client's end-to-end tests (SDK and CLI), shared by
a module's tests, on SQLite and (with PRISM_BACKENDS_TEST_POSTGRES_URL) on a
PostgreSQL schema of its own: an ``external`` provider with a reference policy
for sev-snp (so a policy can be downloaded), an admin and a member token."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import BACKENDS, POSTGRES_ENV, postgres_base_url
from tests.served import DOMAIN, Processes, Spec, free_port, save_config

POLICY = json.dumps(
    {"policy": {"minimum_guest_svn": 0}, "root_of_trust": {"product_line": "Milan"}}
).encode()


@dataclass
class Service:
    processes: Processes
    url: str
    token: str
    member_token: str
    agents_port: int

    def start_agent(self, label: str, config: dict[str, object]) -> None:
        """Spawn the reference agent with this agent configuration (it dials at once)."""
        path = save_config(config, self.processes.tmp / f"{label}.json")
        self.processes.spawn(label, "agent", "--config", str(path))


def _serve() -> Spec:
    http_port, agents_port = free_port(), free_port()
    return Spec(
        ["serve", "--port", str(http_port), "--agents-port", str(agents_port)],
        ready=[
            f"agents endpoint on 127.0.0.1:{agents_port} (mTLS)",
            f"Uvicorn running on http://127.0.0.1:{http_port}",
        ],
        health_url=f"http://127.0.0.1:{http_port}/backends/health",
        ports=(http_port, agents_port),
    )


@contextmanager
def _store(backend: str) -> Iterator[str | None]:
    """None for the embedded SQLite; else the URL of a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield None
        return
    base = os.environ[POSTGRES_ENV]
    schema = f"prism_client_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pycache: Path
) -> Iterator[Service]:
    yield from serving(request, tmp_path_factory, pycache)


def serving(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pycache: Path,
    entry: Entry | None = None,
) -> Iterator[Service]:
    """The body of a ``service`` fixture on the store ``request.param`` names."""
    if request.param == "postgres" and not postgres_base_url():
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    with _store(request.param) as database_url:
        yield from _served(tmp_path_factory.mktemp("served"), pycache, database_url, entry)


@dataclass(frozen=True)
class Entry:
    """A test's wrapper around the command line (``Processes.entry``) and what it
    needs in the data directory before the service starts."""

    module: str
    prepare: Callable[[Path], None]


def _served(
    tmp: Path, pycache: Path, database_url: str | None, entry: Entry | None = None
) -> Iterator[Service]:
    processes = Processes(tmp, pycache, database_url=database_url)
    if entry is not None:
        processes.entry = entry.module
        entry.prepare(processes.data_dir)
    providers = processes.data_dir / "providers"
    providers.mkdir()
    (providers / "snp-policy.json").write_bytes(POLICY)
    (providers / "external.toml").write_text(
        'name = "external"\n[attestation_policy]\nsev-snp = "snp-policy.json"\n'
    )
    try:
        server = processes.launch("serve", _serve)
        token = processes.run("token", "issue", "--domain", DOMAIN).strip()
        member = processes.run("token", "issue", "--domain", DOMAIN, "--role", "member").strip()
        processes.ready(server)
        http_port, agents_port = server.ports
        url = f"http://127.0.0.1:{http_port}/backends"
        yield Service(processes, url, token, member, agents_port)
    finally:
        processes.stop()
