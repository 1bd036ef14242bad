"""The kinds of notification topic, by name (the proto's ``Topic`` without its ``TOPIC_``
prefix, which is also the value of notify's ``Topic``): which are critical and which are
stream-only signals.

Notify enforces them (services/notify/domain/model.py: a critical topic cannot be switched off
and ignores quiet hours; a signal is never delivered by a channel) and the console's own
notifications page shows them (a critical topic's channels cannot all be unticked; a signal is
not offered). Both read them here, so the console imports nothing of notify's and the two
cannot drift apart. Names rather than an enum: the console speaks the proto's ``Topic``, notify
its domain's, and each maps a name to its own (an unknown name fails there at import)."""

from __future__ import annotations

CRITICAL = frozenset({"LOT_RECALLED", "STOCK_AT_RISK"})
"""Cannot be switched off (a preference naming no channel is refused) and ignore quiet hours."""

STREAM_ONLY = frozenset({"BOARD_CHANGED"})
"""Signals for the Subscribe stream (a chair board told to refresh), never delivered by a
channel whatever a subscriber's preferences say."""
