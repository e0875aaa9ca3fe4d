"""Keep every directory readable: put back IV files a sync removed, and name conflict
copies.

rclone bisync treats a directory's IV file like any file: when one device deletes or
renames a folder while another edits a file inside it, bisync keeps the edited file and
deletes the IV beside it, and the folder then reads as EIO everywhere. After each run,
every directory that holds entries but no IV gets it back: the IV it had before the run
(or at the last sync), else the one derived from its name at mkdir time (FORMAT.md §5.2)
if that decrypts its entries. The next bisync pass uploads it.
"""

from __future__ import annotations

import logging
import os

from .. import conflicts
from ..backing import PathMapper
from ..errors import CryptfsError
from ..names import NameCipher
from . import layout

log = logging.getLogger("cryptfs")


def restore_dir_ivs(backing: str, names: NameCipher, known: dict[str, bytes]) -> list[str]:
    """Write the IV of every directory that lost it; returns the repaired directories
    (backing-relative, '' = root)."""
    mapper = PathMapper(backing, names)
    repaired = []
    for rel in layout.dirs_missing_their_iv(backing):
        full = os.path.join(backing, rel) if rel else backing
        iv = known.get(rel)
        if iv is None:
            iv = _derived_iv(mapper, names, backing, rel)
        if iv is None or not _decrypts_an_entry(mapper, full, iv):
            log.error("directory %s has no IV file and none could be restored",
                      rel or "(root)")
            continue
        mapper.write_dir_iv(full, iv)
        mapper.forget_dir(full)
        repaired.append(rel)
        log.warning("restored the IV file of directory %s (removed by a sync)",
                    rel or "(root)")
    return repaired


def _derived_iv(mapper: PathMapper, names: NameCipher, backing: str, rel: str
                ) -> bytes | None:
    if not rel:
        return names.root_iv()
    parent_rel, name = os.path.split(rel)
    parent = os.path.join(backing, parent_rel) if parent_rel else backing
    try:
        parent_iv = mapper.dir_iv(parent)
        plain = mapper.decrypt_entry_name(parent, parent_iv, name)
    except (CryptfsError, OSError):
        return None
    return names.child_iv(parent_iv, plain)


def _decrypts_an_entry(mapper: PathMapper, directory: str, iv: bytes) -> bool:
    """True if some entry of ``directory`` decrypts under ``iv`` (or it has none that
    could: only sidecars or conflict copies of others' tools)."""
    tried = False
    for entry in os.scandir(directory):
        name = entry.name
        if name.endswith(".name") or ("." in name and not name.startswith("cryptfs.L.")):
            continue  # sidecars, reserved names and others' conflict copies
        tried = True
        try:
            mapper.decrypt_entry_name(directory, iv, name)
            return True
        except (CryptfsError, OSError):
            continue
    return not tried


def name_conflict_copy(backing: str, names: NameCipher, path: str,
                       host: str | None = None) -> tuple[str, str] | None:
    """Rename the backing entry ``path`` (this device's version of a file that differs
    on the remote, possibly carrying a sync tool's marker) to the encrypted form of
    ``NAME (conflict DATE HOST).EXT`` in its directory. Returns (shown plaintext name,
    new backing path), or None if the entry does not decrypt."""
    mapper = PathMapper(backing, names)
    directory, name = os.path.split(path)
    if layout.is_structural(os.path.relpath(path, backing)):
        return None
    copy = conflicts.parse(name)
    base = copy.base if copy is not None else name
    try:
        iv = mapper.dir_iv(directory)
        plain = mapper.decrypt_entry_name(directory, iv, base)
    except (CryptfsError, OSError):
        return None
    date, host = conflicts.today(), host or conflicts.this_host()
    shown, n = conflicts.display_name(plain, date, host), 2
    while True:
        entry_name, long_name = names.backing_name(iv, shown)
        target = os.path.join(directory, entry_name)
        if not os.path.lexists(target):
            break
        shown = conflicts.display_name(plain, date, f"{host} {n}")
        n += 1
    if long_name is not None:
        with open(target + ".name", "w", encoding="ascii") as fh:
            fh.write(long_name)
    os.rename(path, target)  # a long name's sidecar stays: the remote's is the same
    return os.fsdecode(shown), target
