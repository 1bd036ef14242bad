"""The one place the request contract is enforced: a server interceptor that checks every
request (services.common.validation) before the service's handler runs.

It sits inside the shared ServerInterceptor (services.common.interceptors) and the auth
interceptor, so a refused request is logged and answered like any other InvalidArgument:
INVALID_ARGUMENT with a google.rpc.BadRequest naming each field and rule. Domain code and SQL
never see a request that breaks the contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from services.common.validation import RequestValidator
from services.common.wrapping import Behaviour, StreamBehaviour, WrappingInterceptor


class ValidationInterceptor(WrappingInterceptor):
    """Checks the request, then calls the handler (wrapped once per method)."""

    def __init__(self, validator: RequestValidator | None = None) -> None:
        super().__init__()
        self._validator = validator or RequestValidator()

    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        check = self._validator.check

        def checked_unary(request: Any, context: grpc.ServicerContext) -> Any:
            check(request)
            return behaviour(request, context)

        return checked_unary

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        check = self._validator.check

        def checked_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            check(request)
            yield from behaviour(request, context)

        return checked_stream
