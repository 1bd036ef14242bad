"""The one way to open a channel to a service: every peer client, relay, test and tool.

Calls carry ``authorization: Bearer <token>`` from the caller's own :class:`TokenSource`
(a service's client-credentials token, a tool's user token), added by one client interceptor.
A token that cannot be had fails the call as UNAVAILABLE (an ``RpcError``, like any other
failed call, so callers' retry and error handling need nothing new). The interceptor, not
gRPC's call credentials, because call credentials are refused on plaintext channels, and
loopback stays plaintext: one way for both.

With :class:`ClientTls` the channel speaks TLS (mTLS with a client certificate) and follows its
files (services/common/tls.py): when they change, the next call goes through a new channel
made with the new ones. The channel it replaces is closed at the following change or when this
one is closed, so calls still on it finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from services.common.auth.tokens import TokenSource, TokenUnavailable
from services.common.settings import ServiceSettings
from services.common.tls import ClientTls, Pem, Reloading, channel_credentials


def open_channel(
    address: str,
    tls: ClientTls | None = None,
    token_source: TokenSource | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``address``, TLS with ``tls`` (plaintext without), whose calls carry
    ``token_source``'s token (none without one: health checks). ``options`` (plaintext only):
    gRPC channel arguments, e.g. ``("grpc.use_local_subchannel_pool", 1)`` for a connection of
    its own (grpcio otherwise shares one among channels with the same arguments)."""
    if options and tls is not None:
        raise ValueError("channel options apply to plaintext channels only")
    channel = (
        grpc.insecure_channel(address, options=list(options))
        if tls is None
        else TlsChannel(address, tls)
    )
    if token_source is None:
        return channel
    return grpc.intercept_channel(channel, BearerToken(token_source))


def peer_channel(settings: ServiceSettings, peer: str, token_source: TokenSource) -> grpc.Channel:
    """How a service calls ``peer`` (``"inventory"``): at its ``<PEER>_ADDRESS``, over TLS
    when the service has a CA bundle (ClientTls.to_peer: SettingsError when plaintext is not
    allowed), as itself."""
    return open_channel(settings.peer(peer), ClientTls.to_peer(settings, peer), token_source)


class TlsChannel(grpc.Channel):
    """A TLS channel made again from the current files when they change (see the module)."""

    def __init__(self, address: str, tls: ClientTls) -> None:
        def make(pem: Pem) -> grpc.Channel:
            return grpc.secure_channel(address, channel_credentials(pem), tls.options())

        self._channels = Reloading(
            tls.files(), make, f"TLS to {address}", recheck_seconds=tls.recheck_seconds
        )
        self._lock = threading.Lock()
        self._retired: list[grpc.Channel] = []

    def current(self) -> grpc.Channel:
        previous = self._channels.value
        if self._channels.refresh():
            with self._lock:
                for old in self._retired:
                    old.close()
                self._retired = [previous]
        return self._channels.value

    # a stub's methods, each sent to the channel current at the time of the call
    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Current(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Current(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Current(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Current(self, "stream_stream", method, args, kwargs)

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        self.current().subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        self.current().unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            for old in [*self._retired, self._channels.value]:
                old.close()
            self._retired = []

    def __enter__(self) -> TlsChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self.close()
        return None


class _Current:
    """A stub's method on :class:`TlsChannel`: each call goes to the channel current then
    (a stub asks its channel for its methods once, when it is made)."""

    def __init__(
        self, channel: TlsChannel, kind: str, method: str, args: tuple[Any, ...], kwargs: Any
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self._made: tuple[grpc.Channel, Any] | None = None

    def _target(self) -> Any:
        channel = self._channel.current()
        made = self._made
        if made is None or made[0] is not channel:
            made = (
                channel,
                getattr(channel, self._kind)(self._method, *self._args, **self._kwargs),
            )
            self._made = made
        return made[1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().future(*args, **kwargs)


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
