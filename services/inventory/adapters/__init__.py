"""The inventory's clients of other services (the relay of outbox events to notify)."""
