"""Fuzzing the HTTP API: schemathesis from the OpenAPI document, and Hypothesis by hand.

The contract these tests hold the service to:

* no input ever produces a 5xx;
* every status is one of ``CONTRACT_STATUSES``;
* every error is JSON ``{"error": code, "message": text}``;
* every response conforms to the OpenAPI document the service serves (status
  documented, body matching its schema, content type), negative data is
  rejected, authentication is enforced, undocumented methods get a 405.

Schemathesis drives every operation of the document in its coverage and
fuzzing phases, with both positive and negative data (mode "all"). An auth
provider gives most requests a valid admin token for the path's domain, so that
generation reaches the handlers; the rest get a member's token, another
domain's, an expired, badly signed, malformed or non-Bearer one, or none; the
``ignored_auth`` check also replays successful requests without and with bad
credentials. Path and query parameters are drawn partly from dictionaries of
meaningful values (the seeded domain, providers, platforms, seeded CVM ids,
numeric edge cases), the rest generated from the document.

The hand-written Hypothesis tests post arbitrary bodies and path segments to
the create route and arbitrary query strings to the list route.

Everything runs in-process against the ASGI app. Hypothesis is derandomised,
schemathesis has a fixed seed, and no example database is written. The
PostgreSQL runs (marker ``postgres``) use fewer examples. About 2,000 requests
on SQLite (plus the replays of ``ignored_auth``), 500 more on PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import AuthContext, BaseSchema, Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from prism_backends.auth.keys import KEY_FILE
from prism_backends.auth.permissions import Role
from prism_backends.auth.tokens import issue_token
from prism_backends.config import Settings
from prism_backends.cvms.models import CVM
from prism_backends.db.base import utcnow
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime

# --------------------------------------------------------------------------- contract

CONTRACT_STATUSES: Final = frozenset(
    {200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429, 503}
)
CVM_FIELDS: Final = frozenset(
    {
        "id", "name", "cvm_id", "agent_url", "status", "state", "created_at", "deleted_at",
        "provider", "vcpus", "attestation", "attestation_token", "agent_log_level",
        "monthly_cost_estimate", "cc_platform", "domain_id", "error", "attestation_error",
        "updated_at",
    }
)  # fmt: skip


def contract_violations(
    status: int, content_type: str | None, content: bytes, *, head: bool = False
) -> list[str]:
    """What is wrong with a response under the API contract; empty when nothing is."""
    problems: list[str] = []
    if status >= 500:
        problems.append(f"server error {status}")
    if status not in CONTRACT_STATUSES:
        problems.append(f"status {status} is not one the contract uses")
    if head and not content:
        return problems  # a reply to HEAD has no body to check
    if status == 204:
        if content:
            problems.append("a 204 has a body")
        return problems
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        problems.append(f"Content-Type is {content_type!r}, not application/json")
        return problems
    try:
        body = json.loads(content)
    except ValueError:
        problems.append(f"the body is not JSON: {content[:200]!r}")
        return problems
    if status >= 400:
        if not isinstance(body, dict) or set(body) != {"error", "message"}:
            problems.append(f"the error body is not {{error, message}}: {body!r:.300}")
        elif not all(isinstance(body[key], str) and body[key] for key in ("error", "message")):
            problems.append(f"error and message must be non-empty strings: {body!r:.300}")
    return problems


# ------------------------------------------------------------------------- seed data

DOMAIN: Final = "dom-1"
OTHER_DOMAIN: Final = "dom-2"
LIVE_ID: Final = "00000000-0000-4000-8000-000000000001"  # provisioned, with a policy
PENDING_ID: Final = "00000000-0000-4000-8000-000000000002"  # no policy yet: 409
FAILED_ID: Final = "00000000-0000-4000-8000-000000000003"  # failed: 409 on the policy
DELETED_ID: Final = "00000000-0000-4000-8000-000000000004"  # deleted: 404, listed as inactive
FOREIGN_ID: Final = "00000000-0000-4000-8000-000000000005"  # another domain's: 404
SPARE_IDS: Final = tuple(f"00000000-0000-4000-8000-0000000001{i:02d}" for i in range(6))
SEEDED_IDS: Final = (LIVE_ID, PENDING_ID, FAILED_ID, DELETED_ID, FOREIGN_ID, *SPARE_IDS)


def _seed_cvm(cvm_id: str, domain: str, *, state: str, status: str, **extra: Any) -> CVM:
    created = utcnow() - timedelta(hours=1)
    values: dict[str, Any] = {
        "id": cvm_id,
        "domain_id": domain,
        "name": f"seed-{cvm_id[-3:]}",
        "provider": "external",
        "cc_platform": "sev-snp",
        "vcpus": 2,
        "agent_log_level": "info",
        "agent_url": "",
        "cvm_id": cvm_id,
        "state": state,
        "status": status,
        "error": "",
        "monthly_cost_cents": 1234,
        "price_table_version": "",
        "attestation": None,
        "attestation_token": "",
        "attestation_policy": None,
        "created_at": created,
        "updated_at": created,
        "deleted_at": None,
        "idempotency_key": None,
        "request_digest": "",
        "next_attempt_at": None,
        "attempts": 0,
    }
    values.update(extra)
    return CVM(**values)


def seed_store(runtime: Runtime) -> None:
    """CVMs in every state the read routes tell apart (no uptime samples: their
    storage is not this module's business, and an empty window is a valid answer)."""
    now = utcnow()
    spares = [
        _seed_cvm(spare, DOMAIN, state="provisioned", status="running", attestation_policy=b"p")
        for spare in SPARE_IDS
    ]
    with runtime.sessions.begin() as session:
        session.add_all(
            [
                _seed_cvm(
                    LIVE_ID, DOMAIN, state="provisioned", status="running",
                    attestation=b"\x01\x02\x03", attestation_policy=b'{"measurement": "00"}',
                ),
                _seed_cvm(PENDING_ID, DOMAIN, state="pending", status="starting"),
                _seed_cvm(FAILED_ID, DOMAIN, state="failed", status="failed", error="no capacity"),
                _seed_cvm(DELETED_ID, DOMAIN, state="deleted", status="inactive", deleted_at=now),
                _seed_cvm(FOREIGN_ID, OTHER_DOMAIN, state="provisioned", status="running"),
                *spares,
            ]
        )  # fmt: skip


# ------------------------------------------------------------------------------ auth


# One fixed issuer key for the whole module: schemathesis builds its coverage cases,
# credentials included, at collection, before any test's data directory exists.
# Each test writes this key where the embedded issuer looks for it.
ISSUER_KEY: Final = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@dataclass
class Tokens:
    """Tokens from the module's issuer key, one per (domain, role, expired)."""

    _cache: dict[tuple[str, Role, bool], str] = field(default_factory=dict)

    def get(self, domain: str, role: Role = Role.ADMIN, *, expired: bool = False) -> str:
        key = (domain, role, expired)
        if key not in self._cache:
            self._cache[key] = issue_token(
                ISSUER_KEY,
                issuer="prism-backends",
                domain_id=domain,
                role=role,
                subject="fuzzer",
                ttl=timedelta(hours=-1) if expired else timedelta(hours=2),
            )
        return self._cache[key]


TOKENS: Final = Tokens()


@pytest.fixture
def trusted_key(data_dir: Path) -> None:
    """Make the embedded issuer of this test's runtime the module's key."""
    pem = ISSUER_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (data_dir / KEY_FILE).write_bytes(pem)


CALLERS: Final = ("admin",) * 18 + (
    "member", "other-domain", "expired", "bad-signature", "malformed", "not-bearer", "missing",
)  # fmt: skip
"""Who sends a schemathesis case, picked from a digest of the case: mostly an admin."""


def credentials(caller: str, domain: str) -> str | None:
    """The Authorization header of one kind of caller; None for no header."""
    if caller == "admin":
        return f"Bearer {TOKENS.get(domain)}"
    if caller == "member":
        return f"Bearer {TOKENS.get(domain, Role.MEMBER)}"
    if caller == "other-domain":
        return f"Bearer {TOKENS.get(OTHER_DOMAIN if domain != OTHER_DOMAIN else DOMAIN)}"
    if caller == "expired":
        return f"Bearer {TOKENS.get(domain, expired=True)}"
    if caller == "bad-signature":
        return f"Bearer {TOKENS.get(domain)[:-6]}AAAAAA"
    if caller == "malformed":
        return "Bearer not.a.jwt"
    if caller == "not-bearer":
        return f"Basic {TOKENS.get(domain)}"
    return None


def path_domain(case: Case[Any]) -> str:
    domain = case.path_parameters.get("domainID", DOMAIN)
    return str(domain) if isinstance(domain, str | int | float | bool) else DOMAIN


class FuzzAuth:
    """Credentials for schemathesis cases. Schemathesis skips it for the cases whose
    point is a missing or invalid Authorization header."""

    def get(self, case: Case[Any], ctx: AuthContext) -> str | None:
        caller = CALLERS[zlib.crc32(repr(case).encode()) % len(CALLERS)]
        return credentials(caller, path_domain(case))

    def set(self, case: Case[Any], data: str, ctx: AuthContext) -> None:
        case.headers["Authorization"] = data


# ------------------------------------------------------------------------- the ASGI app

# Schemathesis parametrises its tests by operation at collection, so the app and
# its document exist at import; each test swaps its own runtime into the app.
# Rate limits off: thousands of generated requests from one address would
# otherwise meet 429s (tests/http/test_rate_limits.py holds those).
_IDLE_RUNTIME: Final = Runtime(
    Settings(
        data_dir=Path("/nonexistent/prism-backends-fuzz"),
        database_url="sqlite://",
        rate_limit_per_source=0,
        rate_limit_per_principal=0,
    )
)
APP: Final = create_app(_IDLE_RUNTIME)
BASE: Final = _IDLE_RUNTIME.settings.base_path
OPENAPI_PATH: Final = f"{BASE}/openapi.json"


@pytest.fixture
def fuzz_app(runtime: Runtime, trusted_key: None) -> Iterator[FastAPI]:
    seed_store(runtime)
    APP.state.runtime = runtime
    try:
        yield APP
    finally:
        APP.state.runtime = _IDLE_RUNTIME


# --------------------------------------------------------------------- schemathesis


def self_contained(document: dict[str, Any]) -> dict[str, Any]:
    """The document with nested ``$defs`` hoisted into ``components/schemas``.

    A pydantic ``model_json_schema()`` pasted into ``openapi_extra`` keeps its
    ``$defs`` inside the operation, where ``#/$defs/...`` does not resolve, and
    schemathesis then never sends a body. Fuzzing a repaired copy keeps the
    create route's body under test; ``test_openapi_references_resolve`` fails
    until the served document is fixed (this is then the identity).
    """
    repaired = copy.deepcopy(document)
    components = repaired.setdefault("components", {}).setdefault("schemas", {})

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            definitions = node.pop("$defs", None)
            if isinstance(definitions, dict):
                for name, definition in definitions.items():
                    components.setdefault(name, definition)
                    visit(definition)
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + reference.removeprefix("#/$defs/")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(repaired)
    return repaired


NUMBERS: Final = [
    "0", "1", "2", "10", "100", "101", "1000", "10000", "10001", "36500", "-1", "--1", "+-2",
    " 7 ", "+3", "1e3", "0x10", "99999999999999999999",
]  # fmt: skip
VCPUS: Final = ["1", "2", "4", "512", "513", "0", "002", "-2", "--2", "7" * 4301]


def fuzz_config(max_examples: int) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20_240_601,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
                # Credentials come from FuzzAuth alone: generated ones are mostly a
                # missing header, which would be the only negation of most cases.
                "with-security-parameters": False,
            },
            # Examples: the document has none worth sending; stateful: no links.
            "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
            # Constants mined from the app's modules depend on what the process has
            # imported and on the source of the day: the dictionaries below are stable.
            "analysis": {"constants": {"enabled": False}},
            "dictionaries": {
                "domains": {"values": [DOMAIN]},
                "providers": {
                    "values": ["external", "external", "external", "EXTERNAL", "azure", "aws"]
                },
                "vcpus": {"values": VCPUS},
                "platforms": {"values": ["sev-snp", "tdx", "SEV SNP", "Intel_TDX", "snp", "sgx"]},
                "cvm_ids": {"values": [*SEEDED_IDS, "_"]},
                "names": {"values": ["seed", "SEED-1", "%", "_", "\\", "\x00"]},
                "statuses": {"values": ["running", "inactive", "starting", "INACTIVE", "gone"]},
                "numbers": {"values": NUMBERS},
            },
            "parameters": {
                "path.domainID": {"dictionary": "domains", "probability": 0.7},
                "query.domainID": {"dictionary": "domains", "probability": 0.5},
                "path.provider": {"dictionary": "providers", "probability": 0.6},
                "path.vcpu": {"dictionary": "vcpus", "probability": 0.6},
                "path.cc_platform": {"dictionary": "platforms", "probability": 0.6},
                "path.id": {"dictionary": "cvm_ids", "probability": 0.6},
                "query.name": {"dictionary": "names", "probability": 0.3},
                "query.status": {"dictionary": "statuses", "probability": 0.3},
                "query.cc_platform": {"dictionary": "platforms", "probability": 0.3},
                "query.limit": {"dictionary": "numbers", "probability": 0.3},
                "query.offset": {"dictionary": "numbers", "probability": 0.3},
                "query.days": {"dictionary": "numbers", "probability": 0.3},
            },
        }
    )


DOCUMENT: Final = self_contained(APP.openapi())
OPERATIONS: Final = sum(len(operations) for operations in DOCUMENT["paths"].values())


def load_schema(budget: int) -> BaseSchema:
    """The document to fuzz, about ``budget`` generated cases split over its operations
    (so that the run time stays put as routes are added)."""
    config = fuzz_config(max_examples=max(25, budget // OPERATIONS))
    loaded = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=config)
    loaded.app = APP
    loaded.location = OPENAPI_PATH
    loaded.auth(refresh_interval=None)(FuzzAuth)
    return loaded


schema: Final = load_schema(budget=1100)
schema_postgres: Final = load_schema(budget=250)


def error_contract(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Contract statuses only, and every error JSON ``{error, message}``."""
    content_type = next(iter(response.headers.get("content-type", [])), None)
    head = response.request.method == "HEAD"
    problems = contract_violations(response.status_code, content_type, response.content, head=head)
    assert not problems, "; ".join(problems)
    return None


CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    ignored_auth,
    error_contract,
]

FUZZ_SETTINGS: Final = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@schema.parametrize()
@FUZZ_SETTINGS
def test_schemathesis(case: Case[Any], fuzz_app: FastAPI) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
@schema_postgres.parametrize()
@FUZZ_SETTINGS
def test_schemathesis_postgres(case: Case[Any], fuzz_app: FastAPI) -> None:
    case.call_and_validate(checks=CHECKS)


# ------------------------------------------------------------ hand-written Hypothesis
#
# Each request starts valid (an admin creating or listing in the seeded domain)
# and has a few of its parts replaced by arbitrary values, so that generation
# reaches every check of the handlers, not only the first.

# Text from a few characters that tend to matter (NUL, controls, separators,
# escapes, invisible and non-BMP ones), so that they come up often; and any text
# a URL can carry (lone surrogates cannot be percent-encoded).
tricky_text = st.text(
    st.sampled_from("\x00\x01\t\n\r %_\\'\"/?#&=+.-aZ9\xa0\u200b\u2028\ufeff\U0001f600")
)
any_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40), tricky_text.filter(bool)
)
numeric_like = st.from_regex(r"\A[ +\-]{0,3}[0-9]{0,25}[ .e]?[0-9]{0,2}\Z")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    tricky_text,
).filter(lambda name: name.strip() != "")
valid_objects = st.fixed_dictionaries(
    {"name": names},
    optional={
        "agent_log_level": st.sampled_from(["debug", "info", "warn", "error"]),
        "agent_url": st.sampled_from(["https://agent.example:7001", None]),
    },
)
create_objects = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=300), json_values),
        "agent_log_level": st.one_of(
            st.sampled_from(["debug", "info", "warn", "error", "INFO", "trace"]), json_values
        ),
        "agent_url": st.one_of(st.text(max_size=2100), st.none(), json_values),
        "extra": json_values,
    },
)


def _encode_json(value: Any, ascii_only: bool) -> bytes:
    # ensure_ascii writes lone surrogates as \udXXX escapes; otherwise they go raw.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# Header values travel as latin-1 octets; CR and LF cannot be sent.
header_text = st.text(
    st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=300
).map(lambda text: text.encode("latin-1"))
callers = st.sampled_from([*dict.fromkeys(CALLERS)])

CREATE_MUTATIONS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "domain": st.one_of(
        st.just(OTHER_DOMAIN), st.text("ABCxyz019._-", min_size=1, max_size=70), any_text
    ),
    "provider": st.one_of(
        st.sampled_from(["External", "EXTERNAL", "azure", "gcp", "aws", "ultraviolet", "ibm"]),
        any_text,
    ),
    "vcpu": st.one_of(
        st.integers(-3, 600).map(str),
        numeric_like,
        # Long digit runs, around Python's 4300-digit limit of int(str).
        st.sampled_from([19, 400, 4300, 4301, 6000]).map(lambda digits: "7" * digits),
        any_text,
    ),
    "platform": st.one_of(
        st.sampled_from(["tdx", "SEV_SNP", "Intel TDX", "amd sev snp", "sgx", "sev-snp/"]),
        any_text,
    ),
    "body": st.one_of(
        st.builds(_encode_json, create_objects, st.booleans()),
        st.builds(_encode_json, json_values, st.booleans()),
        st.binary(max_size=300),
        st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.integers(60_000, 70_000).map(lambda size: b" " * size),
    ),
    "content_type": st.sampled_from(
        [
            "application/json; charset=utf-8",
            "Application/JSON",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            None,
        ]
    ),
    "idempotency_key": st.one_of(st.sampled_from([b"key-1", b"key-2"]), header_text),
    "caller": callers,
}


@dataclass
class CreateRequest:
    body: bytes
    domain: str = DOMAIN
    provider: str = "external"
    vcpu: str = "2"
    platform: str = "sev-snp"
    content_type: str | None = "application/json"
    idempotency_key: bytes | None = None
    caller: str = "admin"


@st.composite
def create_requests(draw: st.DrawFn) -> CreateRequest:
    request = CreateRequest(body=draw(st.builds(_encode_json, valid_objects, st.booleans())))
    for part in draw(st.lists(st.sampled_from(sorted(CREATE_MUTATIONS)), max_size=3, unique=True)):
        setattr(request, part, draw(CREATE_MUTATIONS[part]))
    return request


class ServerError(AssertionError):
    """A 5xx."""


class OutsideContract(AssertionError):
    """A status the contract does not use, or an error that is not JSON {error, message}."""


class AuthBypass(AssertionError):
    """A request without valid credentials, or with too few rights, got through."""


def _clip(text: str, keep: int = 400) -> str:
    return (
        text
        if len(text) <= keep
        else f"{text[: keep // 2]}...<{len(text)} chars>...{text[-keep // 4 :]}"
    )


def check_reply(response: Any, caller: str, request: str) -> None:
    """Raise a distinct exception per kind of violation, so Hypothesis reports each."""
    request = _clip(request, 1200)
    status = response.status_code
    content_type = response.headers.get("content-type")
    reply = f"{request}\n  -> {status} {content_type} {response.text[:300]!r}"
    if status >= 500:
        raise ServerError(reply)
    problems = contract_violations(status, content_type, response.content)
    if problems:
        raise OutsideContract(f"{reply}\n  {problems}")
    authenticated = caller in ("admin", "member", "other-domain")
    if not authenticated and status not in (401, 404, 405, 413):
        raise AuthBypass(f"{reply}\n  a {caller!r} caller got past authentication")
    writes = request.startswith("POST")
    if 200 <= status < 300 and (caller == "other-domain" or (caller == "member" and writes)):
        raise AuthBypass(f"{reply}\n  a {caller!r} caller was let through")


def authorization(caller: str, domain: str) -> dict[str, str]:
    value = credentials(caller, domain)
    return {} if value is None else {"Authorization": value}


@pytest.fixture
def examples(database_url: str) -> int:
    return 400 if database_url.startswith("sqlite") else 100


@pytest.fixture
def seeded(runtime: Runtime, trusted_key: None) -> None:
    seed_store(runtime)


def test_create_route_survives_arbitrary_input(
    client: TestClient, examples: int, seeded: None
) -> None:
    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(create_requests())
    def create(request: CreateRequest) -> None:
        segments = [
            quote(part, safe="")
            for part in (request.domain, request.provider, request.vcpu, request.platform)
        ]
        path = f"{BASE}/{segments[0]}/cvms/{'/'.join(segments[1:])}"
        headers = [
            (name.encode(), value.encode())
            for name, value in authorization(request.caller, request.domain).items()
        ]
        if request.content_type is not None:
            headers.append((b"Content-Type", request.content_type.encode()))
        if request.idempotency_key is not None:
            headers.append((b"Idempotency-Key", request.idempotency_key))
        response = client.post(path, content=request.body, headers=headers, follow_redirects=False)
        sent = {name.decode(): value.decode("latin-1") for name, value in headers}
        described = f"POST {path} headers={sent} body={request.body[:300]!r}"
        check_reply(response, request.caller, described)
        if response.status_code in (200, 201):
            assert set(response.json()) == CVM_FIELDS, described
            assert response.headers["location"].startswith(f"{BASE}/{request.domain}/cvms/")

    create()


LIST_PARAMETERS: Final = ("limit", "offset", "name", "status", "days", "cc_platform", "domainID")
query_values = st.one_of(
    numeric_like,
    st.sampled_from(["running", "inactive", "sev-snp", "tdx", DOMAIN, "", "%", "_", "\\"]),
    any_text,
)
query_strings = st.one_of(
    st.lists(st.tuples(st.sampled_from(LIST_PARAMETERS) | any_text, query_values), max_size=5).map(
        lambda pairs: urlencode(pairs, quote_via=quote)
    ),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=60
    ),
)
LIST_MUTATIONS: Final[dict[str, st.SearchStrategy[str]]] = {
    "domain": CREATE_MUTATIONS["domain"],
    "caller": callers,
    "suffix": st.sampled_from(["/", "//", "/.", "%2F", "/%2e"]),
}


@dataclass
class ListRequest:
    query: str
    domain: str = DOMAIN
    caller: str = "admin"
    suffix: str = ""


@st.composite
def list_requests(draw: st.DrawFn) -> ListRequest:
    request = ListRequest(query=draw(query_strings))
    for part in draw(st.lists(st.sampled_from(sorted(LIST_MUTATIONS)), max_size=2, unique=True)):
        setattr(request, part, draw(LIST_MUTATIONS[part]))
    return request


def test_list_route_survives_arbitrary_queries(
    client: TestClient, examples: int, seeded: None
) -> None:
    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(list_requests())
    def list_cvms(request: ListRequest) -> None:
        path = f"{BASE}/{quote(request.domain, safe='')}/cvms{request.suffix}?{request.query}"
        headers = authorization(request.caller, request.domain)
        response = client.get(path, headers=headers, follow_redirects=False)
        check_reply(response, request.caller, f"GET {path} headers={headers}")
        if response.status_code == 200:
            page = response.json()
            assert set(page) == {"cvms", "total", "limit", "offset"}, path
            assert all(set(cvm) == CVM_FIELDS for cvm in page["cvms"]), path

    list_cvms()


# ------------------------------------------------------------ the document itself


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str):
            yield reference
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _resolves(document: dict[str, Any], reference: str) -> bool:
    if not reference.startswith("#/"):
        return False
    node: Any = document
    for token in reference[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            return False
        node = node[token]
    return True


def served_document() -> dict[str, Any]:
    document: dict[str, Any] = TestClient(APP).get(OPENAPI_PATH).json()
    return document


def test_openapi_references_resolve() -> None:
    """Every ``$ref`` of the served document resolves in it (else clients and fuzzers skip it)."""
    document = served_document()
    broken = sorted({ref for ref in _references(document) if not _resolves(document, ref)})
    assert not broken, f"unresolvable references in {OPENAPI_PATH}: {broken}"


def test_openapi_documents_only_contract_statuses() -> None:
    """The document promises no status the service never sends (such as FastAPI's 422)."""
    foreign = sorted(
        f"{method.upper()} {path}: {status}"
        for path, operations in served_document()["paths"].items()
        for method, operation in operations.items()
        for status in operation.get("responses", {})
        if status == "default" or int(status) not in CONTRACT_STATUSES
    )
    assert not foreign, f"documented statuses outside the contract: {foreign}"
