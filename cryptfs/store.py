"""Backing store I/O: every system call on the backing directory goes through here.

Paths are relative to the vault root (``d/ab/cdef…/name``) and resolved against a
directory descriptor of the root, so no backing call ever sees a path longer than the
vault's ``max_path`` budget, whatever the plaintext depth. Knows nothing of encryption.

Two portability and permission concerns live here (the peers' known bug classes):

- ``rename`` with ``RENAME_NOREPLACE``/``RENAME_EXCHANGE`` falls back where the backing
  file system lacks ``renameat2`` flags (NFS, sshfs, 9p, SMB, exFAT, FUSE): no-replace
  becomes ``link`` + ``unlink`` (atomic) or, without hard links, a checked rename.
- A daemon running as a normal user owns every backing object but is still subject to
  their permission bits, which mirror the plaintext ones (a 0200 file, a 0500 directory).
  The kernel has already checked the *caller's* rights (``default_permissions``), so
  ``owner_access`` briefly adds the owner bits the daemon needs and restores the mode,
  as gocryptfs does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterator
from typing import TypeVar

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_OPEN_BASE = os.O_NOFOLLOW | os.O_CLOEXEC
_T = TypeVar("_T")


class BackingStore:
    """System calls relative to one vault root."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.is_root = os.geteuid() == 0
        self._renameat2_works = _renameat2 is not None
        self._folders: set[str] = set()  # bucket folders checked to be real folders
        self._folder_fds: dict[str, int] = {}
        self._fds_generation = self._fds_wanted = 0
        self._links_work = True
        mask = os.umask(0)
        os.umask(mask)
        self.umask = mask

    def close(self) -> None:
        self.forget_folder_fds()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- descriptors of storage folders (lookups: one path component instead of four) ----
    _FOLDER_FDS = 64

    def folder_fd(self, rel: str) -> int:
        """An open descriptor of the folder ``rel`` (kept in a small cache; a folder that
        is removed keeps its descriptor valid, every lookup in it then misses)."""
        if self._fds_generation != self._fds_wanted:  # invalidated (maybe by another
            self._fds_generation = self._fds_wanted  # thread): closed here, by the user
            self.forget_folder_fds()
        fds = self._folder_fds
        fd = fds.pop(rel, None)
        if fd is None:
            fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW,
                         dir_fd=self.fd)
            if len(fds) >= self._FOLDER_FDS:
                old = next(iter(fds))
                os.close(fds.pop(old))
        fds[rel] = fd  # most recently used last
        return fd

    def forget_folder_fd(self, rel: str) -> None:
        fd = self._folder_fds.pop(rel, None)
        if fd is not None:
            os.close(fd)

    def invalidate_folder_fds(self) -> None:
        """Thread-safe: the next ``folder_fd`` call (in its own thread) reopens folders
        (after a sync may have removed and re-created some)."""
        self._fds_wanted += 1

    def forget_folder_fds(self) -> None:
        fds, self._folder_fds = self._folder_fds, {}
        for fd in fds.values():
            os.close(fd)

    def abspath(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    # -- plain calls -----------------------------------------------------------------
    def lstat(self, rel: str) -> os.stat_result:
        return os.stat(rel, dir_fd=self.fd, follow_symlinks=False)

    def present(self, rel: str) -> bool:
        """Whether ``rel`` exists (faccessat, no exception on a miss); reliable only when
        the daemon may search its folder (root, or ``searchable``)."""
        return os.access(rel, os.F_OK, dir_fd=self.fd, follow_symlinks=False)

    def searchable(self, rel: str) -> bool:
        """Whether the daemon may look up names in the folder ``rel``."""
        return os.access(rel, os.X_OK, dir_fd=self.fd)

    def exists(self, rel: str) -> bool:
        try:
            os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def open(self, rel: str, flags: int, mode: int = 0o600) -> int:
        return os.open(rel, flags | _OPEN_BASE, mode, dir_fd=self.fd)

    def read_small(self, rel: str, limit: int = 1 << 20) -> bytes:
        """Whole content of a small object (directory entry, symlink, back-reference)."""
        fd = self.owner_access(rel, lambda: self.open(rel, os.O_RDONLY), os.R_OK)
        try:
            data = os.read(fd, limit + 1)
            if len(data) > limit:
                raise OSError(errno.EFBIG, "object too large", rel)
            return data
        finally:
            os.close(fd)

    def create_new(self, rel: str, data: bytes, mode: int = 0o600) -> os.stat_result:
        """Create ``rel`` (EEXIST if it exists) holding ``data``; returns its stat."""
        fd = self.open(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            try:
                if data:
                    _write_all(fd, data)
                return os.fstat(fd)
            except BaseException:
                os.unlink(rel, dir_fd=self.fd)
                raise
        finally:
            os.close(fd)

    def rewrite(self, rel: str, data: bytes) -> None:
        """Replace the content of the existing object ``rel`` in place (same inode)."""
        fd = self.owner_access(rel, lambda: self.open(rel, os.O_WRONLY), os.W_OK)
        try:
            _write_all(fd, data)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def replace(self, rel: str, data: bytes, mode: int = 0o600) -> None:
        """Atomically replace (or create) ``rel``: temp file in the same folder + rename."""
        folder, _, _ = rel.rpartition("/")
        tmp = f"{folder}/cryptfs.{os.urandom(8).hex()}.tmp" if folder else \
            f"cryptfs.{os.urandom(8).hex()}.tmp"
        self.create_new(tmp, data, mode)
        try:
            os.rename(tmp, rel, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink_quietly(tmp)
            raise

    def unlink(self, rel: str) -> None:
        os.unlink(rel, dir_fd=self.fd)

    def unlink_quietly(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rel, dir_fd=self.fd)

    def mkdir(self, rel: str, mode: int = 0o700) -> None:
        os.mkdir(rel, mode, dir_fd=self.fd)

    def makedirs(self, rel: str) -> None:
        """mkdir -p of a bucket folder (``d/ab``) below the root; every level must be a
        real folder (a symlink planted there is refused, never followed)."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in self._folders:
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(prefix, 0o700, dir_fd=self.fd)
            self.check_folder(prefix)

    def check_folder(self, rel: str) -> None:
        """Refuse (ELOOP/ENOTDIR) unless every level of ``rel`` is a real folder: the
        backing store must never lead outside the vault through a planted symlink."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in self._folders:
                continue
            mode = self.lstat(prefix).st_mode
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ELOOP if stat.S_ISLNK(mode) else errno.ENOTDIR,
                              "not a folder", prefix)
            if i < len(parts):  # buckets (d, d/ab) never change kind: remember them
                self._folders.add(prefix)

    def forget_folders(self) -> None:
        self._folders = set()

    def rmdir(self, rel: str) -> None:
        os.rmdir(rel, dir_fd=self.fd)

    def listdir(self, rel: str) -> list[str]:
        fd = self.owner_access(rel, lambda: self.open(rel, os.O_RDONLY | os.O_DIRECTORY),
                               os.R_OK | os.X_OK)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def scandir(self, rel: str) -> Iterator[Iterator[os.DirEntry]]:
        """``os.scandir`` of a folder (entries' ``path`` are not usable: use names)."""
        fd = self.owner_access(rel, lambda: self.open(rel, os.O_RDONLY | os.O_DIRECTORY),
                               os.R_OK | os.X_OK)
        try:
            with os.scandir(fd) as it:
                yield it
        finally:
            os.close(fd)

    def chmod(self, rel: str, mode: int) -> None:
        os.chmod(rel, mode & 0o7777, dir_fd=self.fd)  # never a symlink (FORMAT.md §6.2)

    def chown(self, rel: str, uid: int, gid: int) -> None:
        os.chown(rel, uid, gid, dir_fd=self.fd, follow_symlinks=False)

    def utime(self, rel: str, ns: tuple[int, int]) -> None:
        os.utime(rel, ns=ns, dir_fd=self.fd, follow_symlinks=False)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def fsync_dir(self, rel: str) -> None:
        fd = self.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.fd)

    # -- rename ----------------------------------------------------------------------
    def rename(self, src: str, dst: str, flags: int = 0) -> None:
        """rename(2) with renameat2 flags, falling back where the backing FS lacks them."""
        if flags == 0:
            os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            return
        if self._renameat2_works:
            ret = _renameat2(self.fd, os.fsencode(src), self.fd, os.fsencode(dst), flags)
            if ret == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                raise OSError(err, os.strerror(err), dst)
            # No flag support here (NFS, sshfs, 9p, exFAT...): fall back from now on.
            self._renameat2_works = False
        if flags & RENAME_EXCHANGE:
            raise OSError(errno.EINVAL, "the backing file system cannot exchange names")
        self._rename_noreplace(src, dst)

    def _rename_noreplace(self, src: str, dst: str) -> None:
        if self._links_work and not stat.S_ISDIR(self.lstat(src).st_mode):
            try:
                self.link(src, dst)  # atomic: fails with EEXIST if dst exists
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise
                self._links_work = False
            else:
                self.unlink(src)
                return
        if self.exists(dst):  # last resort: a checked rename (racy, like gocryptfs)
            raise OSError(errno.EEXIST, "file exists", dst)
        os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    # -- permissions -------------------------------------------------------------------
    def owner_access(self, rel: str, call: Callable[[], _T], need: int) -> _T:
        """Run ``call``; if the daemon (not root) lacks ``need`` on ``rel`` that it owns,
        add the owner bits for the duration of the call and restore the mode."""
        try:
            return call()
        except PermissionError:
            if self.is_root:
                raise
            st = self.lstat(rel)
            if st.st_uid != os.geteuid():
                raise
            bits = (stat.S_IRUSR if need & os.R_OK else 0) | \
                   (stat.S_IWUSR if need & os.W_OK else 0) | \
                   (stat.S_IXUSR if need & os.X_OK or stat.S_ISDIR(st.st_mode) else 0)
            os.chmod(rel, stat.S_IMODE(st.st_mode) | bits, dir_fd=self.fd)
            try:
                return call()
            finally:
                os.chmod(rel, stat.S_IMODE(st.st_mode), dir_fd=self.fd)

    @contextlib.contextmanager
    def writable_folder(self, rel: str) -> Iterator[None]:
        """Make the storage folder ``rel`` writable by the daemon (not root) meanwhile."""
        if self.is_root:
            yield
            return
        st = self.lstat(rel)
        mode = stat.S_IMODE(st.st_mode)
        wanted = mode | stat.S_IRWXU
        if mode == wanted or st.st_uid != os.geteuid():
            yield
            return
        os.chmod(rel, wanted, dir_fd=self.fd)
        try:
            yield
        finally:
            os.chmod(rel, mode, dir_fd=self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
