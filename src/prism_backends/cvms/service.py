"""What the CVM routes do. Each function takes the principal and the session
(for view, list and create, which run Core statements alone, a plain
Connection); the caller owns the transaction."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from prism_backends.agents import repository as agents_repository
from prism_backends.agents.models import AgentCredential
from prism_backends.agents.service import CredentialIssuer
from prism_backends.attestation import corim
from prism_backends.attestation.common import PolicyError
from prism_backends.auth.permissions import Permission
from prism_backends.auth.principal import Principal
from prism_backends.cvms import repository
from prism_backends.cvms.models import CVM
from prism_backends.cvms.paging import bounded_int, parse_page
from prism_backends.cvms.schemas import MAX_NAME_LENGTH, CreateCVMRequest, ShownCVM
from prism_backends.db.base import utcnow
from prism_backends.errors import BadRequest, Conflict, NotFound, UnsupportedMediaType
from prism_backends.pricing.core import PriceTable
from prism_backends.pricing.table import estimate_cents
from prism_backends.providers.registry import Catalog, CatalogEntry
from prism_backends.statistics import repository as stats_repository
from prism_backends.statistics.bitmap import Sample, window
from prism_backends.vocabulary import (
    DOMAIN_ID_PATTERN,
    PROVIDER_NAMES,
    Platform,
    State,
    Status,
    parse_platform,
)

_VCPU = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class DraftCVM:
    cvm: CVM  # every column given, as repository.insert_new writes it
    credential: AgentCredential  # its agent's certificate, signed, its key sealed


@dataclass(frozen=True)
class CreateOutcome:
    cvm: ShownCVM  # the new CVM, or a replay's, as the view shows it
    created: bool  # False when an Idempotency-Key replay returned an existing CVM


def check_domain(domain_id: str, query_domain_id: str | None) -> None:
    """The path's domain must be well formed and agree with ``?domainID=``."""
    if not DOMAIN_ID_PATTERN.fullmatch(domain_id):
        raise BadRequest("must be 1-64 characters of A-Z a-z 0-9 . _ -", field="domainID")
    if query_domain_id is not None and query_domain_id != domain_id:
        raise BadRequest("the query parameter differs from the path's domain", field="domainID")


def draft_cvm(
    principal: Principal,
    *,
    catalog: Catalog,
    prices: PriceTable,
    credentials: CredentialIssuer,
    domain_id: str,
    provider_name: str,
    vcpu: str,
    cc_platform: str,
    content_type: str,
    body: bytes,
    idempotency_key: str | None,
) -> DraftCVM:
    """Check a create and build its rows, before any transaction: a bad request
    never opens one, and the certificate is signed outside SQLite's write lock
    (a replay or a taken name then discards a credential never stored)."""
    principal.require(domain_id, Permission.CREATE)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise BadRequest("must be 1-255 characters", field="Idempotency-Key")
    request = _parse_create_body(content_type, body)
    entry = _enabled_provider(catalog, provider_name)
    platform = _offered_platform(cc_platform, entry.config.name, entry.provider.offerings)
    vcpus = _offered_vcpus(vcpu, platform, entry.config.name, entry.provider.offerings)
    if request.agent_url is not None and entry.config.name != "external":
        raise BadRequest("is only accepted for provider 'external'", field="agent_url")

    digest = _request_digest(entry.config.name, platform, vcpus, request)
    now = utcnow()
    cvm_id = str(uuid.uuid4())
    instant = entry.provider.provisions_instantly
    reference_policy = entry.config.attestation_policies.get(platform)
    # Every column is given (repository.insert_new writes them as they are).
    cvm = CVM(
        id=cvm_id,
        domain_id=domain_id,
        name=request.name,
        provider=entry.config.name,
        cc_platform=platform.value,
        vcpus=vcpus,
        agent_log_level=request.agent_log_level.value,
        agent_url=request.agent_url or "",
        cvm_id=cvm_id if instant else "",
        state=(State.PROVISIONED if instant else State.PENDING).value,
        status=Status.STARTING.value,
        error="",
        monthly_cost_cents=estimate_cents(
            prices,
            entry.config.name,
            platform.value,
            vcpus,
            catalog.price_override(entry.config.name, platform),
            catalog.price_region(entry.config.name),
        ),
        price_table_version=prices.version,
        attestation=None,
        attestation_token="",
        attestation_policy=reference_policy,
        attestation_policy_source="reference" if reference_policy is not None else "",
        attestation_error="",
        attestations_verified=0,
        attestations_failed=0,
        attested_at=None,
        created_at=now,
        updated_at=now,
        deleted_at=None,
        idempotency_key=idempotency_key,
        request_digest=digest,
        lease_owner=None,
        lease_expires_at=None,
        # The workers' queue: an instant provider has nothing left to do.
        next_attempt_at=None if instant else now,
        attempts=0,
        first_failure_at=None,
    )
    credential = credentials.new(cvm_id=cvm_id, domain_id=domain_id, now=now)
    return DraftCVM(cvm, credential)


def record_cvm(principal: Principal, connection: Connection, draft: DraftCVM) -> CreateOutcome:
    """Write a drafted CVM and its credential, or replay the CVM an earlier
    request with the same Idempotency-Key made."""
    cvm = draft.cvm
    principal.require(cvm.domain_id, Permission.CREATE)  # as every service call checks
    domain_id, key, digest = cvm.domain_id, cvm.idempotency_key, cvm.request_digest
    if key is not None:
        replay = _idempotent_replay(connection, domain_id, key, digest)
        if replay is not None:
            return CreateOutcome(replay, created=False)
    if repository.live_name_taken(connection, domain_id, cvm.name):
        # On PostgreSQL each statement reads what has committed by then: a retry's
        # first attempt may have committed between the key's lookup and the name's,
        # so the name's holder may be this very request's CVM. Look once more.
        if key is not None:
            replay = _idempotent_replay(connection, domain_id, key, digest)
            if replay is not None:
                return CreateOutcome(replay, created=False)
        raise Conflict(f"a CVM named {cvm.name!r} already exists in this domain")
    repository.insert_new(connection, cvm)
    agents_repository.insert_credential(connection, draft.credential)
    return CreateOutcome(ShownCVM.of(cvm), created=True)


def _parse_create_body(content_type: str, body: bytes) -> CreateCVMRequest:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {media_type or 'none'!r}"
        )
    try:
        return CreateCVMRequest.model_validate_json(body or b"")
    except ValidationError as exc:
        raise BadRequest(_describe_validation_error(exc)) from None


def _describe_validation_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown field (accepted: name, agent_log_level, agent_url)"
    if kind == "missing":
        return f"{location}: is required"
    if kind == "json_invalid":
        return f"body: not valid JSON ({error['msg']})"
    if kind in ("model_type", "dict_type") or not location:
        return "body: must be a JSON object"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def _enabled_provider(catalog: Catalog, raw: str) -> CatalogEntry:
    name = raw.strip().lower()  # as the platform is read
    entry = catalog.get(name)
    if entry is not None:
        return entry
    enabled = ", ".join(catalog.enabled_names) or "none"
    if name in PROVIDER_NAMES:
        raise BadRequest(
            f"provider {name!r} is not enabled: {catalog.why_unavailable(name)}; "
            f"enabled providers: {enabled}",
            field="provider",
        )
    raise BadRequest(
        f"unknown provider {raw!r}; known: {', '.join(PROVIDER_NAMES)}; enabled: {enabled}",
        field="provider",
    )


def _offered_platform(
    raw: str, provider: str, offerings: Mapping[Platform, frozenset[int]]
) -> Platform:
    platform = parse_platform(raw)
    if platform is None:
        raise BadRequest(f"unknown platform {raw!r}; accepted: sev-snp, tdx", field="cc_platform")
    if not offerings.get(platform):
        offered = ", ".join(sorted(p.value for p, counts in offerings.items() if counts))
        raise BadRequest(
            f"provider {provider!r} does not offer {platform.value}; it offers: {offered}",
            field="cc_platform",
        )
    return platform


def _offered_vcpus(
    raw: str, platform: Platform, provider: str, offerings: Mapping[Platform, frozenset[int]]
) -> int:
    allowed = offerings[platform]
    if not _VCPU.fullmatch(raw) or int(raw) not in allowed:
        described = _describe_counts(allowed)
        raise BadRequest(
            f"{raw!r} is not offered by {provider!r} for {platform.value}; allowed: {described}",
            field="vcpu",
        )
    return int(raw)


def _describe_counts(counts: frozenset[int]) -> str:
    ordered = sorted(counts)
    if len(ordered) > 16 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"any count from {ordered[0]} to {ordered[-1]}"
    return ", ".join(str(count) for count in ordered)


def _request_digest(
    provider: str, platform: Platform, vcpus: int, request: CreateCVMRequest
) -> str:
    canonical = json.dumps(
        [provider, platform.value, vcpus, request.model_dump(mode="json")], sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotent_replay(
    connection: Connection, domain_id: str, key: str, digest: str
) -> ShownCVM | None:
    existing = repository.shown_by_idempotency_key(connection, domain_id, key)
    if existing is None:
        return None
    shown, made_by = existing
    if made_by != digest:
        raise Conflict("this Idempotency-Key was used with a different request")
    return shown


@dataclass(frozen=True)
class CVMListing:
    rows: list[ShownCVM]
    total: int
    limit: int
    offset: int
    with_evidence: bool


def list_cvms(
    principal: Principal,
    connection: Connection,
    *,
    domain_id: str,
    limit: str | None,
    offset: str | None,
    name: str | None,
    status: str | None,
    days: str | None,
    cc_platform: str | None,
    include: str | None = None,
) -> CVMListing:
    """One page of the domain's CVMs. Their evidence blobs (``attestation``)
    are left empty unless ``include=attestation`` asks for them."""
    principal.require(domain_id, Permission.READ)
    page_limit, page_offset = parse_page(limit, offset)
    if name is not None and not name.isprintable():
        raise BadRequest("must not contain control characters", field="name")
    if name is not None and len(name) > MAX_NAME_LENGTH:
        # No CVM's name is longer; a longer pattern only costs the store work.
        raise BadRequest(f"at most {MAX_NAME_LENGTH} characters", field="name")
    filters = repository.ListFilters(
        name=name or None,
        status=_parse_status(status),
        cc_platform=_parse_filter_platform(cc_platform),
        created_after=_parse_days(days),
    )
    with_evidence = _wants_evidence(include)
    rows, total = repository.list_page(
        connection,
        domain_id,
        filters,
        limit=page_limit,
        offset=page_offset,
        with_evidence=with_evidence,
    )
    return CVMListing(rows, total, page_limit, page_offset, with_evidence)


LIST_INCLUDES = ("attestation",)


def _wants_evidence(include: str | None) -> bool:
    """``include`` is a comma-separated list of what lists leave out by default."""
    asked = {part.strip().lower() for part in (include or "").split(",") if part.strip()}
    unknown = sorted(asked - set(LIST_INCLUDES))
    if unknown:
        raise BadRequest(
            f"unknown {', '.join(map(repr, unknown))}; accepted: {', '.join(LIST_INCLUDES)}",
            field="include",
        )
    return "attestation" in asked


def _parse_status(raw: str | None) -> Status | None:
    if raw is None or raw == "":
        return None
    try:
        return Status(raw.lower())
    except ValueError:
        accepted = ", ".join(status.value for status in Status)
        raise BadRequest(f"unknown status {raw!r}; accepted: {accepted}", field="status") from None


def _parse_filter_platform(raw: str | None) -> Platform | None:
    if raw is None or raw == "":
        return None
    platform = parse_platform(raw)
    if platform is None:
        raise BadRequest(f"unknown platform {raw!r}; accepted: sev-snp, tdx", field="cc_platform")
    return platform


def _parse_days(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    days = bounded_int(raw, "days", 1, 1, 36500)
    return utcnow() - timedelta(days=days)


def get_cvm(
    principal: Principal, connection: Connection, *, domain_id: str, cvm_id: str
) -> ShownCVM:
    """What the view route shows of a live CVM."""
    principal.require(domain_id, Permission.READ)
    cvm = repository.shown_live(connection, domain_id, cvm_id)
    if cvm is None:
        raise _not_found(domain_id, cvm_id)
    return cvm


def _live_or_404(session: Session, domain_id: str, cvm_id: str) -> CVM:
    cvm = repository.get_live(session, domain_id, cvm_id)
    if cvm is None:
        raise _not_found(domain_id, cvm_id)
    return cvm


def _not_found(domain_id: str, cvm_id: str) -> NotFound:
    return NotFound(f"no CVM {cvm_id!r} in domain {domain_id!r}")


def delete_cvm(principal: Principal, session: Session, *, domain_id: str, cvm_id: str) -> None:
    principal.require(domain_id, Permission.DELETE)
    now = utcnow()
    if not repository.mark_deleted(session, domain_id, cvm_id, now):
        raise _not_found(domain_id, cvm_id)
    # Its agent is refused from now on; the endpoint holding its stream sends
    # disconnectReq at its next heartbeat.
    agents_repository.revoke(session, domain_id, cvm_id, now)


@dataclass(frozen=True)
class StatisticsPage:
    samples: list[tuple[str, Sample]]  # (sample id, sample), newest first
    total: int
    uptime: float
    cvm: CVM


def get_statistics(
    principal: Principal,
    session: Session,
    *,
    domain_id: str,
    cvm_id: str,
    days: str | None,
    limit: str | None,
    offset: str | None,
    retention_days: int,
) -> StatisticsPage:
    principal.require(domain_id, Permission.READ)
    window_days = bounded_int(days, "days", 1, 1, retention_days)
    page_limit = bounded_int(limit, "limit", 1000, 1, 10_000)
    page_offset = bounded_int(offset, "offset", 0, 0, None)
    cvm = _live_or_404(session, domain_id, cvm_id)
    since = utcnow() - timedelta(days=window_days)
    rows = stats_repository.days_since(session, domain_id, cvm.id, since.date())
    found = window(rows, since, offset=page_offset, limit=page_limit)
    return StatisticsPage(
        samples=found.samples,
        total=found.total,
        uptime=(found.up / found.total) if found.total else 0.0,
        cvm=cvm,
    )


def get_attestation_policy(
    principal: Principal,
    session: Session,
    *,
    domain_id: str,
    cvm_id: str,
    policy_format: str | None = None,
) -> str:
    """The stored policy, base64; with ``policy_format``, converted to a CoRIM
    or to go-sev-guest / go-tdx-guest JSON."""
    if policy_format not in (None, "corim", "json"):
        raise BadRequest("must be corim or json", field="format")
    principal.require(domain_id, Permission.READ)
    cvm = _live_or_404(session, domain_id, cvm_id)
    if cvm.attestation_policy is None:
        raise Conflict(_why_no_policy(cvm))
    policy = cvm.attestation_policy
    try:
        if policy_format == "json" and corim.is_corim(policy):
            # The signature was checked when the policy was appraised against; a
            # client converting asks what it says, not whether to trust it.
            policy = corim.to_policy_json(corim.parse_unverified(policy, cvm.cc_platform))
        elif policy_format == "corim" and not corim.is_corim(policy):
            policy = corim.from_policy_json(policy, cvm.cc_platform)
    except PolicyError as exc:
        raise BadRequest(
            f"the policy cannot be given as {policy_format}: {exc}", field="format"
        ) from exc
    return base64.b64encode(policy).decode()


def _why_no_policy(cvm: CVM) -> str:
    if cvm.state in (State.PENDING.value, State.PROVISIONING.value):
        return "the attestation policy is not available yet: the CVM is still provisioning"
    if cvm.state == State.FAILED.value:
        return "the CVM failed to provision, so it has no attestation policy"
    return (
        f"no attestation policy is available: provider {cvm.provider!r} has no reference "
        f"values configured for {cvm.cc_platform}"
    )
