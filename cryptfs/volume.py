"""The whole encrypted filesystem as a Python API, without FUSE.

``Volume`` speaks plaintext paths ("/dir/file") and file handles; it raises ``OSError``
with the errno a program should see, or ``IntegrityError`` for ciphertext that fails
authentication (the FUSE layer turns that into EIO). The offline commands (ls, cat) and
most tests use it directly.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import keys
from .backing import RENAME_EXCHANGE, RENAME_NOREPLACE, Entry, PathMapper, rename2
from .config import VaultConfig
from .content import ContentCipher
from .errors import ConfigError, IntegrityError
from .files import OpenFile
from .names import DIRIV_NAME, HIDDEN_PREFIX, NameCipher, check_plain_name

log = logging.getLogger("cryptfs")

Owner = Callable[[], "tuple[int, int] | None"]
_OPEN_BASE = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Handle:
    """One open() of a plaintext path."""

    of: OpenFile
    flags: int
    path: str
    dirty: bool = False  # written since open or the last fsync


class Volume:
    """An unlocked vault: plaintext operations on an encrypted backing directory."""

    def __init__(self, backing: str, master_key: bytes, config: VaultConfig, *,
                 read_only: bool = False, rng: Callable[[int], bytes] = os.urandom,
                 owner: Owner | None = None) -> None:
        self.backing = os.path.abspath(backing)
        self.config = config
        self.master_key = master_key
        self.read_only = read_only
        self.content = ContentCipher(keys.derive_subkey(master_key, "content"),
                                     config.block_size, rng)
        self.names = NameCipher(
            keys.derive_subkey(master_key, "name-siv"), keys.derive_subkey(master_key, "name"),
            keys.derive_subkey(master_key, "dir-iv"), keys.derive_subkey(master_key, "symlink"),
            config.name_padding, config.long_name_max, rng,
        )
        self.mapper = PathMapper(self.backing, self.names)
        self._owner = owner
        self._files: dict[tuple[int, int], OpenFile] = {}
        self._handles: dict[int, _Handle] = {}
        self.on_change: Callable[[str], None] | None = None
        # Something below this plaintext path changed in BACKING behind the mount's back
        # (a sync pull): the kernel must forget what it caches there.
        self.on_external_change: Callable[[str], None] | None = None
        self.on_mutation: Callable[[str], None] | None = None  # e.g. schedule a sync
        self.kernel_appends = False  # writeback cache: offsets of O_APPEND come from the kernel
        self._link_names: dict[tuple[int, int], set[str]] = {}
        # Names whose kernel caches were dropped after a write through another link: an
        # open of them that is released may have pinned the stale kernel inode meanwhile.
        self._stale_names: dict[str, float] = {}
        self._table_lock = threading.Lock()
        self._next_fh = itertools.count(1)
        self._reported: set[tuple[str, str]] = set()

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
        vol.mapper.write_dir_iv(vol.backing, vol.names.root_iv())
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
        return cls(backing, master_key, cfg, **kwargs)

    def close(self) -> None:
        with self._table_lock:
            for of in self._files.values():
                os.close(of.fd)
            self._files.clear()
            self._handles.clear()

    # -- helpers -------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "read-only vault")

    def _entry(self, path: str) -> Entry:
        return self.mapper.entry(path)

    def _new_entry(self, path: str) -> Entry:
        """Entry for a name about to be created (validates the name)."""
        self._writable()
        ent = self._entry(path)
        check_plain_name(ent.name)
        return ent

    def _give_to_caller(self, backing_path: str) -> None:
        """As root (e.g. with allow_other), new entries belong to the calling user."""
        if self._owner is None or os.geteuid() != 0:
            return
        who = self._owner()
        if who and who != (0, 0):
            os.chown(backing_path, who[0], who[1], follow_symlinks=False)

    def _mutated(self, path: str) -> None:
        if self.on_mutation is not None:
            self.on_mutation(path)

    def has_dirty_handles(self) -> bool:
        """True while a file written through the mount is still open and not fsynced."""
        return any(h.dirty for h in list(self._handles.values()))

    def report_integrity(self, where: str, exc: Exception) -> None:
        """Log an authentication failure once per (file, problem)."""
        key = (where, str(exc))
        if key not in self._reported:
            if len(self._reported) > 100000:
                self._reported.clear()
            self._reported.add(key)
            log.error("integrity error in %s: %s", where, exc)

    def forget_external_changes(self, top_backing_names: set[str]) -> None:
        """Entries in the root whose subtree changed in BACKING behind the mount (a sync
        pull): drop the path caches and tell the kernel to forget them."""
        self.mapper.clear_caches()
        if self.on_external_change is None:
            return
        iv = self.mapper.dir_iv(self.backing)
        for name in sorted(top_backing_names):
            try:
                plain = self.mapper.decrypt_entry_name(self.backing, iv, name)
            except IntegrityError:
                continue  # not one of our names (a reserved or foreign file)
            self.on_external_change("/" + os.fsdecode(plain))

    # -- attributes ----------------------------------------------------------------------
    def _attrs(self, st: os.stat_result, backing_path: str) -> dict[str, int]:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            size = self.content.plain_size_or_zero(st.st_size)
        elif stat.S_ISLNK(mode):
            try:
                size = len(self.names.decrypt_symlink(os.readlink(backing_path)))
            except IntegrityError:
                size = 0
        else:
            size = st.st_size
        return {
            "st_mode": mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
            "st_uid": st.st_uid, "st_gid": st.st_gid, "st_rdev": st.st_rdev,
            "st_size": size, "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
        }

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        if fh is not None and fh in self._handles:
            of = self._handles[fh].of
            return self._attrs(os.fstat(of.fd), of.label)
        if path is None:
            raise OSError(errno.EBADF, "no path and no handle")
        ent = self._entry(path)
        st = os.lstat(ent.path)
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            self._note_link_name(st, path)
        return self._attrs(st, ent.path)

    def access(self, path: str, mode: int) -> None:
        os.lstat(self._entry(path).path)
        if mode & os.W_OK:
            self._writable()

    def statfs(self) -> dict[str, int]:
        sv = os.statvfs(self.backing)
        return {
            "f_bsize": sv.f_bsize, "f_frsize": sv.f_frsize, "f_blocks": sv.f_blocks,
            "f_bfree": sv.f_bfree, "f_bavail": sv.f_bavail, "f_files": sv.f_files,
            "f_ffree": sv.f_ffree, "f_favail": sv.f_favail, "f_namemax": 255,
        }

    # -- directories ---------------------------------------------------------------------
    def readdir(self, path: str) -> Iterator[tuple[str, int, int]]:
        """(name, file type bits, inode) of every decodable entry."""
        backing_dir = self._entry(path).path
        for plain, dent in self.mapper.list_dir(backing_dir):
            try:
                if dent.is_dir(follow_symlinks=False):
                    mode = stat.S_IFDIR
                elif dent.is_symlink():
                    mode = stat.S_IFLNK
                elif dent.is_file(follow_symlinks=False):
                    mode = stat.S_IFREG
                else:
                    mode = stat.S_IFMT(dent.stat(follow_symlinks=False).st_mode)
            except OSError:
                continue
            yield os.fsdecode(plain), mode, dent.inode()

    def listdir(self, path: str = "/") -> list[str]:
        return sorted(name for name, _, _ in self.readdir(path))

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        ent = self._new_entry(path)
        iv = self.names.child_iv(ent.parent_iv, ent.name)
        # Build the directory under a temporary name, then move it into place: a crash
        # never leaves a directory without its IV.
        tmp = os.path.join(ent.parent, f"cryptfs.{os.urandom(8).hex()}.tmp")
        os.mkdir(tmp, 0o700)
        try:
            self.mapper.write_dir_iv(tmp, iv)
            os.chmod(tmp, mode & 0o7777)
            self._give_to_caller(tmp)
            created = self.mapper.write_sidecar(ent)
            try:
                rename2(tmp, ent.path, RENAME_NOREPLACE)
            except OSError as exc:
                if created:
                    self.mapper.remove_sidecar(ent)
                if exc.errno == errno.EINVAL and os.path.lexists(ent.path):
                    raise OSError(errno.EEXIST, "exists", path) from None
                raise
        except BaseException:
            _remove_tree_quietly(tmp)
            raise
        self._mutated(path)

    @staticmethod
    def _leftovers(backing_dir: str) -> list[str]:
        return [n for n in os.listdir(backing_dir) if n != DIRIV_NAME]

    def rmdir(self, path: str) -> None:
        self._writable()
        ent = self._entry(path)
        if ent.path == self.backing:
            raise OSError(errno.EBUSY, "cannot remove the root")
        st = os.lstat(ent.path)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", path)
        leftovers = self._leftovers(ent.path)
        if leftovers and all(n.startswith(HIDDEN_PREFIX) for n in leftovers):
            # Files unlinked while open wait here for their release, which the kernel
            # sends asynchronously (rm -rf right after reading): give it a moment.
            deadline = time.monotonic() + 1.0
            while leftovers and time.monotonic() < deadline:
                time.sleep(0.01)
                leftovers = self._leftovers(ent.path)
        if leftovers:
            raise OSError(errno.ENOTEMPTY, "directory not empty", path)
        ivfile = os.path.join(ent.path, DIRIV_NAME)
        iv = self.mapper.dir_iv(ent.path)
        try:
            os.unlink(ivfile)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(ent.path)
        except OSError:
            self.mapper.write_dir_iv(ent.path, iv)
            raise
        finally:
            self.mapper.forget_dir(ent.path)
        self.mapper.remove_sidecar(ent)
        self._mutated(path)

    # -- names -----------------------------------------------------------------------
    def unlink(self, path: str) -> None:
        self._writable()
        ent = self._entry(path)
        os.unlink(ent.path)  # EISDIR for a directory, from the kernel
        self.mapper.remove_sidecar(ent)
        self._mutated(path)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self._writable()
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
                RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise OSError(errno.EINVAL, "unsupported rename flags")
        src = self._entry(old)
        dst = self._new_entry(new)
        if src.path == self.backing or dst.path == self.backing:
            raise OSError(errno.EBUSY, "cannot rename the root")
        src_st = os.lstat(src.path)
        src_is_dir = stat.S_ISDIR(src_st.st_mode)
        if src.path == dst.path or _same_inode(src_st, dst.path):
            return  # POSIX: renaming a file onto another link of itself does nothing
        # POSIX lets a directory replace an empty one; in the backing store the "empty"
        # target still holds its IV file, which must go first (and come back on failure).
        emptied_iv = self._empty_target_dir(dst) if src_is_dir and not flags else None
        created = self.mapper.write_sidecar(dst)
        try:
            rename2(src.path, dst.path, flags)
        except OSError:
            if created:
                self.mapper.remove_sidecar(dst)
            if emptied_iv is not None:
                self.mapper.write_dir_iv(dst.path, emptied_iv)
            raise
        if not flags & RENAME_EXCHANGE:
            self.mapper.remove_sidecar(src)
        if src_st.st_nlink > 1 and not src_is_dir:
            self._note_link_name(src_st, new)
        if src_is_dir or flags & RENAME_EXCHANGE:
            self.mapper.clear_caches()
        for handle in list(self._handles.values()):  # open files keep their current name
            if handle.path == old or handle.path.startswith(old.rstrip("/") + "/"):
                self._rename_handle(handle, new + handle.path[len(old):])
        self._mutated(old)
        self._mutated(new)

    @contextlib.contextmanager
    def _named(self, ent: Entry) -> Iterator[None]:
        """Write a new entry's long-name sidecar; take it back if making the entry fails."""
        created = self.mapper.write_sidecar(ent)
        try:
            yield
        except BaseException:
            if created:
                self.mapper.remove_sidecar(ent)
            raise

    def _empty_target_dir(self, dst: Entry) -> bytes | None:
        """If ``dst`` is an empty directory, remove its IV file and return the IV."""
        try:
            if not stat.S_ISDIR(os.lstat(dst.path).st_mode):
                return None
        except FileNotFoundError:
            return None
        if os.listdir(dst.path) != [DIRIV_NAME]:
            raise OSError(errno.ENOTEMPTY, "directory not empty", dst.path)
        iv = self.mapper.dir_iv(dst.path)
        os.unlink(os.path.join(dst.path, DIRIV_NAME))
        return iv

    def link(self, new: str, existing: str) -> None:
        src = self._entry(existing)
        dst = self._new_entry(new)
        if stat.S_ISDIR(os.lstat(src.path).st_mode):
            raise OSError(errno.EPERM, "hard link to a directory")
        with self._named(dst):
            os.link(src.path, dst.path, follow_symlinks=False)
        st = os.lstat(dst.path)
        self._note_link_name(st, existing)
        self._note_link_name(st, new)
        self._mutated(new)

    def symlink(self, path: str, target: str) -> None:
        ent = self._new_entry(path)
        encrypted = self.names.encrypt_symlink(os.fsencode(target))
        with self._named(ent):
            os.symlink(encrypted, ent.path)
        self._give_to_caller(ent.path)
        self._mutated(path)

    def readlink(self, path: str) -> str:
        ent = self._entry(path)
        try:
            stored = os.readlink(ent.path)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise OSError(errno.EINVAL, "not a symlink", path) from None
            raise
        return os.fsdecode(self.names.decrypt_symlink(stored))

    def mknod(self, path: str, mode: int, dev: int = 0) -> None:
        if stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0:
            self.release(self.create(path, mode & 0o7777, os.O_WRONLY | os.O_EXCL))
            return
        ent = self._new_entry(path)
        with self._named(ent):
            os.mknod(ent.path, mode, dev)
        self._give_to_caller(ent.path)
        self._mutated(path)

    # -- metadata ------------------------------------------------------------------------
    def chmod(self, path: str, mode: int) -> None:
        self._writable()
        bpath = self._entry(path).path
        if stat.S_ISLNK(os.lstat(bpath).st_mode):
            raise OSError(errno.EOPNOTSUPP, "cannot chmod a symlink")
        os.chmod(bpath, mode & 0o7777)
        self._mutated(path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._writable()
        os.chown(self._entry(path).path, uid, gid, follow_symlinks=False)
        self._mutated(path)

    def utimens(self, path: str, times: tuple[int | None, int | None] | None = None) -> None:
        """Set (atime_ns, mtime_ns); None means now, a None member means leave as is."""
        self._writable()
        bpath = self._entry(path).path
        self._mutated(path)
        if times is None:
            os.utime(bpath, follow_symlinks=False)
            return
        atime, mtime = times
        if atime is None or mtime is None:
            st = os.lstat(bpath)
            atime = st.st_atime_ns if atime is None else atime
            mtime = st.st_mtime_ns if mtime is None else mtime
        os.utime(bpath, ns=(atime, mtime), follow_symlinks=False)

    # -- open files ----------------------------------------------------------------------
    def _register(self, fd: int, label: str, writable: bool, flags: int, path: str) -> int:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._table_lock:
            of = self._files.get(key)
            if of is None:
                of = OpenFile(fd, self.content, label, writable)
                of.key = key
                self._files[key] = of
            elif writable and not of.writable:
                with of.lock:  # upgrade: keep the read-write descriptor for everyone
                    os.close(of.fd)
                    of.fd = fd
                    of.writable = True
                of.refs += 1
            else:
                os.close(fd)
                of.refs += 1
            of.paths[path] = of.paths.get(path, 0) + 1
            fh = next(self._next_fh)
            self._handles[fh] = _Handle(of, flags, path)
        return fh

    def _rename_handle(self, handle: _Handle, new_path: str) -> None:
        with self._table_lock:
            paths = handle.of.paths
            left = paths.get(handle.path, 1) - 1
            if left:
                paths[handle.path] = left
            else:
                paths.pop(handle.path, None)
            paths[new_path] = paths.get(new_path, 0) + 1
            handle.path = new_path

    def _changed(self, handle: _Handle) -> None:
        """After a write: other names of the same inode (hard links) hold stale kernel
        caches, because libfuse gives each name its own kernel inode."""
        if self.on_change is None or (len(handle.of.paths) == 1 and not self._link_names):
            return  # the usual case: one name, no hard links seen
        others = set(handle.of.paths)
        if self._link_names:
            st = os.fstat(handle.of.fd)
            others |= self._link_names.get((st.st_dev, st.st_ino), set())
        others.discard(handle.path)
        now = time.monotonic()
        for other in others:
            self.on_change(other)
            self._stale_names[other] = now
        if len(self._stale_names) > 1000:
            self._stale_names = {p: t for p, t in self._stale_names.items() if now - t < 60}

    def _note_link_name(self, st: os.stat_result, path: str) -> None:
        """Remember the names seen for multiply-linked files (for ``_changed``)."""
        key = (st.st_dev, st.st_ino)
        with self._table_lock:
            if len(self._link_names) > 10000:
                self._link_names.clear()
            self._link_names.setdefault(key, set()).add(path)

    def _open_backing(self, bpath: str) -> tuple[int, bool]:
        if not self.read_only:
            try:
                return os.open(bpath, os.O_RDWR | _OPEN_BASE), True
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                    raise
        return os.open(bpath, os.O_RDONLY | _OPEN_BASE), False

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._writable()
        ent = self._entry(path)
        st = os.lstat(ent.path)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "is a directory", path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.ENXIO if not stat.S_ISLNK(st.st_mode) else errno.ELOOP,
                          "not a regular file", path)
        fd, writable = self._open_backing(ent.path)
        if flags & (os.O_WRONLY | os.O_RDWR) and not writable:
            os.close(fd)
            raise OSError(errno.EACCES, "backing file is not writable", path)
        fh = self._register(fd, ent.path, writable, flags, path)
        of = self._handles[fh].of
        try:
            if flags & os.O_TRUNC:
                of.truncate(0)
            elif os.fstat(of.fd).st_size <= self.content.backing_size(0):
                # The kernel never reads a file it believes empty, so authenticate an
                # "empty" file here: a cut or forged one fails at open, not silently.
                of.read(0, 1)
        except IntegrityError as exc:
            self.release(fh)
            self.report_integrity(ent.path, exc)
            raise
        except BaseException:
            self.release(fh)
            raise
        return fh

    def create(self, path: str, mode: int = 0o644, flags: int = os.O_WRONLY) -> int:
        ent = self._new_entry(path)
        created_sidecar = self.mapper.write_sidecar(ent)
        try:
            fd = os.open(ent.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_BASE,
                         mode & 0o7777)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            return self.open(path, flags | os.O_TRUNC if flags & os.O_TRUNC else flags)
        except OSError:
            if created_sidecar:
                self.mapper.remove_sidecar(ent)
            raise
        try:
            header = self.content.new_header()
            cipher = self.content.file_cipher(header)
            os.pwrite(fd, header + cipher.encrypt_block(0, b""), 0)
            self._give_to_caller(ent.path)
        except BaseException:
            os.close(fd)
            os.unlink(ent.path)
            raise
        fh = self._register(fd, ent.path, True, flags, path)
        self._handles[fh].dirty = True  # a new file must reach the remote even if empty
        return fh

    def _handle(self, fh: int) -> _Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "bad file handle") from None

    def read(self, fh: int, size: int, offset: int) -> bytes:
        of = self._handle(fh).of
        try:
            return of.read(offset, size)
        except IntegrityError as exc:
            self.report_integrity(of.label, exc)
            raise

    def read_into(self, fh: int, dest, size: int, offset: int) -> int:
        """``read`` into a caller's cffi buffer (the FUSE reply buffer); returns the count."""
        of = self._handle(fh).of
        try:
            return of.read_into(offset, size, dest)
        except IntegrityError as exc:
            self.report_integrity(of.label, exc)
            raise

    def write(self, fh: int, data: bytes, offset: int) -> int:
        handle = self._handle(fh)
        if not handle.flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EBADF, "file not open for writing")
        try:
            append = bool(handle.flags & os.O_APPEND) and not self.kernel_appends
            written = handle.of.write(offset, data, append=append)
        except IntegrityError as exc:
            self.report_integrity(handle.of.label, exc)
            raise
        handle.dirty = True
        self._changed(handle)
        return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._writable()
        if length < 0:
            raise OSError(errno.EINVAL, "negative length")
        if fh is not None and fh in self._handles:
            handle = self._handles[fh]
            handle.of.truncate(length)
            handle.dirty = True
            self._changed(handle)
            return
        if path is None:
            raise OSError(errno.EBADF, "no path and no handle")
        own = self.open(path, os.O_RDWR)
        try:
            handle = self._handles[own]
            handle.of.truncate(length)
            self._changed(handle)
        finally:
            self.release(own)
        self._mutated(path)

    def fsync(self, fh: int, datasync: bool = False) -> None:
        handle = self._handle(fh)
        handle.of.fsync(datasync)
        if handle.dirty:
            handle.dirty = False
            self._mutated(handle.path)

    def release(self, fh: int) -> None:
        with self._table_lock:
            handle = self._handles.pop(fh, None)
            if handle is None:
                return
            since = self._stale_names.get(handle.path) if self._stale_names else None
            if since is not None and self.on_change is not None:
                if time.monotonic() - since < 60:
                    self.on_change(handle.path)
                else:
                    del self._stale_names[handle.path]
            if handle.dirty or handle.flags & os.O_TRUNC:
                self._mutated(handle.path)
            of = handle.of
            left = of.paths.get(handle.path, 1) - 1
            if left:
                of.paths[handle.path] = left
            else:
                of.paths.pop(handle.path, None)
            of.refs -= 1
            if of.refs == 0:
                if self._files.get(of.key) is of:
                    del self._files[of.key]
                os.close(of.fd)

    def fsyncdir(self, path: str) -> None:
        fd = os.open(self._entry(path).path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- whole-file conveniences (offline commands, tests) ------------------------------
    def read_file(self, path: str) -> bytes:
        fh = self.open(path, os.O_RDONLY)
        try:
            of = self._handles[fh].of
            return of.read(0, of.size())
        finally:
            self.release(fh)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        try:
            fh = self.create(path, mode, os.O_WRONLY | os.O_TRUNC)
        except FileExistsError:
            fh = self.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            self.write(fh, data, 0)
        finally:
            self.release(fh)

    def walk(self, top: str = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk over plaintext paths; undecodable entries are skipped."""
        dirs, files = [], []
        for name, mode, _ in self.readdir(top):
            (dirs if stat.S_ISDIR(mode) else files).append(name)
        dirs.sort()
        files.sort()
        yield top, dirs, files
        for d in dirs:
            yield from self.walk(top.rstrip("/") + "/" + d)


def _same_inode(st: os.stat_result, path: str) -> bool:
    try:
        other = os.lstat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _remove_tree_quietly(path: str) -> None:
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass

