"""pyfuse3 operations: translate each request into a ``Volume`` call and map failures.

Thin by design: no filesystem logic lives here (that is ``volume.py``); this is the one
place that knows the kernel's caches (entry and attribute timeouts, ``keep_cache``).
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable
from typing import Any

import pyfuse3

from ..errors import IntegrityError
from ..idle import ActivityClock
from ..volume import Attr, Caller, Volume

log = logging.getLogger("cryptfs")

# The mount is the only writer of its backing tree, except a sync pull, whose changes
# show within this time (replaced files are new backing inodes, so never a stale size).
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0


def _op(func: Callable[..., Any]) -> Callable[..., Any]:
    """OSError -> its errno; IntegrityError -> EIO and a log line; anything else -> EIO
    and a traceback. The daemon never dies on a request."""

    @functools.wraps(func)
    async def wrapper(self: Operations, *args: Any) -> Any:
        self.activity.touch()  # mount --idle
        try:
            return func(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno if isinstance(exc.errno, int) and exc.errno > 0
                                    else errno.EIO) from None
        except IntegrityError as exc:
            self.volume.report_integrity(f"{func.__name__} inode {args[:1]!r}", exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", func.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _entry(a: Attr) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = a.ino
    e.generation = 0
    e.entry_timeout = ENTRY_TIMEOUT
    e.attr_timeout = ATTR_TIMEOUT
    e.st_mode = a.mode
    e.st_nlink = a.nlink
    e.st_uid = a.uid
    e.st_gid = a.gid
    e.st_rdev = a.rdev
    e.st_size = a.size
    e.st_blksize = a.blksize
    e.st_blocks = a.blocks
    e.st_atime_ns = a.atime_ns
    e.st_mtime_ns = a.mtime_ns
    e.st_ctime_ns = a.ctime_ns
    return e


def _caller(ctx: Any) -> Caller:
    return Caller(ctx.uid, ctx.gid)


class Operations(pyfuse3.Operations):
    """The kernel's requests, served by one ``Volume``."""

    supports_dot_lookup = True
    enable_acl = False

    def __init__(self, volume: Volume, on_ready: Callable[[], None] | None = None,
                 writeback: bool = False, activity: ActivityClock | None = None) -> None:
        super().__init__()
        self.volume = volume
        self.activity = activity or ActivityClock()
        self._on_ready = on_ready
        self.enable_writeback_cache = writeback
        volume.kernel_appends = writeback

    def init(self) -> None:
        if self._on_ready is not None:
            self._on_ready()

    # -- names and attributes ---------------------------------------------------------
    @_op
    def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        try:
            return _entry(self.volume.lookup(parent_inode, name))
        except FileNotFoundError:
            miss = pyfuse3.EntryAttributes()  # st_ino 0: the kernel caches the miss
            miss.entry_timeout = ENTRY_TIMEOUT
            return miss

    async def forget(self, inode_list: Any) -> None:
        for ino, count in inode_list:
            try:
                self.volume.forget(ino, count)
            except Exception:  # forget must not raise (pyfuse3 contract)
                log.exception("forget(%d)", ino)

    @_op
    def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return _entry(self.volume.getattr(inode))

    @_op
    def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                ctx: Any) -> pyfuse3.EntryAttributes:
        return _entry(self.volume.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            fh=fh))

    @_op
    def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.volume.readlink(inode)

    @_op
    def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        for key, value in self.volume.statfs().items():
            setattr(data, key, value)
        return data

    # -- directories ------------------------------------------------------------------
    @_op
    def opendir(self, inode: int, ctx: Any) -> int:
        return self.volume.opendir(inode)

    @_op
    def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for name, attr, next_id in self.volume.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, name, _entry(attr), next_id):
                return
            if name not in (b".", b".."):
                self.volume.add_lookup(attr.ino)

    @_op
    def releasedir(self, fh: int) -> None:
        self.volume.releasedir(fh)

    @_op
    def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.volume.fsyncdir_handle(fh)

    @_op
    def mkdir(self, parent_inode: int, name: bytes, mode: int,
              ctx: Any) -> pyfuse3.EntryAttributes:
        return _entry(self.volume.mkdir(parent_inode, name, mode, _caller(ctx)))

    @_op
    def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
              ctx: Any) -> pyfuse3.EntryAttributes:
        return _entry(self.volume.mknod(parent_inode, name, mode, rdev, _caller(ctx)))

    @_op
    def symlink(self, parent_inode: int, name: bytes, target: bytes,
                ctx: Any) -> pyfuse3.EntryAttributes:
        return _entry(self.volume.symlink(parent_inode, name, target, _caller(ctx)))

    @_op
    def link(self, inode: int, new_parent_inode: int, new_name: bytes,
             ctx: Any) -> pyfuse3.EntryAttributes:
        return _entry(self.volume.link(inode, new_parent_inode, new_name))

    @_op
    def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.volume.unlink(parent_inode, name)

    @_op
    def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.volume.rmdir(parent_inode, name)

    @_op
    def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
               name_new: bytes, flags: int, ctx: Any) -> None:
        self.volume.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    # -- files ------------------------------------------------------------------------
    @_op
    def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        # keep_cache: pages stay valid across opens unless the backing file changed behind
        # the mount (libfuse's auto_cache); a sync pull makes new backing inodes anyway.
        fh = self.volume.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=self.volume.keep_cache(fh))

    @_op
    def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
               ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = self.volume.create(parent_inode, name, mode, flags, _caller(ctx))
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), _entry(attr)

    @_op
    def read(self, fh: int, off: int, size: int) -> bytes:
        return self.volume.read(fh, off, size)

    @_op
    def write(self, fh: int, off: int, buf: bytes) -> int:
        return self.volume.write(fh, off, buf)

    @_op
    def release(self, fh: int) -> None:
        self.volume.release(fh)

    @_op
    def fsync(self, fh: int, datasync: bool) -> None:
        self.volume.fsync(fh, bool(datasync))

    # No flush(): nothing is buffered here; pyfuse3's default answers ENOSYS once and the
    # kernel then stops sending FLUSH on every close.

    # -- extended attributes ------------------------------------------------------------
    @_op
    def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not name.startswith(b"user."):
            # The kernel asks for security.capability before every write: answer at once.
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return self.volume.getxattr(inode, name)

    @_op
    def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return self.volume.listxattr(inode)

    @_op
    def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.volume.setxattr(inode, name, value)

    @_op
    def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.volume.removexattr(inode, name)


def mount_options(fsname: str, subtype: str, read_only: bool,
                  extra: dict[str, Any]) -> set[str]:
    """libfuse 3 mount options as pyfuse3 takes them."""
    opts = {f"fsname={fsname}", f"subtype={subtype}", "default_permissions"}
    if read_only:
        opts.add("ro")
    for key, value in extra.items():
        opts.add(key if value is True else f"{key}={value}")
    return opts

