"""A typed Python client of the prism-backends public HTTP API.

    from prism_backends.client import Client

    with Client("http://127.0.0.1:9011/backends", token) as api:
        cvm = api.create_cvm("external", 2, "sev-snp", "web-1")
        api.wait_running(cvm.id, timeout=300)

``AsyncClient`` is the same, awaited. Both send the ``Call``s of ``core`` (the
one place that knows paths, queries, bodies, how answers are read and errors
mapped); each only does the I/O its way.

Written by hand rather than generated from the OpenAPI document, because:

- the API is small (a dozen routes) and changes with this repository, where
  the client is tested against the real service;
- the generated document loses what a caller most needs: the exact error
  codes (``{"error": "not_found"}`` and the like, mapped here to ``NotFound``,
  ``Conflict``... with the code kept), ``Retry-After`` on 429/503, and the
  ``Idempotency-Key`` semantics (201 new, 200 the same CVM again, 409 the key
  with another request);
- a generator would add a build step and a dependency, and its models would
  duplicate the service's own: these are reused (``client.models``), so a field
  added to the wire shape reaches the client at once.

The client imports no server code (no FastAPI, SQLAlchemy, store or HTTP
layer): an import-linter contract in pyproject.toml holds it to that.
"""

from prism_backends.client.asynchronous import AsyncClient
from prism_backends.client.errors import (
    APIError,
    AuthError,
    BadRequest,
    ClientError,
    Conflict,
    CVMFailed,
    NotFound,
    RateLimited,
    TransportError,
    Unavailable,
    UnexpectedResponse,
    WaitTimeout,
)
from prism_backends.client.sync import Client
from prism_backends.client.tokens import domain_claim

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthError",
    "BadRequest",
    "CVMFailed",
    "Client",
    "ClientError",
    "Conflict",
    "NotFound",
    "RateLimited",
    "TransportError",
    "Unavailable",
    "UnexpectedResponse",
    "WaitTimeout",
    "domain_claim",
]
