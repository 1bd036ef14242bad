"""AuditService: the service's own trail for auditors, filtered and paged like every List.

An auditor (a person or hospital system) sees the records of its own organisation only; the
permission is the auditor role's alone (roles.yaml).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from infusion.audit.v1 import audit_pb2 as pb
from infusion.audit.v1 import audit_pb2_grpc as pb_grpc
from services.common.audit.record import AuditRecord
from services.common.audit.store import AuditFilter, AuditStore
from services.common.convert import from_datetime, to_datetime
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument
from services.common.identity import current_caller
from services.common.pagination import page_request, split_page


def event_out(r: AuditRecord) -> pb.AuditEvent:
    return pb.AuditEvent(
        id=r.id,
        service=r.service,
        sequence=r.sequence,
        time=from_datetime(r.occurred_at),
        method=r.method,
        kind=r.kind,
        resource_type=r.resource_type,
        resource_ids=r.resource_ids,
        patient_ids=r.patient_ids,
        subject=r.subject,
        caller_kind=r.caller_kind,
        client_id=r.client_id,
        roles=r.roles,
        token_id=r.token_id,
        organisation_id=r.organisation_id,
        peer=r.peer,
        outcome=r.outcome,
        request_id=r.request_id,
        purpose_of_use=r.purpose,
        previous_hash=r.previous_hash,
        hash=r.hash,
    )


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(
        self, db: Database, store: AuditStore, settle: Callable[[], object] = lambda: None
    ) -> None:
        self._db = db
        self._store = store
        self._settle = settle  # stores what waits outside the trail (a read journal) first

    def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> Any:
        start = to_datetime(request.start_time) if request.HasField("start_time") else None
        end = to_datetime(request.end_time) if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            raise InvalidArgument([FieldViolation("end_time", "must be after start_time")])
        scope = (
            f"audit:{request.patient_id}:{request.actor}:"
            f"{start.isoformat() if start else ''}:{end.isoformat() if end else ''}"
        )
        page = page_request(request.page_size, request.page_token, scope=scope)
        after = page.after[0] if page.after else ""
        where = AuditFilter(
            organisation_id=current_caller().organisation_id,
            patient_id=request.patient_id,
            actor=request.actor,
            start=start,
            end=end,
            after_id=after,
        )
        self._settle()
        with self._db.single_read() as connection:
            found = self._store.find(connection, where, page.size + 1)
        rows, token = split_page(found, page, lambda r: [r.id], scope=scope)
        return pb.ListAuditEventsResponse(
            audit_events=[event_out(r) for r in rows], next_page_token=token
        )
