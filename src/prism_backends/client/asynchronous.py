"""``AsyncClient``: the API over an ``httpx.AsyncClient``, method for method as ``Client``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self, TypeVar

import httpx

from prism_backends.client import core
from prism_backends.client.errors import APIError
from prism_backends.client.models import (
    AgentConfigOut,
    Certificate,
    CertificateList,
    CVMOut,
    CVMPage,
    EventOut,
    EventPage,
    Offerings,
    StatsOut,
)

T = TypeVar("T")


class AsyncClient:
    """One domain of a prism-backends service, e.g.
    ``AsyncClient("http://127.0.0.1:9011/backends", token)``; ``async with`` it,
    or ``await aclose()``. The methods are ``Client``'s (see there), awaited."""

    def __init__(
        self,
        base_url: str,
        token: str,
        domain: str | None = None,
        *,
        timeout: float = core.DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, headers, self.domain = core.settings(base_url, token, domain)
        self.base_url = url.rstrip("/")
        self._routes = core.Routes(self.domain)
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: core.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.json, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise core.transport_error(self.base_url, exc) from exc
        return core.outcome(call, response)

    # --- CVMs ---

    async def create_cvm(
        self,
        provider: str,
        vcpus: int,
        cc_platform: str,
        name: str,
        agent_log_level: str = "info",
        agent_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> CVMOut:
        """Record a new CVM (provisioning goes on in the background). With an
        ``idempotency_key`` the call is safe to repeat, e.g. after a
        ``TransportError``: the same request with the same key returns the CVM
        made the first time; the key with another request is a ``Conflict``."""
        return await self._send(
            self._routes.create_cvm(
                provider=provider,
                vcpus=vcpus,
                cc_platform=cc_platform,
                name=name,
                agent_log_level=agent_log_level,
                agent_url=agent_url,
                idempotency_key=idempotency_key,
            )
        )

    async def list_cvms(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        cc_platform: str | None = None,
        days: int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> CVMPage:
        """One page of the domain's CVMs, newest first (``status="inactive"``: deleted ones)."""
        filters = core.list_filters(name=name, status=status, cc_platform=cc_platform, days=days)
        return await self._send(self._routes.list_cvms(filters, limit=limit, offset=offset))

    async def iter_cvms(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        cc_platform: str | None = None,
        days: int | None = None,
        page_size: int = core.MAX_CVM_PAGE,
    ) -> AsyncIterator[CVMOut]:
        """Every matching CVM, page after page (offsets: a CVM created or deleted
        meanwhile can shift one into the next page or out of sight)."""
        filters = core.list_filters(name=name, status=status, cc_platform=cc_platform, days=days)
        offset: int | None = 0
        while offset is not None:
            page = await self._send(self._routes.list_cvms(filters, limit=page_size, offset=offset))
            for cvm in page.cvms:
                yield cvm
            offset = core.next_offset(offset, len(page.cvms), page.total)

    async def get_cvm(self, cvm_id: str) -> CVMOut:
        return await self._send(self._routes.get_cvm(cvm_id))

    async def delete_cvm(self, cvm_id: str) -> None:
        """Mark the CVM deleted; the teardown goes on in the background."""
        await self._send(self._routes.delete_cvm(cvm_id))

    async def wait_running(
        self,
        cvm_id: str,
        timeout: float = 600.0,
        poll: float = 1.0,
        on_progress: Callable[[CVMOut], object] | None = None,
    ) -> CVMOut:
        """Poll until the CVM's agent reports it running and return it;
        ``CVMFailed`` (with the CVM's ``error``) if provisioning fails or it is
        deleted, ``WaitTimeout`` after ``timeout`` seconds. ``on_progress`` gets
        the CVM each time it is looked at."""
        wait = core.Wait(timeout, poll, on_progress)
        while True:
            try:
                cvm = await self.get_cvm(cvm_id)
            except APIError as exc:
                wait.failed(exc)
            else:
                if wait.seen(cvm):
                    return cvm
            await asyncio.sleep(wait.pause())

    # --- what a CVM reports ---

    async def statistics(
        self,
        cvm_id: str,
        days: int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> StatsOut:
        """Uptime samples in the last ``days`` (newest first) and attestation counts."""
        return await self._send(
            self._routes.statistics(cvm_id, days=days, limit=limit, offset=offset)
        )

    async def attestation_policy(self, cvm_id: str, policy_format: str | None = None) -> bytes:
        """The policy's bytes: as stored, or converted (``"json"``, ``"corim"``)."""
        return await self._send(
            self._routes.attestation_policy(cvm_id, policy_format=policy_format)
        )

    async def agent_config(self, cvm_id: str) -> AgentConfigOut:
        """What the CVM's agent needs to connect; it holds the agent's private key."""
        return await self._send(self._routes.agent_config(cvm_id))

    async def events(
        self, cvm_id: str, limit: int | None = None, offset: int | None = None
    ) -> EventPage:
        """One page of the agent's logs and events, newest first."""
        return await self._send(self._routes.events(cvm_id, limit=limit, offset=offset))

    async def iter_events(
        self, cvm_id: str, page_size: int = core.MAX_EVENT_PAGE
    ) -> AsyncIterator[EventOut]:
        """Every event kept for the CVM, newest first, page after page."""
        offset: int | None = 0
        while offset is not None:
            page = await self._send(self._routes.events(cvm_id, limit=page_size, offset=offset))
            for event in page.events:
                yield event
            offset = core.next_offset(offset, len(page.events), page.total)

    # --- the domain ---

    async def offerings(self) -> Offerings:
        """The providers, platforms and sizes this domain can create, with prices."""
        return await self._send(self._routes.offerings())

    # --- agent certificates ---

    async def certificates(self, cvm_id: str) -> CertificateList:
        return await self._send(self._routes.certificates(cvm_id))

    async def issue_certificate(self, cvm_id: str) -> Certificate:
        """A new client certificate for the agent (pending until the agent uses it)."""
        return await self._send(self._routes.issue_certificate(cvm_id))

    async def renew_certificate(self, cvm_id: str, serial: str) -> Certificate:
        """A successor to ``serial``; the old one is revoked once the agent uses the new one."""
        return await self._send(self._routes.renew_certificate(cvm_id, serial))

    async def revoke_certificate(self, cvm_id: str, serial: str) -> Certificate:
        return await self._send(self._routes.revoke_certificate(cvm_id, serial))
