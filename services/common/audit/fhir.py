"""The trail as FHIR R4 (4.0.1) AuditEvent resources, built and checked by SMART on FHIR's
models (``fhirclient``): a mapping that gives a field the wrong type, leaves out a required
element or names one R4 does not have fails here, not in the receiving system.

Mapping (https://hl7.org/fhir/R4/auditevent.html): type ``rest`` (an API operation) with the
RPC as subtype; action C/U/D/E for mutations by the method's verb, R for reads; outcome 0 (OK),
4 (the caller's error) or 8 (the server's); the caller as the requesting agent (subject,
client as altId, roles, token id as policy, peer as network address); the service as source;
patients as entities with role Patient, the call's resources as domain resources; the
record's place in the chain as extensions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from fhirclient.models.auditevent import AuditEvent
from fhirclient.models.bundle import Bundle

from services.common.audit.record import MUTATION, AuditRecord, utc_text

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PLATFORM = "urn:infusion-platform"
CLIENT_ERRORS = frozenset(
    {
        "CANCELLED",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
    }
)
_VERBS = (("Create", "C"), ("Update", "U"), ("Delete", "D"))


def _action(record: AuditRecord) -> str:
    if record.kind != MUTATION:
        return "R"
    name = record.method.rpartition("/")[2]
    return next((code for verb, code in _VERBS if name.startswith(verb)), "E")


def _outcome(code: str) -> str:
    if code == "OK":
        return "0"
    return "4" if code in CLIENT_ERRORS else "8"


def _instant(value: dt.datetime) -> str:
    return utc_text(value).replace("+00:00", "Z")


def audit_event_json(record: AuditRecord) -> dict[str, Any]:
    """The record as R4 AuditEvent JSON, validated by the model (FHIRValidationError if not)."""
    agent: dict[str, Any] = {
        "type": {"text": record.caller_kind},
        "who": {"identifier": {"system": f"{PLATFORM}:subject", "value": record.subject}},
        "requestor": True,
        "role": [{"text": role} for role in record.roles],
    }
    if record.client_id:
        agent["altId"] = record.client_id
    if record.token_id:
        agent["policy"] = [f"{PLATFORM}:token:{record.token_id}"]
    if record.peer:
        agent["network"] = {"address": record.peer, "type": "2"}
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        for patient in record.patient_ids
    ]
    entities += [
        {
            "what": {"identifier": {"system": f"{PLATFORM}:{record.resource_type}", "value": rid}},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            "detail": [{"type": "resource_type", "valueString": record.resource_type}],
        }
        for rid in record.resource_ids
        if rid not in record.patient_ids
    ]
    if record.request_id:
        entities.append(
            {
                "what": {
                    "identifier": {"system": f"{PLATFORM}:request-id", "value": record.request_id}
                },
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"{record.service}-{record.sequence}",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": f"{PLATFORM}:rpc", "code": record.method}],
        "action": _action(record),
        "recorded": _instant(record.occurred_at),
        "outcome": _outcome(record.outcome),
        "outcomeDesc": record.outcome,
        "agent": [agent],
        "source": {
            "site": record.organisation_id or None,
            "observer": {"display": f"infusion-platform {record.service}"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "extension": [
            {"url": f"{PLATFORM}/audit-sequence", "valueInteger": record.sequence},
            {"url": f"{PLATFORM}/audit-previous-hash", "valueString": record.previous_hash},
            {"url": f"{PLATFORM}/audit-hash", "valueString": record.hash},
        ],
    }
    if record.purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": record.purpose}]}]
    if entities:
        event["entity"] = entities
    if event["source"]["site"] is None:
        del event["source"]["site"]
    validated: dict[str, Any] = AuditEvent(event, strict=True).as_json()
    return validated


def bundle_json(records: Iterable[AuditRecord]) -> dict[str, Any]:
    """A FHIR R4 ``collection`` Bundle of the records' AuditEvents, validated likewise."""
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": audit_event_json(r)} for r in records],
    }
    validated: dict[str, Any] = Bundle(bundle, strict=True).as_json()
    return validated
