"""A service served without authentication and without its audit trail: the baseline of
bench/audit.py, nothing else. The same build as ``bench.unauthenticated`` (a fixed caller, no
token checked), and the audit trail left out: no audit interceptor, no record written, no hook
on the write sessions. Nothing in services/ reaches this module.

``python -m bench.unaudited scheduler|inventory``
"""

from __future__ import annotations

import sys
from typing import Any

from bench.unauthenticated import without_authentication
from services.common.server import GrpcService, serve


def main(argv: list[str]) -> int:
    if argv == ["scheduler"]:
        from services.scheduler.__main__ import build as build_scheduler
        from services.scheduler.settings import load_settings as scheduler_settings

        def scheduler(settings: Any) -> GrpcService:
            service = build_scheduler(settings, auth=without_authentication(settings))
            service.audit = None
            return service

        return serve(scheduler_settings, scheduler)
    if argv == ["inventory"]:
        from services.inventory.__main__ import build as build_inventory
        from services.inventory.settings import load_settings as inventory_settings

        def inventory(settings: Any) -> GrpcService:
            service = build_inventory(settings, auth=without_authentication(settings))
            service.audit = None
            return service

        return serve(inventory_settings, inventory)
    print("usage: python -m bench.unaudited scheduler|inventory", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
