"""The benchmarks' split of a call's CPU (bench/harness.py): the server's part counts its
worker processes, and the database's part is read from the PostgreSQL backends serving the
run's database (the server runs on the benchmark's machine, as the benchmarks' and CI's does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg
import pytest

from bench.harness import conninfo, cpu_seconds, database_cpu_seconds

_CHILD = (
    "import time\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end:\n"
    "    pass\n"
    "print('burned', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.postgres
def test_a_backends_work_counts_in_its_databases_cpu(postgres_url: str) -> None:
    with psycopg.connect(conninfo(postgres_url)) as conn:
        conn.execute("SELECT 1")  # the backend exists before the first reading
        before = database_cpu_seconds(postgres_url)
        conn.execute("SELECT count(*) FROM generate_series(1, 5000000)")  # about 0.5 s of CPU
        used = database_cpu_seconds(postgres_url) - before
    assert used >= 0.1


def test_a_servers_cpu_counts_its_workers() -> None:
    """A service run as several processes does its work in its workers: a parent that only
    waits, whose child burned 0.3 s of CPU, has used at least a quarter of a second."""
    parent_code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {_CHILD!r}])\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "burned"  # the child's, still running
        assert cpu_seconds(parent.pid) >= 0.25
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
