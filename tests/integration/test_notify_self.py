"""A signed-in user's own notifications and settings (notify.self.manage) over real gRPC on
SQLite and PostgreSQL: GetMyNotificationSettings, UpdateMyNotificationSettings,
ListMyNotifications. A user reaches their own subscriber only: never another user's, in their
organisation or in another one where a user has the same subject."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import timeofday_pb2

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from tests.integration.errors import error_reason, field_violations
from tests.issuer import TestIssuer

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import (  # noqa: E402
    NotifyServer,
    lot_expiring,
    publish,
    rid,
)

pytest_plugins = ["tests.integration.notify_conftest"]

EMAIL_LOTS = pb.Preference(topic=pb.TOPIC_LOT_EXPIRING, channels=[pb.CHANNEL_EMAIL])


def _as(
    issuer: TestIssuer,
    server: NotifyServer,
    subject: str,
    roles: tuple[str, ...] = ("nurse",),
    organisation: str = "org-1",
    sites: list[str] | str = "*",
) -> notify_pb2_grpc.NotifyServiceStub:
    token = issuer.issuer.user_token(roles, organisation, sites=sites, subject=subject)
    return notify_pb2_grpc.NotifyServiceStub(issuer.channel(server.address, token))


def _settings(**fields: object) -> pb.MyNotificationSettings:
    base: dict[str, object] = {
        "time_zone": "Europe/London",
        "email": "nurse@example.org",
        "preferences": [EMAIL_LOTS],
    }
    base.update(fields)
    return pb.MyNotificationSettings(**base)  # type: ignore[arg-type]


def _update(
    stub: notify_pb2_grpc.NotifyServiceStub, request_id: str = "", **fields: object
) -> pb.MyNotificationSettings:
    request = pb.UpdateMyNotificationSettingsRequest(
        settings=_settings(**fields), request_id=request_id or rid()
    )
    return stub.UpdateMyNotificationSettings(request).settings


def _get(stub: notify_pb2_grpc.NotifyServiceStub) -> pb.MyNotificationSettings:
    return stub.GetMyNotificationSettings(pb.GetMyNotificationSettingsRequest()).settings


def _mine(
    stub: notify_pb2_grpc.NotifyServiceStub, **fields: object
) -> pb.ListMyNotificationsResponse:
    return stub.ListMyNotifications(pb.ListMyNotificationsRequest(**fields))  # type: ignore[arg-type]


def test_settings_are_empty_then_made_by_the_first_update_and_kept_under_an_etag(
    notify_server: NotifyServer, issuer: TestIssuer
) -> None:
    nurse = _as(issuer, notify_server, "nurse-a", sites=["site-1"])
    assert _get(nurse) == pb.MyNotificationSettings()

    request = pb.UpdateMyNotificationSettingsRequest(
        settings=_settings(
            display_name="Nia Nurse",
            phone="+44 7911 123456",
            quiet_hours=pb.QuietHours(
                start=timeofday_pb2.TimeOfDay(hours=22), end=timeofday_pb2.TimeOfDay(hours=7)
            ),
        ),
        request_id=rid(),
    )
    made = nurse.UpdateMyNotificationSettings(request).settings
    assert nurse.UpdateMyNotificationSettings(request).settings == made  # a retry: once
    assert made.etag == 'W/"1"' and made.subscriber_id
    assert made.phone == "+447911123456" and made.display_name == "Nia Nurse"
    assert list(made.site_ids) == ["site-1"]  # the token's sites: no other site's broadcasts
    assert _get(nurse) == made

    # what the operator sees: a STAFF subscriber tied to the user
    stored = notify_server.stub.GetSubscriber(pb.GetSubscriberRequest(id=made.subscriber_id))
    assert stored.subscriber.user_subject == "nurse-a"
    assert stored.subscriber.kind == pb.SUBSCRIBER_KIND_STAFF

    # an empty etag now (read before it existed) and an old one are both stale
    for etag in ("", 'W/"0"'):
        with pytest.raises(grpc.RpcError) as stale:
            _update(nurse, etag=etag)
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert error_reason(stale.value) == "STALE_ETAG"
    changed = _update(nurse, etag=made.etag, email="nia@example.org", preferences=[])
    assert changed.etag == 'W/"2"' and changed.email == "nia@example.org"
    assert list(changed.preferences) == [] and not changed.HasField("quiet_hours")
    assert changed.subscriber_id == made.subscriber_id
    with pytest.raises(grpc.RpcError) as stale:
        _update(nurse, etag=made.etag)
    assert stale.value.code() == grpc.StatusCode.ABORTED


def test_bad_settings_are_refused_field_by_field(
    notify_server: NotifyServer, issuer: TestIssuer
) -> None:
    nurse = _as(issuer, notify_server, "nurse-a")
    with pytest.raises(grpc.RpcError) as bad:
        _update(
            nurse,
            time_zone="Mars/Olympus",
            email="not an address",
            preferences=[
                pb.Preference(topic=pb.TOPIC_LOT_RECALLED, channels=[]),
                pb.Preference(topic=pb.TOPIC_LOW_STOCK, channels=[pb.CHANNEL_SMS]),
            ],
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {
        "settings.time_zone",
        "settings.email",
        "settings.preferences[0].channels",  # a critical topic cannot be switched off
        "settings.preferences[1].channels[0]",  # SMS without a phone
    }
    # the proto's limits, checked before any service code
    with pytest.raises(grpc.RpcError) as bad:
        _update(nurse, display_name="x" * 201)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == ["settings.display_name"]
    with pytest.raises(grpc.RpcError) as bad:
        _mine(nurse, page_size=-1)
    assert field_violations(bad.value) == ["page_size"]
    # a pharmacist reads no patient names: no topic whose messages carry them
    pharmacist = _as(issuer, notify_server, "pharm-a", roles=("pharmacist",))
    with pytest.raises(grpc.RpcError) as bad:
        _update(
            pharmacist,
            preferences=[EMAIL_LOTS, pb.Preference(topic=pb.TOPIC_INFUSION_DUE, channels=[1])],
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == ["settings.preferences[1].topic"]
    assert _get(nurse) == pb.MyNotificationSettings()  # nothing was made


def test_a_user_reaches_their_own_subscriber_only(
    notify_server: NotifyServer, issuer: TestIssuer
) -> None:
    a = _as(issuer, notify_server, "nurse-a")
    b = _as(issuer, notify_server, "nurse-b")
    # the same subject in another organisation is another user
    other_org = _as(issuer, notify_server, "nurse-a", organisation="org-2")
    mine = _update(a, email="a@example.org")
    theirs = _update(b, email="b@example.org")
    assert mine.subscriber_id != theirs.subscriber_id
    assert _get(other_org) == pb.MyNotificationSettings()
    elsewhere = _update(other_org, email="a2@example.org")
    assert elsewhere.subscriber_id not in (mine.subscriber_id, theirs.subscriber_id)
    assert _get(a).email == "a@example.org" and _get(b).email == "b@example.org"
    # b's etag in a's request changes a's own settings only, never b's
    _update(a, etag=mine.etag, email="a3@example.org")
    assert _get(b) == theirs

    # one notification to both, one to b only, one broadcast to org-1's LOT_EXPIRING staff
    both = publish(
        notify_server,
        pb.TOPIC_LOT_EXPIRING,
        lot_expiring(lot="BOTH"),
        [mine.subscriber_id, theirs.subscriber_id],
    ).notification
    publish(
        notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot="B-ONLY"), [theirs.subscriber_id]
    )
    broadcast = publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot="ALL")).notification

    listed = _mine(a).notifications
    assert [n.notification_id for n in listed] == [broadcast.id, both.id]  # newest first
    assert "ALL" in listed[0].text and "BOTH" in listed[1].text
    for n in listed:  # a's own deliveries only: b's address never shows
        assert {d.subscriber_id for d in n.deliveries} == {mine.subscriber_id}
        assert all(d.destination == "a3@example.org" for d in n.deliveries)
        assert n.deliveries[0].status == pb.DELIVERY_STATUS_PENDING
    assert len(_mine(b).notifications) == 3
    assert _mine(other_org).notifications == []  # org-1's broadcast is not org-2's


def test_pages_run_newest_first_and_status_follows_delivery(
    notify_server: NotifyServer, issuer: TestIssuer
) -> None:
    nurse = _as(issuer, notify_server, "nurse-a")
    assert _mine(nurse).notifications == []  # no subscriber yet: nothing, not an error
    me = _update(nurse, preferences=[])
    published = [
        publish(
            notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot=f"L{i}"), [me.subscriber_id]
        ).notification.id
        for i in range(3)
    ]
    notify_server.drain()
    first = _mine(nurse, page_size=2)
    second = _mine(nurse, page_size=2, page_token=first.next_page_token)
    assert [n.notification_id for n in [*first.notifications, *second.notifications]] == (
        published[::-1]
    )
    assert second.next_page_token == ""
    delivered = first.notifications[0]
    assert delivered.topic == pb.TOPIC_LOT_EXPIRING and delivered.subject
    assert [d.status for d in delivered.deliveries] == [pb.DELIVERY_STATUS_DELIVERED]


def test_the_operators_webhook_is_kept_and_its_secret_never_shown(
    notify_server: NotifyServer, issuer: TestIssuer
) -> None:
    nurse = _as(issuer, notify_server, "nurse-a")
    me = _update(nurse)
    current = notify_server.stub.GetSubscriber(pb.GetSubscriberRequest(id=me.subscriber_id))
    hooked = pb.Subscriber(
        id=me.subscriber_id,
        etag=current.subscriber.etag,
        webhook_url="https://hooks.example.org/nurse",
        webhook_secret="shh",
    )
    notify_server.stub.UpdateSubscriber(
        pb.UpdateSubscriberRequest(
            subscriber=hooked,
            update_mask=FieldMask(paths=["webhook_url", "webhook_secret"]),
            request_id=rid(),
        )
    )
    again = _get(nurse)
    assert "shh" not in str(again)
    _update(nurse, etag=again.etag, email="n@example.org")
    kept = notify_server.stub.GetSubscriber(pb.GetSubscriberRequest(id=me.subscriber_id))
    assert kept.subscriber.webhook_url == "https://hooks.example.org/nurse"
    assert kept.subscriber.webhook_secret_set and kept.subscriber.webhook_secret == ""
    assert kept.subscriber.user_subject == "nurse-a"


def test_no_token_or_no_permission_is_refused(
    notify_server: NotifyServer, issuer: TestIssuer
) -> None:
    anonymous = notify_pb2_grpc.NotifyServiceStub(
        open_channel(notify_server.address, None, StaticToken(""))
    )
    for stub, code in [
        (anonymous, grpc.StatusCode.UNAUTHENTICATED),
        # a hospital system holds no notify.self.manage
        (notify_server.stub, grpc.StatusCode.PERMISSION_DENIED),
    ]:
        for call in (
            lambda s: _get(s),
            lambda s: _update(s),
            lambda s: _mine(s),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(stub)
            assert refused.value.code() == code
    # a token naming no site cannot choose broadcasts (an empty filter would be every site)
    siteless = _as(issuer, notify_server, "nurse-x", sites=[])
    with pytest.raises(grpc.RpcError) as refused:
        _update(siteless)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
