"""The kernel-cache invalidation thread, with libfuse's notify calls recorded."""

from __future__ import annotations

import threading
import time

import pytest

fs = pytest.importorskip("cryptfs.fs")


def _recording_invalidator(drop_entries: bool):
    inv = fs._Invalidator()
    calls: list[tuple[float, str, bytes]] = []
    inv._inval_path = lambda _fuse, path: calls.append((time.monotonic(), "inode", path)) or 0
    inv._inval_entry = lambda _se, parent, name, size: (
        calls.append((time.monotonic(), f"entry {parent}", name)) or 0)
    inv.drop_entries = drop_entries
    inv._thread = threading.Thread(target=inv._run, daemon=True)
    inv._thread.start()
    return inv, calls


def test_without_writeback_only_the_inode_is_invalidated() -> None:
    inv, calls = _recording_invalidator(drop_entries=False)
    inv.submit("/a/b/link2")
    time.sleep(0.3)
    inv.stop()
    assert [(kind, what) for _, kind, what in calls] == [("inode", b"/a/b/link2")]


def test_writeback_drops_the_top_level_entry_and_repeats() -> None:
    from tests.conftest import wait_for

    inv, calls = _recording_invalidator(drop_entries=True)
    start = time.monotonic()
    inv.submit("/docs/sub/link2")
    inv.submit_top("/photos")

    def drops(name: bytes) -> list[float]:
        return [t - start for t, kind, what in list(calls) if kind == "entry 1" and what == name]

    assert wait_for(lambda: len(drops(b"docs")) >= 3 and len(drops(b"photos")) >= 3, 10, 0.05)
    time.sleep(0.2)
    inv.stop()
    for name in (b"docs", b"photos"):
        times = drops(name)
        assert len(times) == 3  # now, then repeated after 0.1 s and after 1 s
        assert times[1] - times[0] >= 0.09 and times[2] - times[0] >= 0.99
    assert ("inode", b"/docs/sub/link2") in [(k, w) for _, k, w in calls]
