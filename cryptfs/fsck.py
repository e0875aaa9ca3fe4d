"""Offline consistency check of a vault: every name, directory IV, sidecar, symlink, header
and block. Read-only unless asked to quarantine what cannot be read."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .config import BACKUP_NAME, CONFIG_NAME
from .content import HEADER_LEN
from .errors import IntegrityError
from .files import OpenFile
from .names import (
    DIRIV_NAME,
    HIDDEN_PREFIX,
    LONG_PREFIX,
    LONG_SUFFIX,
    is_long_entry,
    long_entry_name,
)
from .volume import Volume

READ_CHUNK = 1 << 20

# Debris of an interrupted operation, not damage: reported, but the vault is still "ok"
# (fsck exits 0; --quarantine moves them aside).
NOTICE_KINDS = frozenset({"leftover-temp", "config-backup"})


@dataclass
class Problem:
    """One thing that is wrong, with where it is in both views."""

    kind: str  # short machine-readable tag
    backing_path: str
    plain_path: str | None
    detail: str
    quarantined_to: str | None = None


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    dirs: int = 0
    files: int = 0
    symlinks: int = 0
    other: int = 0
    bytes_checked: int = 0

    @property
    def failures(self) -> list[Problem]:
        """Problems that are damage or tampering (everything but ``NOTICE_KINDS``)."""
        return [p for p in self.problems if p.kind not in NOTICE_KINDS]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"ok": self.ok, "dirs": self.dirs, "files": self.files,
                "symlinks": self.symlinks, "other": self.other,
                "bytes_checked": self.bytes_checked,
                "problems": [asdict(p) for p in self.problems]}


class Checker:
    """Walks the backing tree of an unlocked volume and records every problem."""

    def __init__(self, volume: Volume, quarantine: str | None = None,
                 progress: Callable[[Report], None] | None = None) -> None:
        self.vol = volume
        self.quarantine = os.path.abspath(quarantine) if quarantine else None
        if self.quarantine:
            real_q, real_b = os.path.realpath(self.quarantine), os.path.realpath(volume.backing)
            if real_q == real_b or real_q.startswith(real_b + os.sep):
                raise ValueError("the quarantine directory must be outside the vault")
        self.report = Report()
        self._progress = progress
        self._last_progress = 0.0

    def run(self) -> Report:
        self._check_dir(self.vol.backing, "/")
        if self._progress:
            self._progress(self.report)
        return self.report

    # -- recording ---------------------------------------------------------------------
    def _problem(self, kind: str, backing_path: str, plain: str | None, detail: str,
                 move: bool = False) -> None:
        problem = Problem(kind, backing_path, plain, detail)
        if move and self.quarantine:
            problem.quarantined_to = self._move_aside(backing_path)
        self.report.problems.append(problem)

    def _move_aside(self, backing_path: str) -> str | None:
        rel = os.path.relpath(backing_path, self.vol.backing)
        dest = os.path.join(self.quarantine, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            shutil.move(backing_path, dest)
        except OSError:
            return None
        if is_long_entry(os.path.basename(backing_path)):
            sidecar = backing_path + LONG_SUFFIX
            if os.path.lexists(sidecar):
                shutil.move(sidecar, dest + LONG_SUFFIX)
        return dest

    def _tick(self) -> None:
        now = time.monotonic()
        if self._progress and now - self._last_progress > 0.2:
            self._last_progress = now
            self._progress(self.report)

    # -- walking -----------------------------------------------------------------------
    def _check_dir(self, backing_dir: str, plain_dir: str) -> None:
        self.report.dirs += 1
        try:
            iv = self.vol.mapper.dir_iv(backing_dir)
        except (IntegrityError, OSError) as exc:
            self._problem("dir-iv", os.path.join(backing_dir, DIRIV_NAME), plain_dir,
                          f"directory IV unusable ({exc}); no name in this directory can "
                          "be decrypted")
            return
        try:
            names = sorted(os.listdir(backing_dir))
        except OSError as exc:
            self._problem("unreadable-dir", backing_dir, plain_dir, str(exc))
            return
        present = set(names)
        for name in names:
            path = os.path.join(backing_dir, name)
            if name == DIRIV_NAME or (name == CONFIG_NAME and backing_dir == self.vol.backing):
                continue
            if name == BACKUP_NAME and backing_dir == self.vol.backing:
                self._problem("config-backup", path, None,
                              "a 'cryptfs passwd' was interrupted: this backup still opens the "
                              "vault with the old passphrase; delete it once the new one works")
                continue
            if name.startswith(LONG_PREFIX) and name.endswith(LONG_SUFFIX):
                if name[: -len(LONG_SUFFIX)] not in present:
                    self._problem("orphan-sidecar", path, None,
                                  "long-name sidecar without its entry", move=True)
                continue
            if (name.startswith("cryptfs.") and name.endswith(".tmp")) or name.startswith(
                    HIDDEN_PREFIX):
                self._problem("leftover-temp", path, None,
                              "temporary file or directory left by an interrupted operation",
                              move=True)
                continue
            try:
                plain = os.fsdecode(self.vol.mapper.decrypt_entry_name(backing_dir, iv, name))
            except IntegrityError as exc:
                self._problem("name", path, None, f"name does not decrypt here: {exc}",
                              move=True)
                continue
            if is_long_entry(name):
                with open(path + LONG_SUFFIX, "rb") as fh:
                    if long_entry_name(fh.read().decode("ascii", "replace")) != name:
                        self._problem("sidecar", path, None, "sidecar does not match")
            plain_path = plain_dir.rstrip("/") + "/" + plain
            self._check_entry(path, plain_path)
            self._tick()

    def _check_entry(self, path: str, plain_path: str) -> None:
        try:
            st = os.lstat(path)
        except OSError as exc:
            self._problem("stat", path, plain_path, str(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            self._check_dir(path, plain_path)
        elif stat.S_ISREG(st.st_mode):
            self.report.files += 1
            self._check_file(path, plain_path, st.st_size)
        elif stat.S_ISLNK(st.st_mode):
            self.report.symlinks += 1
            try:
                self.vol.names.decrypt_symlink(os.readlink(path))
            except IntegrityError as exc:
                self._problem("symlink", path, plain_path, str(exc), move=True)
        else:
            self.report.other += 1

    def _check_file(self, path: str, plain_path: str, backing_size: int) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            self._problem("open", path, plain_path, str(exc))
            return
        of = OpenFile(fd, self.vol.content, path, writable=False)
        bad: list[str] = []
        try:
            if backing_size < HEADER_LEN:
                bad.append(f"file of {backing_size} bytes has no complete header")
            else:
                try:
                    for index, length, problem in of.check_blocks():
                        if problem:
                            bad.append(problem)
                        self.report.bytes_checked += length
                        if index % 64 == 0:
                            self._tick()
                except IntegrityError as exc:
                    bad.append(str(exc))
        finally:
            os.close(fd)
        if bad:
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            self._problem("content", path, plain_path, "; ".join(bad[:5]) + more, move=True)


def terminal_progress(report: Report) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\rchecked {report.dirs} dirs, {report.files} files, "
                         f"{report.bytes_checked / 2**20:.1f} MiB, "
                         f"{len(report.problems)} problems   ")
        sys.stderr.flush()
