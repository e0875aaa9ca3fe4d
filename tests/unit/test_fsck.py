"""fsck of a format-2 vault (docs/FORMAT.md §5.4, §11): a clean vault is clean; lost
directory entries, stale or bad back-references, missing storage, leftovers and tampered
content are reported with plaintext paths, and ``repair`` puts the structure right without
losing a byte."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cryptfs import layout
from cryptfs.fsck import Checker, Report
from cryptfs.volume import Volume
from tests.unit.test_tamper import LONG, build_mixed_vault, view
from tests.unit.vfs import (
    assert_clean,
    backing_snapshot,
    check,
    fresh,
    new_volume,
    rename,
    xattr_objects,
)


def run(vol: Volume, **kw) -> Report:
    other = fresh(vol)
    try:
        return Checker(other, **kw).run()
    finally:
        other.close()


def kinds(report: Report) -> list[str]:
    return sorted(p.kind for p in report.problems)


def everything(vol: Volume, want: dict[str, tuple]) -> dict[str, tuple]:
    other = fresh(vol)
    try:
        return {p: view(other, p) for p in want}
    finally:
        other.close()


@pytest.fixture
def mixed(tmp_path: Path):
    vol, want = build_mixed_vault(tmp_path / "v")
    try:
        yield vol, want
    finally:
        vol.close()


def test_clean_vault_is_ok(mixed) -> None:
    vol, want = mixed
    report = run(vol)
    assert report.ok and report.problems == []
    assert (report.dirs, report.files, report.symlinks, report.other) == (3, 8, 2, 2)
    assert report.bytes_checked == sum(len(v[1]) for v in want.values() if v[0] == "file")
    json.dumps(report.as_dict())


def test_repair_of_a_clean_vault_changes_nothing(mixed) -> None:
    vol, _ = mixed
    before = backing_snapshot(vol)
    assert run(vol, repair=True).ok
    assert backing_snapshot(vol) == before


@pytest.mark.parametrize("lost", ["/dir", f"/dir/sub-{LONG}"])
def test_lost_directory_entry_is_reported_and_reattached(mixed, lost: str) -> None:
    vol, want = mixed
    storage = vol.storage_path_of(lost)
    entry = Path(vol.backing, vol.backing_path_of(lost))
    entry.unlink()
    gone = everything(vol, want)
    assert gone[lost] == ("absent",)
    sidecar = ["orphan-sidecar"] if lost.endswith(LONG) else []  # L.s stays behind
    report = run(vol)
    assert kinds(report) == [*sidecar, "orphan-storage"]
    problem = report.problems[-1]
    assert problem.plain_path == lost, "the path comes from the back-references"
    assert problem.backing_path == os.path.join(vol.backing, storage)
    assert not problem.repaired
    report = run(vol, repair=True)
    assert kinds(report) == [*sidecar, "orphan-storage"]
    assert report.problems[-1].repaired == f"reattached as {lost}"
    assert everything(vol, want) == want, "every file below reads back"
    assert_clean(vol)
    assert entry.exists(), "reattached under its old entry name"


def test_orphan_whose_name_is_taken_goes_to_lost_found(tmp_path: Path) -> None:
    vol = new_volume(tmp_path / "v")
    vol.mkdir_path("/d")
    vol.mkdir_path("/d/e")
    vol.write_file("/d/e/f", b"kept")
    Path(vol.backing, vol.backing_path_of("/d")).unlink()
    vol.clear_caches()
    vol.mkdir_path("/d")  # a new /d (generation 1) takes the name
    vol.write_file("/d/new", b"new")
    report = run(vol, repair=True)
    assert kinds(report) == ["orphan-storage"]
    assert report.problems[0].plain_path == "/d"
    assert report.problems[0].repaired == "reattached as /lost+found/d"
    other = fresh(vol)
    assert other.read_file("/lost+found/d/e/f") == b"kept"
    assert other.read_file("/d/new") == b"new"
    assert sorted(other.listdir("/")) == ["d", "lost+found"]
    assert_clean(vol)


@pytest.mark.parametrize("also_entry", [False, True])
def test_orphan_whose_parent_is_gone(tmp_path: Path, also_entry: bool) -> None:
    """/a's storage folder is lost: with its entry still there, the folder is recreated
    and /a/b goes back where it was; with the entry gone too, /a/b goes to lost+found."""
    vol = new_volume(tmp_path / "v")
    vol.mkdir_path("/a")
    vol.mkdir_path("/a/b")
    vol.write_file("/a/b/f", b"kept")
    shutil.rmtree(Path(vol.backing, vol.storage_path_of("/a")))
    if also_entry:
        Path(vol.backing, vol.backing_path_of("/a")).unlink()
    report = run(vol)
    assert kinds(report) == (["orphan-storage"] if also_entry else
                             ["missing-storage", "orphan-storage"])
    assert report.problems[-1].plain_path is None, "its parent's back-reference is gone"
    report = run(vol, repair=True)
    where = "/lost+found/b" if also_entry else "/a/b"
    assert report.problems[-1].repaired == f"reattached as {where}"
    other = fresh(vol)
    assert other.read_file(where + "/f") == b"kept"
    other.close()
    assert_clean(vol)


def test_stale_back_reference_after_an_interrupted_move(tmp_path: Path) -> None:
    """§5.4 crash window: the entry was renamed, the back-reference not yet rewritten."""
    vol = new_volume(tmp_path / "v")
    for p in ("/a", "/b", "/a/sub"):
        vol.mkdir_path(p)
    vol.write_file("/a/sub/f", b"data")
    storage = vol.storage_path_of("/a/sub")
    backref = Path(vol.backing, storage, layout.BACKREF_NAME)
    old = backref.read_bytes()
    rename(vol, "/a/sub", "/b/moved")
    backref.write_bytes(old)  # as if the crash came between the two steps
    other = fresh(vol)
    assert other.read_file("/b/moved/f") == b"data", "the mount does not need it"
    assert other.path_of_storage(storage) == "/a/sub"
    other.close()
    report = run(vol)
    assert kinds(report) == ["backref"]
    assert report.problems[0].plain_path == "/b/moved"
    report = run(vol, repair=True)
    assert report.problems[0].repaired == "back-reference rewritten"
    other = fresh(vol)
    assert other.path_of_storage(storage) == "/b/moved"
    assert other.read_backref(storage)[1:] == (other._dir(other.resolve("/b")).dir_id,
                                              b"moved")
    other.close()
    assert_clean(vol)


@pytest.mark.parametrize("damage", ["flip", "delete", "empty"])
def test_bad_back_reference_is_rewritten(mixed, damage: str) -> None:
    vol, want = mixed
    path = Path(vol.backing, vol.storage_path_of("/dir"), layout.BACKREF_NAME)
    if damage == "delete":
        path.unlink()
    else:
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw) if damage == "flip" else b"")
    report = run(vol)
    assert kinds(report) == ["backref"] and report.problems[0].plain_path == "/dir"
    assert run(vol, repair=True).problems[0].repaired
    assert everything(vol, want) == want
    assert_clean(vol)


def test_missing_storage_is_reported_and_recreated(mixed) -> None:
    vol, _ = mixed
    sub = f"/dir/sub-{LONG}"
    shutil.rmtree(Path(vol.backing, vol.storage_path_of(sub)))
    report = run(vol)
    assert kinds(report) == ["missing-storage"]
    assert report.problems[0].plain_path == sub
    assert "contents are gone" in report.problems[0].detail
    report = run(vol, repair=True)
    assert report.problems[0].repaired == "empty storage folder recreated"
    other = fresh(vol)
    assert other.listdir(sub) == []
    other.close()
    assert_clean(vol)


@pytest.mark.parametrize("named", ["x", "y"])
def test_duplicate_entries_keep_the_one_the_back_reference_names(tmp_path: Path,
                                                                 named: str) -> None:
    """§5.4: two devices moved one directory offline, two entries reference one folder:
    fsck keeps the entry the back-reference names and reports the other (whatever order
    it walks the tree in), and repair does not move the back-reference."""
    vol = new_volume(tmp_path / "v", master_key=bytes(range(32)))  # one walk order
    for p in ("/x", "/y", "/x/d"):
        vol.mkdir_path(p)
    vol.write_file("/x/d/f", b"f")
    y_id = vol._dir(vol.resolve("/y")).dir_id
    shutil.copy2(Path(vol.backing, vol.backing_path_of("/x/d")),
                 Path(vol.backing, vol.storage_path_of("/y"), vol.names.encrypt(y_id, b"d")
                      + ".d"))
    storage = vol.storage_path_of("/x/d")
    if named == "y":
        d_id = vol._dir(vol.resolve("/x/d")).dir_id
        vol.store.replace(f"{storage}/{layout.BACKREF_NAME}", vol.objects.seal_backref(
            vol.names.storage_name(d_id), d_id, y_id, b"d"))
    other = "/y/d" if named == "x" else "/x/d"
    for repair in (False, True):
        report = run(vol, repair=repair)
        assert [(p.kind, p.plain_path) for p in report.problems] == \
            [("duplicate-entry", other)], f"expected only {other} reported as the duplicate"
        checker_vol = fresh(vol)
        assert checker_vol.path_of_storage(storage) == f"/{named}/d"
        checker_vol.close()


def test_leftovers_are_removed_on_repair(mixed) -> None:
    vol, want = mixed
    backing = Path(vol.backing)
    dir_storage = backing / vol.storage_path_of("/dir")
    (dir_storage / ("a" * 32 + ".s")).write_text("b" * 52)  # sidecar without entry
    (dir_storage / "cryptfs.0123456789abcdef.tmp").write_bytes(b"half")
    (backing / "cryptfs.fedcba9876543210.tmp").write_bytes(b"half")
    vol.write_file("/gone", b"x")
    vol.setxattr(vol.resolve("/gone"), b"user.k", b"v")
    Path(vol.backing, vol.backing_path_of("/gone")).unlink()  # behind cryptfs's back
    assert len(xattr_objects(vol)) == 3
    report = run(vol)
    assert kinds(report) == ["leftover-temp", "leftover-temp", "orphan-sidecar",
                             "orphan-xattr"]
    assert all(p.plain_path is None or p.plain_path.startswith("/") for p in report.problems)
    before = backing_snapshot(vol)
    report = run(vol, repair=True)
    assert all(p.repaired == "removed" for p in report.problems)
    removed = set(before) - set(backing_snapshot(vol))
    assert len(removed) == 4, removed
    assert len(xattr_objects(vol)) == 2
    assert everything(vol, want) == want
    assert_clean(vol)


@pytest.mark.parametrize("path, block", [("/multi", 2), (f"/dir/{LONG}", 0), ("/empty", 0)])
def test_tampered_file_is_reported_with_its_plaintext_path(mixed, path: str,
                                                           block: int) -> None:
    vol, _ = mixed
    backing = Path(vol.backing, vol.backing_path_of(path))
    raw = bytearray(backing.read_bytes())
    raw[vol.content.block_offset(block) + 30] ^= 4
    backing.write_bytes(bytes(raw))
    report = run(vol)
    assert kinds(report) == ["content"]
    (problem,) = report.problems
    assert problem.plain_path == path
    assert f"block {block} failed authentication" in problem.detail
    assert problem.backing_path == str(backing)
    assert not run(vol, repair=True).ok, "repair never invents content"


def test_truncated_and_foreign_objects_are_reported(mixed) -> None:
    vol, _ = mixed
    backing = Path(vol.backing)
    nested = backing / vol.backing_path_of("/dir/nested")
    nested.write_bytes(nested.read_bytes()[:18 + 4096 + 40])  # cut at a block boundary
    (backing / "foreign.txt").write_text("x")
    (backing / vol.root_storage / "notes.txt").write_text("x")
    link = backing / vol.backing_path_of("/link")
    link.write_bytes(link.read_bytes()[:-1])
    report = run(vol)
    assert kinds(report) == ["content", "foreign", "foreign", "symlink"]
    by_path = {p.plain_path: p for p in report.problems if p.plain_path}
    assert set(by_path) == {"/dir/nested", "/link"}


def test_quarantine_moves_unreadable_entries_aside(mixed, tmp_path: Path) -> None:
    vol, _ = mixed
    multi = Path(vol.backing, vol.backing_path_of("/exact"))
    raw = bytearray(multi.read_bytes())
    raw[100] ^= 1
    multi.write_bytes(bytes(raw))
    (Path(vol.backing, vol.root_storage) / "junk").write_text("x")
    quarantine = tmp_path / "q"
    report = run(vol, quarantine=str(quarantine))
    assert all(p.quarantined_to for p in report.problems)
    assert not multi.exists()
    assert check(vol).ok
    other = fresh(vol)
    assert "exact" not in other.listdir("/")
    other.close()
    with pytest.raises(ValueError):
        Checker(vol, quarantine=str(Path(vol.backing) / "q"))
