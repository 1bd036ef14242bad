"""The benchmarks' lean baseline (bench/lean.py) is only a fair yardstick if it does the
race-safe work the real paths do: a retry answers the first result, concurrent reservations
never over-commit a lot, and one chair-minute is never booked twice. Its reservations on
grpc's asyncio server (bench/lean_aio.py) must do the same work, or comparing the two serving
models says nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
import psycopg
import pytest
from google.protobuf.message import Message
from google.type.date_pb2 import Date
from google.type.timeofday_pb2 import TimeOfDay

from bench import lean
from bench.harness import conninfo, free_port
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb

pytestmark = pytest.mark.postgres

DAY = dt.date(2030, 3, 4)
T = TypeVar("T", bound=Message)
LOT_VIALS = 5  # two lots of five 10 g vials: five 20 g reservations at the most


def _two_lots(url: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for n in range(2):
            conn.execute(
                "INSERT INTO lean_lots VALUES (%s, 's1', 'p1', %s, 10, %s, %s, 0)",
                (f"lot-{n}", f"L{n}", DAY + dt.timedelta(days=30 + n), LOT_VIALS),
            )


@pytest.fixture
def channel(postgres_url: str) -> Iterator[tuple[grpc.Channel, str]]:
    address = f"127.0.0.1:{free_port()}"
    server, connections = lean.serve(address, postgres_url, workers=8)
    _two_lots(postgres_url)
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as conn:
        conn.execute("INSERT INTO lean_sites VALUES ('s1', 'Europe/London', 15)")
        conn.execute("INSERT INTO lean_chairs VALUES ('c1', 's1', true)")
        for n in range(3):
            conn.execute(
                "INSERT INTO lean_plans VALUES (%s, %s, 's1', 'p1', '20', 120)",
                (f"plan-{n}", f"patient-{n}"),
            )
    opened = grpc.insecure_channel(address)
    try:
        yield opened, postgres_url
    finally:
        opened.close()
        server.stop(0).wait()
        connections.close()


@pytest.fixture
def aio_channel(postgres_url: str) -> Iterator[tuple[grpc.Channel, str]]:
    with lean.lean_process(postgres_url, "bench.lean_aio") as (address, _pid):
        _two_lots(postgres_url)
        opened = grpc.insecure_channel(address)
        try:
            yield opened, postgres_url
        finally:
            opened.close()


@pytest.fixture(params=["threads", "asyncio"])
def reserving(request: pytest.FixtureRequest) -> tuple[grpc.Channel, str]:
    """A lean baseline serving ReserveStock: the threaded one, then the asyncio one."""
    fixture = "channel" if request.param == "threads" else "aio_channel"
    served: tuple[grpc.Channel, str] = request.getfixturevalue(fixture)
    return served


def _call(opened: grpc.Channel, method: str, request: Message, answer: type[T]) -> T:
    reply = opened.unary_unary(method, None, None)(request.SerializeToString(), timeout=30)
    return answer.FromString(reply)


def _reserve(opened: grpc.Channel, appointment: str) -> inv.ReserveStockResponse:
    request = inv.ReserveStockRequest(
        appointment_id=appointment,
        site_id="s1",
        patient_id="patient-0",
        product_id="p1",
        grams="20",
        needed_on=Date(year=DAY.year, month=DAY.month, day=DAY.day),
        rounding_band_percent="0",
    )
    return _call(opened, lean.RESERVE, request, inv.ReserveStockResponse)


def _book(opened: grpc.Channel, plan: str, request_id: str) -> pb.BookAppointmentResponse:
    request = pb.BookAppointmentRequest(
        therapy_plan_id=plan,
        chair_id="c1",
        local_date=Date(year=DAY.year, month=DAY.month, day=DAY.day),
        local_start=TimeOfDay(hours=9),
        request_id=request_id,
    )
    return _call(opened, lean.BOOK, request, pb.BookAppointmentResponse)


def test_a_reservation_answers_and_its_retry_answers_the_same(
    reserving: tuple[grpc.Channel, str],
) -> None:
    opened, _ = reserving
    first = _reserve(opened, "appt-1").reservation
    assert first.state == inv.RESERVATION_STATE_ACTIVE
    assert [(n.lot_id, n.vials) for n in first.lines] == [("lot-0", 2)]
    assert first.allocated_grams == "20"
    again = _reserve(opened, "appt-1").reservation
    assert again.id == first.id
    assert [(n.lot_id, n.vials) for n in again.lines] == [("lot-0", 2)]


def test_concurrent_reservations_never_over_commit(reserving: tuple[grpc.Channel, str]) -> None:
    opened, url = reserving

    def attempt(n: int) -> grpc.StatusCode:
        try:
            _reserve(opened, f"race-{n}")
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(attempt, range(12)))
    assert codes.count(grpc.StatusCode.OK) == 5  # 10 vials of 10 g, 20 g each
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}
    with psycopg.connect(conninfo(url)) as conn:
        held = conn.execute(
            "SELECT l.reserved, coalesce(sum(n.vials), 0) FROM lean_lots l "
            "LEFT JOIN lean_reservation_lines n ON n.lot_id = l.id GROUP BY l.id, l.reserved"
        ).fetchall()
    assert all(reserved == LOT_VIALS and lines == LOT_VIALS for reserved, lines in held)


def test_a_booking_repeat_answers_the_same_booking(channel: tuple[grpc.Channel, str]) -> None:
    opened, _ = channel
    first = _book(opened, "plan-0", "req-1").appointment
    assert first.status == pb.APPOINTMENT_STATUS_BOOKED
    assert (first.chair_minutes, first.local_end.hours) == (120, 11)
    assert _book(opened, "plan-0", "req-1").appointment.id == first.id


def test_two_bookings_of_one_chair_minute_do_not_both_succeed(
    channel: tuple[grpc.Channel, str],
) -> None:
    opened, url = channel

    def attempt(n: int) -> bool:
        try:
            _book(opened, f"plan-{n}", f"chair-race-{n}")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False
        return True

    with ThreadPoolExecutor(3) as pool:
        assert sum(pool.map(attempt, range(3))) == 1
    with psycopg.connect(conninfo(url)) as conn:
        assert conn.execute("SELECT count(*) FROM lean_bookings").fetchone() == (1,)
