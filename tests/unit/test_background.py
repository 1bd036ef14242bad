"""The background loop of the relays and the dispatcher (services/common/background.py): a
round that finds work is followed at once by another, an idle loop runs again when woken, and
a round that raises is logged, not fatal. Events with timeouts, not sleeps, decide."""

from __future__ import annotations

import threading

from services.common.background import BackgroundLoop

HOUR = 3600.0  # an interval no test waits for: only wake() or found work can start a round


def test_rounds_repeat_while_they_find_work_then_wait_for_a_wake() -> None:
    work = [True, True, False]  # two rounds with work, then idle
    rounds = 0
    idle = threading.Event()
    again = threading.Event()

    def round_() -> bool:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            idle.set()
        if rounds == 4:
            again.set()
        return work.pop(0) if work else False

    loop = BackgroundLoop("test-loop", round_, HOUR)
    loop.start()
    try:
        assert idle.wait(5)  # rounds 1 and 2 found work, so round 3 followed without a wake
        assert not again.wait(0.2)  # idle: waits for the (hour-long) interval
        loop.wake()
        assert again.wait(5)
    finally:
        loop.stop()
    assert rounds == 4


def test_a_failing_round_does_not_stop_the_loop() -> None:
    calls = 0
    recovered = threading.Event()

    def round_() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database away")
        recovered.set()
        return False

    loop = BackgroundLoop("test-loop", round_, HOUR)
    loop.start()
    try:
        loop.wake()
        assert recovered.wait(5)
    finally:
        loop.stop()
    assert calls == 2
