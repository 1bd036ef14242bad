"""services.common.joint_writes on SQLite and PostgreSQL: every write lands with its own
values, a conditional write's RETURNING is counted, rows written in order keep their order,
and on PostgreSQL the writes go as one statement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, registry

from services.common import joint_writes
from services.common.db import CompiledOnce, Database, DecimalText, make_engine
from services.common.joint_writes import ConditionUnmet, insert_in_order, insert_one, write_all
from tests.integration.round_trips import round_trips_by_thread

metadata = MetaData()
shelf = Table(
    "shelf",
    metadata,
    Column("id", String(8), primary_key=True),
    Column("kind", String(8)),
    Column("free", Integer),
)
log = Table(
    "log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("entry", String(8), unique=True),
    Column("at", DateTime(timezone=True)),  # an instant, NULL in most rows
)

price = Table(
    "price",
    metadata,
    Column("id", String(8), primary_key=True),
    Column("amount", DecimalText()),  # a typed parameter: converted on its way in
)


@dataclass
class Shelf:
    id: str
    kind: str
    free: int


registry().map_imperatively(Shelf, shelf)

TAKE = (
    update(shelf)
    .where(
        shelf.c.id == bindparam("shelf_id"),
        shelf.c.kind == "vial",  # a literal inside the statement: kept as written
        shelf.c.free >= bindparam("n", type_=Integer),
    )
    .values(free=shelf.c.free - bindparam("n", type_=Integer))
    .returning(shelf.c.id)
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)  # the services' own: their driver and settings
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _statements(engine: Engine) -> list[str]:
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    return sent


def test_writes_land_with_their_own_values_and_conditional_ones_are_counted(
    engine: Engine,
) -> None:
    shelf_row = insert_one(shelf, ("id", "kind", "free"))
    with engine.begin() as c:
        rows = [{"id": "a", "kind": "vial", "free": 5}, {"id": "b", "kind": "bag", "free": 5}]
        assert write_all(c, [(shelf_row, rows)]) == 0
    sent = _statements(engine)
    with engine.begin() as c:
        taken = write_all(
            c,
            [
                (
                    TAKE,
                    [{"shelf_id": "a", "n": 2}, {"shelf_id": "b", "n": 1}],
                ),  # b is no vial: untouched
                (insert_one(log, ("entry",)), [{"entry": "took"}]),
            ],
        )
    assert taken == 1
    if engine.dialect.name == "postgresql":
        assert len(sent) == 1  # one statement, one round trip
    with engine.connect() as c:
        assert dict(c.execute(select(shelf.c.id, shelf.c.free)).all()) == {"a": 3, "b": 5}
        assert c.execute(select(log.c.entry)).scalars().all() == ["took"]
    # the same shape again, other values: the kept statement takes them
    with engine.begin() as c:
        assert write_all(c, [(TAKE, [{"shelf_id": "a", "n": 3}, {"shelf_id": "a", "n": 9}])]) == 1
    with engine.connect() as c:
        assert c.execute(select(shelf.c.free).where(shelf.c.id == "a")).scalar() == 0


def test_rows_written_in_order_are_numbered_in_order(engine: Engine) -> None:
    entries = [f"e{i}" for i in range(7)]
    dialect = engine.dialect.name
    with engine.begin() as c:
        write_all(
            c,
            [
                insert_in_order(log, [{"entry": e} for e in entries], dialect=dialect),
                (
                    insert_one(shelf, ("id", "kind", "free")),
                    [{"id": "x", "kind": "vial", "free": 1}],
                ),
            ],
        )
    with engine.begin() as c:  # a repeat of e3 is skipped, the new one follows
        again = [{"entry": "e3"}, {"entry": "e7"}]
        write_all(c, [insert_in_order(log, again, skip_conflicts_on="entry", dialect=dialect)])
    with engine.connect() as c:
        written = c.execute(select(log.c.entry).order_by(log.c.seq)).scalars().all()
    assert written == [*entries, "e7"]


def test_rows_written_in_order_keep_their_columns_types_nulls_included(engine: Engine) -> None:
    """The driver writes the values into the statement's text: a row source of NULLs alone
    must still read as the column's type, not as text (which a timestamp column refuses)."""
    dialect = engine.dialect.name
    noon = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    with engine.begin() as c:
        write_all(c, [insert_in_order(log, [{"entry": "n1", "at": None}], dialect=dialect)])
        nulls = [{"entry": "n2", "at": None}, {"entry": "n3", "at": None}]
        write_all(c, [insert_in_order(log, nulls, dialect=dialect)])
        mixed = [{"entry": "t1", "at": noon}, {"entry": "t2", "at": None}]
        write_all(c, [insert_in_order(log, mixed, dialect=dialect)])
    with engine.connect() as c:
        written = c.execute(select(log.c.entry, log.c.at).order_by(log.c.seq)).all()
    assert [(r.entry, r.at is None) for r in written] == [
        ("n1", True),
        ("n2", True),
        ("n3", True),
        ("t1", False),
        ("t2", True),
    ]
    if dialect == "postgresql":  # SQLite keeps no zone: the instant is checked where it is kept
        assert written[3].at == noon


def test_a_failing_write_leaves_nothing(engine: Engine) -> None:
    shelf_row = insert_one(shelf, ("id", "kind", "free"))
    with engine.begin() as c:
        write_all(c, [(shelf_row, [{"id": "a", "kind": "vial", "free": 1}])])
    with pytest.raises(Exception, match="(?i)unique|duplicate"), engine.begin() as c:
        write_all(
            c,
            [
                (insert_one(log, ("entry",)), [{"entry": "lost"}]),
                (shelf_row, [{"id": "a", "kind": "vial", "free": 1}]),  # already there
            ],
        )
    with engine.connect() as c:
        assert c.execute(select(log.c.entry)).scalars().all() == []


def test_a_write_expecting_its_conditions_fails_whole_when_one_no_longer_holds(
    engine: Engine, database_url: str
) -> None:
    """``expect``: two takes and a log row, where one shelf no longer holds what the caller
    read. The whole write fails (ConditionUnmet) and nothing of it stands, also on
    PostgreSQL without a transaction around it (``Database.statementwise``: autocommit, so
    only the statement itself can undo its clauses). The same write whose conditions hold
    lands and answers its count; on PostgreSQL each is one statement and no BEGIN or COMMIT."""
    with engine.begin() as c:
        rows = [{"id": "a", "kind": "vial", "free": 5}, {"id": "b", "kind": "vial", "free": 1}]
        write_all(c, [(insert_one(shelf, ("id", "kind", "free")), rows)])
    db = Database(database_url)  # the services' own: statementwise as they write
    try:

        def write(entry: str, b_takes: int) -> int:
            with db.statementwise() as session:
                return write_all(
                    session,
                    [
                        (TAKE, [{"shelf_id": "a", "n": 2}, {"shelf_id": "b", "n": b_takes}]),
                        (insert_one(log, ("entry",)), [{"entry": entry}]),
                    ],
                    expect=2,
                )

        with pytest.raises(ConditionUnmet, match="1"):
            write("short", 2)  # b holds 1: a's take and the log row must not stand either
        with engine.connect() as c:
            assert dict(c.execute(select(shelf.c.id, shelf.c.free)).all()) == {"a": 5, "b": 1}
            assert c.execute(select(log.c.entry)).scalars().all() == []
        with round_trips_by_thread() as counted:
            assert write("held", 1) == 2
        with engine.connect() as c:
            assert dict(c.execute(select(shelf.c.id, shelf.c.free)).all()) == {"a": 3, "b": 0}
            assert c.execute(select(log.c.entry)).scalars().all() == ["held"]
        if engine.dialect.name == "postgresql":
            assert sum(counted.values()) == 1  # the statement: no BEGIN, no COMMIT
    finally:
        db.dispose()


def test_a_kept_joint_statement_is_rendered_once_and_sent_with_each_calls_values(
    engine: Engine,
) -> None:
    """PostgreSQL: a shape's joint statement is rendered once and each execution sends that
    text with its own values (Kept: no binding to the compiled form per call, no lookup in the
    engine's compiled cache, whose key would hash the statement's structure); the values still
    pass their types' conversions (a Decimal kept as text comes back exact)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite sends each write on its own: no joint statement")
    row = insert_one(shelf, ("id", "kind", "free"))
    priced = insert_one(price, ("id", "amount"))
    engine_cache = engine._compiled_cache
    assert engine_cache is not None
    sent = _statements(engine)
    for n in range(3):
        with engine.begin() as c:
            write_all(
                c,
                [
                    (row, [{"id": f"k{n}", "kind": "vial", "free": n}]),
                    (priced, [{"id": f"k{n}", "amount": Decimal(f"{n}.10")}]),
                ],
            )
    (joint,) = (
        k for key, k in joint_writes._JOINT.items() if key == (((row, 1), (priced, 1)), False)
    )
    rendered = joint.rendered(engine.dialect)
    assert rendered is not None
    assert [s for s in sent if s.lstrip().startswith("WITH")] == [rendered.sql] * 3
    own = joint.options["compiled_cache"]
    assert isinstance(own, CompiledOnce)
    assert not [key for key in own._compiled if key[0] is engine.dialect]  # never compiled per call
    structure = joint.statement._generate_cache_key().key
    assert not [key for key in engine_cache if key[1] == structure]
    with engine.connect() as c:
        assert dict(c.execute(select(shelf.c.id, shelf.c.free)).all()) == {
            "k0": 0,
            "k1": 1,
            "k2": 2,
        }
        typed = dict(c.execute(select(price.c.id, price.c.amount)).all())
        stored = dict(c.execute(text("SELECT id, amount FROM price")).all())
    # the amount went through DecimalText's conversion: stored as its exact text
    assert stored == {"k0": "0.10", "k1": "1.10", "k2": "2.10"}
    assert typed == {"k0": Decimal("0.10"), "k1": Decimal("1.10"), "k2": Decimal("2.10")}


def test_a_kept_statement_on_a_session_flushes_its_pending_changes_first(
    engine: Engine,
) -> None:
    """A joint write run on a Session sees the session's pending ORM changes flushed first,
    as any statement run through the Session does (autoflush), on both databases."""
    row = insert_one(shelf, ("id", "kind", "free"))
    with Session(engine) as session, session.begin():
        session.execute(shelf.insert().values(id="s0", kind="vial", free=1))
        pending = Shelf(id="s1", kind="vial", free=2)
        session.add(pending)
        write_all(session, [(row, [{"id": "s2", "kind": "vial", "free": 3}])])
        counted = session.connection().execute(select(shelf.c.id).order_by(shelf.c.id)).all()
    assert [r.id for r in counted] == ["s0", "s1", "s2"]
