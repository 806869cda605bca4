"""Roles and the permissions they grant."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    READ = "cvms:read"
    CREATE = "cvms:create"
    DELETE = "cvms:delete"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MEMBER: frozenset({Permission.READ}),
}
