"""Notify service entry point: ``python -m services.notify``.

At this stage the process serves grpc.health.v1 and reflection only, so deployments, probes and
`make run` already treat it as one of the three services; subscribers, Publish, durable delivery
and the Subscribe stream arrive with the notify issue.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.common.server import GrpcService, configure_logging
from services.common.settings import Settings, load_settings


def build(settings: Settings) -> GrpcService:
    def register(server: grpc.Server) -> Sequence[str]:
        return []

    return GrpcService(settings=settings, register=register)


def main() -> None:
    configure_logging()
    build(load_settings("notify")).run_until_signalled()


if __name__ == "__main__":
    main()
