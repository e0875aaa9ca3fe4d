"""A minimal pyfuse3 passthrough (no encryption): the ceiling for a Python FUSE file system
on the same binding, request loop and options as cryptfs (low-level API, one inode per
backing inode, entry/attribute timeouts of 1 s, default_permissions).

    python bench/passthrough.py ROOT MOUNTPOINT
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3

from cryptfs.fuse import loop

TIMEOUT = 1.0


def _entry(st: os.stat_result, ino: int) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = ino
    e.entry_timeout = e.attr_timeout = TIMEOUT
    for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size",
                "st_blksize", "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
        setattr(e, key, getattr(st, key))
    return e


def _err(func):
    async def wrapper(*args):
        try:
            return func(*args)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
    return wrapper


class Passthrough(pyfuse3.Operations):
    def __init__(self, root: str) -> None:
        super().__init__()
        self.paths = {pyfuse3.ROOT_INODE: root}
        self.root_ino = os.lstat(root).st_ino
        self.dirs: dict[int, list] = {}

    def _ino(self, st: os.stat_result, path: str) -> int:
        ino = pyfuse3.ROOT_INODE if st.st_ino == self.root_ino else st.st_ino
        self.paths[ino] = path
        return ino

    def _lookup(self, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        path = os.path.join(self.paths[parent], os.fsdecode(name))
        st = os.lstat(path)
        return _entry(st, self._ino(st, path))

    @_err
    def lookup(self, parent, name, ctx):
        return self._lookup(parent, name)

    @_err
    def getattr(self, inode, ctx):
        return _entry(os.lstat(self.paths[inode]), inode)

    @_err
    def setattr(self, inode, attr, fields, fh, ctx):
        path = self.paths[inode]
        if fields.update_size:
            os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, attr.st_mode & 0o7777)
        if fields.update_uid or fields.update_gid:
            os.chown(path, attr.st_uid if fields.update_uid else -1,
                     attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
        if fields.update_atime or fields.update_mtime:
            st = os.lstat(path)
            os.utime(path, ns=(attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                               attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns),
                     follow_symlinks=False)
        return _entry(os.lstat(path), inode)

    @_err
    def readlink(self, inode, ctx):
        return os.fsencode(os.readlink(self.paths[inode]))

    @_err
    def opendir(self, inode, ctx):
        return inode

    @_err
    def readdir(self, fh, start, token):
        base = self.paths[fh]
        if start == 0:
            with os.scandir(base) as it:
                self.dirs[fh] = sorted(d.name for d in it)
        names = self.dirs.get(fh, [])
        for i in range(start, len(names)):
            path = os.path.join(base, names[i])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(names[i]),
                                         _entry(st, self._ino(st, path)), i + 1):
                return

    @_err
    def releasedir(self, fh):
        pass

    @_err
    def mkdir(self, parent, name, mode, ctx):
        os.mkdir(os.path.join(self.paths[parent], os.fsdecode(name)), mode)
        return self._lookup(parent, name)

    @_err
    def mknod(self, parent, name, mode, rdev, ctx):
        os.mknod(os.path.join(self.paths[parent], os.fsdecode(name)), mode, rdev)
        return self._lookup(parent, name)

    @_err
    def symlink(self, parent, name, target, ctx):
        os.symlink(target, os.path.join(self.paths[parent], os.fsdecode(name)))
        return self._lookup(parent, name)

    @_err
    def link(self, inode, parent, name, ctx):
        os.link(self.paths[inode], os.path.join(self.paths[parent], os.fsdecode(name)))
        return self._lookup(parent, name)

    @_err
    def unlink(self, parent, name, ctx):
        os.unlink(os.path.join(self.paths[parent], os.fsdecode(name)))

    @_err
    def rmdir(self, parent, name, ctx):
        os.rmdir(os.path.join(self.paths[parent], os.fsdecode(name)))

    @_err
    def rename(self, p1, n1, p2, n2, flags, ctx):
        if flags:
            raise OSError(errno.EINVAL, "flags")
        old = os.path.join(self.paths[p1], os.fsdecode(n1))
        new = os.path.join(self.paths[p2], os.fsdecode(n2))
        os.rename(old, new)
        self._ino(os.lstat(new), new)

    @_err
    def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=os.open(self.paths[inode], flags & ~os.O_CREAT))

    @_err
    def create(self, parent, name, mode, flags, ctx):
        path = os.path.join(self.paths[parent], os.fsdecode(name))
        fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, mode)
        st = os.fstat(fd)
        return pyfuse3.FileInfo(fh=fd), _entry(st, self._ino(st, path))

    @_err
    def read(self, fh, off, size):
        return os.pread(fh, size, off)

    @_err
    def write(self, fh, off, buf):
        return os.pwrite(fh, buf, off)

    @_err
    def release(self, fh):
        os.close(fh)

    @_err
    def fsync(self, fh, datasync):
        os.fsync(fh)

    @_err
    def getxattr(self, inode, name, ctx):
        raise OSError(pyfuse3.ENOATTR, "no data")  # what cryptfs answers for non-user.

    @_err
    def statfs(self, ctx):
        sv = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        data = pyfuse3.StatvfsData()
        for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                    "f_ffree", "f_favail", "f_namemax"):
            setattr(data, key, getattr(sv, key))
        return data


if __name__ == "__main__":
    pyfuse3.init(Passthrough(sys.argv[1]), sys.argv[2],
                 {"fsname=passthrough", "subtype=passthrough", "default_permissions"})
    try:
        loop.run(pyfuse3)
    finally:
        pyfuse3.close(unmount=False)
