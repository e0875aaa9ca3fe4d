"""Unmount after a time without filesystem activity (``mount --idle 30m``).

The FUSE adapter calls ``ActivityClock.touch()`` on every request (one call in its
request wrapper); ``IdleWatcher`` runs in its own thread and, once no request came for
the idle time, calls ``on_idle`` (the mount's normal unmount path). While programs keep
files open or a directory as their working directory the unmount is refused as busy;
the watcher then tries again later, so an idle but busy mount stays mounted.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: "90", "90s", "30m", "1.5h", "2h30m", "1d". Raises ValueError."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            break
        total += float(match.group(1)) * _UNITS[match.group(2) or "s"]
        pos = match.end()
    if not text or pos != len(text) or total <= 0:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 30m, 1h, 2h30m)")
    return total


def format_duration(seconds: float) -> str:
    """Inverse of ``parse_duration`` for messages: 1800 -> "30m", 90 -> "1m30s"."""
    whole = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out + (f"{whole}s" if whole or not out else "")


class ActivityClock:
    """The time of the last filesystem request. ``now``: a monotonic clock in seconds."""

    __slots__ = ("_now", "last")

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.last = now()

    def touch(self) -> None:
        """Record activity now (cheap: called on every FUSE request)."""
        self.last = self._now()

    def idle_for(self) -> float:
        """Seconds since the last activity."""
        return self._now() - self.last


class IdleWatcher:
    """Calls ``on_idle()`` once ``clock`` has seen no activity for ``idle`` seconds.

    ``on_idle`` returns True when it unmounted (the watcher then ends) and False when the
    mount was busy: the next try comes after new idle time, or ``retry`` seconds at the
    latest if there was no activity since (default: the idle time, at most 60 s).
    """

    def __init__(self, clock: ActivityClock, idle: float, on_idle: Callable[[], bool],
                 retry: float | None = None) -> None:
        if idle <= 0:
            raise ValueError("idle time must be positive")
        self.clock = clock
        self.idle = idle
        self.retry = retry if retry is not None else min(idle, 60.0)
        self._on_idle = on_idle
        self._not_before = 0.0  # no try before this clock time (after a busy refusal)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = False

    def check(self) -> float | None:
        """One step: call ``on_idle`` if it is time. Returns seconds until the next check,
        or None when the watcher is done (unmounted)."""
        now = self.clock._now()
        due = max(self.clock.last + self.idle, self._not_before)
        if now < due:
            return due - now
        if self._on_idle():
            self.done = True
            return None
        self._not_before = self.clock._now() + self.retry
        return self.retry

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="idle-unmount", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def _run(self) -> None:
        wait = self.check()
        while wait is not None and not self._stop.wait(wait):
            wait = self.check()
