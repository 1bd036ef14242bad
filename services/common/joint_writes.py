"""Several writes of one transaction sent to the database as one statement.

A hot mutation writes several tables (its own rows, a ledger, the outbox, the idempotency key's
stored response, the audit record). Sent one by one, each is a round trip, a statement for
this process to build and read back and for PostgreSQL to parse and plan, and any row lock it
takes is held across the round trips that follow. On PostgreSQL they go as one statement of
data-modifying WITH clauses instead: one round trip, and the row locks are held for that
statement and the commit. SQLite has no data-modifying WITH; there each write is a statement of
its own, which loses nothing, since SQLite lets one writer in at a time.

A write is a statement with every parameter bound by name (``bindparam``) and the rows to run
it for. The joint statement of a shape (which statements, how many rows each) is built once
and kept: building it cost more than sending it, and a statement built alike each time is
compiled once (SQLAlchemy's compiled cache). The kept statement holds the statements it was
built from, so a statement built anew for each call (a literal inside it) only misses the
cache; it never picks up another call's values. Build statements once (module constants, or
the cached builders here).

PostgreSQL runs the clauses of one statement against one snapshot, in an order of its own: no
write may depend on another's effect (a row one clause inserts is not visible to another).

A write that holds only if each of its conditional statements changed its row (a lot's vials
taken only while they are free) says how many rows those must return (``expect``). On
PostgreSQL the joint statement then fails as a whole when they return fewer, so nothing of it
stands even outside a transaction (``Database.statementwise``): the statement's answer is its
count cast to an integer, and a short count is cast from a text that says so, which PostgreSQL
refuses (SQLSTATE 22P02) after every clause has run, aborting them all. Elsewhere the count is
compared after the writes, and the caller's transaction rolls them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Integer,
    Table,
    Text,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors

from services.common.db import Kept, sqlstate

Write = tuple[Any, Sequence[Mapping[str, Any]]]
"""A DML statement (every parameter bound by name) and the rows of parameters to run it for."""


class ConditionUnmet(Exception):
    """A write with ``expect`` whose conditional statements changed fewer rows than expected:
    nothing of it stands once the caller's transaction (if any) ends."""


_UNMET = "conditions unmet, rows returned: "

_KEPT = 1000
_JOINT: dict[tuple[tuple[tuple[Any, int], ...], bool], Kept] = {}
"""Joint statements kept by shape (each statement and its row count) and whether they expect."""


def write_all(
    connection: Connection | Session,
    writes: Sequence[Write],
    *,
    apart: bool = False,
    expect: int | None = None,
) -> int:
    """Run every write, on PostgreSQL as one statement (unless ``apart``), and return how many
    rows the writes with a RETURNING clause returned: a conditional UPDATE ``RETURNING`` its
    key counts the rows it changed, which tells the caller whether every condition held.
    With ``expect``, fewer than that many raises ConditionUnmet instead, and on PostgreSQL the
    joint statement has then failed as a whole (the module's docstring says how).

    On a Session, its pending ORM changes are flushed first (as by any statement it runs); a
    Connection skips the ORM's work for each statement."""
    writes = [(statement, rows) for statement, rows in writes if rows]
    if not writes:
        return 0
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    if apart or bind.dialect.name != "postgresql":
        count = sum(_write_apart(connection, statement, rows) for statement, rows in writes)
        if expect is not None and count != expect:
            raise ConditionUnmet(f"{count} rows returned where {expect} were expected")
        return count
    shape = tuple((statement, len(rows)) for statement, rows in writes)
    key = (shape, expect is not None)
    joint = _JOINT.get(key)
    if joint is None:
        joint = Kept(_joint(shape, expect is not None))
        if len(_JOINT) < _KEPT:
            _JOINT[key] = joint
    params: dict[str, Any] = {}
    for n, (_, rows) in enumerate(writes):
        for k, row in enumerate(rows):
            prefix = f"w{n}_{k}_"  # once a row: formatting each name cost a booking ~0.1 ms
            params.update({prefix + key: value for key, value in row.items()})
    if expect is None:
        return int(joint.execute(connection, params).scalar_one())
    params["expected"] = expect
    try:
        return int(joint.execute(connection, params).scalar_one())
    except DBAPIError as error:
        if sqlstate(error) == _REFUSED_TEXT and _UNMET in str(error.orig):
            raise ConditionUnmet(str(error.orig).strip()) from error
        raise


def _write_apart(
    connection: Connection | Session, statement: Any, rows: Sequence[Mapping[str, Any]]
) -> int:
    if not _returns(statement):
        connection.execute(statement, rows[0] if len(rows) == 1 else list(rows))
        return 0
    return sum(len(connection.execute(statement, row).all()) for row in rows)


_REFUSED_TEXT = "22P02"  # invalid_text_representation: the short count's text cast to integer


def _joint(shape: tuple[tuple[Any, int], ...], expecting: bool = False) -> Any:
    """The k-th row of the n-th statement becomes the clause ``w{n}_{k}``, its parameters
    renamed ``w{n}_{k}_<name>``; the statement selects the rows the RETURNING clauses gave
    (``expecting``: that count as an integer only when it is ``:expected``, else a text
    PostgreSQL refuses to cast, which fails the statement)."""
    clauses = []
    counted: list[ColumnElement[Any]] = []
    for n, (statement, count) in enumerate(shape):
        for k in range(count):
            clause = _renamed(statement, f"w{n}_{k}_").cte(f"w{n}_{k}")
            clauses.append(clause)
            if _returns(statement):
                counted.append(select(func.count()).select_from(clause).scalar_subquery())
    total: ColumnElement[Any] = literal(0)
    for rows in counted:
        total = total + rows
    if expecting:
        as_text = cast(total, Text)
        said = case(
            (total == bindparam("expected", type_=Integer), as_text),
            else_=literal(_UNMET, Text) + as_text,
        )
        total = cast(said, Integer)
    return select(total).add_cte(*clauses)


def _returns(statement: Any) -> bool:
    return len(statement.exported_columns) > 0


def _renamed(statement: Any, prefix: str) -> Any:
    """``statement`` with each named parameter renamed ``prefix + name``; an anonymous one (a
    literal written into the statement) keeps its value."""

    def rename(element: Any) -> Any:
        if isinstance(element, BindParameter) and not element.unique:
            return bindparam(prefix + element.key, type_=element.type, expanding=element.expanding)
        return None

    return visitors.replacement_traverse(statement, {}, rename)  # type: ignore[call-overload]


# --- statements to write with, built once -------------------------------------------------------


@cache
def insert_one(
    table: Table,
    keys: tuple[str, ...],
    *,
    skip_conflicts_on: str | None = None,
    dialect: str = "postgresql",
) -> Any:
    """INSERT of one row of ``keys``, each bound by its column's name; with
    ``skip_conflicts_on`` (a unique column), a row whose value is there already is skipped."""
    values = {k: bindparam(k, type_=table.c[k].type) for k in keys}
    if skip_conflicts_on is None:
        return insert(table).values(values)
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return upsert(table).values(values).on_conflict_do_nothing(index_elements=[skip_conflicts_on])


def insert_in_order(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    skip_conflicts_on: str | None = None,
    dialect: str = "postgresql",
) -> Write:
    """The write of ``rows`` (all of the same keys) into ``table`` in their order: a column
    the database numbers (an outbox's or a stream's ``seq``) follows the rows. On PostgreSQL
    one INSERT from a UNION ALL of bound rows (the clauses of a joint statement run in no set
    order, so rows written one clause each could be numbered in any); elsewhere the one-row
    INSERT run for each row in turn."""
    keys = tuple(rows[0])
    if dialect != "postgresql":
        return insert_one(table, keys, skip_conflicts_on=skip_conflicts_on, dialect=dialect), rows
    merged: dict[str, Any] = {}
    for i, row in enumerate(rows):
        suffix = f"_{i}"
        merged.update({k + suffix: v for k, v in row.items()})
    return _insert_union(table, keys, len(rows), skip_conflicts_on), [merged]


@cache
def _insert_union(table: Table, keys: tuple[str, ...], count: int, skip: str | None) -> Any:
    """One INSERT of ``count`` rows (row i's ``k`` bound as ``k_i``) from a UNION ALL of bound
    rows, which SQLAlchemy's cache keeps (a multi-row VALUES it does not). Each value is cast
    to its column's type: the driver writes values into the statement's text (psycopg2), and a
    UNION of NULLs or quoted strings would otherwise be text, which a timestamp column
    refuses."""
    c = table.c
    selects = [
        select(*[cast(bindparam(f"{k}_{i}", type_=c[k].type), c[k].type) for k in keys])
        for i in range(count)
    ]
    source = selects[0] if count == 1 else union_all(*selects)
    statement = postgresql.insert(table).from_select(list(keys), source)
    return statement if skip is None else statement.on_conflict_do_nothing(index_elements=[skip])
