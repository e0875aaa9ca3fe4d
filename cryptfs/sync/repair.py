"""Keep every directory reachable after a sync, and name conflict copies.

rclone bisync treats the small structural objects like any file. When one device deletes
or moves a folder while another edits a file inside it, bisync keeps the edited file, so
a storage folder can end up with entries that no directory entry leads to any more, or a
back-reference that names an old place. After each run the structure is checked (names,
directory entries and back-references; not file contents) and repaired as ``cryptfs fsck
--repair`` would: an orphaned folder gets its entry back where its back-reference says,
or under ``/lost+found``; a stale back-reference is rewritten. The next bisync pass
uploads what changed. Nothing is ever deleted here.
"""

from __future__ import annotations

import contextlib
import logging
import os

from .. import conflicts
from ..errors import CryptfsError

log = logging.getLogger("cryptfs")


def restore_backrefs(volume, known: dict[str, bytes]) -> list[str]:
    """Put back the back-reference of every storage folder that still holds entries but
    lost it in the run (bisync deletes it like a file when one device removes a folder
    while another edits inside); only a back-reference that authenticates for that very
    folder is written. Returns the folders given theirs back."""
    from ..layout import BACKREF_NAME
    from .layout import folders_missing_their_backref

    restored = []
    for storage in folders_missing_their_backref(volume.backing):
        blob = known.get(storage)
        if blob is None:
            log.error("storage folder %s lost its back-reference and none is known", storage)
            continue
        path = os.path.join(volume.backing, storage, BACKREF_NAME)
        try:
            with open(path, "xb") as fh:
                fh.write(blob)
            volume.read_backref(storage)  # authenticates for this folder, or goes again
        except (CryptfsError, OSError) as exc:
            log.error("could not restore the back-reference of %s: %s", storage, exc)
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        restored.append(storage)
    return restored


def repair_structure(volume) -> list[str]:
    """Repair what a sync left unreachable; returns what was done (backing paths)."""
    from ..fsck import Checker

    report = Checker(volume, repair=True, structure_only=True).run()
    done = []
    for problem in report.problems:
        if problem.repaired and problem.kind in ("orphan-storage", "backref",
                                                 "missing-storage"):
            rel = os.path.relpath(problem.backing_path, volume.backing)
            done.append(rel)
            log.warning("sync left %s %s; %s", problem.kind, rel, problem.repaired)
    if done:
        volume.clear_caches()
    return done


def name_conflict_copy(volume, path: str, host: str | None = None
                       ) -> tuple[str, str] | None:
    """Rename the backing entry ``path`` (this device's version of a file that differs on
    the remote, possibly carrying a sync tool's marker) to the encrypted form of
    ``NAME (conflict DATE HOST).EXT`` in its directory. Returns (shown plaintext name,
    new backing-relative path), or None if the entry is not one of this vault's."""
    rel = os.path.relpath(path, volume.backing)
    try:
        done = volume.name_conflict_copy(rel, host or conflicts.this_host(),
                                         conflicts.today())
    except (CryptfsError, OSError) as exc:
        log.warning("could not keep %s aside as a conflict copy: %s", rel, exc)
        return None
    if done is None:
        return None
    shown, new_rel = done
    return os.fsdecode(shown), new_rel
