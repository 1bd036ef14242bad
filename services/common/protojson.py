"""Outbox payloads (plain JSON written by a service's domain code) → protobuf JSON for a typed
request of another service: ISO dates become google.type.Date, {amount, currency} objects
google.type.Money, nested messages recurse, and keys the message does not know are dropped.
Timestamps stay RFC 3339 strings, which protobuf JSON reads as they are."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any


def to_proto_json(doc: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for fd in descriptor.fields:
        value = doc.get(fd.name)
        if value is None or value == "":
            continue
        kind = fd.message_type.full_name if fd.message_type else ""
        if kind == "google.type.Date":
            day = dt.date.fromisoformat(str(value))
            found[fd.name] = {"year": day.year, "month": day.month, "day": day.day}
        elif kind == "google.type.Money":
            amount = Decimal(str(value["amount"]))
            units = int(amount)
            found[fd.name] = {
                "currency_code": value["currency"],
                "units": str(units),
                "nanos": int((amount - units) * 1_000_000_000),
            }
        elif kind and kind != "google.protobuf.Timestamp":
            inner = fd.message_type
            found[fd.name] = (
                [to_proto_json(x, inner) for x in value]
                if fd.is_repeated
                else to_proto_json(value, inner)
            )
        else:
            found[fd.name] = value
    return found
