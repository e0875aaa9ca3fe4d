"""Local changes (docs/SYNC.md §4): compare backing folders with the synced map.

A folder is listed and each entry compared with its row: an entry whose (size, mtime,
ctime, inode) match is unchanged; any other is hashed. ctime matters: ``touch -r`` and
``cp -p`` put an edited file's mtime back, never its ctime. Paths are relative to the
backing root, '/'-separated.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from .. import layout as vault_layout
from .db import PathRow, SyncDB

CHUNK = 1 << 20


@dataclass
class Local:
    """What a local path holds now."""

    path: str
    hash: str
    size: int
    st: os.stat_result


@dataclass
class LocalChange:
    op: str  # "put" | "del"
    path: str
    base: str | None  # the synced hash
    local: Local | None = None  # for a put
    source: str | None = None  # a rename's old path


def syncable(name: str) -> bool:
    """Backing names a sync carries (everything in a storage folder or x/ bucket but
    temporary files and partial downloads)."""
    return not (vault_layout.is_temp(name) or name.endswith(".partial")
                or name.startswith(".rclone"))


def hash_file(path: str) -> tuple[str, int]:
    h = hashlib.blake2b(digest_size=32)
    size = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def is_folder_path(rel: str) -> bool:
    """A storage folder (``d/xx/yyyy``) or an xattr bucket (``x/xx``)."""
    parts = rel.split("/")
    return (len(parts) == 3 and parts[0] == vault_layout.STORAGE_ROOT) or \
        (len(parts) == 2 and parts[0] == vault_layout.XATTR_ROOT)


def folders_of(paths: set[str]) -> set[str]:
    """The folders to look at for journalled paths (an xattr object: its bucket)."""
    out = set()
    for rel in paths:
        rel = rel.strip("/")
        if is_folder_path(rel):
            out.add(rel)
        else:
            parent = rel.rpartition("/")[0]
            if is_folder_path(parent):
                out.add(parent)
    return out


def all_folders(backing: str) -> set[str]:
    """Every storage folder and xattr bucket on disk."""
    out = set()
    for top in (vault_layout.STORAGE_ROOT, vault_layout.XATTR_ROOT):
        try:
            buckets = os.listdir(os.path.join(backing, top))
        except OSError:
            continue
        for bucket in buckets:
            rel = f"{top}/{bucket}"
            if top == vault_layout.XATTR_ROOT:
                out.add(rel)
                continue
            try:
                out.update(f"{rel}/{f}" for f in os.listdir(os.path.join(backing, rel)))
            except OSError:
                continue
    return out


def list_folder(backing: str, folder: str) -> dict[str, os.stat_result]:
    """{path: lstat} of the syncable regular files of one folder (empty if missing)."""
    out = {}
    try:
        it = os.scandir(os.path.join(backing, folder))
    except (FileNotFoundError, NotADirectoryError):
        return out
    with it:
        for entry in it:
            if not syncable(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[f"{folder}/{entry.name}"] = st
    return out


def compare(db: SyncDB, backing: str, folders: set[str], skip: set[str] | None = None,
            ignored=None, frozen: set[str] | None = None) -> list[LocalChange]:
    """The local changes in ``folders`` relative to the synced map (renames detected
    among them). ``skip``: paths not to publish now (waiting for their authenticated
    version); ``ignored(rel)``: True for paths never to publish (a sync filter), asked
    about present paths and about synced paths gone here. ``frozen`` (updated in place):
    synced paths the filter holds back; a frozen path's deletion is never published,
    even once the filter can no longer tell (its folder is gone too)."""
    skip = skip or set()
    puts: list[LocalChange] = []
    dels: list[tuple[PathRow]] = []
    for folder in sorted(folders):
        rows = db.rows_in(folder)
        present = list_folder(backing, folder)
        for rel, st in present.items():
            if rel in skip:
                continue
            row = rows.get(rel)
            if ignored is not None and ignored(rel):
                if frozen is not None and row is not None and row.s_hash is not None:
                    frozen.add(rel)
                continue
            if frozen is not None:
                frozen.discard(rel)
            if row is not None and row.s_hash is not None and row.stat_matches(st):
                continue
            try:
                digest, size = hash_file(os.path.join(backing, rel))
            except OSError:
                continue  # vanished meanwhile: the next sync sees it
            base = row.s_hash if row is not None else None
            if digest == base:
                continue  # same bytes (touched, or the stat changed only)
            puts.append(LocalChange("put", rel, base, Local(rel, digest, size, st)))
        for rel, row in rows.items():
            if rel in present or rel in skip or row.s_hash is None:
                continue
            if frozen is not None and rel in frozen:
                continue
            if ignored is not None and ignored(rel):
                if frozen is not None:
                    frozen.add(rel)
                continue
            dels.append((row,))
    # renames: a vanished path and a new one with the same inode and hash
    by_inode = {(c.local.st.st_ino, c.local.hash): c for c in puts
                if c.base is None and c.local is not None}
    out_dels = []
    for (row,) in dels:
        match = by_inode.pop((row.ino, row.s_hash), None)
        if match is not None and match.source is None:
            match.source = row.path
        out_dels.append(LocalChange("del", row.path, row.s_hash))
    # structural objects first within puts: a folder's back-reference before its entries
    puts.sort(key=lambda c: (c.path.rpartition("/")[0],
                             c.path.rpartition("/")[2] != vault_layout.BACKREF_NAME, c.path))
    return [*puts, *out_dels]
