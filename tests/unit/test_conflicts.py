"""Conflict copies left by sync tools are shown decrypted under readable names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cryptfs import conflicts
from cryptfs.volume import Volume


@pytest.mark.parametrize("suffix, host, date", [
    (".cryptfsconflict1", "sync", None),
    (".conflict2", "sync", None),
    ("..path1", "sync", None),
    (".sync-conflict-20261127-101500-ABCDEF7", "ABCDEF7", "2026-11-27"),
    (" (laptop's conflicted copy 2026-11-26)", "laptop", "2026-11-26"),
    (" (conflicted copy 2026-11-25 101500)", "sync", "2026-11-25"),
])
def test_foreign_conflict_copies_are_shown(volume: Volume, suffix: str, host: str,
                                           date: str | None) -> None:
    volume.write_file("/report.pdf", b"mine")
    backing = volume.mapper.path("/report.pdf")
    shutil.copy(backing, backing + suffix)
    os.utime(backing + suffix, (1795000000, 1795000000))
    volume.mapper.clear_caches()
    names = volume.listdir("/")
    expected_date = date or conflicts.date_of(1795000000)
    shown = f"report (conflict {expected_date} {host}).pdf"
    assert names == sorted(["report.pdf", shown])
    assert volume.read_file("/" + shown) == b"mine"
    volume.mapper.clear_caches()  # lookup without a prior listing
    assert volume.read_file("/" + shown) == b"mine"
    volume.rename("/" + shown, "/kept.pdf")
    assert volume.listdir("/") == ["kept.pdf", "report.pdf"]


def test_conflict_copy_of_long_name(volume: Volume) -> None:
    long = "l" * 200 + ".txt"
    volume.write_file("/" + long, b"x")
    backing = Path(volume.mapper.path("/" + long))
    shutil.copy(backing, str(backing) + ".conflict1")
    volume.mapper.clear_caches()
    names = volume.listdir("/")
    assert len(names) == 2 and any("(conflict " in n for n in names)


def test_display_name_shapes() -> None:
    d = "2026-01-02"
    assert conflicts.display_name(b"a.txt", d, "h") == b"a (conflict 2026-01-02 h).txt"
    assert conflicts.display_name(b"Makefile", d, "h") == b"Makefile (conflict 2026-01-02 h)"
    assert conflicts.display_name(b".bashrc", d, "h") == b".bashrc (conflict 2026-01-02 h)"
    assert len(conflicts.display_name(b"x" * 255, d, "host")) == 255


def test_garbage_with_conflict_suffix_is_skipped(volume: Volume) -> None:
    Path(volume.backing, "AAAA.conflict1").write_text("x")
    assert volume.listdir("/") == []
