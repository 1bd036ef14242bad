"""Platform pieces: error mapping, pagination tokens, etags, field masks, settings."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common import errors
from services.common.clock import zone_where_the_day_begins
from services.common.etag import check_etag, etag_for
from services.common.fieldmask import apply_mask
from services.common.interceptors import _database_error, database_away, to_status
from services.common.pagination import page_request, page_token


def test_invalid_argument_carries_one_field_violation_per_field() -> None:
    error = errors.InvalidArgument(
        [errors.FieldViolation("a", "bad"), errors.FieldViolation("b", "worse")]
    )
    status = to_status(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["a", "b"]


def test_failed_precondition_names_the_rule() -> None:
    error = errors.FailedPrecondition(
        [errors.PreconditionViolation("ROUNDING_BAND", "dose", "12 % from raw")]
    )
    status = to_status(error)
    assert status.code == code_pb2.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert status.details[-1].Unpack(info)
    assert info.metadata["rule"] == "ROUNDING_BAND"


def test_page_token_round_trip_and_scope_binding() -> None:
    token = page_token(["abc"], scope="sites:org")
    assert page_request(10, token, scope="sites:org").after == ["abc"]
    with pytest.raises(errors.InvalidArgument):
        page_request(10, token, scope="sites:other-org")
    with pytest.raises(errors.InvalidArgument):
        page_request(10, "not-a-token", scope="sites:org")
    with pytest.raises(errors.InvalidArgument):
        page_request(-1, "", scope="sites:org")


def test_stale_etag_is_aborted_and_missing_etag_is_invalid() -> None:
    check_etag(etag_for(3), 3, field="x.etag", resource="x")
    with pytest.raises(errors.Aborted):
        check_etag(etag_for(2), 3, field="x.etag", resource="x")
    with pytest.raises(errors.InvalidArgument):
        check_etag("", 3, field="x.etag", resource="x")


def test_field_mask_applies_only_named_mutable_fields() -> None:
    current = pb.Chair(id="c1", site_id="s1", display_name="Chair 1", active=True)
    patch = pb.Chair(display_name="Window chair", active=False)
    merged = apply_mask(
        current,
        patch,
        FieldMask(paths=["display_name"]),
        ("display_name", "active"),
        prefix="chair",
    )
    assert merged.display_name == "Window chair" and merged.active  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidArgument):
        apply_mask(current, patch, FieldMask(paths=["site_id"]), ("display_name",), prefix="chair")


def test_access_log_writes_one_line_per_call_in_order() -> None:
    import io

    from services.common.accesslog import AccessLog

    out = io.StringIO()
    log = AccessLog(out)
    log.record("/pkg.Svc/Get", "OK", 1.234, "")
    log.record("/pkg.Svc/Create", "INVALID_ARGUMENT", 0.5, "req-1")
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("rpc method=/pkg.Svc/Get code=OK duration_ms=1.23 request_id= peer=")
    assert "code=INVALID_ARGUMENT duration_ms=0.5 request_id=req-1" in lines[1]
    assert lines[0][:4].isdigit() and "Z INFO - grpc.access" in lines[0]
    log.close()


def test_snapshot_reloads_after_invalidate_and_after_max_age() -> None:
    from services.common.snapshot import Snapshot

    now = [0.0]
    loads = []

    def load() -> int:
        loads.append(now[0])
        return len(loads)

    snap = Snapshot(load, max_age_seconds=1.0, monotonic=lambda: now[0])
    assert snap.get() == 1 and snap.get() == 1  # cached
    now[0] = 0.5
    assert snap.get() == 1
    snap.invalidate()  # a local write
    assert snap.get() == 2
    now[0] = 1.6  # older than max age: another replica may have written
    assert snap.get() == 3
    assert loads == [0.0, 0.5, 1.6]


def test_snapshot_with_a_version_reloads_only_when_it_changed() -> None:
    from services.common.snapshot import Snapshot

    now, version, loads = [0.0], [1], []

    def load() -> int:
        loads.append(now[0])
        return len(loads)

    snap = Snapshot(load, max_age_seconds=1.0, monotonic=lambda: now[0], version=lambda: version[0])
    assert snap.get() == 1
    now[0] = 1.5  # stale, but nobody wrote: the version check keeps the value
    assert snap.get() == 1
    now[0] = 2.0  # checked at 1.5: fresh again
    assert snap.get() == 1
    version[0] = 2  # another replica wrote
    now[0] = 2.6
    assert snap.get() == 2
    snap.invalidate()  # a local write reloads at once, whatever the version says
    assert snap.get() == 3
    assert loads == [0.0, 2.6, 2.6]


class _DriverError(Exception):
    """What psycopg2 raises: the server's SQLSTATE as ``pgcode`` (None when not the server's)."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("driver error")
        self.pgcode = sqlstate


@pytest.mark.parametrize(
    ("error", "away"),
    [
        (OperationalError("SELECT 1", {}, _DriverError("08006")), True),  # connection failure
        (OperationalError("SELECT 1", {}, _DriverError("57P01")), True),  # admin shutdown
        (OperationalError("SELECT 1", {}, _DriverError("57P03")), True),  # starting up
        (OperationalError("SELECT 1", {}, _DriverError(None)), True),  # no server answer
        (
            DBAPIError("SELECT 1", {}, _DriverError(None), connection_invalidated=True),
            True,
        ),
        (IntegrityError("INSERT", {}, _DriverError("23505")), False),  # a bug, not an outage
        (OperationalError("SELECT 1", {}, _DriverError("40P01")), False),  # a race: ABORTED
    ],
)
def test_a_database_that_cannot_be_reached_is_unavailable_not_internal(
    error: DBAPIError, away: bool
) -> None:
    assert database_away(error) is away


# --- reasons and ErrorInfo metadata -------------------------------------------------------------


def _error_info(error: errors.DomainError) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert to_status(error).details[-1].Unpack(info)
    assert info.domain == "infusion.platform"
    return info


def test_each_error_derives_a_reason_and_metadata_from_what_it_holds() -> None:
    bad = errors.InvalidArgument(
        [errors.FieldViolation("a", "x"), errors.FieldViolation("b", "y")]
        + [errors.FieldViolation("a", "z")]  # one field, two problems: listed once
    )
    info = _error_info(bad)
    assert (info.reason, dict(info.metadata)) == (
        "INVALID_FIELDS",
        {"fields": "a,b", "field_count": "2"},
    )
    info = _error_info(errors.NotFound("patient", "p-1"))
    assert (info.reason, dict(info.metadata)) == (
        "RESOURCE_NOT_FOUND",
        {"resource_type": "patient"},
    )
    info = _error_info(errors.AlreadyExists("stock site", "s-1"))
    assert (info.reason, dict(info.metadata)) == (
        "RESOURCE_EXISTS",
        {"resource_type": "stock site"},
    )
    info = _error_info(errors.Aborted("someone else wrote first"))
    assert (info.reason, dict(info.metadata)) == ("CONCURRENT_UPDATE", {})
    assert _error_info(errors.Unavailable("inventory down")).reason == "PEER_UNAVAILABLE"


def test_a_failed_precondition_is_its_first_rule() -> None:
    error = errors.FailedPrecondition(
        [
            errors.PreconditionViolation("LOT_AT_SITE", "lots/1", "elsewhere"),
            errors.PreconditionViolation("LOT_IN_DATE", "lots/2", "expired"),
        ]
    )
    info = _error_info(error)
    assert (info.reason, info.metadata["rule"]) == ("LOT_AT_SITE", "LOT_AT_SITE")
    with pytest.raises(ValueError, match="names the rule"):
        errors.FailedPrecondition([])


def test_a_raise_site_names_a_more_specific_reason() -> None:
    info = _error_info(errors.AlreadyExists("patient", "org/MRN-1", reason="DUPLICATE_MRN"))
    assert (info.reason, info.metadata["resource_type"]) == ("DUPLICATE_MRN", "patient")
    with pytest.raises(errors.Aborted) as stale:
        check_etag(etag_for(2), 3, field="x.etag", resource="x")
    info = _error_info(stale.value)
    assert (info.reason, info.metadata["current_etag"]) == ("STALE_ETAG", etag_for(3))
    with pytest.raises(errors.InvalidArgument) as missing:
        check_etag("", 3, field="x.etag", resource="x")
    assert _error_info(missing.value).reason == "ETAG_REQUIRED"


def test_errorinfo_lists_a_bounded_number_of_fields() -> None:
    many = errors.InvalidArgument(
        [errors.FieldViolation(f"lines[{i}].vials", "must be at least 1") for i in range(40)]
    )
    metadata = _error_info(many).metadata
    assert metadata["fields"].split(",") == [f"lines[{i}].vials" for i in range(10)]
    assert metadata["field_count"] == "40"
    bad = error_details_pb2.BadRequest()
    assert to_status(many).details[0].Unpack(bad)
    assert len(bad.field_violations) == errors.MAX_VIOLATIONS  # the first 20; the rest counted


class _Abort(Exception):
    pass


class _Context:
    """Stands in for grpc.ServicerContext: records what the interceptor aborts with."""

    def __init__(self) -> None:
        self.status: status_pb2.Status | None = None

    def abort_with_status(self, status: grpc.Status) -> None:
        details = dict(status.trailing_metadata)["grpc-status-details-bin"]
        self.status = status_pb2.Status.FromString(details)
        raise _Abort

    def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise _Abort


@pytest.mark.parametrize(
    ("sqlstate", "code", "reason"),
    [
        ("40P01", code_pb2.ABORTED, "LOST_RACE"),  # deadlock detected
        ("40001", code_pb2.ABORTED, "LOST_RACE"),  # serialization failure
        ("57P01", code_pb2.UNAVAILABLE, "DATABASE_UNAVAILABLE"),  # admin shutdown
        ("08006", code_pb2.UNAVAILABLE, "DATABASE_UNAVAILABLE"),  # connection failure
    ],
)
def test_database_races_and_outages_carry_their_reason(
    sqlstate: str, code: int, reason: str
) -> None:
    context = _Context()
    with pytest.raises(_Abort):
        _database_error("/x.X/Y", context, OperationalError("SELECT 1", {}, _DriverError(sqlstate)))  # type: ignore[arg-type]
    assert context.status is not None and context.status.code == code
    info = error_details_pb2.ErrorInfo()
    assert context.status.details[-1].Unpack(info)
    assert info.reason == reason


@pytest.mark.parametrize("hour", range(24))
def test_a_zone_where_the_day_has_just_begun_for_every_utc_hour(hour: int) -> None:
    now = dt.datetime(2026, 12, 2, hour, 59, tzinfo=dt.UTC)
    local = now.astimezone(ZoneInfo(zone_where_the_day_begins(now)))
    assert (local.hour, local.minute) == (0, 59)
