"""Reading google.rpc details from a failed call, for assertions."""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


def detail(error: grpc.RpcError, kind: type[M]) -> M | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no rich status on the error"
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            found = kind()
            packed.Unpack(found)
            return found
    return None


def field_violations(error: grpc.RpcError) -> list[str]:
    bad = detail(error, error_details_pb2.BadRequest)
    return [v.field for v in bad.field_violations] if bad else []


def precondition_types(error: grpc.RpcError) -> list[str]:
    failure = detail(error, error_details_pb2.PreconditionFailure)
    return [v.type for v in failure.violations] if failure else []


def error_reason(error: grpc.RpcError) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    return info.reason if info else ""


def error_metadata(error: grpc.RpcError) -> dict[str, str]:
    info = detail(error, error_details_pb2.ErrorInfo)
    return dict(info.metadata) if info else {}
