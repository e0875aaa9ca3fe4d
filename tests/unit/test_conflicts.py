"""Conflict copies left by sync tools in a storage folder are shown decrypted under
readable names with the kind of the original (docs/FORMAT.md §6.4)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from cryptfs import conflicts, layout
from cryptfs.volume import Volume
from tests.unit.vfs import assert_clean, describe, fresh, make, new_volume, rename

STAMP = 1795000000
TOOLS = [
    (".cryptfsconflict1", "sync", None),
    (".conflict2", "sync", None),
    ("..path1", "sync", None),
    (".sync-conflict-20261127-101500-ABCDEF7", "ABCDEF7", "2026-11-27"),
    (" (laptop's conflicted copy 2026-11-26)", "laptop", "2026-11-26"),
    (" (conflicted copy 2026-11-25 101500)", "sync", "2026-11-25"),
]


@pytest.fixture
def vol(tmp_path: Path):
    v = new_volume(tmp_path / "v")
    try:
        yield v
    finally:
        v.close()


def _copy(vol: Volume, path: str, suffix: str) -> Path:
    entry = Path(vol.backing, vol.backing_path_of(path))
    copy = entry.with_name(entry.name + suffix)
    shutil.copy2(entry, copy)
    os.utime(copy, (STAMP, STAMP))
    parsed = layout.parse(entry.name)
    if parsed is not None and parsed.is_long:  # the sidecar is shared, as a tool leaves it
        assert entry.with_name(parsed.sidecar).exists()
    vol.clear_caches()
    return copy


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo"])
@pytest.mark.parametrize("suffix, host, date", TOOLS, ids=[t[0].strip() for t in TOOLS])
def test_conflict_copies_of_every_tool_are_shown(vol: Volume, suffix: str, host: str,
                                                 date: str | None, kind: str) -> None:
    make(vol, kind, "/report.pdf")
    original = describe(vol, "/report.pdf")
    _copy(vol, "/report.pdf", suffix)
    shown = f"report (conflict {date or conflicts.date_of(STAMP)} {host}).pdf"
    assert vol.listdir("/") == sorted(["report.pdf", shown]), \
        f"the {suffix.strip()!r} copy of a {kind} is not shown"
    assert describe(vol, "/" + shown) == original
    other = fresh(vol)  # a lookup by the shown name without a listing first
    assert describe(other, "/" + shown) == original
    rename(other, "/" + shown, "/kept.pdf")
    assert other.listdir("/") == ["kept.pdf", "report.pdf"]
    assert describe(other, "/kept.pdf") == original
    other.close()
    assert_clean(vol)


def test_conflict_copy_of_a_directory(vol: Volume) -> None:
    vol.mkdir_path("/photos")
    vol.write_file("/photos/a", b"a")
    _copy(vol, "/photos", ".conflict1")
    names = vol.listdir("/")
    assert len(names) == 2 and names[0] == "photos"
    assert names[1].startswith("photos (conflict ")
    assert vol.listdir("/" + names[1]) == ["a"]
    assert stat.S_ISDIR(vol.getattr(vol.resolve("/" + names[1])).mode)


@pytest.mark.parametrize("suffix", [".conflict1", " (laptop's conflicted copy 2026-11-26)"])
def test_conflict_copy_of_a_long_name(vol: Volume, suffix: str) -> None:
    long = "l" * 200 + ".txt"
    vol.mkdir_path("/d")
    vol.write_file("/d/" + long, b"x")
    _copy(vol, "/d/" + long, suffix)
    names = vol.listdir("/d")
    assert len(names) == 2 and long in names, f"the {suffix.strip()!r} copy is not shown"
    (shown,) = [n for n in names if n != long]
    assert "(conflict " in shown and len(shown.encode()) <= 255
    assert vol.read_file("/d/" + shown) == b"x"


def test_two_copies_of_one_name_get_distinct_display_names(vol: Volume) -> None:
    vol.write_file("/a.txt", b"1")
    _copy(vol, "/a.txt", ".conflict1")
    _copy(vol, "/a.txt", ".conflict2")
    names = vol.listdir("/")
    assert len(names) == 3 and len(set(names)) == 3
    for n in names:
        assert vol.read_file("/" + n) == b"1"


def test_name_conflict_copy_gives_it_an_encrypted_name(vol: Volume) -> None:
    vol.write_file("/report.pdf", b"theirs")
    copy = _copy(vol, "/report.pdf", ".cryptfsconflict1")
    rel = str(copy.relative_to(vol.backing))
    shown, new_rel = vol.name_conflict_copy(rel, "laptop", "2026-11-27")
    assert shown == b"report (conflict 2026-11-27 laptop).pdf"
    assert os.path.isfile(os.path.join(vol.backing, new_rel))
    assert not copy.exists()
    entries = [n for n in os.listdir(copy.parent) if n != layout.BACKREF_NAME]
    assert all(layout.parse(n) is not None for n in entries), entries
    vol.clear_caches()
    assert vol.listdir("/") == sorted(["report.pdf", shown.decode()])
    assert vol.read_file("/" + shown.decode()) == b"theirs"
    assert_clean(vol)


def test_display_name_shapes() -> None:
    d = "2026-01-02"
    assert conflicts.display_name(b"a.txt", d, "h") == b"a (conflict 2026-01-02 h).txt"
    assert conflicts.display_name(b"Makefile", d, "h") == b"Makefile (conflict 2026-01-02 h)"
    assert conflicts.display_name(b".bashrc", d, "h") == b".bashrc (conflict 2026-01-02 h)"
    assert len(conflicts.display_name(b"x" * 255, d, "host")) == 255
    assert b"/" not in conflicts.display_name(b"a", d, "evil/host")


@pytest.mark.parametrize("name, base", [
    ("a" * 52 + ".conflict1", "a" * 52),
    ("a" * 52 + ".d.cryptfsconflict3", "a" * 52 + ".d"),
    ("a" * 32 + ".l..path2", "a" * 32 + ".l"),
    ("a" * 52 + ".n.sync-conflict-20260101-000000-ABCDEFG", "a" * 52 + ".n"),
    ("a" * 52 + " (h's conflicted copy 2026-01-01)", "a" * 52),
    ("a" * 52 + ".d (conflicted copy 2026-01-01 101010)", "a" * 52 + ".d"),
])
def test_parse_conflict_names(name: str, base: str) -> None:
    copy = conflicts.parse(name)
    assert copy is not None and copy.base == base


@pytest.mark.parametrize("junk", ["AAAA.conflict1", "a" * 52 + ".conflict1",
                                  "b" * 60 + ".d..path1", "notes (conflicted copy 2026-01-01)"])
def test_garbage_with_a_conflict_suffix_is_skipped(vol: Volume, junk: str) -> None:
    vol.write_file("/real", b"1")
    Path(vol.backing, vol.root_storage, junk).write_text("x")
    assert vol.listdir("/") == ["real"]
    assert fresh(vol).listdir("/") == ["real"]
