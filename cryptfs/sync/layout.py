"""What the sync engine must know about the on-disk format (format 2), in one place.

"Structural" backing files are the ones a sync must never treat like user data: the
config (``cryptfs.conf``: it changes only through a verified, intended change,
``identity.reconcile_config``) and the back-references (``cryptfs.back``: bookkeeping
of a directory's place, rewritten by ``repair.repair_structure`` from the entries that
reach it). The root directory's back-reference sits at a path derived from the master
key and has deterministic content: it is the *root marker* that tells whether a remote's
data belongs to this key. Porting the sync engine to another layout means changing this
module (and repair.py) only.

Paths here are relative to the backing root, '/'-separated, without a leading '/'.
"""

from __future__ import annotations

import os
import posixpath

from .. import layout as vault_layout
from ..config import BACKUP_NAME, CONFIG_NAME

CONFIG_PATH = CONFIG_NAME

SYNC_AREA = "cryptfs-sync"  # engine 2's records and staging batches on the remote

# Never given to rclone bisync: our temporary files, the passwd backup, partial uploads
# rclone may leave behind after being killed, the config (synced on its own, verified:
# identity.reconcile_config) and engine 2's area of the remote (docs/SYNC.md §1).
BISYNC_EXCLUDES = ["cryptfs.*.tmp", "/" + BACKUP_NAME, "*.partial", "/" + CONFIG_NAME,
                   f"/{SYNC_AREA}/**"]


def root_marker(volume) -> tuple[str, bytes]:
    """(path, exact content) of the root directory's back-reference for this key."""
    root_id = volume.names.root_id
    name = volume.names.storage_name(root_id)
    return (f"{volume.root_storage}/{vault_layout.BACKREF_NAME}",
            volume.objects.seal_backref(name, root_id, None, b""))


def is_config(rel: str) -> bool:
    return rel.lstrip("/") == CONFIG_PATH


def is_backref(rel: str) -> bool:
    return posixpath.basename(rel) == vault_layout.BACKREF_NAME


def is_xattrs(rel: str) -> bool:
    return rel.startswith(vault_layout.XATTR_ROOT + "/")


def is_sidecar(rel: str) -> bool:
    parsed = vault_layout.parse(posixpath.basename(rel))
    return parsed is not None and parsed.kind is None


def is_structural(rel: str) -> bool:
    """True for backing files that hold vault structure, not user data."""
    return is_config(rel) or is_backref(rel)


def is_entry(rel: str) -> bool:
    """An entry of a storage folder (a file, directory, symlink or node), not bookkeeping."""
    parts = rel.split("/")
    if len(parts) != 4 or parts[0] != vault_layout.STORAGE_ROOT:
        return False
    parsed = vault_layout.parse(parts[3])
    return parsed is not None and parsed.kind is not None


def read_backrefs(backing: str) -> dict[str, bytes]:
    """Every storage folder's back-reference: {storage folder: its bytes}."""
    found: dict[str, bytes] = {}
    root = os.path.join(backing, vault_layout.STORAGE_ROOT)
    try:
        buckets = sorted(os.listdir(root))
    except OSError:
        return found
    for bucket in buckets:
        try:
            folders = os.listdir(os.path.join(root, bucket))
        except OSError:
            continue
        for folder in folders:
            rel = f"{vault_layout.STORAGE_ROOT}/{bucket}/{folder}"
            try:
                with open(os.path.join(backing, rel, vault_layout.BACKREF_NAME), "rb") as fh:
                    found[rel] = fh.read(4097)
            except OSError:
                continue
    return found


def folders_missing_their_backref(backing: str) -> list[str]:
    """Storage folders that hold entries but no back-reference (a sync deleted it while
    another device added or edited something inside)."""
    missing = []
    root = os.path.join(backing, vault_layout.STORAGE_ROOT)
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, backing).replace(os.sep, "/")
        if rel.count("/") != 2 or vault_layout.BACKREF_NAME in files:
            continue
        if any(vault_layout.parse(f) is not None for f in files):
            missing.append(rel)
    return sorted(missing)
