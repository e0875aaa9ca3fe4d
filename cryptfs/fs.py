"""FUSE adapter: translate each callback into a ``Volume`` call and map failures to errno.

This is the only module that imports the FUSE binding (mfusepy on libfuse 3). It holds
no filesystem logic: what the filesystem does is defined in ``volume.py``.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

# mfusepy picks libfuse 2 when both are installed unless told otherwise; libfuse 3 gives
# 1 MiB writes (docs: ../shared/notes/bindings.md). Must happen before the import.
if "FUSE_LIBRARY_PATH" not in os.environ and ctypes.util.find_library("fuse3"):
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy
from nacl._sodium import ffi as _ffi

from . import lognames
from .errors import IntegrityError
from .volume import Volume

log = logging.getLogger("cryptfs")

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def _fuse_op(func: Callable[..., Any]) -> Callable[..., Any]:
    """Let OSError through (mfusepy returns its errno); everything else becomes EIO."""

    @functools.wraps(func)
    def wrapper(self: CryptFS, *args: Any) -> Any:
        try:
            return func(self, *args)
        except OSError:
            raise
        except IntegrityError as exc:
            if func.__name__ not in ("read", "read_into", "write"):  # reported with the block
                where = lognames.shown(args[0]) if args else ""
                self.volume.report_integrity(f"{func.__name__} {where}", exc)
            raise mfusepy.FuseOSError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s %s", func.__name__,
                          lognames.shown(args[0]) if args else "")
            raise mfusepy.FuseOSError(errno.EIO) from None

    return wrapper


FUSE_CAP_WRITEBACK_CACHE = 1 << 16


class CryptFS(mfusepy.Operations):
    """mfusepy operations backed by a Volume."""

    use_ns = True
    writeback = False  # opt-in kernel writeback cache (mount --writeback)

    def __init__(self, volume: Volume, on_ready: Callable[[], None] | None = None,
                 autosync: Any = None, mountpoint: str | None = None) -> None:
        self.volume = volume
        self._mountpoint = mountpoint
        self._on_ready = on_ready
        self._autosync = autosync
        if autosync is not None:
            volume.on_mutation = autosync.notify
        self._invalidator = _Invalidator()
        volume.on_change = self._invalidator.submit
        volume.on_external_change = self._invalidator.submit_top

    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        if self.writeback and conn_info is not None:
            if conn_info.capable & FUSE_CAP_WRITEBACK_CACHE:
                conn_info.want |= FUSE_CAP_WRITEBACK_CACHE
                # The kernel now owns file sizes and O_APPEND offsets, and never takes a
                # size from getattr again for an inode it holds: a file changed behind
                # its back must leave the kernel's caches (``_Invalidator.submit_top``).
                self.volume.kernel_appends = True
                self._invalidator.drop_entries = True
            else:
                log.warning("the kernel does not offer the writeback cache")
        self._invalidator.start()
        if self._autosync is not None:
            self._autosync.start()
        if self._mountpoint is not None:
            threading.Thread(target=_raise_readahead, args=(self._mountpoint,),
                             daemon=True).start()
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path: str) -> None:
        if self._autosync is not None:
            self._autosync.stop(final_sync=True)  # upload what is pending before exiting
        self._invalidator.stop()
        self.volume.close()
        _syncfs(self.volume.backing)

    @_fuse_op
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        return self.volume.getattr(path, fh)

    @_fuse_op
    def access(self, path: str, amode: int) -> int:
        self.volume.access(path, amode)
        return 0

    @_fuse_op
    def readdir(self, path: str, fh: int) -> list[Any]:
        entries: list[Any] = [".", ".."]
        entries.extend((name, {"st_mode": mode, "st_ino": ino}, 0)
                       for name, mode, ino in self.volume.readdir(path))
        return entries

    @_fuse_op
    def readlink(self, path: str) -> str:
        return self.volume.readlink(path)

    @_fuse_op
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.volume.mknod(path, mode, dev)
        return 0

    @_fuse_op
    def mkdir(self, path: str, mode: int) -> int:
        self.volume.mkdir(path, mode)
        return 0

    @_fuse_op
    def unlink(self, path: str) -> int:
        self.volume.unlink(path)
        return 0

    @_fuse_op
    def rmdir(self, path: str) -> int:
        self.volume.rmdir(path)
        return 0

    @_fuse_op
    def symlink(self, target: str, source: str) -> int:
        # mfusepy: create the link ``target`` whose content is ``source``.
        self.volume.symlink(target, source)
        return 0

    @_fuse_op
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self.volume.rename(old, new, flags)
        return 0

    @_fuse_op
    def link(self, target: str, source: str) -> int:
        self.volume.link(target, source)
        return 0

    @_fuse_op
    def chmod(self, path: str, mode: int) -> int:
        self.volume.chmod(path, mode)
        return 0

    @_fuse_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.volume.chown(path, uid, gid)
        return 0

    @_fuse_op
    def utimens(self, path: str, times: Any = None) -> int:
        self.volume.utimens(path, times)
        return 0

    @_fuse_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.volume.truncate(path, length, fh)
        return 0

    @_fuse_op
    def open(self, path: str, flags: int) -> int:
        return self.volume.open(path, flags)

    @_fuse_op
    def create(self, path: str, mode: int, flags: int) -> int:
        return self.volume.create(path, mode, flags)

    @_fuse_op
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        # Makes mfusepy register the read callback; StrictFUSE.read serves it (read_into).
        return self.volume.read(fh, size, offset)

    @_fuse_op
    def read_into(self, fh: int, address: int, size: int, offset: int) -> int:
        """Decrypt straight into libfuse's reply buffer at ``address`` (see StrictFUSE)."""
        return self.volume.read_into(fh, _ffi.cast("unsigned char *", address), size, offset)

    @_fuse_op
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.volume.write(fh, data, offset)

    # No flush(): nothing is buffered here, and leaving it out lets the kernel stop sending
    # a FLUSH request on every close (one round trip per file in untar or read_all).

    @_fuse_op
    def release(self, path: str | None, fh: int) -> int:
        self.volume.release(fh)
        return 0

    @_fuse_op
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.volume.fsync(fh, bool(datasync))
        return 0

    @_fuse_op
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        if path is not None:
            self.volume.fsyncdir(path)
        return 0

    @_fuse_op
    def statfs(self, path: str) -> dict[str, int]:
        return self.volume.statfs()


class StrictFUSE(mfusepy.FUSE):
    """mfusepy.FUSE with the libfuse 3 gaps closed and two hot paths shortened.

    mfusepy 3.1.1 drops rename flags (a RENAME_EXCHANGE then silently deletes a file)
    and passes UTIME_NOW/UTIME_OMIT through as nonsense nanoseconds. read() decrypts into
    libfuse's buffer and create() skips mfusepy's per-call signature inspection.
    """

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )

    def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        # mfusepy copies the bytes our read() returns into ``buf``; decrypting into
        # ``buf`` directly saves two copies of every 1 MiB request.
        address = ctypes.cast(buf, ctypes.c_void_p).value
        return self.operations.read_into(fip.contents.fh, address, size, offset)

    def create(self, path: bytes, mode: int, fip: Any) -> int:
        # mfusepy inspects the signature of our create() on every call; we know it.
        fi = fip.contents
        fi.fh = self.operations.create(path.decode(self.encoding, self.errors), mode, fi.flags)
        return 0

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        times = None
        if buf:
            pair = []
            for ts in (buf.contents.actime, buf.contents.modtime):
                if ts.tv_nsec == UTIME_OMIT:
                    pair.append(None)
                elif ts.tv_nsec == UTIME_NOW:
                    pair.append(time.time_ns())
                else:
                    pair.append(ts.tv_sec * 10**9 + ts.tv_nsec)
            times = (pair[0], pair[1])
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.utimens(decoded, times)


class _Invalidator:
    """Drops the kernel's cached pages, attributes and names, from its own thread.

    Never from a request handler: the kernel keeps the pages of a write locked until the
    write is answered, and invalidating a name of the same kernel inode from inside that
    handler would wait for those pages forever.

    With the writeback cache the kernel keeps its own size of every inode it holds, and
    ``fuse_invalidate_path`` does not change that. libfuse's path API knows no node ids
    but the root's, so a file changed behind the kernel's back (a sync pull, another hard
    link) is made to leave the cache by invalidating the name of its top-level ancestor
    in the root: inodes below it that no program holds open are then forgotten and looked
    up afresh.
    """

    ROOT_ID = 1  # FUSE_ROOT_ID

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._fuse_ptr: int | None = None
        self._session: int | None = None
        self._inval_path: Any = None
        self._inval_entry: Any = None
        self.drop_entries = False  # also drop top-level names (writeback cache)

    def start(self) -> None:
        lib = mfusepy._libfuse
        try:
            self._fuse_ptr = lib.fuse_get_context().contents.fuse
            self._inval_path = lib.fuse_invalidate_path
        except (AttributeError, ValueError):
            return  # libfuse 2: no invalidation
        self._inval_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        try:
            lib.fuse_get_session.restype = ctypes.c_void_p
            lib.fuse_get_session.argtypes = [ctypes.c_void_p]
            self._session = lib.fuse_get_session(self._fuse_ptr)
            self._inval_entry = lib.fuse_lowlevel_notify_inval_entry
            self._inval_entry.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p,
                                          ctypes.c_size_t]
        except AttributeError:
            self._inval_entry = None
        self._thread = threading.Thread(target=self._run, name="invalidator", daemon=True)
        self._thread.start()

    def submit(self, path: str) -> None:
        """A file changed through another name: drop what the kernel holds for ``path``."""
        if self._thread is not None:
            self._queue.put(("path", path))

    def submit_top(self, path: str) -> None:
        """Something below ``path`` changed behind the kernel's back (a sync pull)."""
        if self._thread is not None:
            self._queue.put(("top", path))

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)
            self._thread = None

    # A kernel inode that is still pinned when its name is dropped (the asynchronous
    # RELEASE of an earlier open holds it) survives and keeps its old size: the drop is
    # repeated after these delays, and whenever an open of the name is released.
    REPEAT_AFTER = (0.1, 1.0)

    def _run(self) -> None:
        repeats: dict[str, list[float]] = {}  # path -> when to drop its top level again
        while True:
            timeout = None
            if repeats:
                timeout = max(0.0, min(min(t) for t in repeats.values()) - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ("repeat", "")
            if item is None:
                return
            now = time.monotonic()
            for path, times in list(repeats.items()):
                if times[0] <= now:
                    self._drop_top_level(path)
                    times.pop(0)
                    if not times:
                        del repeats[path]
            kind, path = item
            if kind == "path":
                ret = self._inval_path(self._fuse_ptr, os.fsencode(path))
                if ret not in (0, -errno.ENOENT):
                    log.debug("fuse_invalidate_path(%s) = %d", path, ret)
            if kind == "top" or (kind == "path" and self.drop_entries):
                self._drop_top_level(path)
                if len(repeats) < 10000:
                    repeats[path] = [now + delay for delay in self.REPEAT_AFTER]

    def _drop_top_level(self, path: str) -> None:
        top = path.lstrip("/").split("/", 1)[0]
        if not top or self._inval_entry is None:
            return
        name = os.fsencode(top)
        ret = self._inval_entry(self._session, self.ROOT_ID, name, len(name))
        if ret not in (0, -errno.ENOENT):
            log.debug("fuse_lowlevel_notify_inval_entry(%s) = %d", top, ret)


def _tune_malloc() -> None:
    """Keep 128 KiB-1 MiB buffers on the heap: glibc's default mmaps and unmaps each one,
    and the page faults cost more than the crypto (measured: 0.35 vs 1.1 GB/s)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _raise_readahead(mountpoint: str, kib: int = 1024) -> None:
    """Ask for 1 MiB read requests instead of the 128 KiB default readahead (root only;
    measured: cold sequential reads about 1.7x faster). Runs after init: a stat of the
    mount point inside init would wait for init itself."""
    time.sleep(0.2)
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as fh:
            fh.write(str(kib))
    except OSError as exc:
        log.debug("could not raise readahead: %s", exc)


def _syncfs(path: str) -> None:
    """Flush the backing filesystem at unmount (syncfs(2), best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "syncfs"):
            libc.syncfs(fd)
    finally:
        os.close(fd)


def fuse_major_version() -> int:
    return int(mfusepy.fuse_version_major)


def caller_identity() -> tuple[int, int]:
    uid, gid, _pid = mfusepy.fuse_get_context()
    return uid, gid


def serve(volume: Volume, mountpoint: str, options: dict[str, Any], *,
          single_threaded: bool = False, on_ready: Callable[[], None] | None = None,
          autosync: Any = None, writeback: bool = False) -> None:
    """Mount and serve until unmounted. Blocks."""
    _tune_malloc()
    ops = CryptFS(volume, on_ready, autosync, os.path.abspath(mountpoint))
    ops.writeback = writeback
    opts = dict(options)
    if fuse_major_version() == 2:
        opts["big_writes"] = True
    StrictFUSE(ops, mountpoint, raw_fi=False, foreground=True, nothreads=single_threaded,
               **opts)
