"""PostgreSQL for the drills: a schema of the test's own, reached through
login roles of its own, so that one role's connections can be cut (its
backends terminated, new ones refused) while every other test, and every
other role, goes on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ENV


@dataclass
class Cluster:
    """The test's schema on the test PostgreSQL, and its roles."""

    admin: Engine
    base_url: str
    schema: str
    owner: str
    roles: list[str] = field(default_factory=list)

    def url(self, role: str) -> str:
        """A URL logging in as ``role`` (named in pg_stat_activity by it), in the schema."""
        url = make_url(self.base_url).set(username=role, password=None)
        url = url.update_query_dict(
            {"options": f"-csearch_path={self.schema}", "application_name": role}
        )
        return url.render_as_string(hide_password=False)

    def add_role(self, suffix: str) -> str:
        """Another login role with the owner's rights (a member of it)."""
        role = f"{self.owner}_{suffix}"
        self._sql(f'CREATE ROLE "{role}" LOGIN IN ROLE "{self.owner}"')
        self.roles.append(role)
        return role

    def cut(self, role: str) -> int:
        """Refuse ``role`` new connections and end its open ones; how many ended."""
        self._sql(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        with self.admin.begin() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE usename = :role"
                ),
                {"role": role},
            ).scalar_one()
        return int(ended)

    def restore(self, role: str) -> None:
        self._sql(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')

    def _sql(self, statement: str) -> None:
        with self.admin.begin() as connection:
            connection.execute(text(statement))


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"needs {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    tag = f"drill_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    found = Cluster(admin=admin, base_url=base, schema=tag, owner=tag)
    found._sql(f'CREATE ROLE "{tag}" LOGIN')
    found._sql(f'CREATE SCHEMA "{tag}" AUTHORIZATION "{tag}"')
    try:
        yield found
    finally:
        for role in [*found.roles, tag]:
            found.cut(role)
        found._sql(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
        for role in [*found.roles, tag]:
            found._sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()
