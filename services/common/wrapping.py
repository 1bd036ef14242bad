"""What every server interceptor here shares: each method's handler is wrapped once and the
wrapper reused. gRPC asks the interceptors on every call, and rebuilding handler objects per
call cost as much as a small RPC. Subclasses say how to wrap a unary and a server-streaming
behaviour (the only kinds the protos declare)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
StreamBehaviour = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


class WrappingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._wrapped: dict[tuple[str, int], grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        key = (method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrap(method, handler)
            self._wrapped[key] = wrapped
        return wrapped

    def applies_to(self, method: str) -> bool:
        return True

    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        raise NotImplementedError

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        raise NotImplementedError

    def wrap_other(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A client-streaming method (none is declared): left as it is by default."""
        return handler

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self.wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return self.wrap_other(method, handler)
