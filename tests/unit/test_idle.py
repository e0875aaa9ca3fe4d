"""mount --idle: durations, and when the watcher unmounts (a fake clock, no sleeping)."""

from __future__ import annotations

import pytest

from cryptfs.idle import ActivityClock, IdleWatcher, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("1.5h", 5400),
    ("2h30m", 9000), ("1d", 86400), (" 10M ", 600)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "m", "30x", "-5m", "1h-", "abc", "30 m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (1800, 90, 3600, 9000, 0.4, 86400 + 61)] == \
        ["30m", "1m30s", "1h", "2h30m", "0s", "1d1m1s"]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watcher_waits_for_idle_time_since_last_activity() -> None:
    clock_time = FakeTime()
    clock = ActivityClock(clock_time)
    calls: list[float] = []

    def on_idle() -> bool:
        calls.append(clock_time.now)
        return True

    watcher = IdleWatcher(clock, 60.0, on_idle)
    assert watcher.check() == 60.0
    clock_time.now += 50
    clock.touch()  # activity resets the count
    clock_time.now += 50
    assert watcher.check() == 10.0 and not calls
    clock_time.now += 10
    assert watcher.check() is None and calls == [1110.0] and watcher.done


def test_watcher_retries_a_busy_mount_without_spinning() -> None:
    clock_time = FakeTime()
    clock = ActivityClock(clock_time)
    answers = [False, False, True]
    calls: list[float] = []

    def on_idle() -> bool:
        calls.append(clock_time.now)
        return answers.pop(0)

    watcher = IdleWatcher(clock, 30.0, on_idle, retry=20.0)
    clock_time.now += 30
    assert watcher.check() == 20.0  # busy: next try after `retry`
    assert watcher.check() == 20.0 and len(calls) == 1  # not again at once
    clock_time.now += 20
    assert watcher.check() == 20.0 and len(calls) == 2
    clock_time.now += 5
    clock.touch()  # the program that held the mount closed its file
    clock_time.now += 15
    assert watcher.check() == 15.0  # idle time counts from that activity
    clock_time.now += 15
    assert watcher.check() is None and len(calls) == 3


def test_watcher_thread_calls_on_idle_and_stops() -> None:
    clock = ActivityClock()
    clock.last -= 10  # idle for 10 s already
    done: list[bool] = []
    watcher = IdleWatcher(clock, 1.0, lambda: done.append(True) or True)
    watcher.start()
    watcher._thread.join(10)
    assert done == [True]
    watcher.stop()


def test_watcher_rejects_non_positive_idle_time() -> None:
    with pytest.raises(ValueError):
        IdleWatcher(ActivityClock(), 0, lambda: True)
