"""A minimal mfusepy passthrough (no encryption): the ceiling for a Python FUSE filesystem
on the same binding and options as cryptfs. Usage: passthrough.py ROOT MOUNTPOINT"""

from __future__ import annotations

import ctypes.util
import os
import sys

if ctypes.util.find_library("fuse3"):
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy


class Passthrough(mfusepy.Operations):
    use_ns = True

    def __init__(self, root: str) -> None:
        self.root = root

    def _p(self, path: str) -> str:
        return self.root + path

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
        return {k: getattr(st, k) for k in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid",
                                            "st_size", "st_blocks", "st_rdev")} | {
            "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

    def readdir(self, path, fh):
        # With use_ino, a bare name gets inode 0, which readdir(3) treats as deleted.
        out = [".", ".."]
        with os.scandir(self._p(path)) as it:
            for d in it:
                mode = d.stat(follow_symlinks=False).st_mode
                out.append((d.name, {"st_mode": mode, "st_ino": d.inode()}, 0))
        return out

    def open(self, path, flags):
        return os.open(self._p(path), flags)

    def create(self, path, mode, flags):
        return os.open(self._p(path), flags | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(fh if fh is not None else self._p(path), length)

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        os.fsync(fh)

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        os.rmdir(self._p(path))

    def unlink(self, path):
        os.unlink(self._p(path))

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))

    def symlink(self, target, source):
        os.symlink(source, self._p(target))

    def readlink(self, path):
        return os.readlink(self._p(path))

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._p(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times, follow_symlinks=False)

    def statfs(self, path):
        sv = os.statvfs(self.root)
        return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_namemax")}


if __name__ == "__main__":
    # The options cryptfs mounts with (default_permissions, use_ino, auto_cache), so the
    # gap between the two is what cryptfs's own code costs. hard_remove: unlink really
    # unlinks (this passthrough serves open files by fd), so rm -rf never trips over
    # libfuse's .fuse_hidden files.
    mfusepy.FUSE(Passthrough(sys.argv[1]), sys.argv[2], foreground=True,
                 default_permissions=True, use_ino=True, auto_cache=True, hard_remove=True,
                 fsname="passthrough")
