"""Run pyfuse3's request loop on the calling thread, without an event loop.

pyfuse3 reaches its async library only through the module attribute ``pyfuse3.trio``,
which ``pyfuse3.asyncio.enable()`` replaces to run it on asyncio; this module plugs in the
same way. cryptfs's handlers never await anything (they finish every request before
returning), so nothing ever has to be suspended: ``wait_readable`` blocks in ``poll(2)``
(the GIL released, so the sync and helper threads run meanwhile) and the loop coroutine
runs to completion on one ``send``. Measured on this kind of machine (daemon CPU per
request, the same pass-through file system): trio 26-43 us per 4 KiB write and 80-115 us
per stat, this driver 25-28 and 59-81 us, mfusepy's high-level path 25-31 and 52-62 us.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Coroutine
from typing import Any

POLL_SECONDS = 0.5
_closing: set[int] = set()
_polls: dict[int, select.poll] = {}


class ClosedResourceError(Exception):
    """The FUSE descriptor is being closed (``pyfuse3.terminate``)."""


class Lock:
    """pyfuse3 serialises its readers with a lock; there is only one reader here."""

    async def __aenter__(self) -> Lock:
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False


async def wait_readable(fd: int) -> None:
    poller = _polls.get(fd)
    if poller is None:
        poller = _polls[fd] = select.poll()
        poller.register(fd, select.POLLIN)
    while True:
        if fd in _closing:
            raise ClosedResourceError
        if poller.poll(POLL_SECONDS * 1000):
            return


def notify_closing(fd: int) -> None:
    _closing.add(fd)


class _Task:
    name = "cryptfs"


def current_task() -> type[_Task]:
    return _Task


def current_trio_token() -> str:
    return "cryptfs"


class _Nursery:
    """Runs the one session task pyfuse3 starts (``main(max_tasks=1)``)."""

    async def __aenter__(self) -> _Nursery:
        self.tasks: list[Coroutine[Any, Any, Any]] = []
        return self

    def start_soon(self, func: Any, *args: Any, name: str | None = None) -> None:
        if self.tasks:
            raise RuntimeError("this driver runs one FUSE session task")
        self.tasks.append(func(*args))

    async def __aexit__(self, *exc: object) -> bool:
        while self.tasks:
            await self.tasks.pop(0)
        return False


def open_nursery() -> _Nursery:
    return _Nursery()


_self = sys.modules[__name__]
lowlevel = _self
from_thread = _self


def run(pyfuse3: Any) -> None:
    """Serve requests until the file system is unmounted or ``pyfuse3.terminate()``."""
    _closing.clear()
    pyfuse3.trio = _self
    coro = pyfuse3.main(1, 1)
    try:
        coro.send(None)  # runs the whole session: no handler of ours suspends
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a FUSE request handler suspended; this driver cannot resume it")
