"""Who is calling: the verified identity a request (or a background job) acts as.

The auth interceptor sets it for the duration of each handler from the bearer token; the
services' own background work (jobs, relays, the dispatcher) acts as the service itself. Code
below the API reads it with :func:`current_caller` to decide what the caller may see and
change. It lives in a context variable because the sync gRPC server runs each call on a worker
thread and jobs run on their own threads: a module global would leak one caller into another's
call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

from services.common.auth.roles import Roles

CallerKind = Literal["user", "client", "service"]
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    subject: str  # JWT sub (a user id, or a service/client id)
    kind: CallerKind  # person / hospital system / our own service
    organisation_id: str | None  # claim `org`; None only for kind == "service"
    # claim `sites`: the sites the caller may act for; None = every site of the organisation
    site_ids: frozenset[str] | None
    roles: frozenset[str]
    permissions: frozenset[str]  # resolved from roles (and, for clients, the token's scope)
    client_id: str = ""  # azp / client_id
    token_id: str = ""  # jti, for the audit trail


_current: ContextVar[Caller | None] = ContextVar("caller", default=None)


def current_caller() -> Caller:
    """The caller of the running call or job. RuntimeError when none is set: every call passes
    the auth interceptor and every job runs as its service, so this is a bug, never a
    user's mistake."""
    caller = _current.get()
    if caller is None:
        raise RuntimeError("no caller: code ran outside a call or a job acting as a service")
    return caller


@contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """Run the block as ``caller`` (the interceptor per call, jobs, tests)."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)


def running_as(caller: Caller, work: Callable[P, T]) -> Callable[P, T]:
    """``work`` wrapped to run as ``caller`` wherever it is called from (a job body, a
    background loop's round)."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with acting_as(caller):
            return work(*args, **kwargs)

    return run


def service_caller(service: str) -> Caller:
    """What a service's own background work acts as: the service identity with its service
    role's shipped permissions (``<service>_service`` in roles.yaml)."""
    role = f"{service}_service"
    grant = Roles.default().grant([role])
    return Caller(
        subject=service,
        kind="service",
        organisation_id=None,
        site_ids=None,
        roles=frozenset({role}),
        permissions=grant.permissions,
        client_id=service,
    )
