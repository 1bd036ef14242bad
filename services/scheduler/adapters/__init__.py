"""Clients of the other services: the inventory's catalogue, stock and forecast, and the relays
that deliver the outbox to the inventory and to notify."""
