"""How Subscribe streams are woken: their own event, set by Publish/Cancel in this process and
by the one watcher that reads the event log for every stream (other replicas' events)."""

from __future__ import annotations

from services.notify.api.stream import EventSignal, EventWatcher


def test_the_watcher_reads_only_while_streams_listen_and_wakes_them_on_news() -> None:
    latest = [0]
    reads: list[int] = []

    def last_sequence() -> int:
        reads.append(latest[0])
        return latest[0]

    signal = EventSignal()
    watcher = EventWatcher(last_sequence, signal, interval=60)
    watcher.check()
    assert reads == []  # no stream: the database is not asked
    with signal.listener() as wake, signal.listener() as other:
        latest[0] = 7  # another replica wrote
        watcher.check()
        assert wake.is_set() and other.is_set()
        wake.clear()
        other.clear()
        watcher.check()  # nothing new
        assert not wake.is_set() and not other.is_set()
        signal.notify()  # a Publish in this process
        assert wake.is_set()
    assert signal.listening == 0
