"""Filesystems to run pjdfstest on: a fresh cryptfs or gocryptfs mount, a tmpfs, a directory.

Each target is a context manager whose ``__enter__`` returns an empty directory (mode 0755,
owned by root) to run the tests in, and whose ``__exit__`` always unmounts and removes what
it made, killing only the processes it started (their own process group). A mount that will
not go away is detached lazily, and a FUSE connection whose daemon is stuck is aborted
through /sys/fs/fuse/connections, so a run can never hang on teardown.

Only command lines are used: ``cryptfs init``, ``cryptfs mount -f -o allow_other``,
``cryptfs unmount`` (passphrase via ``CRYPTFS_PASSWORD``, fast KDF via
``CRYPTFS_TESTONLY_WEAK_KDF=1``), so any implementation of that CLI can be tested.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "pjdfstest passphrase"
MOUNT_TIMEOUT = 60.0  # seconds for a mount to come up or go away


class TargetError(RuntimeError):
    """A target could not be set up (message says why)."""


def mountinfo() -> list[tuple[str, str, str]]:
    """``(mount point, filesystem type, major:minor)`` of every mount, in mount order."""
    out = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for raw in fh:
            left, _, right = raw.decode(errors="replace").partition(" - ")
            fields = left.split()
            point = fields[4].replace("\\040", " ").replace("\\011", "\t")
            out.append((point.replace("\\134", "\\"), right.split()[0], fields[2]))
    return out


def _mount_key(path: Path) -> str:
    """``path`` as /proc/self/mountinfo spells it, without touching ``path`` itself.

    Only the parent is resolved: a stat of a mount point whose daemon is stuck would hang.
    """
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(parent), name)


def is_mounted(path: Path) -> bool:
    target = _mount_key(path)
    return any(point == target for point, _, _ in mountinfo())


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding ``path`` (e.g. ``ext4``, ``fuse.cryptfs``)."""
    real = os.path.realpath(path)
    best, kind = "", "?"
    for point, fstype, _ in mountinfo():
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def _run(cmd: list[str], env: dict[str, str] | None = None,
         timeout: float = MOUNT_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TargetError(f"{cmd[0]} did not finish in {timeout:.0f} s") from exc


def _abort_fuse(path: Path) -> None:
    """Abort the FUSE connection of the mount at ``path`` (unblocks a stuck daemon)."""
    real = _mount_key(path)
    for point, fstype, dev in mountinfo():
        if point == real and fstype.startswith("fuse"):
            minor = dev.split(":")[1]
            try:
                Path(f"/sys/fs/fuse/connections/{minor}/abort").write_text("1")
            except OSError:
                pass


def force_unmount(path: Path) -> None:
    """fusermount/umount ``path``; lazily if busy; abort the FUSE connection if stuck."""
    fuser = shutil.which("fusermount3") or shutil.which("fusermount")
    attempts: list[list[str]] = [["umount", str(path)]]
    if fuser:
        attempts.insert(0, [fuser, "-u", str(path)])
    for cmd in [*attempts, ["umount", "-l", str(path)]]:
        if not is_mounted(path):
            return
        try:
            _run(cmd, timeout=20)
        except TargetError:
            _abort_fuse(path)
    if is_mounted(path):
        _abort_fuse(path)
        try:
            _run(["umount", "-l", str(path)], timeout=20)
        except TargetError as exc:
            print(f"warning: {exc}; {path} stays mounted")


def _remove_tree(path: Path) -> None:
    """``rm -rf --one-file-system`` in a child: never into a mount, never hanging us."""
    try:
        _run(["rm", "-rf", "--one-file-system", str(path)], timeout=300)
    except TargetError as exc:
        print(f"warning: {exc}; {path} not removed")


class Target:
    """Base: a label for tables and a fresh directory for the tests."""

    label = "?"

    def __init__(self, tmp_parent: str | None = None) -> None:
        self.tmp_parent = tmp_parent
        self.tmp: Path | None = None
        self.log: Path | None = None

    def _make_tmp(self, prefix: str) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp_parent))
        os.chmod(self.tmp, 0o755)
        return self.tmp

    def _cleanup_tmp(self, mnt: Path | None) -> None:
        if self.tmp is None:
            return
        if mnt is not None and is_mounted(mnt):
            print(f"warning: {mnt} is still mounted; left {self.tmp} in place")
            return
        _remove_tree(self.tmp)
        self.tmp = None

    def describe(self) -> str:
        return self.label

    def abort(self) -> None:
        """The filesystem hangs: make every pending request fail (FUSE targets only)."""

    def died(self) -> str | None:
        """Why the filesystem's daemon is gone, if it had one and it exited."""
        return None

    def __enter__(self) -> Path:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        raise NotImplementedError


class DaemonTarget(Target):
    """A FUSE filesystem served by a foreground daemon this object starts and stops."""

    def __init__(self, tmp_parent: str | None = None,
                 backing_parent: str | None = None) -> None:
        super().__init__(tmp_parent)
        self.backing_parent = backing_parent
        self.backing: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.mnt: Path | None = None
        self._logfh = None

    def _make_backing(self) -> Path:
        """The (empty) backing directory: in the temp dir, or fresh under ``--backing``."""
        assert self.tmp is not None
        if self.backing_parent is None:
            self.backing = self.tmp / "backing"
            self.backing.mkdir()
        else:
            self.backing = Path(tempfile.mkdtemp(prefix="posix-backing-",
                                                 dir=self.backing_parent))
        return self.backing

    def backing_note(self) -> str:
        if self.backing_parent is None:
            return ""
        return f", backing on {fs_type(Path(self.backing_parent))} ({self.backing_parent})"

    def _cleanup_tmp(self, mnt: Path | None) -> None:
        if self.backing_parent is not None and self.backing is not None:
            if mnt is None or not is_mounted(mnt):
                _remove_tree(self.backing)
        super()._cleanup_tmp(mnt)

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def _start(self, cmd: list[str], mnt: Path) -> None:
        assert self.tmp is not None
        self.log = self.tmp / "daemon.log"
        self._logfh = open(self.log, "ab")  # closed in _stop
        self.mnt = mnt
        self.proc = subprocess.Popen(cmd, stdout=self._logfh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env(),
                                     start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if is_mounted(mnt):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = self.log.read_text(errors="replace")[-2000:]
        self._stop()
        raise TargetError(f"{self.label} mount did not come up ({' '.join(cmd)}):\n{log}")

    def abort(self) -> None:
        if self.mnt is not None:
            _abort_fuse(self.mnt)

    def died(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"the {self.label} daemon exited (status {self.proc.returncode}) during the run"

    def _unmount(self) -> None:
        """The filesystem's own unmount command; the base class uses fusermount."""
        assert self.mnt is not None
        force_unmount(self.mnt)

    def _stop(self) -> None:
        if self.mnt is not None and is_mounted(self.mnt):
            try:
                self._unmount()
            except TargetError as exc:
                print(f"warning: {exc}")
            force_unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the group this object started
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
            self.proc = None
        if self._logfh is not None:
            self._logfh.close()
            self._logfh = None

    def __exit__(self, *exc: object) -> None:
        try:
            self._stop()
        finally:
            self._cleanup_tmp(self.mnt)


class CryptfsTarget(DaemonTarget):
    """A fresh vault mounted with ``cryptfs mount -f -o allow_other [extra args]``."""

    label = "cryptfs"

    def __init__(self, cryptfs: list[str], extra: list[str] | None = None,
                 tmp_parent: str | None = None, backing_parent: str | None = None) -> None:
        super().__init__(tmp_parent, backing_parent)
        self.cryptfs = cryptfs
        self.extra = extra or []

    def describe(self) -> str:
        opts = " ".join(["-o allow_other", *self.extra])
        return f"cryptfs mount -f {opts}{self.backing_note()}"

    def env(self) -> dict[str, str]:
        assert self.tmp is not None
        return dict(os.environ, CRYPTFS_PASSWORD=PASSWORD, CRYPTFS_TESTONLY_WEAK_KDF="1",
                    XDG_CONFIG_HOME=str(self.tmp / "config"),
                    XDG_RUNTIME_DIR=str(self.tmp / "run"))

    def __enter__(self) -> Path:
        tmp = self._make_tmp("cryptfs-posix-")
        mnt = tmp / "mnt"
        mnt.mkdir()
        backing = self._make_backing()
        proc = _run([*self.cryptfs, "init", "--quiet", str(backing)], env=self.env())
        if proc.returncode != 0:
            self._cleanup_tmp(None)
            raise TargetError(f"cryptfs init failed ({proc.returncode}): "
                              f"{proc.stderr.decode(errors='replace')}")
        try:
            self._start([*self.cryptfs, "mount", "-f", "-o", "allow_other", *self.extra,
                         str(backing), str(mnt)], mnt)
        except BaseException:
            self._cleanup_tmp(mnt)
            raise
        os.chmod(mnt, 0o755)
        return mnt

    def _unmount(self) -> None:
        assert self.mnt is not None
        _run([*self.cryptfs, "unmount", str(self.mnt)], env=self.env())


class GocryptfsTarget(DaemonTarget):
    """A fresh gocryptfs volume mounted with ``gocryptfs -fg -allow_other``."""

    label = "gocryptfs"

    def describe(self) -> str:
        version = _run(["gocryptfs", "-version"]).stdout.decode().split(";")[0].strip()
        return f"{version} -fg -allow_other{self.backing_note()}"

    def __enter__(self) -> Path:
        if shutil.which("gocryptfs") is None:
            raise TargetError("gocryptfs is not installed (apt-get install gocryptfs)")
        tmp = self._make_tmp("gocryptfs-posix-")
        mnt, passfile = tmp / "mnt", tmp / "passfile"
        mnt.mkdir()
        cipher = self._make_backing()
        passfile.write_text(PASSWORD + "\n")
        passfile.chmod(0o600)
        proc = _run(["gocryptfs", "-init", "-q", "-scryptn", "10", "-passfile", str(passfile),
                     str(cipher)])
        if proc.returncode != 0:
            self._cleanup_tmp(None)
            raise TargetError(f"gocryptfs -init failed: {proc.stderr.decode(errors='replace')}")
        try:
            self._start(["gocryptfs", "-fg", "-q", "-allow_other", "-passfile", str(passfile),
                         str(cipher), str(mnt)], mnt)
        except BaseException:
            self._cleanup_tmp(mnt)
            raise
        return mnt


class TmpfsTarget(Target):
    """A fresh tmpfs (``mount -t tmpfs``), the in-kernel reference."""

    label = "tmpfs"

    def __init__(self, tmp_parent: str | None = None) -> None:
        super().__init__(tmp_parent)
        self.mnt: Path | None = None

    def __enter__(self) -> Path:
        tmp = self._make_tmp("tmpfs-posix-")
        self.mnt = tmp / "mnt"
        self.mnt.mkdir()
        proc = _run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1g", "pjdfstest",
                     str(self.mnt)])
        if proc.returncode != 0:
            self._cleanup_tmp(None)
            raise TargetError(f"mount -t tmpfs failed: {proc.stderr.decode(errors='replace')}")
        return self.mnt

    def __exit__(self, *exc: object) -> None:
        if self.mnt is not None:
            force_unmount(self.mnt)
        self._cleanup_tmp(self.mnt)


class DirTarget(Target):
    """A fresh subdirectory of an existing directory or mount point (ext4, NFS, a mount...)."""

    def __init__(self, parent: str) -> None:
        super().__init__(parent)
        if not os.path.isdir(parent):
            raise TargetError(f"--target {parent}: not a directory")
        self.parent = os.path.realpath(parent)
        self.label = fs_type(Path(self.parent))

    def describe(self) -> str:
        return f"{self.label} ({self.parent})"

    def __enter__(self) -> Path:
        return self._make_tmp("pjdfstest-")

    def __exit__(self, *exc: object) -> None:
        self._cleanup_tmp(None)


def make_target(spec: str, cryptfs: list[str], cryptfs_args: list[str],
                tmp_parent: str | None, backing_parent: str | None = None) -> Target:
    """``cryptfs``, ``gocryptfs``, ``tmpfs``, or a directory path (``./x`` for a dir named x).

    ``backing_parent``: where cryptfs/gocryptfs keep their backing directory (e.g. an
    sshfs or NFS mount), default the temp dir next to the mount point.
    """
    if spec == "cryptfs":
        return CryptfsTarget(cryptfs, cryptfs_args, tmp_parent, backing_parent)
    if spec == "gocryptfs":
        return GocryptfsTarget(tmp_parent, backing_parent)
    if spec == "tmpfs":
        return TmpfsTarget(tmp_parent)
    return DirTarget(spec)
