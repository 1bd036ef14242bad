"""The gRPC face of the inventory: ``servicer`` holds InventoryService's RPCs; the other
modules translate protobuf ⇄ domain values for it."""
