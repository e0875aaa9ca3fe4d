"""Plaintext path -> backing path mapping, directory IVs, long-name sidecars.

Knows the backing directory's layout (docs/FORMAT.md §5) but nothing of FUSE. The caches
hold only derived, deterministic facts (a plaintext path always maps to the same backing
path while no ancestor directory is renamed or removed), so they are cleared on directory
renames and removals and on anything that changes the tree behind our back (a sync pull).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import threading
from dataclasses import dataclass

from . import conflicts
from .errors import BadNameError, IntegrityError
from .names import (
    DIRIV_LEN,
    DIRIV_NAME,
    FUSE_HIDDEN_PREFIX,
    NameCipher,
    hidden_entry_name,
    is_long_entry,
    is_reserved,
    long_entry_name,
    sidecar_of,
)

log = logging.getLogger("cryptfs")

_CACHE_LIMIT = 65536

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
AT_FDCWD = -100


def rename2(src: str, dst: str, flags: int) -> None:
    """rename(2) with renameat2 flags (NOREPLACE, EXCHANGE)."""
    if flags == 0:
        os.rename(src, dst)
        return
    if _renameat2 is None:
        raise OSError(errno.EINVAL, "renameat2 is not available")
    ret = _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), src)


@dataclass(frozen=True)
class Entry:
    """Where one plaintext path lives in the backing directory."""

    path: str  # full backing path of the entry
    parent: str  # backing path of the parent directory
    name: bytes  # plaintext name (bytes), b"" for the root
    parent_iv: bytes
    long_name: str | None  # full encrypted name when the entry uses a sidecar

    @property
    def sidecar(self) -> str | None:
        if self.long_name is None:
            return None
        return sidecar_of(self.path)


class PathMapper:
    """Maps plaintext paths to backing paths, with caches."""

    def __init__(self, root: str, names: NameCipher) -> None:
        self.root = os.path.abspath(root)
        self.names = names
        self._ivs: dict[str, bytes] = {}
        self._entries: dict[str, Entry] = {}
        # (backing dir, display name) -> backing name of a sync tool's conflict copy
        self._aliases: dict[tuple[str, bytes], str] = {}
        # (dir IV, encrypted name) -> plain name: a name authenticated once (or made here)
        # decrypts to the same plain name for ever, so listings skip the cipher.
        self._plain_names: dict[tuple[bytes, str], bytes] = {}
        self._lock = threading.Lock()

    def clear_caches(self) -> None:
        with self._lock:
            self._ivs.clear()
            self._entries.clear()
            self._aliases.clear()
            # _plain_names stays: a (dir IV, encrypted name) pair means one name for ever.

    def forget_dir(self, backing_dir: str) -> None:
        """A directory went away: entries below it are re-derived on their next use."""
        with self._lock:
            self._ivs.pop(backing_dir, None)

    # -- directory IVs -----------------------------------------------------------------
    def dir_iv(self, backing_dir: str) -> bytes:
        iv = self._ivs.get(backing_dir)
        if iv is not None:
            return iv
        st = os.lstat(backing_dir)  # raises ENOENT for a missing parent
        if not stat.S_ISDIR(st.st_mode):
            # A symlink or file where a directory should be: never follow it.
            raise OSError(errno.ENOTDIR, "not a directory", backing_dir)
        try:
            fd = os.open(os.path.join(backing_dir, DIRIV_NAME), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise IntegrityError(f"directory IV missing in {backing_dir}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IntegrityError(f"directory IV in {backing_dir} is a symlink") from None
            raise
        try:
            iv = os.read(fd, DIRIV_LEN + 1)
        finally:
            os.close(fd)
        if len(iv) != DIRIV_LEN:
            raise IntegrityError(f"directory IV in {backing_dir} has {len(iv)} bytes")
        with self._lock:
            if len(self._ivs) >= _CACHE_LIMIT:
                self._ivs.clear()
            self._ivs[backing_dir] = iv
        return iv

    def write_dir_iv(self, backing_dir: str, iv: bytes) -> None:
        path = os.path.join(backing_dir, DIRIV_NAME)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        try:
            os.write(fd, iv)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- entries -----------------------------------------------------------------------
    def entry(self, plain_path: str) -> Entry:
        cached = self._entries.get(plain_path)
        # Valid while its parent's IV is cached unchanged (``forget_dir`` drops an IV).
        if cached is not None and (not cached.parent_iv or
                                   self._ivs.get(cached.parent) == cached.parent_iv):
            return cached
        if not plain_path.startswith("/"):
            return self.entry("/" + plain_path)
        if plain_path == "/":
            ent = Entry(self.root, self.root, b"", b"", None)
        else:
            head, tail = plain_path.rstrip("/").rsplit("/", 1)
            parent = self.entry(head or "/").path
            iv = self.dir_iv(parent)
            name = os.fsencode(tail)
            alias = self._alias(parent, name)
            if alias is not None:
                backing_name, long_name = alias, None
            elif name.startswith(FUSE_HIDDEN_PREFIX):
                backing_name, long_name = hidden_entry_name(name), None
            else:
                backing_name, long_name = self.names.backing_name(iv, name)
                if long_name is None:
                    self._remember_name(iv, backing_name, name)
            ent = Entry(os.path.join(parent, backing_name), parent, name, iv, long_name)
        with self._lock:
            if len(self._entries) >= _CACHE_LIMIT:
                self._entries.clear()
            self._entries[plain_path] = ent
        return ent

    def _alias(self, parent: str, name: bytes) -> str | None:
        """Backing name of a conflict copy shown as ``name`` (listing the dir if needed)."""
        if conflicts.MARKER not in name:
            return None
        alias = self._aliases.get((parent, name))
        if alias is None:
            try:
                for _ in self.list_dir(parent):
                    pass
            except OSError:
                return None
            alias = self._aliases.get((parent, name))
        return alias

    def path(self, plain_path: str) -> str:
        return self.entry(plain_path).path

    # -- long names --------------------------------------------------------------------
    def write_sidecar(self, ent: Entry) -> bool:
        """Create the sidecar of a long entry; True if this call created it."""
        if ent.long_name is None:
            return False
        path = sidecar_of(ent.path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        except FileExistsError:
            return False
        try:
            os.write(fd, ent.long_name.encode("ascii"))
        finally:
            os.close(fd)
        return True

    def remove_sidecar(self, ent: Entry) -> None:
        if ent.long_name is not None:
            try:
                os.unlink(sidecar_of(ent.path))
            except FileNotFoundError:
                pass

    # -- listing -----------------------------------------------------------------------
    def decrypt_entry_name(self, backing_dir: str, iv: bytes, backing_name: str) -> bytes:
        """Plain name of one backing entry; BadNameError if it is not one of ours."""
        if is_long_entry(backing_name):
            try:
                with open(os.path.join(backing_dir, sidecar_of(backing_name)), "rb") as fh:
                    encrypted = fh.read(4096).decode("ascii")
            except (OSError, UnicodeDecodeError):
                raise BadNameError("long name without a readable sidecar") from None
            if long_entry_name(encrypted) != backing_name:
                raise BadNameError("long-name sidecar does not match its entry")
            return self.names.decrypt(iv, encrypted)
        if is_reserved(backing_name):
            raise BadNameError("reserved name")
        plain = self._plain_names.get((iv, backing_name))
        if plain is None:
            plain = self.names.decrypt(iv, backing_name)
            self._remember_name(iv, backing_name, plain)
        return plain

    def _remember_name(self, iv: bytes, backing_name: str, plain: bytes) -> None:
        with self._lock:
            if len(self._plain_names) >= _CACHE_LIMIT:
                self._plain_names.clear()
            self._plain_names[(iv, backing_name)] = plain

    def list_dir(self, backing_dir: str):
        """Yield (plain name bytes, os.DirEntry) for every decodable entry, conflict copies
        under their display names; warn about (and skip) everything else."""
        iv = self.dir_iv(backing_dir)
        copies = []
        seen: set[bytes] = set()
        with os.scandir(backing_dir) as it:
            for dent in it:
                name = dent.name
                # Our names never contain "." or " "; only such names can be copies.
                copy = conflicts.parse(name) if ("." in name or " " in name) else None
                if copy is not None:
                    copies.append((dent, copy))
                    continue
                if is_reserved(name) and not is_long_entry(name):
                    continue
                try:
                    plain = self.decrypt_entry_name(backing_dir, iv, name)
                except IntegrityError as exc:
                    log.warning("skipping undecodable entry %s: %s",
                                os.path.join(backing_dir, name), exc)
                    continue
                seen.add(plain)
                yield plain, dent
        for dent, copy in copies:
            try:
                plain = self.decrypt_entry_name(backing_dir, iv, copy.base)
            except IntegrityError as exc:
                log.warning("skipping undecodable conflict copy %s: %s", dent.path, exc)
                continue
            try:
                date = copy.date or conflicts.date_of(dent.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
            shown = conflicts.display_name(plain, date, copy.host or "sync")
            n = 2
            while shown in seen:
                shown = conflicts.display_name(plain, date, f"{copy.host or 'sync'} {n}")
                n += 1
            seen.add(shown)
            with self._lock:
                self._aliases[(backing_dir, shown)] = dent.name
            yield shown, dent


Snapshot = dict[str, tuple[int, int, int]]


def snapshot(root: str) -> Snapshot:
    """(inode, size, mtime) of every entry below ``root``, by relative path; what a sync
    pull changed is the difference of two snapshots. Symlinks are never followed."""
    found: Snapshot = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel)) as it:
                for dent in it:
                    path = f"{rel}/{dent.name}" if rel else dent.name
                    try:
                        st = dent.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    found[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(path)
        except OSError:
            continue
    return found


def changed_top_names(before: Snapshot, after: Snapshot) -> set[str]:
    """Backing names in the root whose subtree differs between two snapshots."""
    changed = {path for path in before.keys() | after.keys()
               if before.get(path) != after.get(path)}
    return {path.split("/", 1)[0] for path in changed}
