"""Notify's use cases: subscribers, Publish and Cancel, the event log the stream reads, and the
dispatcher that delivers. Each loads from the store, lets the domain decide, and saves."""
