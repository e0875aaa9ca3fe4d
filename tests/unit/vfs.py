"""Path-level helpers over the inode-based ``Volume`` API for the unit tests, and backing
tree snapshots. Not a test module."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cryptfs import layout
from cryptfs.fsck import Checker, Report
from cryptfs.volume import Volume
from tests.conftest import PASSWORD

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def new_volume(root: Path, **kw) -> Volume:
    vol, _ = Volume.initialize(str(root), PASSWORD.encode(), **kw)
    return vol


def fresh(vol: Volume) -> Volume:
    """Another Volume on the same backing directory (a remount: no caches, no nodes)."""
    return Volume.unlock(vol.backing, master_key=vol.master_key)


def parent_of(vol: Volume, path: str) -> tuple[int, bytes]:
    """(parent inode, name) resolved as the kernel would: ENOTDIR if the parent is not a
    directory, before anything else is looked at."""
    ino, name = vol.resolve_parent(path)
    if not stat.S_ISDIR(vol.getattr(ino).mode):
        raise OSError(errno.ENOTDIR, "not a directory", path)
    return ino, name


def rename(vol: Volume, a: str, b: str, flags: int = 0) -> None:
    pa, na = parent_of(vol, a)
    pb, nb = parent_of(vol, b)
    vol.rename(pa, na, pb, nb, flags)


def unlink(vol: Volume, path: str) -> None:
    vol.unlink(*parent_of(vol, path))


def rmdir(vol: Volume, path: str) -> None:
    vol.rmdir(*parent_of(vol, path))


def symlink(vol: Volume, path: str, target: bytes) -> None:
    vol.symlink(*parent_of(vol, path), target)


def mknod(vol: Volume, path: str, mode: int = stat.S_IFIFO | 0o644, rdev: int = 0) -> None:
    vol.mknod(*parent_of(vol, path), mode, rdev)


def link(vol: Volume, existing: str, new: str) -> None:
    vol.link(vol.resolve(existing), *parent_of(vol, new))


def truncate(vol: Volume, path: str, size: int) -> None:
    vol.setattr(vol.resolve(path), size=size)


def errno_of(call: Callable[[], object]) -> int:
    """The errno ``call`` fails with (the test fails if it succeeds)."""
    with pytest.raises(OSError) as info:
        call()
    return info.value.errno


def make(vol: Volume, kind: str, path: str) -> None:
    """One entry of ``kind`` whose content tells it apart (see ``describe``)."""
    tag = path.encode()
    if kind == "file":
        vol.write_file(path, b"content of " + tag)
    elif kind in ("dir", "fulldir"):
        vol.mkdir_path(path)
        if kind == "fulldir":
            vol.write_file(path + "/inner", b"inner of " + tag)
    elif kind == "symlink":
        symlink(vol, path, b"target/of" + tag)
    elif kind == "fifo":
        mknod(vol, path, stat.S_IFIFO | (0o600 + len(tag) % 64))
    else:
        raise ValueError(kind)


def describe(vol: Volume, path: str):
    """What a path is, in a form that survives renames: None if it does not exist."""
    try:
        ino = vol.resolve(path)
    except FileNotFoundError:
        return None
    attr = vol.getattr(ino)
    if stat.S_ISDIR(attr.mode):
        return ("dir", {n: describe(vol, f"{path.rstrip('/')}/{n}") for n in vol.listdir(path)})
    if stat.S_ISLNK(attr.mode):
        return ("symlink", vol.readlink(ino))
    if stat.S_ISREG(attr.mode):
        return ("file", vol.read_file(path))
    return ("node", attr.mode, attr.rdev)


def backing_snapshot(vol: Volume) -> dict[str, str | None]:
    """Every backing path (files and folders) -> content hash (None for folders)."""
    out: dict[str, str | None] = {}
    for dirpath, dirs, files in os.walk(vol.backing):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), vol.backing)] = None
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, vol.backing)] = hashlib.sha256(
                Path(p).read_bytes()).hexdigest()
    return out


def changed_paths(before: dict[str, str | None], after: dict[str, str | None]) -> set[str]:
    """Backing paths a sync tool would have to transfer or delete."""
    return {p for p in before.keys() | after.keys() if before.get(p, 0) != after.get(p, 0)}


def xattr_objects(vol: Volume) -> list[str]:
    root = Path(vol.backing, layout.XATTR_ROOT)
    return sorted(str(p.relative_to(vol.backing)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def check(vol: Volume) -> Report:
    """fsck of the vault through a fresh Volume."""
    other = fresh(vol)
    try:
        return Checker(other).run()
    finally:
        other.close()


def assert_clean(vol: Volume) -> None:
    report = check(vol)
    assert report.ok, [(p.kind, p.plain_path, p.backing_path, p.detail)
                       for p in report.problems]


def subdir_count(vol: Volume, path: str) -> int:
    return sum(1 for _, a in vol.scandir(path) if stat.S_ISDIR(a.mode))
