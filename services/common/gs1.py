"""Reading the GS1 element string scanned from a vial or carton
(docs/clinical-rules.md#gs1-barcodes: (01) GTIN, (17) expiry, (10) lot, (21) serial), with biip
doing the parsing and check-digit work."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import biip
from biip.gs1_messages import GS1Message


@dataclass(frozen=True)
class Scan:
    gtin: str
    expiry_date: dt.date | None
    lot_number: str
    serial: str


class ScanError(ValueError):
    """The scan is not a usable GS1 element string; the message says why."""


def read_scan(element_string: str) -> Scan:
    """Accepts what scanners send (FNC1 as ASCII 29, optional symbology identifier) and the
    human-readable form with AIs in brackets, "(01)…(17)…(10)…"."""
    text = element_string.strip()
    try:
        if text.startswith("("):
            message: GS1Message | None = GS1Message.parse_hri(text)
        else:
            message = biip.parse(text).gs1_message
    except biip.ParseError as error:
        raise ScanError(f"not a GS1 element string: {error}") from error
    if message is None:
        raise ScanError("not a GS1 element string (no application identifiers found)")
    strings = message.element_strings
    gtin = strings.get(ai="01")
    if gtin is None:
        raise ScanError("no GTIN (01) in the scan")
    if gtin.gtin is None or gtin.gtin_error:
        raise ScanError(f"GTIN {gtin.value} is not valid: {gtin.gtin_error}")
    lot = strings.get(ai="10")
    expiry = strings.get(ai="17")
    serial = strings.get(ai="21")
    return Scan(
        gtin=gtin.gtin.as_gtin_14(),
        expiry_date=expiry.date if expiry is not None else None,
        lot_number=lot.value if lot is not None else "",
        serial=serial.value if serial is not None else "",
    )
