"""Mount lifecycle: checks, daemonising, readiness, unmounting.

``cryptfs mount`` returns only once the kernel has the mount live (the daemon reports
from FUSE ``init`` through a pipe), or fails with libfuse's reason and what to do
(``diagnose``). A foreground mount tells systemd when it is live (``sd_notify``
READY=1, for ``Type=notify`` units). The daemon records its pid in a runtime file keyed
by the mount point so ``cryptfs unmount`` can wait for it to flush and exit. With
``idle`` seconds, the daemon unmounts itself after that long without a request (``idle``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import daemonlog, diagnose, holders
from .errors import MountError, MountpointError
from .idle import ActivityClock, IdleWatcher, format_duration
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


def mount_of(backing: str) -> str | None:
    """Mount point where ``backing`` is mounted by cryptfs (any mode), if any."""
    source = os.fsencode(fsname_for(backing))
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index(b"-")
                if fields[sep + 1].startswith(b"fuse.") and \
                        _unescape(fields[sep + 2]) == source:
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
    if not os.path.exists(diagnose.DEV_FUSE):
        raise MountError("/dev/fuse is missing: load the fuse module (modprobe fuse) "
                         "or run where FUSE is available")
    if not diagnose.dev_fuse_usable():
        raise MountError(f"cannot open /dev/fuse: permission denied.\n  what to do: "
                         f"{diagnose.dev_fuse_hint()}")
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
           on_ready: Callable[[], None] | None, sync_setup: Callable[[], Any] | None = None,
           idle: float | None = None) -> None:
    """Serve until unmounted (or stopped by SIGTERM/SIGINT, which end the request loop and
    unmount). Raises MountError, with libfuse's reason, if the mount never came up."""
    try:
        from . import fuse
    except (OSError, ImportError) as exc:
        raise MountError(f"cannot load libfuse 3 ({exc}); install the 'fuse3' package") \
            from None
    mountpoint = os.path.abspath(mountpoint)  # libfuse changes to / once mounted
    pidfile = pidfile_for(mountpoint)
    pidfile.write_text(f"{os.getpid()}\n")
    capture = diagnose.StderrCapture()  # libfuse's and fusermount3's reasons, until live
    live = threading.Event()
    clock = ActivityClock()
    watcher = IdleWatcher(clock, idle, lambda: _idle_unmount(mountpoint, idle)) if idle else None

    def ready() -> None:  # FUSE init: the kernel has the mount
        capture.release(replay=True)
        live.set()
        if watcher is not None:
            watcher.start()
        _notify_systemd(f"READY=1\nSTATUS=cryptfs: {volume.backing} mounted on {mountpoint}")
        if on_ready is not None:
            on_ready()

    try:
        autosync = sync_setup() if sync_setup else None
        opts = dict(opts)
        writeback = bool(opts.pop("writeback", False))
        fsname = opts.pop("fsname")
        subtype = opts.pop("subtype")
        read_only = bool(opts.pop("ro", False)) or volume.read_only
        fuse.serve(volume, mountpoint, fsname=fsname, subtype=subtype, read_only=read_only,
                   extra=opts, on_ready=ready, autosync=autosync, writeback=writeback,
                   activity=clock)
    except RuntimeError as exc:
        if live.is_set():
            # After a live mount, libfuse's loop returns non-zero when a signal (Ctrl-C,
            # SIGTERM) ended it: it has unmounted, and this is a normal stop.
            log.info("stopped (libfuse returned %s after a signal); %s unmounted",
                     exc, mountpoint)
            return
        text = capture.text()
        capture.release(replay=False)
        raise MountError(diagnose.explain(mountpoint, exc, text)) from None
    finally:
        capture.release(replay=True)
        if watcher is not None:
            watcher.stop()
        try:
            pidfile.unlink()
        except FileNotFoundError:
            pass


def _notify_systemd(state: str) -> None:
    """sd_notify(3) when started by systemd with Type=notify ($NOTIFY_SOCKET)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    import sdnotify

    sdnotify.SystemdNotifier().notify(state)


def _idle_unmount(mountpoint: str, idle: float) -> bool:
    """The idle watcher's action: unmount the normal way; False if busy (try later)."""
    try:
        detach(mountpoint)
    except MountError as exc:
        log.warning("idle for %s, but not unmounted: %s; trying again later",
                    format_duration(idle), exc)
        return False
    log.warning("unmounted %s after %s without activity (--idle)", mountpoint,
                format_duration(idle))
    return True


def mount_foreground(volume: Volume, mountpoint: str, opts: dict[str, Any],
                     sync_setup: Callable[[], Any] | None = None,
                     idle: float | None = None) -> None:
    harden_process()
    _serve(volume, mountpoint, opts, None, sync_setup, idle)


def mount_background(volume: Volume, mountpoint: str, opts: dict[str, Any], *,
                     log_target: daemonlog.LogTarget, timeout: float = READY_TIMEOUT,
                     sync_setup: Callable[[], Any] | None = None,
                     idle: float | None = None) -> int:
    """Fork a daemon that serves the mount; return its pid once the mount is live."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_fd)
        code = 1
        try:
            os.setsid()
            _daemon_stdio(log_target)
            harden_process()

            def ready() -> None:
                os.write(write_fd, b"OK\n")

            _serve(volume, mountpoint, opts, ready, sync_setup, idle)
            code = 0
        except BaseException as exc:  # report anything to the parent, then exit
            msg = str(exc) or exc.__class__.__name__
            try:
                os.write(write_fd, b"ERR " + msg.encode(errors="replace")[:4000] + b"\0")
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
                if buf.startswith(b"ERR") and buf.endswith(b"\0"):
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
    text = buf.rstrip(b"\0").decode(errors="replace").strip()
    raise MountError(text[4:] if text.startswith("ERR ") else "the mount daemon exited early")


def _daemon_stdio(log_target: daemonlog.LogTarget) -> None:
    """stdin from /dev/null; logging, stdout and stderr to the log target."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    fd = daemonlog.install(log_target)
    out = devnull if fd is None else fd
    os.dup2(out, 1)
    os.dup2(out, 2)


def unmount(mountpoint: str, *, lazy: bool = False, timeout: float = 660.0,
            say: Callable[[str], None] | None = None) -> str | None:
    """Unmount and wait for the daemon to flush (and upload what is pending) and exit.
    ``say`` gets a line whenever the wait has a reason the user should know (programs
    still holding a lazily detached mount, a final upload). Returns the backing directory
    if it was a cryptfs mount."""
    found = mount_entry(mountpoint)
    if found is None:
        raise MountpointError(f"{mountpoint} is not mounted")
    fstype, source = found
    if not fstype.startswith("fuse"):
        raise MountpointError(f"{mountpoint} is not a FUSE mount ({fstype})")
    where = holders.locate(mountpoint)  # kept: a lazy unmount removes it from mountinfo
    detach(mountpoint, lazy=lazy)
    _wait_daemon(mountpoint, timeout, where if lazy else None, say)
    return source[len("cryptfs:"):] if source.startswith("cryptfs:") else None


def detach(mountpoint: str, lazy: bool = False) -> None:
    """Take the mount out of the tree (``fusermount3 -u``; ``-z`` when lazy). A busy mount
    raises MountpointError naming the processes that hold it."""
    binary = fusermount_binary()
    if binary:
        cmd = [binary, "-u", "-z", mountpoint] if lazy else [binary, "-u", mountpoint]
    else:
        cmd = ["umount", "-l", mountpoint] if lazy else ["umount", mountpoint]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        if "busy" in reason.lower():
            found = holders.find(mountpoint)
            who = f": {holders.summary(found)}" if found else ""
            raise MountpointError(
                f"{mountpoint} is busy (programs have files or their working directory "
                f"there{who}); close them, or use 'cryptfs unmount --lazy {mountpoint}'")
        raise MountError(f"unmount of {mountpoint} failed: {reason}")


def _wait_daemon(mountpoint: str, timeout: float, lazy_where: tuple[int, int, str] | None,
                 say: Callable[[str], None] | None) -> None:
    pidfile = pidfile_for(mountpoint)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    started = time.monotonic()
    deadline = started + timeout
    shown: str | None = None
    next_look = started
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        now = time.monotonic()
        if say is not None and now >= next_look:
            next_look = now + 5.0
            text = _wait_reason(mountpoint, pid, lazy_where, now - started)
            if text and text != shown:
                say(text)
                shown = text
        time.sleep(0.05)
    raise MountError(f"the mount daemon (pid {pid}) did not exit within {timeout:.0f} s")


def _wait_reason(mountpoint: str, pid: int, lazy_where: tuple[int, int, str] | None,
                 waited: float) -> str | None:
    """What the daemon is still waiting for, in a line for the user (None: nothing to say
    yet)."""
    if lazy_where is not None:
        found = holders.find(lazy_where, skip_pids=(pid,))
        if found:
            return (f"{mountpoint} is detached; the daemon (pid {pid}) writes the last "
                    f"changes and exits once these programs close what they hold there: "
                    f"{holders.summary(found)}. Waiting (Ctrl-C stops waiting; nothing is "
                    f"lost, the daemon still exits when they are done)")
        if waited >= 1.0 and os.geteuid() != 0:
            return (f"{mountpoint} is detached; waiting for the daemon (pid {pid}) to exit: "
                    "it is writing the last changes (and uploading what is pending, if the "
                    "vault has a remote), or a program that cryptfs cannot see (another "
                    "user's) still holds files there")
    if waited >= 1.0:
        return (f"waiting for the mount daemon (pid {pid}) to write the last changes and, if "
                "the vault has a remote, upload what is pending before it exits")
    return None
