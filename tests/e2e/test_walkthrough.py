"""`make demo` (demo/walkthrough.py) runs the day end to end against real processes; two
at once both pass, each on its own free ports and temporary databases (as a demo beside the
suite, or beside `make run`, must)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_two_walkthroughs_at_once_each_run_every_step() -> None:
    demos = [
        subprocess.Popen(
            [sys.executable, "-m", "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [demo.communicate(timeout=300)[0] for demo in demos]
    for demo, out in zip(demos, outputs, strict=True):
        assert demo.returncode == 0, out
        for step in ("[book]", "[reserve]", "[remind]", "[complete]", "[dispense]", "[reorder]"):
            assert step in out
        assert "[recall]" in out
        assert "2h before:" in out and "SCHEDULED" in out  # the booking's reminders
        assert "the appointment shows stock RESERVED" in out
        assert "1 LOT_RECALLED notification(s)" in out  # its own, not the other demo's
    logs = [out.rsplit("(service logs: ", 1)[1].split(")")[0] for out in outputs]
    assert logs[0] != logs[1]
