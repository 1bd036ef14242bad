"""The one place the request contract is enforced: a server interceptor that checks every
request (services.common.validation) before the service's handler runs.

It sits inside the shared ServerInterceptor (services.common.interceptors), so a refused
request is logged and answered like any other InvalidArgument: INVALID_ARGUMENT with a
google.rpc.BadRequest naming each field and rule. Domain code and SQL never see a request that
breaks the contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from services.common.interceptors import ServerInterceptor
from services.common.validation import RequestValidator


class ValidationInterceptor(ServerInterceptor):
    """Reuses ServerInterceptor's cache of wrapped handlers (one wrapper per method, built on
    the first call); the wrapper checks the request, then calls the handler."""

    def __init__(self, validator: RequestValidator | None = None) -> None:
        super().__init__()
        self._validator = validator or RequestValidator()

    def _wrap(  # type: ignore[override]  # an instance method: it needs the validator
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        check = self._validator.check
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def checked_unary(request: Any, context: grpc.ServicerContext) -> Any:
                check(request)
                return unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                checked_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            def checked_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                check(request)
                yield from stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                checked_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming methods: none in our protos
