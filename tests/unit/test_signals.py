"""SignalWaiter: the main thread's wait ends on SIGINT or SIGTERM whichever thread the kernel
hands the signal to. (A main thread blocked in ``threading.Event().wait()`` is not woken by a
signal another thread takes: the reason a service once ignored Ctrl-C.)"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from services.common.signals import SignalWaiter


@pytest.fixture
def waiter() -> Iterator[SignalWaiter]:
    with SignalWaiter() as w:
        yield w


def test_a_signal_taken_by_another_thread_wakes_the_main_thread(waiter: SignalWaiter) -> None:
    parked = threading.Event()
    release = threading.Event()

    def park() -> None:
        parked.set()
        release.wait()

    other = threading.Thread(target=park)
    other.start()
    parked.wait()
    assert other.ident is not None
    signal.pthread_kill(other.ident, signal.SIGTERM)  # to that thread only, not the main one
    try:
        assert waiter.wait(timeout=10) is signal.SIGTERM
    finally:
        release.set()
        other.join()


def test_a_signal_before_the_wait_is_kept(waiter: SignalWaiter) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # during start-up, say
    assert waiter.wait(timeout=10) is signal.SIGINT
    assert waiter.wait(timeout=0) is signal.SIGINT  # and stays received


def test_the_first_of_two_signals_is_the_one_received(waiter: SignalWaiter) -> None:
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    assert waiter.wait(timeout=10) is signal.SIGINT


def test_wake_and_timeout_return_without_a_signal(waiter: SignalWaiter) -> None:
    threading.Timer(0.05, waiter.wake).start()
    assert waiter.wait(timeout=10) is None
    assert waiter.wait(timeout=0.01) is None
    assert waiter.received is None


def test_close_puts_the_previous_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with SignalWaiter():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    waiter = SignalWaiter()
    waiter.close()
    waiter.wake()  # after close: nothing to wake, and no error
