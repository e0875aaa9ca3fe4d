"""Which processes keep a mount busy: open files, working directories, mapped files.

Read from /proc: an open file's mount is the ``mnt_id`` of ``/proc/PID/fdinfo/FD``; a
working or root directory is matched by path; a mapped file by the device number in
``/proc/PID/maps``. Only processes this user may inspect are seen (all of them as root).
Nothing here touches the mounted filesystem itself, so a hung mount cannot hang it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass
class Holder:
    """One process and how it holds the mount."""

    pid: int
    name: str
    open_files: int = 0
    cwd: bool = False
    mapped: bool = False

    def describe(self) -> str:
        parts = []
        if self.open_files:
            parts.append(f"{self.open_files} open file{'s' if self.open_files > 1 else ''}")
        if self.cwd:
            parts.append("working directory")
        if self.mapped:
            parts.append("mapped file")
        return f"{self.name} (pid {self.pid}: {', '.join(parts)})"


def locate(mountpoint: str) -> tuple[int, int, str] | None:
    """(mount id, device number, real path) of the mount at ``mountpoint``, or None.
    Keep it to look for holders after a lazy unmount has detached the mount."""
    target = os.fsencode(os.path.realpath(mountpoint))
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split()
                if _unescape(fields[4]) == target:
                    major, minor = fields[2].split(b":")
                    return (int(fields[0]), os.makedev(int(major), int(minor)),
                            os.fsdecode(target))
    except (OSError, ValueError, IndexError):
        pass
    return None


def _unescape(field_: bytes) -> bytes:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field_)


def find(where: str | tuple[int, int, str], skip_pids: tuple[int, ...] = ()) -> list[Holder]:
    """Processes with files open, a working directory or a mapping in the mount.
    ``where``: a mount point, or what ``locate`` returned for it."""
    ids = locate(where) if isinstance(where, str) else where
    if ids is None:
        return []
    mnt_id, dev, real = ids
    dev_text = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    prefix = real.rstrip("/") + "/"
    skip = set(skip_pids) | {os.getpid()}
    found: list[Holder] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        holder = Holder(pid, _name(pid))
        holder.open_files = _open_files_on(pid, mnt_id)
        for link in ("cwd", "root"):
            try:
                where = os.readlink(f"/proc/{pid}/{link}")
            except OSError:
                continue
            if where == real or where.startswith(prefix):
                holder.cwd = True
        holder.mapped = _maps_device(pid, dev_text)
        if holder.open_files or holder.cwd or holder.mapped:
            found.append(holder)
    return found


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() or "?"
    except OSError:
        return "?"


def _open_files_on(pid: int, mnt_id: int) -> int:
    count = 0
    wanted = f"mnt_id:\t{mnt_id}\n"
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return 0
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                if wanted in fh.read():
                    count += 1
        except OSError:
            continue
    return count


def _maps_device(pid: int, dev_text: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) > 4 and parts[3] == dev_text and parts[4] != "0":
                    return True
    except OSError:
        pass
    return False


def summary(holders: list[Holder], limit: int = 5) -> str:
    """One line naming up to ``limit`` holders."""
    shown = ", ".join(h.describe() for h in holders[:limit])
    more = f" and {len(holders) - limit} more" if len(holders) > limit else ""
    return shown + more
