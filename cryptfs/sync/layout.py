"""What the sync engine must know about the on-disk format (format 1), in one place.

"Structural" backing files are the ones a sync must never treat like user data: the
config (``cryptfs.conf``: it changes only through a verified, intended change,
``identity.reconcile_config``) and the directory IV files (``cryptfs.diriv``: without
one, every name in its directory reads as EIO, ``repair.restore_dir_ivs``). Porting the
sync engine to another layout means changing this module only.

Paths here are relative to the backing root, '/'-separated, without a leading '/'.
"""

from __future__ import annotations

import os
import posixpath

from ..config import BACKUP_NAME, CONFIG_NAME
from ..names import DIRIV_LEN, DIRIV_NAME

# The vault's root files that say which vault a remote holds.
CONFIG_PATH = CONFIG_NAME
ROOT_IV_PATH = DIRIV_NAME

# Never given to rclone bisync: libfuse's hidden files, our temporary files, the passwd
# backup, partial uploads rclone may leave behind after being killed, and the config
# (synced on its own, verified: identity.reconcile_config).
BISYNC_EXCLUDES = ["cryptfs.hidden.*", "cryptfs.*.tmp", "/" + BACKUP_NAME, "*.partial",
                   "/" + CONFIG_NAME]


def is_config(rel: str) -> bool:
    return rel.lstrip("/") == CONFIG_PATH


def is_dir_iv(rel: str) -> bool:
    return posixpath.basename(rel) == DIRIV_NAME


def is_structural(rel: str) -> bool:
    """True for backing files that hold vault structure, not user data."""
    return is_config(rel) or is_dir_iv(rel)


def dir_iv_path(rel_dir: str) -> str:
    """The IV file of a backing directory ('' is the root)."""
    return posixpath.join(rel_dir, DIRIV_NAME) if rel_dir else DIRIV_NAME


def dir_of_iv(rel: str) -> str:
    """The directory an IV file belongs to ('' for the root)."""
    return posixpath.dirname(rel)


def read_dir_ivs(backing: str) -> dict[str, bytes]:
    """Every backing directory's IV: {relative dir ('' = root): 16 bytes}."""
    found: dict[str, bytes] = {}
    for root, _dirs, files in os.walk(backing):
        if DIRIV_NAME in files:
            try:
                with open(os.path.join(root, DIRIV_NAME), "rb") as fh:
                    iv = fh.read(DIRIV_LEN + 1)
            except OSError:
                continue
            if len(iv) == DIRIV_LEN:
                rel = os.path.relpath(root, backing)
                found["" if rel == "." else rel.replace(os.sep, "/")] = iv
    return found


def dirs_missing_their_iv(backing: str) -> list[str]:
    """Backing directories that hold entries but no IV file (unreadable), shallowest
    first."""
    missing = []
    for root, dirs, files in os.walk(backing):
        if DIRIV_NAME not in files and (dirs or files):
            rel = os.path.relpath(root, backing)
            missing.append("" if rel == "." else rel.replace(os.sep, "/"))
    return sorted(missing, key=lambda p: (p.count("/"), p))
