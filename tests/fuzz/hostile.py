"""Hostile and random requests for any RPC, built from the request's descriptor alone, so a new
RPC or field is fuzzed without anyone listing it.

Two sources:
- ``hostile_requests``: for every field of the request (and of the messages it holds directly),
  one request per hostile value of the field's type: the classes the contract exists for
  (calendar edges, out-of-range timestamps, huge and tiny exponents, NUL and control
  characters, over-long strings, too many items, undefined enums, integer extremes);
- ``requests``: a Hypothesis strategy of whole random requests mixing those values with
  plausible ones (ids that exist on both platforms, small decimals, dates near the clock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

HOSTILE_STRINGS = [
    "A\x00B",  # NUL: PostgreSQL refuses it in text
    "bell\x07",
    "x" * 100_000,  # over every column
    "1e309",  # overflows a float, a huge Decimal
    "1E-999999999",  # a billion digits once formatted
    "9" * 400,
    "-1",
]
PLAUSIBLE_STRINGS = [
    "",
    "site-1",
    "gammagard-liquid",
    "privigen",
    "10",
    "2.5",
    "0",
    "Europe/London",
    "LOT-1",
    'W/"1"',
    "note\nwith a line",
]
INT32_EDGES = [2**31 - 1, -(2**31), -1, 0, 1, 366, 100_000]
INT64_EDGES = [2**63 - 1, -(2**63), -1, 0, 1]

_INTS = {
    FieldDescriptor.TYPE_INT32: INT32_EDGES,
    FieldDescriptor.TYPE_SINT32: INT32_EDGES,
    FieldDescriptor.TYPE_SFIXED32: INT32_EDGES,
    FieldDescriptor.TYPE_INT64: INT64_EDGES,
    FieldDescriptor.TYPE_SINT64: INT64_EDGES,
    FieldDescriptor.TYPE_SFIXED64: INT64_EDGES,
    FieldDescriptor.TYPE_UINT32: [2**32 - 1, 0],
    FieldDescriptor.TYPE_FIXED32: [2**32 - 1, 0],
    FieldDescriptor.TYPE_UINT64: [2**64 - 1, 0],
    FieldDescriptor.TYPE_FIXED64: [2**64 - 1, 0],
}

Filler = Callable[[Message], None]

# Well-known messages: hostile values set through their fields (kwargs of the message).
HOSTILE_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "google.type.Date": [
        dict(year=9999, month=12, day=31),
        dict(year=1, month=1, day=1),
        dict(year=2026, month=2, day=30),
        dict(year=0, month=5, day=1),
    ],
    "google.protobuf.Timestamp": [
        dict(seconds=253402300800),  # year 10000
        dict(seconds=1_764_000_000, nanos=-1),
        dict(seconds=-62135596801),  # before year 1
    ],
    "google.type.TimeOfDay": [dict(hours=25), dict(minutes=-1), dict(hours=24, minutes=30)],
    "google.type.Money": [
        dict(currency_code="GBP", units=2**62),
        dict(currency_code="GBP", units=1, nanos=-5),
        dict(currency_code="\x00\x00\x00", units=1),
    ],
    "google.protobuf.FieldMask": [dict(paths=["\x00"]), dict(paths=["x" * 1000] * 200)],
}
PLAUSIBLE_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "google.type.Date": [dict(year=2026, month=12, day=1), dict(year=2027, month=6, day=30)],
    "google.protobuf.Timestamp": [dict(seconds=1_795_000_000)],
    "google.type.TimeOfDay": [dict(hours=9), dict(hours=17, minutes=30)],
    "google.type.Money": [dict(currency_code="GBP", units=34)],
    "google.protobuf.FieldMask": [dict(paths=["display_name"])],
}


def request_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _scalar_hostiles(fd: FieldDescriptor) -> list[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return HOSTILE_STRINGS
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return [b"\x00" * 100_000]
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return [99, -1]
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return [float("nan"), float("inf"), -1e308]
    return _INTS.get(fd.type, [])


def _hostile_fillers(fd: FieldDescriptor) -> Iterator[tuple[str, Filler]]:
    """(label, a function setting the field to a hostile value) for one field."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        values = HOSTILE_MESSAGES.get(fd.message_type.full_name)
        if values is None:
            if fd.is_repeated and not fd.message_type.GetOptions().map_entry:
                yield "25000 items", _many_messages(fd, 25_000)
            return
        for kwargs in values:
            yield repr(kwargs)[:60], _set_message(fd, kwargs)
        return
    for value in _scalar_hostiles(fd):
        yield repr(value)[:60], _set_scalar(fd, value)
    if fd.is_repeated:
        plausible = "site-1" if fd.type == FieldDescriptor.TYPE_STRING else 1
        yield "25000 items", _set_many(fd, plausible, 25_000)


def _set_scalar(fd: FieldDescriptor, value: Any) -> Filler:
    def fill(m: Message) -> None:
        if fd.is_repeated:
            getattr(m, fd.name).append(value)
        else:
            setattr(m, fd.name, value)

    return fill


def _set_many(fd: FieldDescriptor, value: Any, count: int) -> Filler:
    def fill(m: Message) -> None:
        getattr(m, fd.name).extend([value] * count)

    return fill


def _many_messages(fd: FieldDescriptor, count: int) -> Filler:
    def fill(m: Message) -> None:
        items = getattr(m, fd.name)
        for _ in range(count):
            items.add()

    return fill


def _set_message(fd: FieldDescriptor, kwargs: dict[str, Any]) -> Filler:
    cls = request_class(fd.message_type)

    def fill(m: Message) -> None:
        value = cls(**kwargs)
        if fd.is_repeated:
            getattr(m, fd.name).append(value)
        else:
            getattr(m, fd.name).CopyFrom(value)

    return fill


def hostile_requests(
    descriptor: Descriptor, base: Message | None = None
) -> Iterator[tuple[str, Message]]:
    """(field path and value, request) for each field of the request and of its direct message
    fields, each hostile value of its type; each request starts empty, or as a copy of ``base``
    (a valid request, so that the value meets the service's own rules, not only the contract's)."""
    cls = request_class(descriptor)

    def start() -> Message:
        request = cls()
        if base is not None:
            request.CopyFrom(base)
        return request

    for fd in descriptor.fields:
        for label, fill in _hostile_fillers(fd):
            request = start()
            if base is not None and not fd.is_repeated:
                request.ClearField(fd.name)
            fill(request)
            yield f"{fd.name}={label}", request
        nested = fd.message_type
        if nested is None or nested.full_name in HOSTILE_MESSAGES or fd.is_repeated:
            continue
        for inner in nested.fields:
            for label, fill in _hostile_fillers(inner):
                request = start()
                holder = getattr(request, fd.name)
                if not inner.is_repeated:
                    holder.ClearField(inner.name)
                fill(holder)
                yield f"{fd.name}.{inner.name}={label}", request


# --- random whole requests (Hypothesis) ----------------------------------------------------------


def _scalar_strategy(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        plausible = st.sampled_from(PLAUSIBLE_STRINGS)
        return st.one_of(  # mostly plausible, so that requests get past the contract too
            plausible,
            plausible,
            plausible,
            st.sampled_from(HOSTILE_STRINGS),
            st.text(max_size=30),
            st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
        )
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in fd.enum_type.values] + [99])
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    edges = _INTS.get(fd.type, [0])
    low, high = min(edges), max(edges)
    return st.one_of(st.sampled_from(edges), st.integers(min(low, -5), min(high, 200)))


def _value_strategy(fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar_strategy(fd)
    full_name = fd.message_type.full_name
    if full_name in HOSTILE_MESSAGES:
        cls = request_class(fd.message_type)
        choices = HOSTILE_MESSAGES[full_name] + PLAUSIBLE_MESSAGES[full_name]
        return st.sampled_from(choices).map(lambda kwargs: cls(**kwargs))
    return message_strategy(fd.message_type, depth + 1)


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of the type: each field unset or drawn from hostile and plausible values;
    repeated fields hold 0 to 3 items; nesting stops at depth 3."""
    cls = request_class(descriptor)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            continue
        value = _value_strategy(fd, depth)
        if fd.is_repeated:
            fields[fd.name] = st.lists(value, max_size=3)
        else:
            fields[fd.name] = st.one_of(st.none(), value)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for fd in descriptor.fields:
            if fd.name not in fields:
                continue
            value = draw(fields[fd.name])
            if value is None or (fd.is_repeated and not value):
                continue
            if fd.is_repeated:
                getattr(message, fd.name).extend(value)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(message, fd.name).CopyFrom(value)
            else:
                setattr(message, fd.name, value)
        return message

    return build()
