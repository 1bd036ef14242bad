"""Shared fixtures: databases (SQLite and PostgreSQL) and in-process gRPC servers.

PostgreSQL comes from, in order: TEST_DATABASE_URL; a testcontainers container where a Docker
engine answers; otherwise tests that need it are skipped with the reason, except under CI=true
where a missing PostgreSQL fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() == "true"


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    reason = "PostgreSQL unavailable: set TEST_DATABASE_URL or run a Docker engine"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true requires PostgreSQL)")
    pytest.skip(reason)


def _schema_url(server_url: str, schema: str) -> str:
    url = make_url(server_url)
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    return url.set(query=query).render_as_string(hide_password=False)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh schema on the test server, dropped afterwards: isolation without CREATEDB."""
    with fresh_schema(postgres_server_url) as url:
        yield url


@contextmanager
def fresh_schema(postgres_server_url: str) -> Iterator[str]:
    """The URL of a schema of its own on the test server, dropped on leaving (for a fixture
    wider than one test)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _schema_url(postgres_server_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))
