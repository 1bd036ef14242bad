"""Settings are typed and validated in one place: defaults, overrides, and a refusal that
names the variable for a bad value or a misspelt name."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import SettingsError
from services.inventory.settings import load_settings as inventory_settings
from services.notify.settings import NotifySettings
from services.notify.settings import load_settings as notify_settings
from services.scheduler.settings import load_settings as scheduler_settings


def test_defaults_follow_the_service() -> None:
    s = scheduler_settings({})
    assert s.listen == "127.0.0.1:50051" and s.peer("inventory") == "127.0.0.1:50052"
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("var/scheduler.db")
    assert s.grpc_workers == 16 and s.db_pool_size == 20 and s.jobs and s.log_level == "INFO"
    assert notify_settings({}).listen == "127.0.0.1:50053"


def test_overrides_are_typed() -> None:
    o = inventory_settings(
        {
            "INVENTORY_LISTEN": "0.0.0.0:6000",
            "INVENTORY_DATABASE_URL": "postgresql+psycopg://x/y",
            "INVENTORY_GRPC_WORKERS": "4",
            "INVENTORY_JOBS": "false",
            "NOTIFY_ADDRESS": "notify:50053",
            "LOG_LEVEL": "DEBUG",
        }
    )
    assert o.listen == "0.0.0.0:6000" and o.database_url == "postgresql+psycopg://x/y"
    assert o.grpc_workers == 4 and o.jobs is False and o.log_level == "DEBUG"
    assert o.peer("notify") == "notify:50053"


def test_a_bad_value_names_the_variable_and_the_value() -> None:
    with pytest.raises(SettingsError) as raised:
        scheduler_settings({"SCHEDULER_GRPC_WORKERS": "sixteen"})
    assert "SCHEDULER_GRPC_WORKERS='sixteen'" in str(raised.value)
    assert "integer" in str(raised.value)


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(SettingsError, match="SCHEDULER_GRPC_WORKERS='0'"):
        scheduler_settings({"SCHEDULER_GRPC_WORKERS": "0"})
    with pytest.raises(SettingsError, match="NOTIFY_SMTP_PORT='70000'"):
        notify_settings({"NOTIFY_SMTP_PORT": "70000"})
    with pytest.raises(SettingsError, match="LOG_LEVEL='LOUD'"):
        notify_settings({"LOG_LEVEL": "LOUD"})


def test_a_misspelt_variable_is_refused_not_ignored() -> None:
    with pytest.raises(SettingsError) as raised:
        scheduler_settings({"SCHEDULER_GRPC_WORKER": "4", "SCHEDULER_DATABASE_URI": "x"})
    message = str(raised.value)
    assert "SCHEDULER_GRPC_WORKER: unknown setting" in message
    assert "SCHEDULER_DATABASE_URI: unknown setting" in message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        notify_settings({"NOTIFY_SMTP_PORT": "x", "NOTIFY_DISPATCH_WORKERS": "-1", "NOTIFY_X": "1"})
    message = str(raised.value)
    assert all(v in message for v in ("NOTIFY_SMTP_PORT", "NOTIFY_DISPATCH_WORKERS", "NOTIFY_X"))


def test_other_services_variables_and_own_address_are_not_this_services_business() -> None:
    s = scheduler_settings(
        {"INVENTORY_GRPC_WORKER": "typo of another service", "SCHEDULER_ADDRESS": "x:1"}
    )
    assert s.listen == "127.0.0.1:50051"


def test_secrets_never_show_in_the_settings_text() -> None:
    s = notify_settings({"NOTIFY_SMTP_PASSWORD": "hunter2", "NOTIFY_SMS_TOKEN": "tok-secret"})
    assert s.smtp_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "tok-secret" not in repr(s)


def test_variables_lists_what_the_service_reads() -> None:
    names = NotifySettings.variables()
    assert {"NOTIFY_SMTP_HOST", "NOTIFY_LISTEN", "LOG_LEVEL", "INVENTORY_ADDRESS"} <= names
    assert "NOTIFY_PEERS" not in names


@pytest.mark.parametrize("service", ["scheduler", "inventory", "notify"])
def test_a_service_with_a_bad_setting_refuses_to_start(service: str) -> None:
    import os
    import subprocess
    import sys

    variable = f"{service.upper()}_GRPC_WORKERS"
    env = {**os.environ, variable: "sixteen"}
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{variable}='sixteen'" in done.stderr


def test_the_inventory_refresh_interval_is_a_setting() -> None:
    assert inventory_settings({}).jobs_interval_seconds == 300
    assert inventory_settings({"INVENTORY_JOBS_INTERVAL_SECONDS": "2"}).jobs_interval_seconds == 2
    with pytest.raises(SettingsError, match="INVENTORY_JOBS_INTERVAL_SECONDS='0'"):
        inventory_settings({"INVENTORY_JOBS_INTERVAL_SECONDS": "0"})


def test_several_processes_need_postgresql() -> None:
    pg = "postgresql+psycopg://u@db/scheduler"
    assert scheduler_settings({}).processes == 1
    assert (
        scheduler_settings({"SCHEDULER_PROCESSES": "3", "SCHEDULER_DATABASE_URL": pg}).processes
        == 3
    )
    with pytest.raises(SettingsError, match="SCHEDULER_PROCESSES=2 needs a PostgreSQL"):
        scheduler_settings({"SCHEDULER_PROCESSES": "2"})  # SQLite by default
    with pytest.raises(SettingsError, match="SCHEDULER_PROCESSES='0'"):
        scheduler_settings({"SCHEDULER_PROCESSES": "0", "SCHEDULER_DATABASE_URL": pg})


def test_each_worker_gets_the_shared_address_and_ports_of_its_own() -> None:
    from services.common.processes import worker_environment

    settings = inventory_settings(
        {
            "INVENTORY_PROCESSES": "2",
            "INVENTORY_DATABASE_URL": "postgresql+psycopg://u@db/inventory",
            "INVENTORY_HEALTH_LISTEN": "127.0.0.1:9162",
            "INVENTORY_METRICS_LISTEN": "0.0.0.0:0",
        }
    )
    env = worker_environment(settings, "127.0.0.1:23456", 1, {"KEPT": "yes"})
    assert env == {
        "KEPT": "yes",
        "INVENTORY_PROCESSES": "1",
        "INVENTORY_REUSE_PORT": "true",
        "INVENTORY_LISTEN": "127.0.0.1:23456",
        "INVENTORY_HEALTH_LISTEN": "127.0.0.1:9163",  # 9162 + 1
        "INVENTORY_METRICS_LISTEN": "0.0.0.0:0",  # port 0: any, in each
    }
    assert inventory_settings(env).reuse_port  # what the worker reads back


def test_the_relays_longest_retry_wait_is_a_setting_that_reaches_the_relay(tmp_path: Path) -> None:
    """The relay's doubling waits stop at ``<SERVICE>_RELAY_RETRY_MAX_SECONDS`` (300 s when
    unset): the relay each service builds from its settings carries that bound."""
    import datetime as dt

    import grpc

    from services.common.clock import FixedClock
    from services.common.db import Database
    from services.inventory.adapters.notify_relay import relay_to_notify as inventory_relay
    from services.scheduler.adapters.notify_relay import relay_to_notify as scheduler_relay

    assert scheduler_settings({}).relay_policy().retry_max == dt.timedelta(seconds=300)
    scheduler = scheduler_settings({"SCHEDULER_RELAY_RETRY_MAX_SECONDS": "2"})
    inventory = inventory_settings({"INVENTORY_RELAY_RETRY_MAX_SECONDS": "7.5"})
    db = Database(f"sqlite:///{tmp_path}/relay.db")  # never opened: only built
    channel = grpc.insecure_channel("127.0.0.1:1")  # never called: only built
    clock = FixedClock(dt.datetime(2026, 12, 4, tzinfo=dt.UTC))
    try:
        built = scheduler_relay(db, clock, channel, scheduler.relay_policy())
        assert built.policy.retry_max == dt.timedelta(seconds=2)
        built = inventory_relay(db, clock, channel, inventory.relay_policy())
        assert built.policy.retry_max == dt.timedelta(seconds=7.5)
    finally:
        channel.close()
        db.dispose()
    with pytest.raises(SettingsError, match="SCHEDULER_RELAY_RETRY_MAX_SECONDS='0.5'"):
        scheduler_settings({"SCHEDULER_RELAY_RETRY_MAX_SECONDS": "0.5"})
