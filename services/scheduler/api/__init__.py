"""The gRPC face: one servicer for SchedulerService and the protobuf ⇄ domain translations."""
