"""The benchmarks' anchor (bench/anchor.py) is a fair yardstick only while it does what
the service does: the same statements, statement for statement, and the same bytes back.
Both answer the same requests on the same store here, each with its statements recorded
at the driver."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from bench.anchor import create_anchor
from prism_backends.db.engine import QUERY_ONLY, READ_ONLY, sqlite_begin
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth

DOMAIN = "dom-1"
CVMS = f"/backends/{DOMAIN}/cvms"

Recorded = list[tuple[str, tuple[Any, ...]]]

# How a bind parameter is spelt differs (SQLAlchemy names them and casts them; the
# anchor's are positional): a statement is its text with every parameter a '?'.
_NAMED_PARAMETER = re.compile(r"%\(\w+\)s(?:::(?:TIMESTAMP WITH TIME ZONE|[A-Z]+))?")


_SQLITE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def _normal(sql: str) -> str:
    sql = _NAMED_PARAMETER.sub("?", sql).replace("%s", "?").replace("%%", "%")
    return " ".join(sql.split()).replace("( ", "(").replace(" )", ")")


def _values(params: Any, sql: str) -> tuple[Any, ...]:
    if isinstance(params, dict):  # pyformat: in the order they appear
        params = [params[name] for name in re.findall(r"%\((\w+)\)s", sql)]
    # Times are taken at each request ('days'; SQLite's as text), bytes may be memoryviews.
    return tuple(
        "<time>"
        if isinstance(v, datetime) or (isinstance(v, str) and _SQLITE_TIME.fullmatch(v))
        else bytes(v)
        if isinstance(v, memoryview)
        else v
        for v in params or ()
    )


@pytest.fixture
def ours(runtime: Runtime) -> Iterator[tuple[TestClient, Recorded]]:
    recorded: Recorded = []
    postgres = runtime.engine.dialect.name == "postgresql"

    def sent(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        recorded.append((_normal(sql), _values(params, sql)))

    def began(connection: Any) -> None:
        if postgres:  # psycopg's implicit BEGIN
            recorded.append(("BEGIN", ()))
        else:  # what db.engine sends on the driver's connection, which it has not yet
            read_only = bool(connection.get_execution_options().get(READ_ONLY))
            query_only = connection.connection.info.get(QUERY_ONLY)
            recorded.extend((statement, ()) for statement in sqlite_begin(read_only, query_only))

    event.listen(runtime.engine, "before_cursor_execute", sent)
    event.listen(runtime.engine, "begin", began, insert=True)  # before db.engine's own
    event.listen(runtime.engine, "commit", lambda _c: recorded.append(("COMMIT", ())))
    event.listen(runtime.engine, "rollback", lambda _c: recorded.append(("ROLLBACK", ())))
    with TestClient(create_app(runtime)) as client:
        yield client, recorded


@pytest.fixture
def anchor(runtime: Runtime) -> Iterator[tuple[TestClient, Recorded]]:
    recorded: Recorded = []

    def sent(sql: str, params: Sequence[Any]) -> None:
        recorded.append((_normal(sql), _values(params, sql)))

    with TestClient(create_anchor(runtime.settings, trace=sent)) as client:
        yield client, recorded


def _fill(client: TestClient, headers: dict[str, str], runtime: Runtime) -> list[str]:
    ids = []
    for number, platform in enumerate(["sev-snp", "tdx", "sev-snp", "tdx", "sev-snp"]):
        reply = client.post(
            f"{CVMS}/external/2/{platform}",
            json={"name": f"Team-{number}_x%y"},
            headers=headers,
        )
        assert reply.status_code == 201, reply.text
        ids.append(reply.json()["id"])
    with runtime.engine.begin() as connection:
        connection.execute(
            text("UPDATE cvms SET attestation = :blob, status = 'running' WHERE id = :id"),
            {"blob": b"\x01report\xff", "id": ids[0]},
        )
    assert client.delete(f"{CVMS}/{ids[4]}", headers=headers).status_code == 204
    return ids


READS: list[tuple[str, dict[str, str]]] = [
    ("", {}),
    ("", {"limit": "100"}),
    ("", {"offset": "2"}),
    ("", {"name": "TEAM-1"}),
    ("", {"name": "_x%"}),
    ("", {"status": "running"}),
    ("", {"status": "inactive"}),
    ("", {"cc_platform": "tdx"}),
    ("", {"days": "7"}),
    ("", {"status": "running", "cc_platform": "sev-snp", "name": "team", "days": "3"}),
]


def test_reads_send_the_same_statements_and_render_the_same_bytes(
    ours: tuple[TestClient, Recorded],
    anchor: tuple[TestClient, Recorded],
    token: TokenFactory,
    runtime: Runtime,
) -> None:
    headers = auth(token(DOMAIN))
    (our_client, our_sent), (anchor_client, anchor_sent) = ours, anchor
    ids = _fill(our_client, headers, runtime)
    requests: list[tuple[str, dict[str, str]]] = [
        *((f"/{cvm_id}", {}) for cvm_id in ids[:2]),
        ("/00000000-0000-4000-8000-000000000000", {}),
        *READS,
    ]
    for suffix, params in requests:
        our_sent.clear()
        anchor_sent.clear()
        mine = our_client.get(f"{CVMS}{suffix}", params=params, headers=headers)
        theirs = anchor_client.get(f"{CVMS}{suffix}", params=params, headers=headers)
        where = f"GET {suffix or '/'} {params}"
        assert mine.status_code == theirs.status_code, where
        if mine.status_code == 200:
            assert mine.content == theirs.content, where
        assert _work(our_sent) == _work(anchor_sent), where
        assert our_sent, where


def _work(sent: Recorded) -> Recorded:
    """What a request sent but SQLite's query_only switch: both send it only when
    a connection's mode changes (db.engine.sqlite_begin), so whether a request sends
    it depends on what its connection ran before, which differs between two pools."""
    return [(sql, values) for sql, values in sent if not sql.startswith("PRAGMA query_only")]


def _masked(reply: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(reply.content)
    for key in ("id", "cvm_id", "created_at", "updated_at"):
        body[key] = "<varies>"
    return body


def test_create_sends_the_same_statements_and_renders_the_same_shape(
    ours: tuple[TestClient, Recorded],
    anchor: tuple[TestClient, Recorded],
    token: TokenFactory,
) -> None:
    headers = auth(token(DOMAIN))
    (our_client, our_sent), (_, anchor_sent) = ours, anchor
    replies = []
    for (client, sent), name in ((ours, "first"), (anchor, "second")):
        sent.clear()
        reply = client.post(
            f"{CVMS}/external/4/tdx",
            content=json.dumps({"name": name}),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert reply.status_code == 201, reply.text
        replies.append(reply)

    def shape(sent: Recorded) -> list[str]:
        return [sql for sql, _ in _work(sent)]

    assert shape(our_sent) == shape(anchor_sent)
    mine, theirs = _masked(replies[0]), _masked(replies[1])
    assert mine == {**theirs, "name": "first"}
    assert list(json.loads(replies[0].content)) == list(json.loads(replies[1].content))
    assert (
        replies[0].headers["location"].rsplit("/", 1)[0]
        == replies[1].headers["location"].rsplit("/", 1)[0]
    )
    assert our_client.get(f"{CVMS}/{replies[1].json()['id']}", headers=headers).json() == (
        replies[1].json()
    )
