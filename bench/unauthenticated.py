"""A service served without authentication: the benchmarks' "auth off" baseline, nothing else
(bench/auth.py measures the same calls against it and against the real service in one run).

The same build, settings and interceptors as ``python -m services.<name>``, except that the
authentication interceptor is replaced by one that only sets a fixed caller (code below the
API reads ``current_caller()``): no token is read, verified or checked against the method's
permission. The service's own outgoing calls still carry its token. Nothing in services/
reaches this module: there is no setting that serves without authentication.

``python -m bench.unauthenticated scheduler|inventory``
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from bench.harness import ORG
from services.common.auth.interceptor import Denied
from services.common.auth.roles import Roles
from services.common.auth.service import ServiceAuth
from services.common.identity import Caller, acting_as
from services.common.server import GrpcService, serve
from services.common.settings import ServiceSettings
from services.common.wrapping import Behaviour, StreamBehaviour, WrappingInterceptor
from services.issuer.issuer import OPERATOR_ROLES

EVERYONE = Caller(
    subject="bench",
    kind="user",
    organisation_id=ORG,
    site_ids=None,
    roles=frozenset(OPERATOR_ROLES),
    permissions=Roles.default().grant(OPERATOR_ROLES).permissions,
)


class FixedCaller(WrappingInterceptor):
    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            with acting_as(EVERYONE):
                return behaviour(request, context)

        return handler

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with acting_as(EVERYONE):
                yield from behaviour(request, context)

        return handler


@dataclass(frozen=True)
class Unauthenticated(ServiceAuth):
    def interceptor(self, on_denied: Denied | None = None) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
        return FixedCaller()  # nobody is refused: nothing to report


def without_authentication(settings: ServiceSettings) -> ServiceAuth:
    real = ServiceAuth.from_settings(settings, calls_peers=True)
    return Unauthenticated(real.service, real.verifier, real.tokens)


def main(argv: list[str]) -> int:
    if argv == ["scheduler"]:
        from services.scheduler.__main__ import build as build_scheduler
        from services.scheduler.settings import load_settings as scheduler_settings

        def scheduler(settings: Any) -> GrpcService:
            return build_scheduler(settings, auth=without_authentication(settings))

        return serve(scheduler_settings, scheduler)
    if argv == ["inventory"]:
        from services.inventory.__main__ import build as build_inventory
        from services.inventory.settings import load_settings as inventory_settings

        def inventory(settings: Any) -> GrpcService:
            return build_inventory(settings, auth=without_authentication(settings))

        return serve(inventory_settings, inventory)
    print("usage: python -m bench.unauthenticated scheduler|inventory", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
