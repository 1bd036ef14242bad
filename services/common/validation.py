"""The input contract: every request is checked here, once, before any service code sees it.

Two sources, one answer (docs/api.md, "The input contract"):

- the rules each field declares in protos/ with protovalidate's standard ``buf.validate``
  options (max_len and an RE2 pattern per kind of string, max_items), evaluated by the
  ``protovalidate`` library;
- the defaults below for what a field does not declare, read from the same descriptors, so no
  field of any request is ever unbounded: a string at most DEFAULT_MAX_CHARS characters and
  free of control characters, a repeated field at most DEFAULT_MAX_ITEMS items, an enum one of
  its values, and every ``google.type.Date``, ``google.protobuf.Timestamp``,
  ``google.type.TimeOfDay`` and ``google.type.Money`` a real one within the platform's range.

The defaults run first because they are cheap and bound the rest: a repeated field over its
limit is reported without looking at its items, and protovalidate is then not asked (it would
walk every item of a 4 MB request). Each violation names the field's path
(``forecasts[3].grams``) and the rule (``string.pattern``), never the value sent.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable
from typing import Any

import protovalidate
from buf.validate import validate_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.convert import EARLIEST_DATE, EARLIEST_INSTANT, LATEST_DATE, LATEST_INSTANT
from services.common.errors import MAX_VIOLATIONS, FieldViolation, InvalidArgument

DEFAULT_MAX_CHARS = 256
"""A string field that declares no length (max_len, or a rule that implies one) is at most this."""
DEFAULT_MAX_BYTES = 1024
DEFAULT_MAX_ITEMS = 100
"""A repeated field that declares no max_items holds at most this many."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_LENGTH_FIELDS = ("max_len", "len", "max_bytes", "len_bytes", "const")

VALIDATE_AT_ONCE_BYTES = 16 * 1024
"""A request at most this big is validated in one call; a bigger invalid one, node by node."""


class Found:
    """Violations as they are found: the first MAX_VIOLATIONS kept, the rest only counted, so a
    request with 20,000 bad items costs a counter rather than 20,000 objects."""

    def __init__(self) -> None:
        self.kept: list[FieldViolation] = []
        self.total = 0

    def append(self, violation: FieldViolation) -> None:
        self.total += 1
        if len(self.kept) < MAX_VIOLATIONS:
            self.kept.append(violation)


Out = Found
Check = Callable[[Any, str, Out], bool]
"""Checks one value at a path, appending violations; False when the request is too big to look
at further (a repeated field over its limit)."""


def _violation(path: str, description: str, rule: str) -> FieldViolation:
    return FieldViolation(path, description, rule)


class RequestValidator:
    """Validates any request message; built once per server and shared by its threads."""

    def __init__(self) -> None:
        self._protovalidate = protovalidate.Validator()
        self._plans: dict[str, dict[int, tuple[str, Check]]] = {}
        self._lock = threading.Lock()

    def check(self, request: Any) -> None:
        """Raise InvalidArgument naming every field that breaks the contract (the first
        MAX_VIOLATIONS of them, and how many more)."""
        found = self.violations(request)
        if found.total:
            raise InvalidArgument(found.kept, omitted=found.total - len(found.kept))

    def violations(self, request: Any) -> Found:
        """Every way the request breaks the contract (none when it keeps it)."""
        found = Found()
        if not isinstance(request, Message):
            return found  # a method without a protobuf request type (raw bytes): nothing declared
        if self._walk(request, "", found) and self._protovalidate.collect_violations(
            request, fail_fast=True
        ):
            self._declared(request, "", found)
        return found

    # -- declared rules, by protovalidate -----------------------------------------------------

    def _declared(self, message: Message, prefix: str, found: Found) -> None:
        """protovalidate's violations of a message known to have some. A small message is
        validated at once; a large one node by node (its own fields first, then each message
        it holds), so that tens of thousands of bad items are counted one item at a time
        instead of becoming tens of thousands of violation objects at once (~2.6 kB each).
        Splitting is sound because no message-typed field declares a rule of its own beyond
        max_items, which the defaults already checked."""
        if message.ByteSize() <= VALIDATE_AT_ONCE_BYTES:
            self._collect(message, prefix, found)
            return
        held = [
            (fd, v) for fd, v in message.ListFields() if fd.type == FieldDescriptor.TYPE_MESSAGE
        ]
        own = type(message)()
        own.CopyFrom(message)
        for fd, _ in held:
            own.ClearField(fd.name)
        self._collect(own, prefix, found)
        for fd, value in held:
            if not fd.is_repeated:
                self._declared(value, f"{prefix}{fd.name}.", found)
            elif not _is_map(fd):
                for i, item in enumerate(value):
                    self._declared(item, f"{prefix}{fd.name}[{i}].", found)

    def _collect(self, message: Message, prefix: str, found: Found) -> None:
        for v in self._protovalidate.collect_violations(message):
            found.append(_violation(prefix + _path(v.proto), v.proto.message, v.proto.rule_id))

    # -- defaults, from the descriptors -------------------------------------------------------

    def _walk(self, message: Message, prefix: str, out: Out) -> bool:
        plan = self._plan(message.DESCRIPTOR)
        complete = True
        for fd, value in message.ListFields():
            entry = plan.get(fd.number)
            if entry is not None:
                name, check = entry
                complete = check(value, prefix + name, out) and complete
        return complete

    def _plan(self, descriptor: Any) -> dict[int, tuple[str, Check]]:
        plan = self._plans.get(descriptor.full_name)
        if plan is None:
            with self._lock:
                plan = {
                    fd.number: (fd.name, check)
                    for fd in descriptor.fields
                    if (check := self._field_check(fd)) is not None
                }
                self._plans[descriptor.full_name] = plan
        return plan

    def _field_check(self, fd: FieldDescriptor) -> Check | None:
        rules = field_rules(fd)
        if fd.is_repeated:
            item_rules = rules.repeated.items if rules is not None else None
            each = self._value_check(fd, item_rules)
            limit = max_items(fd)
            return _repeated(limit, each, is_map=_is_map(fd))
        return self._value_check(fd, rules)

    def _value_check(self, fd: Any, rules: Any) -> Check | None:
        if fd.type == FieldDescriptor.TYPE_STRING:
            string_rules = rules.string if rules is not None and rules.HasField("string") else None
            return _string_check(string_rules)
        if fd.type == FieldDescriptor.TYPE_BYTES:
            bytes_rules = rules.bytes if rules is not None and rules.HasField("bytes") else None
            if bytes_rules is not None and any(bytes_rules.HasField(f) for f in _LENGTH_FIELDS):
                return None
            return _too_long(DEFAULT_MAX_BYTES, "bytes")
        if fd.type == FieldDescriptor.TYPE_ENUM:
            return _enum_check(fd)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(fd):
                return self._map_entry_check(fd.message_type)
            special = _WELL_KNOWN.get(fd.message_type.full_name)
            if special is not None:
                return special
            return self._message_check()
        return None

    def _message_check(self) -> Check:
        def check(value: Message, path: str, out: Out) -> bool:
            return self._walk(value, path + ".", out)

        return check

    def _map_entry_check(self, entry: Any) -> Check:
        value_check = self._value_check(entry.fields_by_name["value"], None)
        key_check = self._value_check(entry.fields_by_name["key"], None)

        def check(item: tuple[Any, Any], path: str, out: Out) -> bool:
            key, value = item
            complete = key_check(key, path, out) if key_check else True
            if value_check is not None:
                complete = value_check(value, path, out) and complete
            return complete

        return check


def field_rules(fd: FieldDescriptor) -> Any:
    """The field's declared ``buf.validate.field`` rules, or None."""
    options: Any = fd.GetOptions()
    extension: Any = validate_pb2.field
    if not options.HasExtension(extension):
        return None
    return options.Extensions[extension]


def max_items(fd: FieldDescriptor) -> int:
    """A repeated field's declared max_items, or the default."""
    rules = field_rules(fd)
    if rules is not None and rules.HasField("repeated") and rules.repeated.HasField("max_items"):
        return int(rules.repeated.max_items)
    return DEFAULT_MAX_ITEMS


def string_limits(string_rules: Any) -> tuple[bool, bool]:
    """(declares a length bound, declares its characters) for a field's StringRules."""
    if string_rules is None:
        return False, False
    fixed = string_rules.HasField("const") or len(getattr(string_rules, "in")) > 0
    bounded = fixed or any(string_rules.HasField(f) for f in _LENGTH_FIELDS)
    characters = fixed or string_rules.HasField("pattern")
    return bounded, characters


def _string_check(string_rules: Any) -> Check | None:
    bounded, characters = string_limits(string_rules)
    if bounded and characters:
        return None
    limit = None if bounded else DEFAULT_MAX_CHARS

    def check(value: str, path: str, out: Out) -> bool:
        if limit is not None and len(value) > limit:
            out.append(_violation(path, f"must be at most {limit} characters", "default.max_len"))
        elif not characters and _CONTROL.search(value):
            out.append(
                _violation(path, "must not contain control characters", "default.single_line")
            )
        return True

    return check


def _too_long(limit: int, unit: str) -> Check:
    def check(value: bytes, path: str, out: Out) -> bool:
        if len(value) > limit:
            out.append(_violation(path, f"must be at most {limit} {unit}", "default.max_len"))
        return True

    return check


def _repeated(limit: int, each: Check | None, *, is_map: bool) -> Check:
    def check(values: Any, path: str, out: Out) -> bool:
        if len(values) > limit:
            out.append(_violation(path, f"must hold at most {limit} items", "repeated.max_items"))
            return False
        if each is None:
            return True
        complete = True
        items = values.items() if is_map else enumerate(values)
        for key, item in items:
            complete = each((key, item) if is_map else item, f"{path}[{key}]", out) and complete
        return complete

    return check


def _enum_check(fd: Any) -> Check:
    defined = frozenset(v.number for v in fd.enum_type.values)

    def check(value: int, path: str, out: Out) -> bool:
        if value not in defined:
            out.append(_violation(path, "must be one of the enum's values", "enum.defined_only"))
        return True

    return check


def _is_map(fd: Any) -> bool:
    return bool(fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry)


def _date(value: Any, path: str, out: Out) -> bool:
    if value.year == 0 and value.month == 0 and value.day == 0:
        return True  # unset: whether the field is required is the service's rule
    try:
        day = dt.date(value.year, value.month, value.day)
    except ValueError:
        day = None
    if day is None or not EARLIEST_DATE <= day <= LATEST_DATE:
        out.append(
            _violation(
                path,
                f"must be a calendar date from {EARLIEST_DATE} to {LATEST_DATE}",
                "date.range",
            )
        )
    return True


def _timestamp(value: Any, path: str, out: Out) -> bool:
    if not (
        0 <= value.nanos < 1_000_000_000 and EARLIEST_INSTANT <= value.seconds < LATEST_INSTANT
    ):
        first = dt.datetime.fromtimestamp(EARLIEST_INSTANT, dt.UTC).date()
        end = dt.datetime.fromtimestamp(LATEST_INSTANT, dt.UTC).date()
        out.append(
            _violation(
                path,
                f"must be an instant from {first}T00:00:00Z up to {end}T00:00:00Z "
                "(nanos 0 to 999999999)",
                "timestamp.range",
            )
        )
    return True


def _time_of_day(value: Any, path: str, out: Out) -> bool:
    end_of_day = (value.hours, value.minutes, value.seconds, value.nanos) == (24, 0, 0, 0)
    if not end_of_day and not (
        0 <= value.hours <= 23
        and 0 <= value.minutes <= 59
        and 0 <= value.seconds <= 59
        and 0 <= value.nanos <= 999_999_999
    ):
        out.append(
            _violation(path, "must be a time of day from 00:00 to 24:00", "time_of_day.valid")
        )
    return True


MAX_MONEY_UNITS = 1_000_000_000


def _money(value: Any, path: str, out: Out) -> bool:
    if value.currency_code and not re.fullmatch(r"[A-Z]{3}", value.currency_code):
        out.append(
            _violation(
                path + ".currency_code", "must be 3 capital letters (ISO 4217)", "money.currency"
            )
        )
    same_sign = value.units == 0 or value.nanos == 0 or (value.units > 0) == (value.nanos > 0)
    if not (
        abs(value.units) <= MAX_MONEY_UNITS
        and -1_000_000_000 < value.nanos < 1_000_000_000
        and same_sign
    ):
        out.append(
            _violation(
                path,
                f"must be an amount of at most {MAX_MONEY_UNITS} units, nanos below 10^9 and of "
                "the units' sign",
                "money.valid",
            )
        )
    return True


_WELL_KNOWN: dict[str, Check] = {
    "google.type.Date": _date,
    "google.protobuf.Timestamp": _timestamp,
    "google.type.TimeOfDay": _time_of_day,
    "google.type.Money": _money,
}


def _path(violation: Any) -> str:
    """``forecasts[3].grams`` from a protovalidate violation's field path."""
    parts: list[str] = []
    for element in violation.field.elements if violation.field is not None else ():
        name = element.field_name
        parts.append(f".{name}" if parts else name)
        subscript = element.subscript
        if subscript is not None:
            parts.append(f"[{subscript.value}]")
    return "".join(parts)
