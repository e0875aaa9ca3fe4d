"""The whole encrypted filesystem as a Python API, without FUSE.

``Volume`` speaks the kernel's language: inodes (ints, ``ROOT_INO`` = 1) and names (bytes)
within directory inodes, file handles, lookup counts. It raises ``OSError`` with the errno
a program should see, or ``IntegrityError`` for ciphertext that fails authentication (the
FUSE adapter turns that into EIO). Path-based conveniences (``resolve``, ``listdir``,
``read_file``, ``write_file``, ``walk``) serve the offline commands and tests.

Inode numbers are the backing inode numbers of each object's primary backing file
(a file's content, a directory's storage folder, a symlink's or node's object), so hard
links are one inode and numbers are stable across mounts, as gocryptfs does. The root is
inode 1. Backing layout: docs/FORMAT.md (format 2), backing calls: ``store.py``.

Not thread-safe: one request at a time (the adapter serves the kernel from one thread;
large reads and writes spread their cipher work over cores inside ``files.py``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import conflicts, keys, layout
from .config import VaultConfig
from .content import HEADER_LEN, ContentCipher
from .errors import ConfigError, IntegrityError
from .files import OpenFile
from .layout import Kind, Stem
from .names import NameCipher, check_plain_name
from .objects import DIRREF_LEN, ObjectCipher
from .store import RENAME_EXCHANGE, RENAME_NOREPLACE, BackingStore
from .xattrs import XattrStore

log = logging.getLogger("cryptfs")

ROOT_INO = 1
_CACHE_LIMIT = 65536
_KIND_SUFFIXES = tuple((k, "." + k.value if k.value else "") for k in layout.KINDS)
_ALT_ROOT_INO = 1 << 63  # a backing object that happens to have inode number 1


@dataclass(slots=True)
class Attr:
    """Attributes of one inode, as stat(2) shows them (times in nanoseconds)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(slots=True)
class Caller:
    """Who asks: new entries belong to them when the daemon runs as root."""

    uid: int
    gid: int


@dataclass(slots=True, eq=False)
class Node:
    """One inode the kernel (or an offline caller) knows."""

    ino: int
    kind: Kind
    # Directories: their id, storage folder, parent inode and own entry location.
    dir_id: bytes = b""
    storage: str = ""
    parent: int = ROOT_INO
    # Non-directories: every (parent storage, backing entry name) seen for the inode
    # (several for hard links); directories: their one entry.
    names: set[tuple[str, str]] = field(default_factory=set)
    nlookup: int = 0
    of: OpenFile | None = None  # the open backing file (regular files)
    opens: int = 0
    file_id: bytes = b""
    # (mtime, size) of the backing file when the kernel last had its pages: if it still
    # matches at the next open, the kernel may keep them (libfuse's auto_cache, by hand).
    cache_key: tuple[int, int] | None = None


@dataclass(slots=True)
class _Found:
    kind: Kind
    rel: str  # backing path of the entry object
    name: str  # backing entry name
    st: os.stat_result
    stem: Stem


@dataclass(slots=True)
class Handle:
    """One open() of a regular file."""

    node: Node
    flags: int
    dirty: bool = False  # written since open or the last fsync
    keep_cache: bool = False  # the kernel's cached pages of this file are still valid


class Volume:
    """An unlocked vault: the filesystem operations on an encrypted backing directory."""

    def __init__(self, backing: str, master_key: bytes, config: VaultConfig, *,
                 read_only: bool = False, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.backing = os.path.abspath(backing)
        self.config = config
        self.master_key = master_key
        self.read_only = read_only
        subkeys = keys.Subkeys.derive(master_key)
        self.content = ContentCipher(subkeys.content, config.block_size, rng)
        self.names = NameCipher(subkeys)
        self.objects = ObjectCipher(subkeys, rng)
        self.store = BackingStore(self.backing)
        self.xattrs = XattrStore(self.store, self.objects)
        self.max_path = config.max_path
        self.root_storage = self.storage_of(self.names.root_id)
        root = Node(ROOT_INO, Kind.DIR, dir_id=self.names.root_id, storage=self.root_storage,
                    parent=ROOT_INO, nlookup=1)
        self._nodes: dict[int, Node] = {ROOT_INO: root}
        self._handles: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)
        self._dirlists: dict[int, tuple[Node, list[tuple[bytes, str, Kind]]]] = {}
        self._stems: dict[tuple[bytes, bytes], Stem] = {}
        self._plain: dict[tuple[bytes, str], bytes] = {}
        self._dirrefs: dict[tuple[str, int, int], bytes] = {}
        self._subdirs: dict[str, tuple[int, int, int]] = {}
        self._small: dict[int, tuple[int, int, Any]] = {}  # ino -> (mtime, size, parsed)
        self._aliases: dict[tuple[str, bytes], str] = {}
        self._storage_paths: dict[str, str] = {}  # storage folder -> plaintext path
        self._reported: set[tuple[str, str]] = set()
        self._moved_storages: list[str] = []
        # Hooks for the mount: a file was written/closed (schedule a sync), and which
        # backing folders or objects changed (the sync's change journal).
        self.on_mutation: Callable[[str], None] | None = None
        self.on_backing_change: Callable[[str], None] | None = None
        self.kernel_appends = False  # writeback cache: O_APPEND offsets come from the kernel

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def initialize(cls, backing: str, passphrase: bytes, *, master_key: bytes | None = None,
                   rng: Callable[[int], bytes] = os.urandom,
                   **config_args: Any) -> tuple[Volume, bytes]:
        """Make a new, empty vault in ``backing``; returns it and the master key."""
        if os.path.lexists(backing):
            if not os.path.isdir(backing):
                raise ConfigError(f"{backing} exists and is not a directory")
            if os.listdir(backing):
                raise ConfigError(f"{backing} is not empty; a vault needs an empty directory")
        else:
            os.makedirs(backing, mode=0o700)
        master_key = master_key or rng(keys.KEY_BYTES)
        cfg = VaultConfig.create(master_key, passphrase, **config_args)
        vol = cls(backing, master_key, cfg, rng=rng)
        vol._make_storage(vol.root_storage, vol.names.root_id, None, b"", 0o700)
        cfg.save(backing)
        return vol, master_key

    @classmethod
    def unlock(cls, backing: str, *, passphrase: bytes | None = None,
               master_key: bytes | None = None, **kwargs: Any) -> Volume:
        cfg = VaultConfig.load(backing)
        if master_key is not None:
            cfg.verify_master_key(master_key)
        elif passphrase is not None:
            master_key = cfg.unlock(passphrase)
        else:
            raise ValueError("need a passphrase or a master key")
        vol = cls(backing, master_key, cfg, **kwargs)
        try:
            vol.store.check_folder(vol.root_storage)
        except FileNotFoundError:
            raise ConfigError(
                f"{backing}: the root directory's storage ({vol.root_storage}) is missing; "
                "run 'cryptfs fsck --repair'") from None
        return vol

    def close(self) -> None:
        for node in self._nodes.values():
            if node.of is not None:
                os.close(node.of.fd)
                node.of = None
        self._handles.clear()
        self.store.close()

    # -- small helpers ---------------------------------------------------------------
    def storage_of(self, dir_id: bytes) -> str:
        return layout.storage_path(self.names.storage_name(dir_id))

    def _writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "read-only vault")

    def _mutated(self, where: tuple[str, str] | Node | None = None, *also: str) -> None:
        """Tell the mount's sync that something changed: ``on_backing_change`` gets every
        backing folder (or xattr object) that changed, ``on_mutation`` a label for the
        user (the entry's plaintext path)."""
        self._backing_changed(where, *also)
        if self.on_mutation is not None:
            self.on_mutation(self._label(where))

    def _backing_changed(self, where: tuple[str, str] | Node | None = None,
                         *also: str) -> None:
        """``on_backing_change`` for every folder ``where`` touches (the sync journal)."""
        if self.on_backing_change is not None:
            if isinstance(where, tuple):
                folders = [where[0]]
            elif isinstance(where, Node):
                folders = [s for s, _ in where.names]
                if where.kind is Kind.DIR:
                    folders.append(where.storage)
            else:
                folders = []
            for rel in (*folders, *also):
                self.on_backing_change(rel)

    def _label(self, where: tuple[str, str] | Node | None) -> str:
        """Plaintext path of an entry for messages to the user (never logged)."""
        try:
            if isinstance(where, Node):
                if where.kind is Kind.DIR:
                    return self._storage_path_cached(where.storage)
                where = next(iter(where.names), None)
            if where is None:
                return "(unknown)"
            storage, bname = where
            parsed = layout.parse(bname)
            copy = conflicts.parse(bname) if parsed is None else None
            if copy is not None:
                parsed = layout.parse(copy.base)
            if parsed is None or parsed.kind is None:
                return f"{storage}/{bname}"
            dir_id = self._dir_id_of_storage(storage) or self.read_backref(storage)[0]
            name = os.fsdecode(self.decrypt_name(storage, dir_id, parsed))
            return self._storage_path_cached(storage).rstrip("/") + "/" + name
        except (OSError, IntegrityError):
            return "(unknown)"

    def _storage_path_cached(self, storage: str) -> str:
        path = self._storage_paths.get(storage)
        if path is None:
            path = self.path_of_storage(storage)
            if len(self._storage_paths) >= _CACHE_LIMIT:
                self._storage_paths.clear()
            self._storage_paths[storage] = path
        return path

    def report_integrity(self, where: str, exc: Exception) -> None:
        """Log an authentication failure once per (object, problem); never plaintext."""
        key = (where, str(exc))
        if key not in self._reported:
            if len(self._reported) > 100000:
                self._reported.clear()
            self._reported.add(key)
            log.error("integrity error in %s: %s", where, exc)

    def _node(self, ino: int) -> Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise OSError(errno.ESTALE, "unknown inode") from None

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if node.kind is not Kind.DIR:
            raise OSError(errno.ENOTDIR, "not a directory")
        return node

    @staticmethod
    def _ino(st: os.stat_result) -> int:
        return st.st_ino if st.st_ino != ROOT_INO else _ALT_ROOT_INO

    def clear_caches(self) -> None:
        """Forget derived facts about the backing tree (after a change behind our back).
        Safe to call from another thread (the sync's): the caches are replaced, never
        emptied under a reader."""
        self._dirrefs = {}
        self._subdirs = {}
        self._small = {}
        self._aliases = {}
        self._storage_paths = {}
        self.xattrs.clear_cache()
        self.store.forget_folders()
        self.store.invalidate_folder_fds()

    # -- names -------------------------------------------------------------------------
    def _stem(self, dir_id: bytes, name: bytes) -> Stem:
        key = (dir_id, name)
        stem = self._stems.get(key)
        if stem is None:
            stem = layout.stem_for(self.names.encrypt(dir_id, name), self.max_path)
            if len(self._stems) >= _CACHE_LIMIT:
                self._stems.clear()
            self._stems[key] = stem
        return stem

    def decrypt_name(self, storage: str, dir_id: bytes, parsed: layout.Parsed) -> bytes:
        """Plain name of one entry; IntegrityError if it is not one of this directory's."""
        key = (dir_id, parsed.stem)
        plain = self._plain.get(key)
        if plain is not None:
            return plain
        if parsed.is_long:
            try:
                encrypted = self.store.read_small(f"{storage}/{parsed.sidecar}", 4096)
                encrypted_s = encrypted.decode("ascii")
            except (OSError, UnicodeDecodeError):
                raise IntegrityError("long name without a readable sidecar") from None
            if layout.long_stem(encrypted_s) != parsed.stem:
                raise IntegrityError("long-name sidecar does not match its entry")
        else:
            encrypted_s = parsed.stem
        plain = self.names.decrypt(dir_id, encrypted_s)
        if len(self._plain) >= _CACHE_LIMIT:
            self._plain.clear()
        self._plain[key] = plain
        return plain

    def _find(self, parent: Node, name: bytes) -> _Found | None:
        """The entry ``name`` of directory ``parent``, whatever its kind, or None."""
        stem = self._stem(parent.dir_id, name)
        found = self._probe(parent.storage, stem)
        if found is None and conflicts.MARKER in name:
            alias = self._alias(parent, name)
            if alias is not None:
                parsed = layout.parse(conflicts.parse(alias).base)
                rel = f"{parent.storage}/{alias}"
                with contextlib.suppress(FileNotFoundError):
                    return _Found(parsed.kind, rel, alias, self.store.lstat(rel), stem)
        return found

    def _probe(self, storage: str, stem: Stem) -> _Found | None:
        """The entry with this stem, of whichever kind exists. A miss (every create
        starts with one) costs four faccessat(2) calls, no exceptions."""
        store = self.store
        # faccessat says "no" also when the daemon (not root) may not search the folder
        # (a 0600 directory): then every kind is looked at with lstat.
        exact = store.is_root or store.searchable(storage)
        dirfd = -1
        if exact:
            try:
                dirfd = store.folder_fd(storage)
            except OSError:
                exact = False
        access = os.access
        for kind, suffix in _KIND_SUFFIXES:
            name = stem.stem + suffix
            if exact and not access(name, os.F_OK, dir_fd=dirfd, follow_symlinks=False):
                continue
            rel = f"{storage}/{name}"
            try:
                st = store.owner_access(storage, lambda r=rel: store.lstat(r), os.X_OK)
            except FileNotFoundError:
                continue
            return _Found(kind, rel, name, st, stem)
        return None

    def _alias(self, parent: Node, name: bytes) -> str | None:
        """Backing name of a sync tool's conflict copy shown as ``name``."""
        key = (parent.storage, name)
        if key not in self._aliases:
            for _ in self._list(parent):
                pass
        return self._aliases.get(key)

    # -- node bookkeeping ----------------------------------------------------------------
    def _dir_id_of(self, rel: str, st: os.stat_result) -> bytes:
        key = (rel, st.st_ino, st.st_mtime_ns)
        dir_id = self._dirrefs.get(key)
        if dir_id is None:
            blob = self.store.read_small(rel, DIRREF_LEN + 1)
            dir_id = self.objects.open_dirref(blob)
            if len(self._dirrefs) >= _CACHE_LIMIT:
                self._dirrefs.clear()
            self._dirrefs[key] = dir_id
        return dir_id

    def _register(self, parent: Node, found: _Found) -> tuple[Node, os.stat_result]:
        """The node of an entry (made or updated) and the stat of its primary object."""
        if not stat.S_ISREG(found.st.st_mode):  # never follow or serve a planted object
            raise IntegrityError(f"entry {found.rel} is not a regular backing file")
        if found.kind is Kind.DIR:
            dir_id = self._dir_id_of(found.rel, found.st)
            storage = self.storage_of(dir_id)
            try:
                self.store.check_folder(storage)
                st = self.store.lstat(storage)
            except FileNotFoundError:
                raise IntegrityError(
                    f"storage folder {storage} of directory entry {found.rel} is missing"
                ) from None
            except OSError as exc:
                raise IntegrityError(f"storage {storage} is not a folder: {exc}") from None
            ino = self._ino(st)
            node = self._nodes.get(ino)
            if node is None or node.kind is not Kind.DIR or node.dir_id != dir_id:
                node = Node(ino, Kind.DIR, dir_id=dir_id, storage=storage)
                self._nodes[ino] = node
            node.parent = parent.ino
            node.names = {(parent.storage, found.name)}
            return node, st
        st = found.st
        ino = self._ino(st)
        node = self._nodes.get(ino)
        if node is None or node.kind is not found.kind:
            node = Node(ino, found.kind)
            self._nodes[ino] = node
        node.names.add((parent.storage, found.name))
        return node, st

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references to ``ino``."""
        node = self._nodes.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.nlookup = max(0, node.nlookup - count)
        if node.nlookup == 0 and node.opens == 0:
            del self._nodes[ino]

    def add_lookup(self, ino: int) -> None:
        """One more kernel reference (a readdirplus entry the kernel accepted)."""
        node = self._nodes.get(ino)
        if node is not None:
            node.nlookup += 1

    # -- attributes ------------------------------------------------------------------------
    def _stat_node(self, node: Node) -> os.stat_result:
        if node.kind is Kind.DIR:
            return self.store.lstat(node.storage)
        if node.of is not None:
            return os.fstat(node.of.fd)
        for where in list(node.names):
            try:
                return self.store.lstat(f"{where[0]}/{where[1]}")
            except FileNotFoundError:
                node.names.discard(where)
        raise OSError(errno.ENOENT, "no longer exists")

    def _entry_rel(self, node: Node) -> str:
        """A backing path of a non-directory node (one of its names)."""
        for where in list(node.names):
            rel = f"{where[0]}/{where[1]}"
            if self.store.exists(rel):
                return rel
            node.names.discard(where)
        raise OSError(errno.ENOENT, "no longer exists")

    def _attr(self, node: Node, st: os.stat_result) -> Attr:
        mode, rdev, nlink, size = st.st_mode, 0, st.st_nlink, st.st_size
        if node.kind is Kind.FILE:
            size = self.content.plain_size_or_zero(st.st_size)
        elif node.kind is Kind.DIR:
            nlink = 2 + self._count_subdirs(node, st)
        elif node.kind is Kind.SYMLINK:
            mode = stat.S_IFLNK | 0o777
            size = len(self._symlink_target(node, st))
        else:
            mode, rdev = self._node_spec(node, st)
            size = 0
        return Attr(node.ino, mode, nlink, st.st_uid, st.st_gid, rdev, size, st.st_blocks,
                    st.st_blksize, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)

    def _small_object(self, node: Node, st: os.stat_result, parse: Callable[[bytes], Any]):
        cached = self._small.get(node.ino)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        rel = self._entry_rel(node)
        value = parse(self.store.read_small(rel, 8192))
        if len(self._small) >= _CACHE_LIMIT:
            self._small.clear()
        self._small[node.ino] = (st.st_mtime_ns, st.st_size, value)
        return value

    def _symlink_target(self, node: Node, st: os.stat_result) -> bytes:
        return self._small_object(node, st, self.objects.open_symlink)

    def _node_spec(self, node: Node, st: os.stat_result) -> tuple[int, int]:
        """(st_mode, st_rdev) of a special node; IntegrityError (EIO) if forged."""
        mode, rdev = self._small_object(node, st, self.objects.open_node)
        if stat.S_IFMT(mode) not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise IntegrityError("special node of an impossible type")
        return mode, rdev

    def _count_subdirs(self, node: Node, st: os.stat_result) -> int:
        """Subdirectories of a directory (its link count is 2 + this). Counted once by
        listing its storage folder, then kept up to date by our own mkdir/rmdir/rename;
        ``clear_caches`` (a change behind our back) makes it count again. Not keyed on the
        folder's mtime: every file created there changes it, and recounting then would
        make filling a big directory quadratic."""
        cached = self._subdirs.get(node.storage)
        if cached is not None and cached[1] == st.st_ino:
            return cached[2]
        count = 0
        try:
            with self.store.scandir(node.storage) as it:
                for dent in it:
                    if dent.name.endswith(".d") and layout.parse(dent.name) is not None:
                        count += 1
        except OSError:
            return 0
        self._set_subdirs(node.storage, st, count)
        return count

    def _set_subdirs(self, storage: str, st: os.stat_result, count: int) -> None:
        if len(self._subdirs) >= _CACHE_LIMIT:
            self._subdirs = {}
        self._subdirs[storage] = (0, st.st_ino, count)

    def _adjust_subdirs(self, storage: str, delta: int) -> None:
        """Keep the subdirectory count of ``storage`` right after our own mkdir/rmdir."""
        cached = self._subdirs.get(storage)
        if cached is not None:
            self._subdirs[storage] = (0, cached[1], max(0, cached[2] + delta))

    def getattr(self, ino: int, fh: int | None = None) -> Attr:
        node = self._node(ino)
        return self._attr(node, self._stat_node(node))

    def lookup(self, parent_ino: int, name: bytes, count: bool = True) -> Attr:
        """Attributes of entry ``name`` in directory ``parent_ino``; ENOENT if none.
        Adds one kernel reference unless ``count`` is false."""
        parent = self._dir(parent_ino)
        if name in (b".", b".."):
            node = parent if name == b"." else self._node(parent.parent)
            attr = self.getattr(node.ino)
        else:
            if len(name) > 255:
                raise OSError(errno.ENAMETOOLONG, "name too long")
            found = self._find(parent, name)
            if found is None:
                raise OSError(errno.ENOENT, "no such entry")
            node, st = self._register(parent, found)
            attr = self._attr(node, st)
        if count:
            node.nlookup += 1
        return attr

    def statfs(self) -> dict[str, int]:
        sv = self.store.statvfs()
        return {
            "f_bsize": sv.f_bsize, "f_frsize": sv.f_frsize, "f_blocks": sv.f_blocks,
            "f_bfree": sv.f_bfree, "f_bavail": sv.f_bavail, "f_files": sv.f_files,
            "f_ffree": sv.f_ffree, "f_favail": sv.f_favail, "f_namemax": 255,
        }

    # -- listing ---------------------------------------------------------------------------
    def _list(self, parent: Node) -> Iterator[tuple[bytes, str, Kind]]:
        """(plain name, backing name, kind) of every decodable entry; conflict copies under
        their display names; everything else skipped with a warning."""
        copies = []
        seen: set[bytes] = set()
        with self.store.scandir(parent.storage) as it:
            names = [dent.name for dent in it]
        for bname in names:
            parsed = layout.parse(bname)
            if parsed is None:
                if not bname.startswith(layout.RESERVED_PREFIX):
                    copy = conflicts.parse(bname)
                    if copy is not None:
                        copies.append((bname, copy))
                        continue
                if not bname.startswith(layout.RESERVED_PREFIX):
                    log.warning("skipping foreign entry %s/%s", parent.storage, bname)
                continue
            if parsed.kind is None:
                continue  # a long-name sidecar
            try:
                plain = self.decrypt_name(parent.storage, parent.dir_id, parsed)
            except IntegrityError as exc:
                self.report_integrity(f"{parent.storage}/{bname}", exc)
                continue
            seen.add(plain)
            yield plain, bname, parsed.kind
        for bname, copy in copies:
            parsed = layout.parse(copy.base)
            if parsed is None or parsed.kind is None:
                continue
            try:
                plain = self.decrypt_name(parent.storage, parent.dir_id, parsed)
                date = copy.date or conflicts.date_of(
                    self.store.lstat(f"{parent.storage}/{bname}").st_mtime)
            except (IntegrityError, OSError) as exc:
                log.warning("skipping conflict copy %s/%s: %s", parent.storage, bname, exc)
                continue
            shown = conflicts.display_name(plain, date, copy.host or "sync")
            n = 2
            while shown in seen:
                shown = conflicts.display_name(plain, date, f"{copy.host or 'sync'} {n}")
                n += 1
            seen.add(shown)
            if len(self._aliases) >= _CACHE_LIMIT:
                self._aliases.clear()
            self._aliases[(parent.storage, shown)] = bname
            yield shown, bname, parsed.kind

    def list_storage(self, storage: str, dir_id: bytes) -> Iterator[tuple[bytes, str, Kind]]:
        """(plain name, backing name, kind) of every entry of the directory ``dir_id``
        stored in ``storage``, as a listing shows them (conflict copies under their
        display names): for walkers that need backing names (sync ignore rules)."""
        return self._list(Node(0, Kind.DIR, dir_id=dir_id, storage=storage))

    def opendir(self, ino: int) -> int:
        node = self._dir(ino)
        dh = next(self._next_fh)
        self._dirlists[dh] = (node, [])
        return dh

    def readdir(self, dh: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        """(name, attributes, next offset) from offset ``start`` (0 = the beginning). The
        caller adds a lookup reference (``add_lookup``) for every entry it passes on,
        except ``.`` and ``..``."""
        try:
            node, entries = self._dirlists[dh]
        except KeyError:
            raise OSError(errno.EBADF, "bad directory handle") from None
        if start == 0:
            entries = list(self._list(node))
            self._dirlists[dh] = (node, entries)
        if start < 1:
            yield b".", self.getattr(node.ino), 1
        if start < 2:
            yield b"..", self.getattr(node.parent if node.parent in self._nodes
                                      else node.ino), 2
        for index in range(max(start, 2) - 2, len(entries)):
            plain, bname, kind = entries[index]
            rel = f"{node.storage}/{bname}"
            try:
                st = self.store.lstat(rel)
                child, primary = self._register(
                    node, _Found(kind, rel, bname, st, Stem(bname, bname)))
                attr = self._attr(child, primary)
            except FileNotFoundError:
                continue  # gone since the listing was taken
            except (IntegrityError, OSError) as exc:  # a foreign or planted object
                self.report_integrity(rel, exc)
                continue
            yield plain, attr, index + 3

    def releasedir(self, dh: int) -> None:
        self._dirlists.pop(dh, None)

    # -- creating entries ----------------------------------------------------------------
    def _new_entry(self, parent_ino: int, name: bytes) -> tuple[Node, Stem]:
        """Parent and stem for a name about to be created; EEXIST if it is taken."""
        self._writable()
        check_plain_name(name)
        parent = self._dir(parent_ino)
        if self._find(parent, name) is not None:
            raise OSError(errno.EEXIST, "file exists")
        return parent, self._stem(parent.dir_id, name)

    @contextlib.contextmanager
    def _sidecar(self, storage: str, stem: Stem) -> Iterator[None]:
        """Write a long name's sidecar for a new entry; take it back if that fails."""
        created = False
        if stem.is_long:
            try:
                self.store.create_new(f"{storage}/{stem.sidecar}",
                                      stem.encrypted.encode("ascii"), 0o600)
                created = True
            except FileExistsError:
                pass
        try:
            yield
        except BaseException:
            if created:
                self.store.unlink_quietly(f"{storage}/{stem.sidecar}")
            raise

    def _owner_of_new(self, parent: Node, caller: Caller | None) -> tuple[int, int, bool]:
        """(uid, gid, inherit set-group-ID) for a new entry; -1 = leave as created."""
        pst = self.store.lstat(parent.storage)
        sgid = bool(pst.st_mode & stat.S_ISGID)
        uid = caller.uid if caller is not None else -1
        gid = caller.gid if caller is not None else -1
        if sgid:
            gid = pst.st_gid  # POSIX: a set-group-ID directory gives its group
        if not self.store.is_root:
            uid = -1  # a normal user's daemon cannot give files away
            if gid == os.getegid():
                gid = -1
        return uid, gid, sgid

    def _apply_owner(self, rel: str, uid: int, gid: int) -> None:
        if uid == -1 and gid == -1:
            return
        try:
            self.store.chown(rel, uid, gid)
        except PermissionError:
            if self.store.is_root:
                raise  # a normal user's daemon keeps its own group when it cannot chown

    def _exact_mode(self, rel: str, mode: int) -> None:
        """Apply ``mode`` as given: the kernel applied the caller's umask already."""
        if mode & self.store.umask or mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
            self.store.chmod(rel, mode)

    def _make_storage(self, storage: str, dir_id: bytes, parent_id: bytes | None,
                      name: bytes, mode: int) -> None:
        self.store.makedirs(storage.rpartition("/")[0])
        self.store.mkdir(storage, 0o700)
        try:
            self.store.create_new(f"{storage}/{layout.BACKREF_NAME}",
                                  self.objects.seal_backref(self.names.storage_name(dir_id),
                                                            dir_id, parent_id, name))
            self.store.chmod(storage, mode)
        except BaseException:
            self.store.unlink_quietly(f"{storage}/{layout.BACKREF_NAME}")
            with contextlib.suppress(OSError):
                self.store.rmdir(storage)
            raise

    def mkdir(self, parent_ino: int, name: bytes, mode: int = 0o777,
              caller: Caller | None = None) -> Attr:
        parent, stem = self._new_entry(parent_ino, name)
        uid, gid, sgid = self._owner_of_new(parent, caller)
        mode = (mode & 0o7777) | (stat.S_ISGID if sgid else 0)
        for generation in itertools.count():
            dir_id = self.names.child_id(parent.dir_id, generation, name)
            storage = self.storage_of(dir_id)
            if not self.store.exists(storage):
                break
        self._make_storage(storage, dir_id, parent.dir_id, name, mode)
        self._apply_owner(storage, uid, gid)
        entry = f"{parent.storage}/{stem.name(Kind.DIR)}"
        try:
            with self.store.writable_folder(parent.storage), self._sidecar(parent.storage,
                                                                           stem):
                self.store.create_new(entry, self.objects.seal_dirref(dir_id))
        except BaseException:
            self._remove_storage(storage)
            raise
        self._adjust_subdirs(parent.storage, +1)
        st = self.store.lstat(storage)
        node = Node(self._ino(st), Kind.DIR, dir_id=dir_id, storage=storage,
                    parent=parent.ino, names={(parent.storage, stem.name(Kind.DIR))},
                    nlookup=1)
        self._nodes[node.ino] = node
        self._mutated((parent.storage, stem.name(Kind.DIR)), storage)
        return self._attr(node, st)

    def _remove_storage(self, storage: str) -> None:
        self.store.forget_folder_fd(storage)
        with self.store.writable_folder(storage):
            for bname in self.store.listdir(storage):
                if bname == layout.BACKREF_NAME or layout.is_temp(bname):
                    self.store.unlink_quietly(f"{storage}/{bname}")
        self.store.rmdir(storage)

    def _create_object(self, parent_ino: int, name: bytes, kind: Kind, blob: bytes,
                       caller: Caller | None) -> Attr:
        parent, stem = self._new_entry(parent_ino, name)
        uid, gid, _ = self._owner_of_new(parent, caller)
        rel = f"{parent.storage}/{stem.name(kind)}"
        with self.store.writable_folder(parent.storage), self._sidecar(parent.storage, stem):
            st = self.store.create_new(rel, blob, 0o600)
        self._apply_owner(rel, uid, gid)
        st = self.store.lstat(rel)
        node = Node(self._ino(st), kind, names={(parent.storage, stem.name(kind))},
                    nlookup=1)
        self._nodes[node.ino] = node
        self._mutated((parent.storage, stem.name(kind)))
        return self._attr(node, st)

    def symlink(self, parent_ino: int, name: bytes, target: bytes,
                caller: Caller | None = None) -> Attr:
        return self._create_object(parent_ino, name, Kind.SYMLINK,
                                   self.objects.seal_symlink(target), caller)

    def mknod(self, parent_ino: int, name: bytes, mode: int, rdev: int = 0,
              caller: Caller | None = None) -> Attr:
        if stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0:
            fh, attr = self.create(parent_ino, name, mode & 0o7777, os.O_WRONLY, caller)
            self.release(fh)
            return attr
        if stat.S_IFMT(mode) not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
                                      stat.S_IFBLK):
            raise OSError(errno.EINVAL, "unsupported file type")
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            rdev = 0
        return self._create_object(parent_ino, name, Kind.NODE,
                                   self.objects.seal_node(mode, rdev), caller)

    def create(self, parent_ino: int, name: bytes, mode: int = 0o644,
               flags: int = os.O_WRONLY, caller: Caller | None = None) -> tuple[int, Attr]:
        """Create and open a regular file; (file handle, attributes)."""
        parent, stem = self._new_entry(parent_ino, name)
        uid, gid, _ = self._owner_of_new(parent, caller)
        rel = f"{parent.storage}/{stem.name(Kind.FILE)}"
        header = self.content.new_header()
        blob = header + self.content.file_cipher(header).encrypt_block(0, b"")
        with self.store.writable_folder(parent.storage), self._sidecar(parent.storage, stem):
            fd = self.store.open(rel, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o7777)
        try:
            os.pwrite(fd, blob, 0)
            if mode & self.store.umask or mode & (stat.S_ISUID | stat.S_ISGID):
                os.fchmod(fd, mode & 0o7777)
            if uid != -1 or gid != -1:
                try:
                    os.fchown(fd, uid, gid)
                except PermissionError:
                    if self.store.is_root:
                        raise
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            self.store.unlink_quietly(rel)
            raise
        node = Node(self._ino(st), Kind.FILE, names={(parent.storage, stem.name(Kind.FILE))},
                    nlookup=1, file_id=header[2:])
        self._nodes[node.ino] = node
        node.of = OpenFile(fd, self.content, rel, True)
        fh = self._add_handle(node, flags)
        self._handles[fh].dirty = True  # a new file must reach the remote even if empty
        self._backing_changed((parent.storage, stem.name(Kind.FILE)))
        return fh, self._attr(node, st)

    def link(self, ino: int, new_parent_ino: int, new_name: bytes) -> Attr:
        node = self._node(ino)
        if node.kind is Kind.DIR:
            raise OSError(errno.EPERM, "hard link to a directory")
        parent, stem = self._new_entry(new_parent_ino, new_name)
        src = self._entry_rel(node)
        bname = stem.name(node.kind)
        with self.store.writable_folder(parent.storage), self._sidecar(parent.storage, stem):
            self.store.link(src, f"{parent.storage}/{bname}")
        node.names.add((parent.storage, bname))
        node.nlookup += 1
        self._mutated((parent.storage, bname))
        return self.getattr(ino)

    # -- removing entries ------------------------------------------------------------------
    def _existing(self, parent_ino: int, name: bytes) -> tuple[Node, _Found]:
        self._writable()
        parent = self._dir(parent_ino)
        if name in (b".", b".."):
            raise OSError(errno.EINVAL if name == b"." else errno.ENOTEMPTY, "invalid name")
        found = self._find(parent, name)
        if found is None:
            raise OSError(errno.ENOENT, "no such entry")
        return parent, found

    def _drop_sidecar(self, storage: str, found: _Found) -> None:
        parsed = layout.parse(found.name)
        if parsed is not None and parsed.is_long:
            self.store.unlink_quietly(f"{storage}/{parsed.sidecar}")

    def unlink(self, parent_ino: int, name: bytes) -> None:
        parent, found = self._existing(parent_ino, name)
        if found.kind is Kind.DIR:
            raise OSError(errno.EISDIR, "is a directory")
        node = self._nodes.get(self._ino(found.st))
        file_id = b""
        if found.kind is Kind.FILE and found.st.st_nlink == 1 and self.xattrs.in_use():
            file_id = node.file_id if node is not None and node.file_id else \
                self._read_file_id(found.rel)
        with self.store.writable_folder(parent.storage):
            self.store.unlink(found.rel)
            self._drop_sidecar(parent.storage, found)
        if node is not None:
            node.names.discard((parent.storage, found.name))
        if file_id and (node is None or node.of is None):
            self.xattrs.drop(b"f", file_id)  # the inode is gone with its last name
        self._small.pop(self._ino(found.st), None)
        self._mutated((parent.storage, found.name),
                      *([self._xattr_rel((b"f", file_id))] if file_id else []))

    def _read_file_id(self, rel: str) -> bytes:
        try:
            fd = self.store.owner_access(rel, lambda: self.store.open(rel, os.O_RDONLY),
                                         os.R_OK)
        except OSError:
            return b""
        try:
            return self.content.parse_header(os.pread(fd, HEADER_LEN, 0))
        except IntegrityError:
            return b""
        finally:
            os.close(fd)

    def _storage_entries(self, storage: str) -> list[str]:
        """Names in a storage folder other than its back-reference and temporary files."""
        return [n for n in self.store.listdir(storage)
                if n != layout.BACKREF_NAME and not layout.is_temp(n)]

    def rmdir(self, parent_ino: int, name: bytes) -> None:
        parent, found = self._existing(parent_ino, name)
        if found.kind is not Kind.DIR:
            raise OSError(errno.ENOTDIR, "not a directory")
        dir_id = self._dir_id_of(found.rel, found.st)
        storage = self.storage_of(dir_id)
        if self.store.exists(storage):
            if self._storage_entries(storage):
                raise OSError(errno.ENOTEMPTY, "directory not empty")
        with self.store.writable_folder(parent.storage):
            self.store.unlink(found.rel)
            self._drop_sidecar(parent.storage, found)
        if self.store.exists(storage):
            try:
                self._remove_storage(storage)
            except OSError as exc:  # something arrived meanwhile: keep it reachable
                log.warning("could not remove storage %s after rmdir: %s", storage, exc)
        if self.xattrs.in_use():
            self.xattrs.drop(b"d", dir_id)
        self._storage_paths.pop(storage, None)
        self._adjust_subdirs(parent.storage, -1)
        self._mutated((parent.storage, found.name), storage,
                      self._xattr_rel((b"d", dir_id)))

    # -- rename ----------------------------------------------------------------------------
    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               flags: int = 0) -> None:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
                RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise OSError(errno.EINVAL, "unsupported rename flags")
        src_parent, src = self._existing(old_parent, old_name)
        check_plain_name(new_name)
        dst_parent = self._dir(new_parent)
        dst = self._find(dst_parent, new_name)
        stem = self._stem(dst_parent.dir_id, new_name)
        if dst is not None and flags & RENAME_NOREPLACE:
            raise OSError(errno.EEXIST, "file exists")
        if dst is None and flags & RENAME_EXCHANGE:
            raise OSError(errno.ENOENT, "no such entry")
        if dst is not None and dst.rel == src.rel:
            return
        if dst is not None and not flags and dst.kind is Kind.FILE and \
                src.kind is Kind.FILE and (dst.st.st_dev, dst.st.st_ino) == \
                (src.st.st_dev, src.st.st_ino):
            return  # POSIX: renaming a file onto another link of itself does nothing
        self._moved_storages = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.store.writable_folder(src_parent.storage))
            if dst_parent.storage != src_parent.storage:
                stack.enter_context(self.store.writable_folder(dst_parent.storage))
            if flags & RENAME_EXCHANGE:
                self._exchange(src_parent, src, old_name, dst_parent, dst, new_name)
            else:
                self._move(src_parent, src, dst_parent, dst, stem, new_name, flags)
        self._mutated((dst_parent.storage, stem.name(src.kind)), src_parent.storage,
                      *self._moved_storages)

    def _move(self, src_parent: Node, src: _Found, dst_parent: Node, dst: _Found | None,
              stem: Stem, new_name: bytes, flags: int) -> None:
        target = f"{dst_parent.storage}/{stem.name(src.kind)}"
        dst_storage = dst_id = None
        dst_file_id = b""
        if dst is not None:
            if src.kind is Kind.DIR and dst.kind is not Kind.DIR:
                raise OSError(errno.ENOTDIR, "not a directory")
            if src.kind is not Kind.DIR and dst.kind is Kind.DIR:
                raise OSError(errno.EISDIR, "is a directory")
            if dst.kind is Kind.DIR:
                dst_id = self._dir_id_of(dst.rel, dst.st)
                dst_storage = self.storage_of(dst_id)
                if self.store.exists(dst_storage) and self._storage_entries(dst_storage):
                    raise OSError(errno.ENOTEMPTY, "directory not empty")
            elif dst.kind is Kind.FILE and dst.st.st_nlink == 1 and self.xattrs.in_use():
                gone_node = self._nodes.get(self._ino(dst.st))
                if gone_node is None or gone_node.of is None:  # its last name goes
                    dst_file_id = gone_node.file_id if gone_node is not None and \
                        gone_node.file_id else self._read_file_id(dst.rel)
        with self._sidecar(dst_parent.storage, stem):
            self.store.rename(src.rel, target, RENAME_NOREPLACE if flags else 0)
        if dst is not None and dst.rel != target:
            self.store.unlink_quietly(dst.rel)  # same name, another kind
        src_parsed = layout.parse(src.name)
        if src_parsed is not None and src_parsed.is_long and \
                (src_parent.storage, src_parsed.stem) != (dst_parent.storage, stem.stem):
            self.store.unlink_quietly(f"{src_parent.storage}/{src_parsed.sidecar}")
        if dst is not None:
            gone = self._nodes.get(self._ino(dst.st)) if dst.kind is not Kind.DIR else None
            if gone is not None:
                gone.names.discard((dst_parent.storage, dst.name))
            if dst_storage is not None:
                self._moved_storages.append(dst_storage)
                if self.store.exists(dst_storage):
                    with contextlib.suppress(OSError):
                        self._remove_storage(dst_storage)
                if dst_id is not None and self.xattrs.in_use():
                    self.xattrs.drop(b"d", dst_id)
            if dst_file_id:
                self.xattrs.drop(b"f", dst_file_id)
        new_bname = stem.name(src.kind)
        node = self._nodes.get(self._ino(src.st)) if src.kind is not Kind.DIR else None
        if node is not None:
            node.names.discard((src_parent.storage, src.name))
            node.names.add((dst_parent.storage, new_bname))
        if src.kind is Kind.DIR:
            self._moved_dir(dst_parent, new_bname, new_name)
            if src_parent.storage != dst_parent.storage:
                self._adjust_subdirs(src_parent.storage, -1)
                if dst is None:
                    self._adjust_subdirs(dst_parent.storage, +1)
            elif dst is not None:  # one directory replaced another in the same parent
                self._adjust_subdirs(src_parent.storage, -1)

    def _dir_id_of_storage(self, storage: str) -> bytes | None:
        for node in self._nodes.values():
            if node.kind is Kind.DIR and node.storage == storage:
                return node.dir_id
        return None

    def _moved_dir(self, dst_parent: Node, new_bname: str, name: bytes) -> None:
        """A directory's entry moved: point its back-reference at the new place."""
        rel = f"{dst_parent.storage}/{new_bname}"
        dir_id = self._dir_id_of(rel, self.store.lstat(rel))
        storage = self.storage_of(dir_id)
        self._moved_storages.append(storage)
        try:
            st = self.store.lstat(storage)
        except FileNotFoundError:
            log.warning("storage %s of a moved directory is missing", storage)
            return
        try:
            with self.store.writable_folder(storage):
                self.store.replace(f"{storage}/{layout.BACKREF_NAME}",
                                   self.objects.seal_backref(self.names.storage_name(dir_id),
                                                             dir_id, dst_parent.dir_id, name))
            # The back-reference is bookkeeping: keep the directory's mtime as it was.
            self.store.utime(storage, (st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            log.warning("could not update the back-reference of %s: %s", storage, exc)
        self._storage_paths.clear()  # paths below the moved directory changed
        node = self._nodes.get(self._ino(st))
        if node is not None and node.kind is Kind.DIR:
            node.parent = dst_parent.ino
            node.names = {(dst_parent.storage, new_bname)}

    def _exchange(self, src_parent: Node, src: _Found, old_name: bytes, dst_parent: Node,
                  dst: _Found, new_name: bytes) -> None:
        src_stem = self._stem(src_parent.dir_id, old_name)
        dst_stem = self._stem(dst_parent.dir_id, new_name)
        new_src = f"{dst_parent.storage}/{dst_stem.name(src.kind)}"  # src object's new name
        new_dst = f"{src_parent.storage}/{src_stem.name(dst.kind)}"
        if src.kind is dst.kind:
            self.store.rename(src.rel, dst.rel, RENAME_EXCHANGE)
        else:
            # Names carry the kind: swap through a temporary name (not atomic).
            tmp = f"{src_parent.storage}/cryptfs.{os.urandom(8).hex()}.tmp"
            self.store.rename(src.rel, tmp)
            self.store.rename(dst.rel, new_dst, RENAME_NOREPLACE)
            self.store.rename(tmp, new_src, RENAME_NOREPLACE)
        for found, old_parent, new_parent, new_rel, name in (
                (src, src_parent, dst_parent, new_src, new_name),
                (dst, dst_parent, src_parent, new_dst, old_name)):
            new_bname = new_rel.rpartition("/")[2]
            if found.kind is Kind.DIR:
                self._moved_dir(new_parent, new_bname, name)
            else:
                node = self._nodes.get(self._ino(found.st))
                if node is not None:
                    node.names.discard((old_parent.storage, found.name))
                    node.names.add((new_parent.storage, new_bname))
        if src.kind is Kind.DIR and src_parent.storage != dst_parent.storage:
            self._adjust_subdirs(src_parent.storage, -1)
            self._adjust_subdirs(dst_parent.storage, +1)
        if dst.kind is Kind.DIR and src_parent.storage != dst_parent.storage:
            self._adjust_subdirs(dst_parent.storage, -1)
            self._adjust_subdirs(src_parent.storage, +1)

    # -- metadata --------------------------------------------------------------------------
    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None,
                atime_ns: int | None = None, mtime_ns: int | None = None,
                fh: int | None = None) -> Attr:
        """Change what is given (None = leave); ``*_ns`` = -1 means now."""
        self._writable()
        node = self._node(ino)
        if size is not None:
            self._truncate(node, size, fh)
        rel = node.storage if node.kind is Kind.DIR else None
        fd = node.of.fd if node.of is not None else None

        def where() -> str:
            return rel if rel is not None else self._entry_rel(node)

        if mode is not None:
            if node.kind is Kind.NODE:
                st = self._stat_node(node)
                old, rdev = self._node_spec(node, st)
                self.store.rewrite(where(), self.objects.seal_node(
                    stat.S_IFMT(old) | (mode & 0o7777), rdev))
            elif node.kind is not Kind.SYMLINK:
                if fd is not None and rel is None:
                    os.fchmod(fd, mode & 0o7777)
                else:
                    self.store.chmod(where(), mode)
        if uid is not None or gid is not None:
            u, g = -1 if uid is None else uid, -1 if gid is None else gid
            if fd is not None and rel is None:
                os.fchown(fd, u, g)
            else:
                self.store.chown(where(), u, g)
        if atime_ns is not None or mtime_ns is not None:
            st = self._stat_node(node)
            now = time.time_ns()
            times = (st.st_atime_ns if atime_ns is None else (now if atime_ns < 0 else atime_ns),
                     st.st_mtime_ns if mtime_ns is None else (now if mtime_ns < 0 else mtime_ns))
            if fd is not None and rel is None:
                os.utime(fd, ns=times)
            else:
                self.store.utime(where(), times)
        if mode is not None or uid is not None or gid is not None or \
                atime_ns is not None or mtime_ns is not None:
            self._mutated(node)
        return self.getattr(ino)

    def _truncate(self, node: Node, length: int, fh: int | None) -> None:
        if node.kind is Kind.DIR:
            raise OSError(errno.EISDIR, "is a directory")
        if node.kind is not Kind.FILE:
            raise OSError(errno.EINVAL, "not a regular file")
        if length < 0:
            raise OSError(errno.EINVAL, "negative length")
        handle = self._handles.get(fh) if fh is not None else None
        if handle is not None:
            handle.node.of.truncate(length)
            handle.dirty = True
            return
        own = self.open(node.ino, os.O_WRONLY)
        try:
            self._handles[own].node.of.truncate(length)
            self._handles[own].dirty = True
        finally:
            self.release(own)

    def readlink(self, ino: int) -> bytes:
        node = self._node(ino)
        if node.kind is not Kind.SYMLINK:
            raise OSError(errno.EINVAL, "not a symlink")
        st = self._stat_node(node)
        return self._small_object(node, st, self.objects.open_symlink)

    # -- open files ------------------------------------------------------------------------
    def _add_handle(self, node: Node, flags: int) -> int:
        node.opens += 1
        fh = next(self._next_fh)
        self._handles[fh] = Handle(node, flags)
        return fh

    def _open_backing(self, rel: str, write: bool) -> tuple[int, bool]:
        if not self.read_only:
            try:
                return self.store.owner_access(
                    rel, lambda: self.store.open(rel, os.O_RDWR), os.R_OK | os.W_OK), True
            except OSError as exc:
                if write or exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                    raise
        return self.store.owner_access(
            rel, lambda: self.store.open(rel, os.O_RDONLY), os.R_OK), False

    def open(self, ino: int, flags: int) -> int:
        """Open a regular file; returns a file handle."""
        write = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC))
        if write:
            self._writable()
        node = self._node(ino)
        if node.kind is Kind.DIR:
            raise OSError(errno.EISDIR, "is a directory")
        if node.kind is not Kind.FILE:
            raise OSError(errno.ELOOP if node.kind is Kind.SYMLINK else errno.ENXIO,
                          "not a regular file")
        if node.of is None or (write and not node.of.writable):
            rel = self._entry_rel(node)
            fd, writable = self._open_backing(rel, write)
            if node.of is None:
                node.of = OpenFile(fd, self.content, rel, writable)
            else:
                with node.of.lock:  # upgrade: the read-write descriptor for everyone
                    os.close(node.of.fd)
                    node.of.fd = fd
                    node.of.writable = writable
        fh = self._add_handle(node, flags)
        st = os.fstat(node.of.fd)
        key = (st.st_mtime_ns, st.st_size)
        self._handles[fh].keep_cache = node.cache_key == key
        node.cache_key = key
        try:
            if flags & os.O_TRUNC:
                node.of.truncate(0)
                self._handles[fh].dirty = True
            elif st.st_size <= self.content.backing_size(0):
                # The kernel never reads a file it believes empty, so authenticate an
                # "empty" file here: a cut or forged one fails at open, not silently.
                node.of.read(0, 1)
        except IntegrityError as exc:
            self.release(fh)
            self.report_integrity(node.of.label if node.of else "file", exc)
            raise
        except BaseException:
            self.release(fh)
            raise
        return fh

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "bad file handle") from None

    def read(self, fh: int, offset: int, size: int) -> bytes:
        of = self._handle(fh).node.of
        try:
            return of.read(offset, size)
        except IntegrityError as exc:
            self.report_integrity(of.label, exc)
            raise

    def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not handle.flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EBADF, "file not open for writing")
        of = handle.node.of
        if not of.writable:
            raise OSError(errno.EBADF, "file not open for writing")
        try:
            append = bool(handle.flags & os.O_APPEND) and not self.kernel_appends
            written = of.write(offset, data, append=append)
        except IntegrityError as exc:
            self.report_integrity(of.label, exc)
            raise
        if not handle.dirty:
            # journalled at the first write, before it returns: a daemon killed before
            # the close still leaves the file's folder in the sync journal
            self._backing_changed(handle.node)
        handle.dirty = True
        return written

    def fsync(self, fh: int, datasync: bool = False) -> None:
        handle = self._handle(fh)
        handle.node.of.fsync(datasync)
        if handle.dirty:
            handle.dirty = False
            self._mutated(handle.node)

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        if handle.dirty:
            self._mutated(node)
        node.opens -= 1
        if node.of is not None:
            with contextlib.suppress(OSError):
                st = os.fstat(node.of.fd)  # our own writes went through the kernel's cache
                node.cache_key = (st.st_mtime_ns, st.st_size)
        if node.opens == 0 and node.of is not None:
            of, node.of = node.of, None
            unlinked = False
            if self.xattrs.in_use():
                with contextlib.suppress(OSError):
                    unlinked = os.fstat(of.fd).st_nlink == 0
            if unlinked:
                with contextlib.suppress(IntegrityError, OSError):
                    self.xattrs.drop(b"f", self.content.parse_header(
                        os.pread(of.fd, HEADER_LEN, 0)))
            os.close(of.fd)
            if node.nlookup == 0 and node.ino != ROOT_INO:
                self._nodes.pop(node.ino, None)

    def keep_cache(self, fh: int) -> bool:
        """Whether the kernel may keep its cached pages for this open (nothing changed the
        backing file since they were cached)."""
        return self._handle(fh).keep_cache

    def has_dirty_handles(self) -> bool:
        """True while a file written through the mount is still open and not fsynced."""
        return any(h.dirty for h in self._handles.values())

    def open_entries(self) -> set[str]:
        """Backing paths of the regular files open through this volume now. Safe to call
        from another thread (the sync's): it works on a snapshot of the inode table."""
        nodes = list(self._nodes.values())
        return {f"{storage}/{bname}" for node in nodes if node.of is not None
                for storage, bname in list(node.names)}

    def fsyncdir(self, ino: int) -> None:
        self.store.fsync_dir(self._dir(ino).storage)

    def fsyncdir_handle(self, dh: int) -> None:
        entry = self._dirlists.get(dh)
        if entry is None:
            raise OSError(errno.EBADF, "bad directory handle")
        self.store.fsync_dir(entry[0].storage)

    # -- extended attributes (FORMAT.md §9) ------------------------------------------------
    def _xattr_owner(self, node: Node) -> tuple[bytes, bytes]:
        if node.kind is Kind.DIR:
            return b"d", node.dir_id
        if node.kind is not Kind.FILE:
            raise OSError(errno.EPERM, "no user attributes on this kind of file")
        if not node.file_id:
            if node.of is not None:
                node.file_id = self.content.parse_header(os.pread(node.of.fd, HEADER_LEN, 0))
            else:
                node.file_id = self._read_file_id(self._entry_rel(node))
                if not node.file_id:
                    raise IntegrityError("file header is missing or invalid")
        return b"f", node.file_id

    def getxattr(self, ino: int, name: bytes) -> bytes:
        node = self._node(ino)
        if not name.startswith(b"user.") or node.kind not in (Kind.FILE, Kind.DIR):
            raise OSError(errno.ENODATA, "no such attribute")
        if not self.xattrs.in_use():
            raise OSError(errno.ENODATA, "no such attribute")
        value = self.xattrs.load(*self._xattr_owner(node)).get(name)
        if value is None:
            raise OSError(errno.ENODATA, "no such attribute")
        return value

    def listxattr(self, ino: int) -> list[bytes]:
        node = self._node(ino)
        if node.kind not in (Kind.FILE, Kind.DIR) or not self.xattrs.in_use():
            return []
        return sorted(self.xattrs.load(*self._xattr_owner(node)))

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        self._writable()
        node = self._node(ino)
        if not name.startswith(b"user."):
            raise OSError(errno.EOPNOTSUPP, "only user. attributes are stored")
        owner = self._xattr_owner(node)
        self.xattrs.set(*owner, name, value, flags)
        self._touch_ctime(node)
        self._mutated(node, self._xattr_rel(owner))

    def removexattr(self, ino: int, name: bytes) -> None:
        self._writable()
        node = self._node(ino)
        if not name.startswith(b"user.") or node.kind not in (Kind.FILE, Kind.DIR):
            raise OSError(errno.ENODATA, "no such attribute")
        owner = self._xattr_owner(node)
        self.xattrs.remove(*owner, name)
        self._touch_ctime(node)
        self._mutated(node, self._xattr_rel(owner))

    def _xattr_rel(self, owner: tuple[bytes, bytes]) -> str:
        return layout.xattr_path(self.objects.xattr_storage_name(*owner))

    def _touch_ctime(self, node: Node) -> None:
        """An attribute change is an inode change: bump ctime (chmod to the same mode)."""
        with contextlib.suppress(OSError):
            st = self._stat_node(node)
            if node.of is not None and node.kind is Kind.FILE:
                os.fchmod(node.of.fd, stat.S_IMODE(st.st_mode))
            else:
                self.store.chmod(node.storage if node.kind is Kind.DIR
                                 else self._entry_rel(node), stat.S_IMODE(st.st_mode))

    # -- paths: offline commands and tests -------------------------------------------------
    def resolve(self, path: str, follow: bool = False) -> int:
        """Inode of a plaintext path (``/a/b``); ENOENT/ENOTDIR as a kernel would give.
        Adds no kernel references."""
        ino = ROOT_INO
        for part in _parts(path):
            ino = self.lookup(ino, part, count=False).ino
        return ino

    def resolve_parent(self, path: str) -> tuple[int, bytes]:
        parts = _parts(path)
        if not parts:
            raise OSError(errno.EBUSY, "the root has no parent")
        ino = ROOT_INO
        for part in parts[:-1]:
            ino = self.lookup(ino, part, count=False).ino
        return ino, parts[-1]

    def stat(self, path: str) -> Attr:
        return self.getattr(self.resolve(path))

    def listdir(self, path: str = "/") -> list[str]:
        node = self._dir(self.resolve(path))
        return sorted(os.fsdecode(name) for name, _, _ in self._list(node))

    def scandir(self, path: str = "/") -> list[tuple[str, Attr]]:
        """(name, attributes) of every entry of a directory, sorted by name."""
        dh = self.opendir(self.resolve(path))
        try:
            return sorted((os.fsdecode(n), a) for n, a, _ in self.readdir(dh, 0)
                          if n not in (b".", b".."))
        finally:
            self.releasedir(dh)

    def read_file(self, path: str) -> bytes:
        fh = self.open(self.resolve(path), os.O_RDONLY)
        try:
            of = self._handles[fh].node.of
            return of.read(0, of.size())
        finally:
            self.release(fh)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        parent, name = self.resolve_parent(path)
        try:
            fh, _ = self.create(parent, name, mode, os.O_WRONLY)
        except FileExistsError:
            fh = self.open(self.lookup(parent, name, count=False).ino,
                           os.O_WRONLY | os.O_TRUNC)
        try:
            if data:
                self.write(fh, 0, data)
        finally:
            self.release(fh)

    def mkdir_path(self, path: str, mode: int = 0o755) -> Attr:
        parent, name = self.resolve_parent(path)
        return self.mkdir(parent, name, mode)

    def symlink_path(self, path: str, target: str) -> Attr:
        return self.symlink(*self.resolve_parent(path), os.fsencode(target))

    def unlink_path(self, path: str) -> None:
        self.unlink(*self.resolve_parent(path))

    def rmdir_path(self, path: str) -> None:
        self.rmdir(*self.resolve_parent(path))

    def rename_path(self, old: str, new: str, flags: int = 0) -> None:
        self.rename(*self.resolve_parent(old), *self.resolve_parent(new), flags)

    def walk(self, top: str = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk over plaintext paths; undecodable entries are skipped."""
        dirs, files = [], []
        for name, kind in sorted((os.fsdecode(n), k)
                                 for n, _, k in self._list(self._dir(self.resolve(top)))):
            (dirs if kind is Kind.DIR else files).append(name)
        yield top, dirs, files
        for d in dirs:
            yield from self.walk(top.rstrip("/") + "/" + d)


    def name_conflict_copy(self, rel: str, host: str, date: str
                           ) -> tuple[bytes, str] | None:
        """Rename the entry ``rel`` (this device's version, possibly carrying a sync
        tool's marker such as ``.cryptfsconflict1``) to the encrypted form of
        ``NAME (conflict DATE HOST).EXT`` in its directory; returns (that name, the new
        backing path), or None if ``rel`` is not an entry of this vault."""
        self._writable()
        storage, _, bname = rel.rpartition("/")
        parsed = layout.parse(bname)
        if parsed is None:
            copy = conflicts.parse(bname)
            parsed = layout.parse(copy.base) if copy is not None else None
        if parsed is None or parsed.kind is None:
            return None
        dir_id, _, _ = self.read_backref(storage)
        plain = self.decrypt_name(storage, dir_id, parsed)
        shown, n = conflicts.display_name(plain, date, host), 2
        while True:
            stem = self._stem(dir_id, shown)
            if self._probe(storage, stem) is None:
                break
            shown = conflicts.display_name(plain, date, f"{host} {n}")
            n += 1
        target = f"{storage}/{stem.name(parsed.kind)}"
        with self._sidecar(storage, stem):
            self.store.rename(rel, target, RENAME_NOREPLACE)
        if parsed.is_long and bname == f"{parsed.stem}.{parsed.kind.value}".rstrip("."):
            self.store.unlink_quietly(f"{storage}/{parsed.sidecar}")  # the entry moved
        self.clear_caches()
        return shown, target

    # -- backing paths <-> plaintext paths ---------------------------------------------
    def read_backref(self, storage: str) -> tuple[bytes, bytes | None, bytes]:
        """(dir id, parent id, name) of a storage folder; IntegrityError if forged."""
        storage_name = storage.replace(f"{layout.STORAGE_ROOT}/", "", 1).replace("/", "")
        blob = self.store.read_small(f"{storage}/{layout.BACKREF_NAME}", 4096)
        dir_id, parent_id, name = self.objects.open_backref(storage_name, blob)
        if self.names.storage_name(dir_id) != storage_name:
            raise IntegrityError(f"back-reference of {storage} names another directory")
        return dir_id, parent_id, name

    def path_of_storage(self, storage: str) -> str:
        """Plaintext path of the directory stored in ``storage`` (from back-references)."""
        parts: list[bytes] = []
        seen: set[str] = set()
        while storage != self.root_storage:
            if storage in seen or len(parts) > 4096:
                raise IntegrityError("back-references form a loop")
            seen.add(storage)
            _, parent_id, name = self.read_backref(storage)
            if parent_id is None:
                raise IntegrityError(f"{storage} claims to be the root")
            parts.append(name)
            storage = self.storage_of(parent_id)
        return "/" + "/".join(os.fsdecode(p) for p in reversed(parts))

    def plain_path_of(self, rel: str) -> str:
        """Plaintext path of a backing path (an entry, a sidecar or a storage folder)."""
        parts = rel.strip("/").split("/")
        if len(parts) < 3 or parts[0] != layout.STORAGE_ROOT or len(parts) > 4:
            raise OSError(errno.EINVAL, "not an entry or storage folder of this vault")
        storage = "/".join(parts[:3])
        top = self.path_of_storage(storage)
        if len(parts) == 3:
            return top
        parsed = layout.parse(parts[3])
        if parsed is None:
            copy = conflicts.parse(parts[3])
            parsed = layout.parse(copy.base) if copy is not None else None
        if parsed is None:
            raise OSError(errno.EINVAL, f"{parts[3]} is not an entry name")
        dir_id, _, _ = self.read_backref(storage)
        name = self.decrypt_name(storage, dir_id, parsed)
        return top.rstrip("/") + "/" + os.fsdecode(name)

    def backing_path_of(self, path: str) -> str:
        """The backing entry of a plaintext path (a directory's entry file, not its
        storage folder; the root is its storage folder). For a name that does not exist,
        where a regular file of that name would be."""
        parts = _parts(path)
        if not parts:
            return self.root_storage
        parent, name = self.resolve_parent(path)
        node = self._dir(parent)
        found = self._find(node, name)
        if found is None:
            return f"{node.storage}/{self._stem(node.dir_id, name).name(Kind.FILE)}"
        return found.rel

    def storage_path_of(self, path: str) -> str:
        """The storage folder of a plaintext directory path."""
        return self._dir(self.resolve(path)).storage


def _parts(path: str) -> list[bytes]:
    return [os.fsencode(p) for p in path.split("/") if p and p != "."]
