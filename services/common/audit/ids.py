"""Which resources and patients a call concerned, gathered from its request, from the rows
its transaction touched and, for reads, from its response. Ids only: a record never copies
any other field.

The conventions the protos and models follow make this generic: a patient is named by a
``patient_id`` field or is a ``Patient`` (message or ``PatientRow``) itself; the call's own
resource is a message or row named like its declared ``resource_type`` with an ``id``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_DEPTH = 4
MAX_VISITED = 2000
"""A response walk stops after this many messages (a List's page holds at most 500)."""


@dataclass
class Concerned:
    resource_ids: set[str] = field(default_factory=set)
    patient_ids: set[str] = field(default_factory=set)
    organisation_ids: set[str] = field(default_factory=set)

    def add(self, other: Concerned) -> None:
        self.resource_ids |= other.resource_ids
        self.patient_ids |= other.patient_ids
        self.organisation_ids |= other.organisation_ids


def from_request(request: Message, resource_type: str) -> Concerned:
    """The top-level ``id`` and ``patient_id``, and those of the request's own resource
    message (``CreatePatientRequest.patient``). Which fields to look at is worked out once
    per request type (every audited call builds a record: reading them field by field through
    ``ListFields`` cost 28 µs a call)."""
    found = Concerned()
    owner = request.DESCRIPTOR.name
    strings, nested = _request_plan(request.DESCRIPTOR, resource_type)
    for name in strings:
        value = getattr(request, name)
        if value:
            _note(found, name, value, owner, resource_type)
            if name == "id":
                found.resource_ids.add(value)
                if resource_type == "Patient":
                    found.patient_ids.add(value)
    for name, inner in nested:
        if request.HasField(name):
            message = getattr(request, name)
            for inner_name in inner:
                value = getattr(message, inner_name)
                if value:
                    _note(found, inner_name, value, message.DESCRIPTOR.name, resource_type)
    return found


@cache
def _request_plan(
    descriptor: Descriptor, resource_type: str
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """(the request's own string fields that can name an id, (message field, its string
    fields that can)) for ``from_request``: one level down, singular fields only."""
    strings = tuple(
        f.name
        for f in descriptor.fields
        if f.type == FieldDescriptor.TYPE_STRING
        and not f.is_repeated
        and (f.name == "id" or _names_an_id(f.name, descriptor.name, resource_type))
    )
    nested = tuple(
        (f.name, inner)
        for f in descriptor.fields
        if f.type == FieldDescriptor.TYPE_MESSAGE
        and not f.is_repeated
        and (inner := _plan(f.message_type, resource_type)[0])
    )
    return strings, nested


def from_response(response: Message, resource_type: str) -> Concerned:
    """Every resource of the declared type and every patient the answer carries. Only the
    fields that can lead to an id are visited (worked out once per message type), so a large
    answer with no ids deep inside (a dose's days and rate steps) costs a few lookups."""
    found = Concerned()
    visited = 0
    pending: list[tuple[Message, int]] = [(response, 0)]
    while pending and visited < MAX_VISITED:
        message, depth = pending.pop()
        visited += 1
        descriptor = message.DESCRIPTOR
        strings, nested = _plan(descriptor, resource_type)
        for name in strings:
            value = getattr(message, name)
            if value:
                _note(found, name, value, descriptor.name, resource_type)
        if depth >= MAX_DEPTH:
            continue
        for name, repeated in nested:
            if repeated:
                pending.extend((item, depth + 1) for item in getattr(message, name))
            elif message.HasField(name):
                pending.append((getattr(message, name), depth + 1))
    return found


@cache
def _plan(
    descriptor: Descriptor, resource_type: str
) -> tuple[tuple[str, ...], tuple[tuple[str, bool], ...]]:
    """(string fields that name an id here, message fields through which one can be reached)."""
    strings = tuple(
        f.name
        for f in descriptor.fields
        if f.type == FieldDescriptor.TYPE_STRING
        and not f.is_repeated
        and _names_an_id(f.name, descriptor.name, resource_type)
    )
    nested = tuple(
        (f.name, f.is_repeated)
        for f in descriptor.fields
        if f.message_type is not None
        and not f.message_type.GetOptions().map_entry
        and _reaches(f.message_type, resource_type, frozenset({descriptor.full_name}))
    )
    return strings, nested


def _names_an_id(field_name: str, owner: str, resource_type: str) -> bool:
    return field_name in ("patient_id", reference_field(resource_type)) or (
        field_name == "id" and owner in (resource_type, "Patient")
    )


def _reaches(descriptor: Descriptor, resource_type: str, seen: frozenset[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_STRING and _names_an_id(
            f.name, descriptor.name, resource_type
        ):
            return True
        if f.message_type is not None and _reaches(
            f.message_type, resource_type, seen | {descriptor.full_name}
        ):
            return True
    return False


@cache
def reference_field(resource_type: str) -> str:
    """The field that names a resource of this type elsewhere: TherapyPlan -> therapy_plan_id."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", resource_type).lower() + "_id"


def _note(found: Concerned, field_name: str, value: str, owner: str, resource_type: str) -> None:
    if field_name == "patient_id":
        found.patient_ids.add(value)
    elif field_name == reference_field(resource_type):
        found.resource_ids.add(value)
    elif field_name == "id" and owner == resource_type:
        found.resource_ids.add(value)
        if owner == "Patient":
            found.patient_ids.add(value)


def from_rows(rows: Iterable[object], resource_type: str) -> Concerned:
    """ORM rows a transaction inserted, changed or deleted (``PatientRow`` is a Patient)."""
    found = Concerned()
    for row in rows:
        kind = type(row).__name__.removesuffix("Row")
        ident = getattr(row, "id", None)
        if isinstance(ident, str) and ident:
            if kind == resource_type:
                found.resource_ids.add(ident)
            if kind == "Patient":
                found.patient_ids.add(ident)
        patient = getattr(row, "patient_id", None)
        if isinstance(patient, str) and patient:
            found.patient_ids.add(patient)
        organisation = getattr(row, "organisation_id", None)
        if isinstance(organisation, str) and organisation:
            found.organisation_ids.add(organisation)
    return found
