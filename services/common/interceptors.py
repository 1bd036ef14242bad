"""One server interceptor: logs and counts every call and turns domain errors into rich gRPC
statuses.

Per call: the access line (method, status code, duration, the request_id when the request has
one, the peer, and the trace and span ids when tracing is on) and the Prometheus call counter
and latency histogram (services.common.metrics).
A DomainError becomes its status code with google.rpc details (BadRequest field violations,
PreconditionFailure, ResourceInfo, ErrorInfo with a reason from services.common.reasons).
A database race is ABORTED and a database that cannot be reached (restarting, failing over)
UNAVAILABLE, both safe to retry with the same request_id; anything else is logged with its
traceback and answered INTERNAL without leaking internals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError, OperationalError

from services.common import errors, metrics, tracing
from services.common.accesslog import ACCESS_LOG
from services.common.db import lost_race, sqlstate
from services.common.logs import trace_fields
from services.common.wrapping import Behaviour, StreamBehaviour, WrappingInterceptor

log = logging.getLogger(__name__)
ERROR_DOMAIN = "infusion.platform"
MAX_MESSAGE_CHARS = 2000
MAX_DESCRIPTION_CHARS = 300
"""An error's text is bounded whatever a service put in it (docs/api.md, "Errors")."""

_CODES: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Aborted: code_pb2.ABORTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: errors.DomainError) -> status_pb2.Status:
    code = next(
        (c for cls, c in _CODES.items() if isinstance(error, cls)), code_pb2.FAILED_PRECONDITION
    )
    details: list[any_pb2.Any] = []
    if isinstance(error, errors.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field,
                            description=errors.brief(v.description, MAX_DESCRIPTION_CHARS),
                            reason=v.rule,
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, errors.FailedPrecondition):
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, errors.NotFound | errors.AlreadyExists):
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=error.resource_type,
                    resource_name=errors.brief(error.resource_id),
                    description=error.message,
                )
            )
        )
    details.append(
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    )
    return status_pb2.Status(
        code=code, message=errors.brief(error.message, MAX_MESSAGE_CHARS), details=details
    )


def _request_id(request: Any) -> str:
    return str(getattr(request, "request_id", "") or "")


class ServerInterceptor(WrappingInterceptor):
    """Error mapping and the access line around every method."""

    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        return _wrap_unary(method, behaviour)

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        return _wrap_stream(method, behaviour)


def _abort(context: grpc.ServicerContext, error: errors.DomainError) -> None:
    context.abort_with_status(rpc_status.to_status(to_status(error)))


_PEER: ContextVar[str] = ContextVar("call_peer", default="")


def peer_of(context: grpc.ServicerContext) -> str:
    """The caller's address. gRPC builds it anew at each ``context.peer()`` (a few
    microseconds, a visible share of a cheap call), so a unary call's is read once, here, and
    shared with the interceptors inside (the audit trail) and the access line."""
    return _PEER.get() or context.peer() or ""


def _log(
    calls: metrics.MethodMetrics,
    method: str,
    request: Any,
    context: grpc.ServicerContext,
    started: float,
    peer: str | None = None,
) -> None:
    seconds = time.perf_counter() - started
    code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    calls.observe(name, seconds)
    ids: dict[str, str] = {}
    if tracing.enabled():
        tracing.record_code(code)
        ids = trace_fields()
    if ACCESS_LOG.enabled:
        ACCESS_LOG.record(
            method,
            name,
            seconds * 1000,
            _request_id(request),
            context.peer() if peer is None else peer,
            ids.get("trace_id", ""),
            ids.get("span_id", ""),
        )


def _internal(method: str, request: Any, context: grpc.ServicerContext) -> None:
    """A bug, not the caller's mistake: the traceback goes to the log under the request_id;
    the caller learns only that, never the exception's class or text."""
    log.exception("unhandled error in %s (request_id %r)", method, _request_id(request))
    context.abort(grpc.StatusCode.INTERNAL, "internal error: logged with the call's request_id")


def _wrap_unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    calls = metrics.rpc(method, "unary")

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        peer = context.peer() or ""
        token = _PEER.set(peer)
        try:
            return behaviour(request, context)
        except errors.DomainError as error:
            _abort(context, error)
        except DBAPIError as error:
            _database_error(method, context, error)
        except Exception:
            if context.code() is not None:  # type: ignore[attr-defined]  # abort() set it
                raise
            _internal(method, request, context)
        finally:
            _log(calls, method, request, context, started, peer)
            _PEER.reset(token)

    return handler


def database_away(error: DBAPIError) -> bool:
    """The database cannot be reached or is shutting down or starting (SQLSTATE class 08,
    57P01-57P03), or the driver lost the connection: UNAVAILABLE, which clients retry (with
    the same request_id, safely) until it is back; the pool pings its connections, so the
    first call after it returns succeeds."""
    state = sqlstate(error)
    return (
        error.connection_invalidated
        or state.startswith("08")
        or state in {"57P01", "57P02", "57P03"}
        or (isinstance(error, OperationalError) and not state)
    )


def _database_error(method: str, context: grpc.ServicerContext, error: DBAPIError) -> None:
    # the loser's transaction was rolled back: ABORTED is the honest answer (AIP-193) and a
    # retry with the same request_id is safe
    if lost_race(error):
        _abort(
            context,
            errors.Aborted("lost a race with a concurrent request: retry it", reason="LOST_RACE"),
        )
    if database_away(error):
        log.warning("database unavailable in %s: %s", method, error.orig)
        _abort(
            context,
            errors.Unavailable(
                "the database is unavailable: retry shortly", reason="DATABASE_UNAVAILABLE"
            ),
        )
    log.exception("unhandled error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error (database)")


def _wrap_stream(method: str, behaviour: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    calls = metrics.rpc(method, "server_stream")

    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            yield from behaviour(request, context)
        except errors.DomainError as error:
            _abort(context, error)
        except DBAPIError as error:
            _database_error(method, context, error)
        except Exception:
            if context.code() is not None:  # type: ignore[attr-defined]
                raise
            _internal(method, request, context)
        finally:
            _log(calls, method, request, context, started)

    return handler
