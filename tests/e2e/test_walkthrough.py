"""`make demo` (services/walkthrough.py) runs the day end to end against real processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_the_walkthrough_runs_every_step() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.walkthrough"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in ("[book]", "[reserve]", "[remind]", "[complete]", "[dispense]", "[reorder]"):
        assert step in out
    assert "[recall]" in out
    assert "24h before:" in out and "SCHEDULED" in out  # the booking's reminders
    assert "the appointment shows stock RESERVED" in out
    assert "1 LOT_RECALLED notification(s)" in out
