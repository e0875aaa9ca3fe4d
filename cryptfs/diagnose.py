"""Why a mount failed, in words a user can act on.

libfuse and fusermount3 print the real reason of a failed mount on standard error (fd 2),
for example ``fusermount3: option allow_other only allowed if 'user_allow_other' is set in
/etc/fuse.conf``. ``StderrCapture`` keeps what is written to fd 2 (by this process and the
fusermount3 it runs) until the mount is live; ``explain`` turns it into the reason plus
what to do, which the CLI prints.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import sys

DEV_FUSE = "/dev/fuse"

# Printed by libfuse 3.14 at every mount; not a reason for anything.
_NOISE = (re.compile(r"^Ignoring invalid max threads value"),)

# (pattern in the captured text, what to do). First match wins.
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"allow_(other|root) only allowed if 'user_allow_other'"),
     "as root, add a line 'user_allow_other' to /etc/fuse.conf (it lets every user pass "
     "-o allow_other), or mount without -o allow_other"),
    (re.compile(r"/dev/fuse: Permission denied"), "@dev_fuse"),
    (re.compile(r"(fuse device .* not found|device not found, try 'modprobe fuse')"),
     "load the FUSE kernel module as root (modprobe fuse); in a container, start it "
     "with the device /dev/fuse passed through"),
    (re.compile(r"mount failed: Operation not permitted"),
     "fusermount3 may not mount here: it must be installed setuid root (Debian's fuse3 "
     "package does that: reinstall it), and a container needs the CAP_SYS_ADMIN "
     "capability for FUSE mounts"),
    (re.compile(r"user has no write access to mountpoint"),
     "use a mount point you own (mkdir ~/private) or give yourself write access to it"),
    (re.compile(r"too many FUSE filesystems mounted"),
     "unmount some FUSE filesystems, or raise 'mount_max' in /etc/fuse.conf as root"),
    (re.compile(r"(unknown option|invalid argument|bad mount point)", re.IGNORECASE),
     "check the -o options and the mount point (FUSE options: man mount.fuse3)"),
    (re.compile(r"Transport endpoint is not connected"),
     "a crashed mount is in the way: run 'cryptfs unmount MOUNTPOINT' first"),
    (re.compile(r"(fusermount3?: (not found|No such file)|failed to exec fusermount)"),
     "install the 'fuse3' package (it provides fusermount3)"),
)

_DEFAULT_HINT = ("the lines above come from libfuse and fusermount3; 'cryptfs -v mount -f "
                 "...' shows more")


def dev_fuse_hint(path: str = DEV_FUSE) -> str:
    """What to do when this user may not open /dev/fuse (names its mode and group)."""
    try:
        st = os.stat(path)
    except OSError:
        return ("load the FUSE kernel module as root (modprobe fuse); in a container, start "
                "it with the device /dev/fuse passed through")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    mode = stat.filemode(st.st_mode)
    return (f"{path} is {mode} {owner}:{group}, so your user may not open it. As root: "
            f"'chmod 0666 {path}' (the usual mode, which Debian's udev rules set at boot; in "
            f"a container, set it where the device is passed in) or add yourself to group "
            f"'{group}' ('usermod -aG {group} $USER', then log in again)")


def dev_fuse_usable(path: str = DEV_FUSE) -> bool:
    """True when this process may open ``path`` for reading and writing."""
    return os.access(path, os.R_OK | os.W_OK)


def reason_lines(text: str) -> list[str]:
    """The lines of captured stderr that say something (libfuse's noise removed)."""
    lines = []
    for line in text.splitlines():
        line = line.rstrip()
        if line and not any(p.search(line) for p in _NOISE):
            lines.append(line)
    return lines


def hint_for(text: str) -> str:
    """What to do about the failure that ``text`` (captured stderr) describes."""
    for pattern, hint in _HINTS:
        if pattern.search(text):
            return dev_fuse_hint() if hint == "@dev_fuse" else hint
    return _DEFAULT_HINT


def explain(mountpoint: str, code: object, captured: str) -> str:
    """The message of a failed mount: libfuse's reason (or its return code), then what to do.

    ``code`` is libfuse's ``fuse_main`` return value; ``captured`` the stderr text.
    """
    lines = reason_lines(captured)
    reason = "\n  ".join(lines[-8:]) if lines else f"libfuse returned {code}, and said nothing"
    return f"FUSE mount of {mountpoint} failed:\n  {reason}\n  what to do: {hint_for(captured)}"


class StderrCapture:
    """Send file descriptor 2 to an in-memory file until ``release``.

    Child processes (fusermount3) inherit the capture. ``text()`` returns what was written
    so far (at most the first 64 KiB). ``release`` puts the previous stderr back and, if
    asked, copies what was captured (noise removed) to it, so nothing is lost on success.
    """

    LIMIT = 1 << 16

    def __init__(self) -> None:
        _flush_python_stderr()
        self._saved: int | None = os.dup(2)
        self._memfd = os.memfd_create("cryptfs-stderr", os.MFD_CLOEXEC)
        os.dup2(self._memfd, 2)

    def text(self) -> str:
        """What has been written to fd 2 since the capture began."""
        _flush_python_stderr()
        return os.pread(self._memfd, self.LIMIT, 0).decode(errors="replace")

    def release(self, replay: bool = True) -> None:
        """Restore fd 2; with ``replay``, write the captured lines to it. Idempotent."""
        if self._saved is None:
            return
        captured = self.text() if replay else ""
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        os.close(self._memfd)
        lines = reason_lines(captured)
        if lines:
            try:
                os.write(2, ("\n".join(lines) + "\n").encode())
            except OSError:
                pass


def _flush_python_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
