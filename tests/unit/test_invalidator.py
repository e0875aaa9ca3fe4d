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
    inv, calls = _recording_invalidator(drop_entries=True)
    start = time.monotonic()
    inv.submit("/docs/sub/link2")
    inv.submit_top("/photos")
    time.sleep(1.4)
    inv.stop()
    drops = [(round(t - start, 1), what) for t, kind, what in calls if kind == "entry 1"]
    assert [what for _, what in drops].count(b"docs") == 3  # now, +0.1 s, +1 s
    assert [what for _, what in drops].count(b"photos") == 3
    times = sorted(t for t, what in drops if what == b"docs")
    assert times[0] < 0.1 and 0.05 <= times[1] <= 0.5 and 0.9 <= times[2] <= 1.3
    assert ("inode", b"/docs/sub/link2") in [(k, w) for _, k, w in calls]
