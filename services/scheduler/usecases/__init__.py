"""The scheduler's use cases: load from the store, let the domain decide, save, write events."""
