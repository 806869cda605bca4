from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prism_backends.providers.config import default_configs
from prism_backends.providers.external import ExternalProvider
from prism_backends.providers.registry import Catalog, CatalogEntry
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import Platform
from tests.conftest import TokenFactory, auth
from tests.fakes.memory_provider import MemoryProvider


@pytest.fixture
def aws(runtime: Runtime) -> MemoryProvider:
    """Enable 'aws' (SEV-SNP 2, 4, 8) backed by an in-memory fake, beside 'external'."""
    provider = MemoryProvider("aws", {Platform.SEV_SNP: frozenset({2, 4, 8})})
    configs = default_configs()
    runtime.catalog = Catalog(
        {
            "external": CatalogEntry(configs["external"], ExternalProvider()),
            "aws": CatalogEntry(configs["aws"], provider),
        },
        {},
    )
    return provider


CreateFn = Callable[..., Any]


@pytest.fixture
def create(client: TestClient, token: TokenFactory) -> CreateFn:
    """``create("name")`` posts an external SEV-SNP CVM and returns the response."""

    def _create(
        name: str = "cvm",
        *,
        domain: str = "dom-1",
        provider: str = "external",
        vcpu: str = "2",
        platform: str = "sev-snp",
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return client.post(
            f"/backends/{domain}/cvms/{provider}/{vcpu}/{platform}",
            json=body if body is not None else {"name": name},
            headers={**auth(token(domain)), **(headers or {})},
        )

    return _create
