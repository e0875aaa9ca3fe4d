"""Mount lifecycle: checks, daemonising, readiness, unmounting.

``cryptfs mount`` returns only once the kernel has the mount live (the daemon reports
from FUSE ``init`` through a pipe), or fails with a one-line reason. The daemon records
its pid in a runtime file keyed by the mount point so ``cryptfs unmount`` can wait for it
to flush and exit.
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import MountError, MountpointError
from .sync import process_alive
from .volume import Volume

log = logging.getLogger("cryptfs")

READY_TIMEOUT = 30.0
_PR_SET_DUMPABLE = 4


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/cryptfs-{os.getuid()}"
    path = Path(base) / "cryptfs"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def pidfile_for(mountpoint: str) -> Path:
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:24]
    return runtime_dir() / f"{key}.pid"


def mounted_fuse(mountpoint: str) -> str | None:
    """The fstype if ``mountpoint`` is a mount point in /proc/self/mountinfo."""
    found = mount_entry(mountpoint)
    return found[0] if found else None


def mount_entry(mountpoint: str) -> tuple[str, str] | None:
    """(fstype, source) of the mount at ``mountpoint``."""
    target = os.fsencode(os.path.realpath(mountpoint))
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split()
                if _unescape(fields[4]) == target:
                    sep = fields.index(b"-")
                    return (os.fsdecode(fields[sep + 1]),
                            os.fsdecode(_unescape(fields[sep + 2])))
    except (OSError, ValueError, IndexError):
        pass
    return None


WRITEBACK_SUBTYPE = "cryptfs-writeback"


def fsname_for(backing: str) -> str:
    """The mount's source field: ``cryptfs:BACKING`` (commas would split the options)."""
    return "cryptfs:" + os.path.realpath(backing).replace(",", "_").replace("\\", "_")


def writeback_mount_of(backing: str) -> str | None:
    """Mount point where ``backing`` is mounted with the kernel writeback cache, if any."""
    source = os.fsencode(fsname_for(backing))
    wanted = b"fuse." + WRITEBACK_SUBTYPE.encode()
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index(b"-")
                if fields[sep + 1] == wanted and _unescape(fields[sep + 2]) == source:
                    return os.fsdecode(_unescape(fields[4]))
    except (OSError, ValueError, IndexError):
        pass
    return None


def _unescape(field: bytes) -> bytes:
    """Undo the octal escapes (\\040 for space) of /proc/self/mountinfo."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def check_mountpoint(mountpoint: str, backing: str) -> None:
    if mounted_fuse(mountpoint):
        raise MountpointError(f"{mountpoint} is already a mount point (or a crashed mount); "
                              f"run 'cryptfs unmount {mountpoint}' first")
    if not os.path.lexists(mountpoint):
        raise MountpointError(f"mount point {mountpoint} does not exist; create it with mkdir")
    try:
        if not os.path.isdir(mountpoint):
            raise MountpointError(f"mount point {mountpoint} is not a directory")
        if os.listdir(mountpoint):
            raise MountpointError(f"mount point {mountpoint} is not empty")
    except OSError as exc:
        raise MountpointError(f"mount point {mountpoint}: {exc.strerror}; if a cryptfs mount "
                              f"crashed there, run 'cryptfs unmount {mountpoint}'") from None
    real_mp, real_b = os.path.realpath(mountpoint), os.path.realpath(backing)
    if real_mp == real_b or real_mp.startswith(real_b + os.sep):
        raise MountpointError("the mount point must not be inside the backing directory")


def check_fuse_available() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module (modprobe fuse) "
                         "or run where FUSE is available")
    if not fusermount_binary():
        raise MountError("fusermount3 is not installed: install the 'fuse3' package")


def fusermount_binary() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def harden_process() -> None:
    """No core dumps of a process holding keys (and no ptrace by other users)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def fuse_options(backing: str, read_only: bool, extra: list[str]) -> dict[str, Any]:
    """The mount's options: fsname/subtype, read-only, and the user's ``-o`` list."""
    opts: dict[str, Any] = {"fsname": fsname_for(backing), "subtype": "cryptfs"}
    if read_only:
        opts["ro"] = True
    for item in extra:
        for opt in filter(None, item.split(",")):
            key, sep, value = opt.partition("=")
            opts[key] = value if sep else True
    return opts


def _serve(volume: Volume, mountpoint: str, opts: dict[str, Any],
           on_ready: Callable[[], None] | None, sync_setup: Callable[[], Any] | None = None
           ) -> None:
    try:
        from . import fuse
    except (OSError, ImportError) as exc:
        raise MountError(f"cannot load libfuse 3 ({exc}); install the 'fuse3' package") \
            from None
    pidfile = pidfile_for(mountpoint)
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        autosync = sync_setup() if sync_setup else None
        opts = dict(opts)
        writeback = bool(opts.pop("writeback", False))
        fsname = opts.pop("fsname")
        subtype = opts.pop("subtype")
        read_only = bool(opts.pop("ro", False)) or volume.read_only
        fuse.serve(volume, mountpoint, fsname=fsname, subtype=subtype, read_only=read_only,
                   extra=opts, on_ready=on_ready, autosync=autosync, writeback=writeback)
    except RuntimeError as exc:
        raise MountError(f"FUSE mount of {mountpoint} failed ({exc}); see the log") from None
    finally:
        try:
            pidfile.unlink()
        except FileNotFoundError:
            pass


def mount_foreground(volume: Volume, mountpoint: str, opts: dict[str, Any],
                     sync_setup: Callable[[], Any] | None = None) -> None:
    harden_process()
    _serve(volume, mountpoint, opts, None, sync_setup)


def mount_background(volume: Volume, mountpoint: str, opts: dict[str, Any], *,
                     log_file: str | None, timeout: float = READY_TIMEOUT,
                     sync_setup: Callable[[], Any] | None = None) -> int:
    """Fork a daemon that serves the mount; return its pid once the mount is live."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_fd)
        code = 1
        try:
            os.setsid()
            _daemon_stdio(log_file)
            harden_process()

            def ready() -> None:
                os.write(write_fd, b"OK\n")

            _serve(volume, mountpoint, opts, ready, sync_setup)
            code = 0
        except BaseException as exc:  # report anything to the parent, then exit
            msg = str(exc) or exc.__class__.__name__
            try:
                os.write(write_fd, b"ERR " + msg.encode(errors="replace")[:2000] + b"\n")
            except OSError:
                pass
            log.error("mount failed: %s", msg)
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_fd)
    return _wait_ready(pid, read_fd, mountpoint, timeout)


def _wait_ready(pid: int, read_fd: int, mountpoint: str, timeout: float) -> int:
    buf = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(read_fd, False)
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(read_fd, 4096)
            except BlockingIOError:
                chunk = None
            if chunk:
                buf += chunk
                if buf.startswith(b"OK"):
                    return pid
                if buf.startswith(b"ERR") and buf.endswith(b"\n"):
                    break
            elif chunk == b"":  # daemon closed the pipe: it exited
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGTERM)
            raise MountError(f"mount did not come up within {timeout:.0f} s")
    finally:
        os.close(read_fd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    text = buf.decode(errors="replace").strip()
    raise MountError(text[4:] if text.startswith("ERR ") else "the mount daemon exited early")


def _daemon_stdio(log_file: str | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    if log_file:
        out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    else:
        out = devnull
    os.dup2(out, 1)
    os.dup2(out, 2)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s cryptfs[%(process)d] %(levelname)s "
                                           "%(message)s"))
    root.addHandler(handler)


def unmount(mountpoint: str, *, lazy: bool = False, timeout: float = 660.0) -> str | None:
    """Unmount and wait for the daemon to flush (and upload what is pending) and exit.
    Returns the backing directory if it was a cryptfs mount."""
    found = mount_entry(mountpoint)
    if found is None:
        raise MountpointError(f"{mountpoint} is not mounted")
    fstype, source = found
    if not fstype.startswith("fuse"):
        raise MountpointError(f"{mountpoint} is not a FUSE mount ({fstype})")
    binary = fusermount_binary()
    if binary:
        cmd = [binary, "-u", "-z", mountpoint] if lazy else [binary, "-u", mountpoint]
    else:
        cmd = ["umount", "-l", mountpoint] if lazy else ["umount", mountpoint]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        if "busy" in reason.lower():
            raise MountError(f"{mountpoint} is busy (a program has files open there); close "
                             f"them, or use 'cryptfs unmount --lazy {mountpoint}'")
        raise MountError(f"unmount of {mountpoint} failed: {reason}")
    _wait_daemon(mountpoint, timeout)
    return source[len("cryptfs:"):] if source.startswith("cryptfs:") else None


def _wait_daemon(mountpoint: str, timeout: float) -> None:
    pidfile = pidfile_for(mountpoint)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            break
        time.sleep(0.05)
    else:
        raise MountError(f"the mount daemon (pid {pid}) did not exit within {timeout:.0f} s")
