"""``python -m services.common.audit verify|export SERVICE [--database-url URL]``.

verify: walks the service's chain; exit 0 and the count when intact, exit 1 and the first
broken link otherwise. export: the records (optionally of one patient) as a FHIR R4 Bundle of
AuditEvents on stdout or into ``--output``. The database defaults to the service's own
(``<SERVICE>_DATABASE_URL``, else its SQLite file under var/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sqlalchemy import MetaData

from services.common.audit.fhir import bundle_json
from services.common.audit.store import AuditFilter, AuditStore, define_audit_tables
from services.common.audit.verify import verify
from services.common.db import Database
from services.common.settings import default_database_url

SERVICES = ("scheduler", "inventory", "notify")


def store_for(service: str) -> AuditStore:
    return AuditStore(service, define_audit_tables(MetaData(), service))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.audit")
    parser.add_argument("command", choices=("verify", "export"))
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--patient", default="", help="export: only records naming this patient")
    parser.add_argument("--output", default="", help="export: write here instead of stdout")
    args = parser.parse_args(argv)
    url = (
        args.database_url
        or os.environ.get(f"{args.service.upper()}_DATABASE_URL", "")
        or default_database_url(args.service)
    )
    db = Database(url, pool_size=1)
    store = store_for(args.service)
    try:
        with db.engine.connect() as connection:
            if args.command == "verify":
                verdict = verify(store.walk(connection), store.outside_chain(connection))
                waiting = store.pending_count(connection)
                if verdict.broken is not None:
                    print(
                        f"{args.service} audit chain BROKEN at {verdict.broken} "
                        f"({verdict.checked} records before it intact)"
                    )
                    return 1
                print(
                    f"{args.service} audit chain intact: {verdict.checked} records"
                    + (f" ({waiting} more waiting to be linked)" if waiting else "")
                )
                return 0
            if args.patient:
                where = AuditFilter(None, patient_id=args.patient)
                records = store.find(connection, where, sys.maxsize)
            else:
                records = [link.record for link in store.walk(connection) if link.record]
            text = json.dumps(bundle_json(records), indent=2)
    finally:
        db.dispose()
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
