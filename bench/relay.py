"""An outbox relay in-process: ``OutboxRelay.drain`` over a fresh outbox of N rows (batches of
100), with a ``deliver`` that returns at once or sleeps (a network call's latency), at each
concurrency asked for. Prints rows/s and the process's CPU per row (every thread's).

    python -m bench.relay postgresql+psycopg://postgres@127.0.0.1:5432/relay_db \
        --rows 2000 --delay-ms 0 2 --concurrency 1 4 --runs 2

The table is ``bench_outbox`` in the database named, dropped and made anew for each run."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
import uuid

from sqlalchemy import MetaData

from services.common.clock import FixedClock
from services.common.db import Database
from services.common.identity import service_caller
from services.common.outbox import OutgoingEvent, define_outbox_table
from services.common.outbox_relay import OutboxRelay, RelayPolicy

NOW = dt.datetime(2026, 12, 5, 9, tzinfo=dt.UTC)


def run(url: str, rows: int, delay_ms: float, concurrency: int) -> tuple[float, float]:
    """Rows per second and CPU microseconds per row of one drain."""
    db = Database(url)
    metadata = MetaData()
    table = define_outbox_table(metadata, "bench")
    metadata.drop_all(db.engine)
    metadata.create_all(db.engine)
    try:
        with db.write() as session:
            session.execute(
                table.insert(),
                [
                    {
                        "id": uuid.uuid4().hex,
                        "topic": "LOW_STOCK",
                        "payload": {"n": n, "appointment_id": f"a-{n % 50}"},
                        "created_at": NOW,
                        "attempts": 0,
                        "last_error": "",
                    }
                    for n in range(rows)
                ],
            )
        seconds = delay_ms / 1000

        def deliver(_: OutgoingEvent) -> None:
            if seconds:
                time.sleep(seconds)

        fields = {f.name for f in dataclasses.fields(RelayPolicy)}
        extra = {"concurrency": concurrency} if "concurrency" in fields else {}
        policy = RelayPolicy(batch_size=100, **extra)  # type: ignore[arg-type]
        relay = OutboxRelay(
            db, table, deliver, FixedClock(NOW), policy, caller=service_caller("bench")
        )
        wall, cpu = time.perf_counter(), time.process_time()
        done = relay.drain().delivered
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        relay.stop()
        assert done == rows, (done, rows)
        return rows / wall, cpu / rows * 1e6
    finally:
        metadata.drop_all(db.engine)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--delay-ms", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    for delay in args.delay_ms:
        for concurrency in args.concurrency:
            for _ in range(args.runs):
                rate, cpu = run(args.url, args.rows, delay, concurrency)
                print(
                    f"deliver {delay:g} ms, concurrency {concurrency}: "
                    f"{rate:,.0f} rows/s, {cpu:,.0f} µs CPU a row",
                    flush=True,
                )


if __name__ == "__main__":
    main()
