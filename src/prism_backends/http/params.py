"""Parameters a route reads from the request itself, declared for the OpenAPI document.

The hot routes (view, list and create a CVM) take the ``Request`` alone. Their
parameters are all strings the service checks itself, to answer the contract's
400s, so FastAPI's solving of each one per request only cost CPU: about 0.2 ms
a list request, more than its statements' execution (bench/README.md). Such a
route lists its parameters here, and the document shows them as FastAPI would
have from a signature. Every other route declares them in its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prism_backends.http.deps import get_principal


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    description: str | None = None

    def openapi(self) -> dict[str, Any]:
        """The entry FastAPI writes for ``Annotated[str, Path()]`` (path) or
        ``Annotated[str | None, Query()/Header()] = None`` (the others)."""
        title = self.name.replace("_", " ").title()
        schema: dict[str, Any] = {"title": title, "type": "string"}
        if self.where != "path":
            schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "title": title}
        entry: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "schema": schema,
        }
        if self.description is not None:
            schema["description"] = self.description
            entry["description"] = self.description
        return entry


DOMAIN_ID = Param("domainID", "path")
DOMAIN_QUERY = Param("domainID", "query", "Optional; must equal the path's domain id.")


def read_by_hand(*params: Param) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``params`` itself and
    authenticates with ``get_principal``: its parameters and its bearer scheme."""
    return {
        "parameters": [param.openapi() for param in params],
        "security": [{get_principal.scheme_name: []}],
    }
