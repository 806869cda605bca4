"""Shared fixtures: every store-backed test runs on SQLite and on PostgreSQL.

PostgreSQL tests run when PRISM_BACKENDS_TEST_POSTGRES_URL is set (the CI does
set it); each pytest-xdist worker gets its own schema, migrated once, and
tables are emptied between tests. SQLite tests copy a migrated template file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from prism_backends.auth.keys import load_or_create_issuer_key
from prism_backends.auth.permissions import Role
from prism_backends.auth.tokens import issue_token
from prism_backends.config import Settings
from prism_backends.db import migrate
from prism_backends.db.engine import make_engine
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime

# Real host-manager processes (with a QEMU stand-in), for manager and driver tests,
# and real service processes (tests/served.py), for end-to-end tests and drills.
pytest_plugins = ("tests.manager.processes", "tests.served")

POSTGRES_ENV = "PRISM_BACKENDS_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TABLES = (
    "attestation_signing_keys",
    "agent_events",
    "agent_sessions",
    "agent_credentials",
    "cvm_uptime_days",
    "sampled_slots",
    "cvm_tallies",
    "cvms",
)


def postgres_base_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def _worker_name(config: pytest.Config) -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema of our own on the test PostgreSQL, migrated once per session."""
    base = postgres_base_url()
    if base is None:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    schema = f"prism_test_{_worker_name(request.config)}_{os.getpid()}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    engine = make_engine(rendered)
    migrate.upgrade(engine)
    engine.dispose()
    yield rendered
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty store of each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "store.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    _empty(url)
    yield url
    _empty(url)


def _empty(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(data_dir: Path, database_url: str) -> Callable[..., Settings]:
    def _make(**overrides: Any) -> Settings:
        # The test client is not loopback: without this every test would share
        # one client's rate. tests/http/test_rate_limits.py turns them on.
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": database_url,
            "rate_limit_per_source": 0,
            "rate_limit_per_principal": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return _make


@pytest.fixture
def runtime(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    rt = Runtime(make_settings())
    yield rt
    rt.close()


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    return runtime.engine


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), raise_server_exceptions=False) as test_client:
        yield test_client


TokenFactory = Callable[..., str]


@pytest.fixture
def token(data_dir: Path) -> TokenFactory:
    """``token("dom", role=Role.MEMBER)``: a token from the embedded issuer."""

    def _issue(
        domain: str = "dom-1", role: Role = Role.ADMIN, ttl: timedelta = timedelta(hours=1)
    ) -> str:
        key = load_or_create_issuer_key(data_dir)
        return issue_token(
            key, issuer="prism-backends", domain_id=domain, role=role, subject="tester", ttl=ttl
        )

    return _issue


def auth(token_value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_value}"}
