"""psycopg parses a statement's text once, however long: our hot write paths are built once and
bound per call, and longer than psycopg's own caching limit (services/common/db.py says why)."""

from __future__ import annotations

from psycopg import _queries
from psycopg.adapt import Transformer

from services.common.db import cache_long_statements, make_engine


def test_a_long_statement_with_many_parameters_is_parsed_once() -> None:
    make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # connects only when used
    names = [f"p{i}" for i in range(300)]  # a booking's write binds about this many
    query = "SELECT " + ", ".join(f"%({n})s::text AS column_named_{n}" for n in names)
    assert len(query) > 4096  # past psycopg's own limit
    params = {n: n for n in names}
    _queries.PostgresQuery(Transformer()).convert(query, params)
    before = _queries._query2pg.cache_info()
    for _ in range(3):
        _queries.PostgresQuery(Transformer()).convert(query, params)
    after = _queries._query2pg.cache_info()
    assert after.hits - before.hits == 3
    assert after.misses == before.misses


def test_the_limits_are_only_ever_raised() -> None:
    cache_long_statements()
    cache_long_statements()
    assert _queries.MAX_CACHED_STATEMENT_LENGTH >= 64 * 1024
    assert _queries.MAX_CACHED_STATEMENT_PARAMS >= 1000
