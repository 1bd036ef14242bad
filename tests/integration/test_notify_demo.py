"""`make run`'s notify step (demo/centre.py ``load_notify``): the demo loader makes a console
subscriber for every topic before the centre, and the scheduler's due notices for the demo
plans then reach its console channel through the outbox, the relay and notify's dispatcher."""

from __future__ import annotations

import datetime as dt

import grpc

from demo import centre
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.notify.domain.model import Channel, Topic
from tests.integration.notify_conftest import notify_factory  # noqa: F401 (fixture)
from tests.integration.test_scheduler_jobs import Env, env  # noqa: F401 (fixture)

DELIVERED = [t for t in Topic if not t.signal]  # BOARD_CHANGED is for the stream only


def test_demo_console_subscriber_receives_the_due_notices(env: Env) -> None:  # noqa: F811
    today = dt.date(2026, 11, 24)
    p = env.p
    # the demo centre is its organisation's: loaded and read by that organisation's operator
    token = p.issuer.operator_token(centre.ORG)
    tokens = StaticToken(token)
    notify_channel = p.issuer.channel(env.notify.address, token)
    scheduler_channel = p.issuer.channel(p.scheduler_address, token)
    try:
        _load_and_check(env, today, tokens, notify_channel, scheduler_channel)
    finally:
        notify_channel.close()
        scheduler_channel.close()


def _load_and_check(
    env: Env,  # noqa: F811
    today: dt.date,
    tokens: StaticToken,
    notify_channel: grpc.Channel,
    scheduler_channel: grpc.Channel,
) -> None:
    p = env.p
    notify = notify_pb2_grpc.NotifyServiceStub(notify_channel)
    scheduler = scheduler_pb2_grpc.SchedulerServiceStub(scheduler_channel)
    lines = centre.load(
        p.scheduler_address,
        p.inventory_address,
        today,
        notify_address=env.notify.address,
        tokens=tokens,
    )
    assert (
        lines[0].startswith("notify: console subscriber")
        and f"all {len(DELIVERED)} delivered topics" in lines[0]
    )
    again = centre.load(
        p.scheduler_address, p.inventory_address, today, env.notify.address, tokens=tokens
    )
    assert again == []
    console = notify.ListSubscribers(
        npb.ListSubscribersRequest(external_ref=centre.CONSOLE_REF)
    ).subscribers
    assert len(console) == 1 and len(console[0].preferences) == len(DELIVERED)

    site = scheduler.ListSites(pb.ListSitesRequest(organisation_id=centre.ORG)).sites[0]
    due = scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=4)
    ).due_infusions
    # the window (±4 days) is open for these, and nothing is booked for them
    open_unbooked = {d.therapy_plan_id for d in due if not d.booked_appointment_id}
    assert open_unbooked

    env.jobs.run_all()
    assert env.relay.drain().failed == 0
    env.notify.drain()
    sent = env.notify.recorders[Channel.CONSOLE].sent
    assert {m.topic for m in sent} == {"INFUSION_DUE"}
    assert len(sent) == len(open_unbooked)
    assert all(m.subject.startswith("An infusion is due for ") for m in sent)
    # a second pass (another minute) prints nothing new
    env.clock.advance(dt.timedelta(minutes=1))
    env.jobs.run_all()
    env.relay.drain()
    env.notify.drain()
    assert len(env.notify.recorders[Channel.CONSOLE].sent) == len(open_unbooked)
