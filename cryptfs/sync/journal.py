"""The mount's change journal (docs/SYNC.md §4): which backing folders and objects changed
since the last sync, appended before each operation returns, so a killed daemon loses
nothing.

One line per backing path (a storage folder ``d/xx/yyyy…`` or an xattr object
``x/xx/yyyy…``), appended once per path until a sync takes the journal. Taking it renames
the file under an exclusive ``flock`` that every append also holds, so no append can land
in a journal that a sync has already read: an appender that finds the file it holds
renamed away forgets what it had written and starts the new journal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("cryptfs")

NAME = "journal"
TAKEN = "journal.taken"


class Journal:
    """Appender side (the mount) and taker side (the sync) of one journal file."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.path = self.dir / NAME
        self._fd = -1
        self._ino: tuple[int, int] | None = None
        self._written: set[str] = set()
        self.failed = False  # an append failed: the next sync must look at everything

    # -- the mount -----------------------------------------------------------------------
    def record(self, rel: str) -> None:
        """Note that backing path ``rel`` changed (called by Volume.on_backing_change)."""
        try:
            self._record(rel)
        except OSError as exc:  # never fail the file system operation for the journal
            if not self.failed:
                log.error("cannot write the sync journal %s (%s): the next sync compares "
                          "every folder", self.path, exc.strerror)
            self.failed = True
            with contextlib.suppress(OSError):
                (self.dir / "journal.failed").touch()

    def _record(self, rel: str) -> None:
        if self._fd >= 0 and rel in self._written and self._current():
            return
        while True:
            if self._fd < 0 or not self._current():
                self._reopen()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            # Taken between our open and our lock? Then this file is gone: start over
            # with a new one (never write into a journal a sync has already read).
            if self._current():
                break
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        try:
            os.write(self._fd, rel.encode("utf-8", "surrogateescape") + b"\n")
            self._written.add(rel)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _current(self) -> bool:
        """True while the file we hold is still the journal (not taken by a sync)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ino

    def _reopen(self) -> None:
        self.close()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o600)
        st = os.fstat(self._fd)
        self._ino = (st.st_dev, st.st_ino)
        self._written = set()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the sync ------------------------------------------------------------------------
    @contextlib.contextmanager
    def take(self) -> Iterator[tuple[set[str], bool]]:
        """The journalled paths and whether the journal is trustworthy (no append failed).
        A journal taken earlier by a sync that did not finish is included; the taken
        file is removed only when the block ends without an exception."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        taken = self.dir / TAKEN
        paths: set[str] = set()
        try:
            fh = open(self.path, "rb")  # closed by the with below
        except FileNotFoundError:
            fh = None
        if fh is not None:
            with fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    data = fh.read()
                    with open(taken, "ab") as out:
                        out.write(data)
                        out.flush()
                        os.fsync(out.fileno())
                    self.path.unlink()
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        try:
            for line in taken.read_bytes().split(b"\n"):
                if line:
                    paths.add(line.decode("utf-8", "surrogateescape"))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        failed = self.dir / "journal.failed"
        trusted = not failed.exists()
        yield paths, trusted
        taken.unlink(missing_ok=True)
        if not trusted:
            failed.unlink(missing_ok=True)

    def pending(self) -> set[str]:
        """What is journalled and not synced yet (for status), without taking it."""
        out: set[str] = set()
        for name in (TAKEN, NAME):
            with contextlib.suppress(OSError):
                out.update(line.decode("utf-8", "surrogateescape")
                           for line in (self.dir / name).read_bytes().split(b"\n") if line)
        return out
