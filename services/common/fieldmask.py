"""Update masks (AIP-134): apply only the named fields of a request's resource."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from services.common.errors import FieldViolation, InvalidArgument


def apply_mask(
    current: Message,
    patch: Message,
    mask: FieldMask,
    mutable: Iterable[str],
    *,
    prefix: str,
) -> Message:
    """``current`` with the masked fields of ``patch``; an empty mask means all mutable fields.

    Paths must be top-level mutable fields: naming an output-only or unknown field is refused,
    so a client never believes it changed something that stays as it was.
    """
    allowed = set(mutable)
    paths = list(mask.paths) or sorted(allowed)
    bad = [p for p in paths if p not in allowed]
    if bad:
        raise InvalidArgument(
            [
                FieldViolation("update_mask", f"{p!r} is not a mutable field of {prefix}")
                for p in bad
            ]
        )
    merged = type(current)()
    merged.CopyFrom(current)
    FieldMask(paths=paths).MergeMessage(
        patch, merged, replace_message_field=True, replace_repeated_field=True
    )
    return merged
