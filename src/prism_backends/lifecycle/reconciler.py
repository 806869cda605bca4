"""One step of convergence for one CVM: call the provider, decide the outcome,
and apply it to the row only while we still hold the lease."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from prism_backends.cvms.models import CVM
from prism_backends.lifecycle.queue import Work
from prism_backends.observability.providers import timed_call
from prism_backends.providers.base import (
    AgentBootstrap,
    Machine,
    MachineRequest,
    MachineState,
    Provider,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.vocabulary import LogLevel, Platform, State, Status

log = logging.getLogger(__name__)

# How soon to look again at a machine the provider is still creating.
CREATION_POLL_SECONDS = 5.0


class Kind(StrEnum):
    PROVISIONED = "provisioned"
    STILL_CREATING = "still_creating"
    RETRY = "retry"
    FAILED = "failed"
    CLEANED_UP = "cleaned_up"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    machine: Machine | None = None
    reason: str = ""


def step(work: Work, provider: Provider | None, agent: AgentBootstrap | None = None) -> Outcome:
    """Do what the CVM's state asks of its provider; never raises for provider errors.
    ``agent`` is what the machine's agent needs to dial in, for drivers that start it."""
    if provider is None:
        return Outcome(Kind.RETRY, reason=f"provider {work.provider!r} is not enabled here")
    try:
        if work.state == State.PROVISIONING.value:
            return _provision(work, provider, agent)
        machine_id = work.provider_machine_id
        timed_call(work.provider, "delete", lambda: provider.delete(work.id, machine_id))
    except RetryableProviderError as exc:
        return Outcome(Kind.RETRY, reason=str(exc) or type(exc).__name__)
    except TerminalProviderError as exc:
        if work.state == State.PROVISIONING.value:
            return Outcome(Kind.FAILED, reason=str(exc) or type(exc).__name__)
        # A teardown must finish eventually; keep trying, with the reason on record.
        return Outcome(Kind.RETRY, reason=str(exc) or type(exc).__name__)
    if work.state == State.DELETING.value:
        return Outcome(Kind.DELETED)
    return Outcome(Kind.CLEANED_UP)


def _provision(work: Work, provider: Provider, agent: AgentBootstrap | None) -> Outcome:
    request = MachineRequest(
        cvm_id=work.id,
        domain_id=work.domain_id,
        name=work.name,
        platform=Platform(work.cc_platform),
        vcpus=work.vcpus,
        agent_log_level=LogLevel(work.agent_log_level),
        agent_url=work.agent_url,
        agent=agent,
        attempt=work.attempts,
    )
    machine = timed_call(work.provider, "create", lambda: provider.create(request))
    if machine.state is MachineState.CREATING:
        return Outcome(Kind.STILL_CREATING, machine=machine)
    if machine.state is MachineState.FAILED:
        return Outcome(Kind.FAILED, machine=machine, reason=machine.detail or "the machine failed")
    return Outcome(Kind.PROVISIONED, machine=machine)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    give_up_after: timedelta
    create_timeout: timedelta = timedelta(minutes=30)

    def gives_up(self, work: Work, now: datetime) -> bool:
        # Creates give up eventually; teardowns and cleanups never do.
        if work.state != State.PROVISIONING.value or work.first_failure_at is None:
            return False
        return now - work.first_failure_at >= self.give_up_after

    def timed_out(self, work: Work, outcome: Outcome, now: datetime) -> Outcome:
        """A machine still being created long after the CVM was asked for counts
        as a failing create: retried with backoff (each step still looks at
        it, so one that comes up is taken), and given up in the end."""
        if outcome.kind is not Kind.STILL_CREATING or work.created_at is None:
            return outcome
        waited = now - work.created_at
        if waited < self.create_timeout:
            return outcome
        return Outcome(
            Kind.RETRY,
            machine=outcome.machine,
            reason=f"the machine is still being created {int(waited.total_seconds())} s "
            "after the CVM was asked for",
        )


def apply(cvm: CVM, work: Work, outcome: Outcome, *, now: datetime, retry_at: datetime) -> None:
    """Write ``outcome`` into the locked row, respecting intent that changed meanwhile.

    A DELETE may have arrived while the provider call was in flight: then the
    row is ``deleting`` and only what we learnt (the provider's machine id) is kept.
    """
    cvm.lease_owner = None
    cvm.lease_expires_at = None
    cvm.updated_at = now
    if outcome.machine is not None and outcome.machine.provider_machine_id:
        cvm.cvm_id = outcome.machine.provider_machine_id
    if cvm.state != work.state:
        return
    if outcome.kind is Kind.RETRY:
        cvm.attempts += 1
        cvm.first_failure_at = cvm.first_failure_at or now
        cvm.next_attempt_at = retry_at
        cvm.error = f"retrying: {outcome.reason}"
        return
    cvm.attempts = 0
    cvm.first_failure_at = None
    if outcome.kind is Kind.STILL_CREATING:
        cvm.error = ""  # past whatever failed before: the machine is coming up
        cvm.next_attempt_at = now + timedelta(seconds=CREATION_POLL_SECONDS)
    elif outcome.kind is Kind.PROVISIONED:
        _provisioned(cvm, outcome.machine)
    elif outcome.kind is Kind.FAILED:
        cvm.state = State.FAILED.value
        cvm.status = Status.FAILED.value
        cvm.error = outcome.reason
        # Something may exist at the provider: the next step cleans it up.
        cvm.next_attempt_at = now
    elif outcome.kind is Kind.CLEANED_UP:
        cvm.next_attempt_at = None
    elif outcome.kind is Kind.DELETED:
        cvm.state = State.DELETED.value
        cvm.status = Status.INACTIVE.value
        cvm.error = ""
        cvm.next_attempt_at = None


def _provisioned(cvm: CVM, machine: Machine | None) -> None:
    cvm.state = State.PROVISIONED.value
    cvm.error = ""
    cvm.next_attempt_at = None
    if machine is not None:
        if machine.agent_url and not cvm.agent_url:
            cvm.agent_url = machine.agent_url
        if machine.state is MachineState.STOPPED:
            cvm.status = Status.STOPPED.value
        # The provider's reference for what it launched; configured reference values win.
        if machine.attestation_policy and cvm.attestation_policy_source != "reference":
            cvm.attestation_policy = machine.attestation_policy
            cvm.attestation_policy_source = "provider"
        if not machine.confidential:
            cvm.attestation_error = machine.detail or "the provider runs this CVM unconfidentially"


def give_up(outcome: Outcome) -> Outcome:
    return Outcome(Kind.FAILED, machine=outcome.machine, reason=f"gave up: {outcome.reason}")
