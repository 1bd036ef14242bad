"""Roles and the permissions they grant (roles.yaml, or the file AUTH_ROLES_FILE names).

Roles live in configuration, not code, so an organisation can rename them after its identity
provider's roles or narrow them; the shipped file follows least privilege. A file naming a
permission no RPC declares is refused at start: a typo would otherwise silently grant nothing
(or, worse, look like it granted something).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.auth.policy import declared_permissions

Kind = Literal["user", "client", "service"]
DEFAULT_FILE = Path(__file__).with_name("roles.yaml")

# Permissions a role may hold before any RPC declares them (none now: the audit trail's
# ListAuditEvents declares audit.events.read).
RESERVED_PERMISSIONS: frozenset[str] = frozenset()


class RoleSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind = "user"
    description: str = ""
    permissions: tuple[str, ...] = ()


class RolesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    authenticated: tuple[str, ...] = ()
    roles: dict[str, RoleSpec] = Field(default_factory=dict)


class RolesError(ValueError):
    """The roles file cannot be used (unreadable, wrong shape, unknown permissions)."""


@dataclass(frozen=True)
class Grant:
    """What a token's roles (and scope) amount to."""

    kind: Kind
    permissions: frozenset[str]


@dataclass(frozen=True)
class Roles:
    """Role name -> what it grants; ``authenticated`` is held by every valid token."""

    specs: Mapping[str, RoleSpec]
    authenticated: frozenset[str]

    @classmethod
    def load(cls, path: str | Path = "") -> Roles:
        """The roles of ``path`` (the shipped file when empty); RolesError when unusable."""
        source = Path(path) if path else DEFAULT_FILE
        try:
            parsed = RolesFile.model_validate(yaml.safe_load(source.read_text()) or {})
        except OSError as error:
            raise RolesError(f"cannot read {source}: {error.strerror}") from None
        except (yaml.YAMLError, ValidationError) as error:
            raise RolesError(f"{source} is not a roles file: {error}") from None
        roles = cls(parsed.roles, frozenset(parsed.authenticated))
        unknown = roles.named_permissions() - known_permissions()
        if unknown:
            raise RolesError(f"{source} names permissions no RPC declares: {sorted(unknown)}")
        return roles

    @classmethod
    def default(cls) -> Roles:
        return _shipped()

    def named_permissions(self) -> frozenset[str]:
        return self.authenticated.union(*(s.permissions for s in self.specs.values()))

    def of_kind(self, kind: Kind) -> list[str]:
        return [name for name, spec in self.specs.items() if spec.kind == kind]

    def grant(self, roles: Iterable[str], scopes: Iterable[str] = ()) -> Grant:
        """The caller's kind and permissions from its token's roles and scope.

        A token holding a service role is that service: it holds the service roles'
        permissions and nothing a user role would add. A client role grants only what the
        token's scope names out of its list. Roles this file does not know grant nothing.
        """
        specs = [self.specs[r] for r in roles if r in self.specs]
        services = [s for s in specs if s.kind == "service"]
        if services:
            return Grant("service", self.authenticated.union(*(s.permissions for s in services)))
        scope = frozenset(scopes)
        granted = set(self.authenticated)
        for spec in specs:
            allowed = frozenset(spec.permissions)
            granted |= allowed & scope if spec.kind == "client" else allowed
        kind: Kind = "client" if any(s.kind == "client" for s in specs) else "user"
        return Grant(kind, frozenset(granted))


def known_permissions() -> frozenset[str]:
    return declared_permissions() | RESERVED_PERMISSIONS


@cache
def _shipped() -> Roles:
    return Roles.load()
