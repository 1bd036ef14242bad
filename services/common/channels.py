"""The one way to open a channel to a service: every peer client, relay, test and tool.

Calls carry ``authorization: Bearer <token>`` from the caller's own :class:`TokenSource`
(a service's client-credentials token, a tool's user token), added by one client interceptor.
A token that cannot be had fails the call as UNAVAILABLE (an ``RpcError``, like any other
failed call, so callers' retry and error handling need nothing new).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.auth.tokens import TokenSource, TokenUnavailable
from services.common.settings import ServiceSettings


def open_channel(
    address: str,
    settings: ServiceSettings | None = None,
    token_source: TokenSource | None = None,
) -> grpc.Channel:
    """A channel to ``address`` whose calls carry ``token_source``'s token (none without
    one: health checks). ``settings`` are the calling service's (tools pass None)."""
    channel = grpc.insecure_channel(address)
    if token_source is None:
        return channel
    return grpc.intercept_channel(channel, BearerToken(token_source))


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str | bytes], ...] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class NoToken(grpc.RpcError):
    """What a call raises when its token cannot be had."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self._reason = reason

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return f"no token for the call: {self._reason}"


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        try:
            token = self._source.token()
        except TokenUnavailable as error:
            raise NoToken(str(error)) from None
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), ("authorization", f"Bearer {token}")),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], grpc.CallFuture[Any]],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> grpc.CallFuture[Any]:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], grpc.CallIterator[Any]],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> grpc.CallIterator[Any]:
        return continuation(self._details(client_call_details), request)
