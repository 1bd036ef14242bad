"""The one server interceptor that enforces authentication and permissions, deny by default.

Per call: the bearer token of the ``authorization`` metadata is verified (no token or a bad
one: UNAUTHENTICATED, saying nothing more than "authentication required" or "invalid token";
the reason is logged), then the method's declared permission is looked for among the
caller's (missing: PERMISSION_DENIED); a method that declares none is refused for everybody.
The handler then runs with the caller set (:func:`services.common.identity.acting_as`), a
stream's each step too, since a stream is driven step by step from the server's threads.

grpc.health.v1 and server reflection answer without a token.

A refusal of an authenticated caller (PERMISSION_DENIED) is reported to ``on_denied`` before
the call ends: the audit trail records who tried to read or change what they may not
(services/common/audit/interceptor.py). Calls without a valid token are not: nobody is known to
record, and a flood of them must not turn into a flood of writes (the access log and the
metrics count them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from services.common.auth.policy import PUBLIC_SERVICES, MethodPolicy, policy_of, service_of
from services.common.auth.verifier import AuthUnavailable, InvalidToken, Verifier
from services.common.identity import Caller, acting_as
from services.common.wrapping import Behaviour, StreamBehaviour, WrappingInterceptor

Denied = Callable[[str, Caller, Any, grpc.ServicerContext], None]
"""Told of a refused authenticated call: (method, caller, request, context)."""

log = logging.getLogger(__name__)

NO_TOKEN = "authentication required"
BAD_TOKEN = "invalid token"


class AuthInterceptor(WrappingInterceptor):
    def __init__(
        self,
        verifier: Verifier,
        policies: Callable[[str], MethodPolicy | None] = policy_of,
        on_denied: Denied | None = None,
    ) -> None:
        """``policies``: a method's declared policy (the protos'; tests of the server shell
        declare their probe methods' own)."""
        super().__init__()
        self._verifier = verifier
        self._policies = policies
        self._on_denied = on_denied

    def applies_to(self, method: str) -> bool:
        return service_of(method) not in PUBLIC_SERVICES

    def _gate(self, method: str) -> Gate:
        return Gate(method, self._policies(method), self._verifier, self._on_denied)

    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        return _unary(self._gate(method), behaviour)

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        return _stream(self._gate(method), behaviour)

    def wrap_other(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # no client-streaming RPC is declared; were one added, it must not pass unchecked
        return grpc.unary_unary_rpc_method_handler(
            lambda _request, context: context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "streaming requests are not served"
            )
        )


class Gate:
    """Who may pass into one method."""

    def __init__(
        self,
        method: str,
        policy: MethodPolicy | None,
        verifier: Verifier,
        on_denied: Denied | None = None,
    ) -> None:
        self.method = method
        self.policy = policy
        self._verifier = verifier
        self._on_denied = on_denied
        if policy is None:
            log.error("%s declares no permission: every call to it is refused", method)

    def caller(self, context: grpc.ServicerContext, request: Any = None) -> Caller:
        """The verified caller holding the method's permission; aborts the call otherwise."""
        header = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
        if header is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, NO_TOKEN)
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, BAD_TOKEN)
        try:
            caller = self._verifier.caller(token.strip())
        except InvalidToken as error:
            log.info("%s: token refused: %s", self.method, error)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, BAD_TOKEN)
        except AuthUnavailable as error:
            log.warning("%s: cannot verify tokens: %s", self.method, error)
            context.abort(
                grpc.StatusCode.UNAVAILABLE, "authentication is unavailable: retry shortly"
            )
        if self.policy is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        if self.policy.permission not in caller.permissions:
            if self._on_denied is not None:
                self._on_denied(self.method, caller, request, context)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"permission denied: this call requires {self.policy.permission}",
            )
        return caller


def _unary(gate: Gate, behaviour: Behaviour) -> Behaviour:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        with acting_as(gate.caller(context, request)):
            return behaviour(request, context)

    return handler


def _stream(gate: Gate, behaviour: StreamBehaviour) -> StreamBehaviour:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        caller = gate.caller(context, request)
        with acting_as(caller):
            responses = behaviour(request, context)
        try:
            while True:
                with acting_as(caller):
                    try:
                        response = next(responses)
                    except StopIteration:
                        return
                yield response
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                with acting_as(caller):
                    close()

    return handler
