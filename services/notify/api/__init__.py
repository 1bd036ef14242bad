"""The gRPC face: one servicer for NotifyService, the protobuf ⇄ domain translations, and the
plumbing that feeds and wakes Subscribe streams."""
