"""The server interceptor that opens the audit record of each audited call (the method's
declared ``audit`` kind: mutations and patient reads), inside authentication, so the caller is
known, and outside the request contract, so a refused patient read is recorded too.

Purpose of use: a caller may say why it reads or changes patient data in the
``x-purpose-of-use`` metadata header, an HL7 v3 PurposeOfUse code (``TREAT``, ``ETREAT`` for
emergency treatment, ``HOPERAT``, ``PUBHLTH``...): letters, digits, ``.``, ``_`` and ``-``, at
most 64. It is kept on the record; a malformed value is INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.rpc import code_pb2

from services.common import errors
from services.common.audit.ids import Concerned
from services.common.audit.record import MUTATION, PATIENT_READ
from services.common.audit.trail import AuditCall, AuditTrail, auditing
from services.common.auth.policy import (
    PUBLIC_SERVICES,
    AuditKind,
    MethodPolicy,
    policy_of,
    service_of,
)
from services.common.identity import Caller, current_caller
from services.common.interceptors import peer_of, to_status
from services.common.wrapping import Behaviour, StreamBehaviour, WrappingInterceptor

log = logging.getLogger(__name__)

PURPOSE_HEADER = "x-purpose-of-use"
_PURPOSE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KINDS = {AuditKind.AUDIT_KIND_MUTATION: MUTATION, AuditKind.AUDIT_KIND_PATIENT_READ: PATIENT_READ}


def outcome_of(error: BaseException, context: grpc.ServicerContext) -> str:
    """The status code name the call ends with."""
    if isinstance(error, errors.DomainError):
        return str(code_pb2.Code.Name(to_status(error).code))
    code = context.code()  # type: ignore[attr-defined]  # set by abort()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(error, GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


def _stated_purpose(context: grpc.ServicerContext) -> str:
    return next((str(v) for k, v in context.invocation_metadata() if k == PURPOSE_HEADER), "")


def _purpose(context: grpc.ServicerContext) -> str:
    value = _stated_purpose(context)
    if value and not _PURPOSE.match(value):
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{PURPOSE_HEADER}: must be an HL7 PurposeOfUse code (letters, digits, . _ -; "
            "at most 64)",
        )
    return value


class AuditInterceptor(WrappingInterceptor):
    def __init__(
        self, trail: AuditTrail, policies: Callable[[str], MethodPolicy | None] = policy_of
    ) -> None:
        super().__init__()
        self._trail = trail
        self._policies = policies

    def applies_to(self, method: str) -> bool:
        return service_of(method) not in PUBLIC_SERVICES

    def _opener(self, method: str) -> Callable[[Any, grpc.ServicerContext], AuditCall] | None:
        policy = self._policies(method)
        kind = _KINDS.get(policy.audit) if policy is not None else None
        if policy is None or kind is None:
            return None
        resource_type = policy.resource_type
        trail = self._trail

        def open_call(request: Any, context: grpc.ServicerContext) -> AuditCall:
            return AuditCall(
                method=method,
                kind=kind,
                resource_type=resource_type,
                caller=current_caller(),
                peer=peer_of(context),
                request=request,
                purpose=_purpose(context),
                trail=trail,
            )

        return open_call

    def denied(
        self, method: str, caller: Caller, request: Any, context: grpc.ServicerContext
    ) -> None:
        """An authenticated caller was refused ``method`` for want of its permission (the
        auth interceptor tells, before the call ends): an audited method's attempt is recorded
        with the outcome PERMISSION_DENIED, so the trail shows who tried to read or change
        what they may not. The refusal stands whether or not the record can be stored."""
        policy = self._policies(method)
        kind = _KINDS.get(policy.audit) if policy is not None else None
        if policy is None or kind is None or request is None:
            return
        purpose = _stated_purpose(context)
        call = AuditCall(
            method=method,
            kind=kind,
            resource_type=policy.resource_type,
            caller=caller,
            peer=peer_of(context),
            request=request,
            purpose=purpose if _PURPOSE.match(purpose) else "",
        )
        trail = self._trail
        try:
            trail.store_now(call.raw(trail.service, trail.clock, "PERMISSION_DENIED", Concerned()))
        except Exception:  # the refusal is the answer; a lost record is logged, not raised
            log.exception("%s: the refused call's audit record could not be stored", method)

    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        open_call = self._opener(method)
        if open_call is None:
            return behaviour
        trail = self._trail

        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            call = open_call(request, context)
            trail.opening(call)
            try:
                with auditing(call):
                    try:
                        response = behaviour(request, context)
                    except BaseException as error:
                        trail.finish(call, outcome_of(error, context), None)
                        raise
                    trail.finish(call, "OK", response)
                    return response
            finally:
                trail.closing(call)

        return handler

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        open_call = self._opener(method)
        if open_call is None:
            return behaviour
        trail = self._trail

        def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # a stream's record is stored before its first message leaves (or when it ends
            # without one), with the request's ids: a stream's messages are not waited for
            call = open_call(request, context)
            with auditing(call):
                responses = behaviour(request, context)
            try:
                while True:
                    with auditing(call):
                        try:
                            response = next(responses)
                        except StopIteration:
                            if not call.recorded:
                                trail.finish(call, "OK", None)
                            return
                        except BaseException as error:
                            if not call.recorded:
                                trail.finish(call, outcome_of(error, context), None)
                            raise
                        if not call.recorded:
                            trail.finish(call, "OK", None)
                    yield response
            finally:
                close = getattr(responses, "close", None)
                if close is not None:
                    with auditing(call):
                        close()

        return handler
