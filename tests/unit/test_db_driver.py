"""The services speak to PostgreSQL through one driver, whichever a URL names
(services/common/db.py, POSTGRESQL_DRIVER, says why psycopg2)."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.postgresql.psycopg2 import EXECUTEMANY_VALUES_PLUS_BATCH

from services.common.db import make_engine


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nobody@127.0.0.1:1/none",
        "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "postgresql+psycopg2://nobody@127.0.0.1:1/none",
    ],
)
def test_every_postgresql_url_is_served_by_psycopg2_with_batched_executemany(url: str) -> None:
    engine = make_engine(url)  # connects only when used
    try:
        assert engine.dialect.driver == "psycopg2"
        # a Core executemany goes as pages of statements, not a round trip per row
        assert engine.dialect.executemany_mode is EXECUTEMANY_VALUES_PLUS_BATCH  # type: ignore[attr-defined]
        assert engine.url.host == "127.0.0.1" and engine.url.database == "none"
    finally:
        engine.dispose()
