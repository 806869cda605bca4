"""Who is calling, and what they may do in which domain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prism_backends.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from prism_backends.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles_by_domain: Mapping[str, Role]

    def permissions_in(self, domain_id: str) -> frozenset[Permission]:
        role = self.roles_by_domain.get(domain_id)
        return ROLE_PERMISSIONS[role] if role else frozenset()

    def require(self, domain_id: str, permission: Permission) -> None:
        if permission not in self.permissions_in(domain_id):
            raise Forbidden(f"this token does not grant {permission} in domain {domain_id!r}")
