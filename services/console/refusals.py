"""How a service's refusal reads at the console: its gRPC status as an HTTP status and a
title. One table for the error pages (app.rpc_error) and the action pages (actions.py)."""

from __future__ import annotations

import grpc

GRPC_STATUS = {
    grpc.StatusCode.PERMISSION_DENIED: (403, "Not allowed"),
    grpc.StatusCode.NOT_FOUND: (404, "Not found"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "Not accepted"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "Not possible now"),
    grpc.StatusCode.ABORTED: (409, "Changed meanwhile"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "Already there"),
    grpc.StatusCode.UNAVAILABLE: (503, "A service is unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "A service is too slow"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, "A service is busy"),
}
