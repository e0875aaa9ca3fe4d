"""Engine 2's remote operations (docs/SYNC.md §1, §4, §5), each one rclone call for a whole
batch (``--files-from-raw`` lists, no traversal of the vault), through rclone.py.

Flags: ``--ignore-times`` (a copy or move never skips an object because size and time
match: engine 2 has already decided it changed), ``--no-traverse`` (look up the listed
objects, never list their folders), ``--no-check-dest`` where the destination is new.
Paths are relative to the remote root, '/'-separated.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass

from . import layout
from .rclone import SyncError, finish, join_remote, last_error, redact, run, start

log = logging.getLogger("cryptfs")

LOG_DIR = f"{layout.SYNC_AREA}/log"
STAGE_DIR = f"{layout.SYNC_AREA}/stage"
NOT_FOUND = 3
SAFE = ["--ignore-times", "--no-traverse"]


@dataclass
class Listed:
    size: int
    modtime: str


class Remote:
    def __init__(self, binary: str, remote: str, workdir: str) -> None:
        self.binary = binary
        self.remote = remote
        self.workdir = workdir

    def at(self, rel: str) -> str:
        return join_remote(self.remote, rel)

    def _fail(self, what: str, proc_err: bytes | str) -> SyncError:
        return SyncError(redact(f"{what}: {last_error(proc_err) or 'rclone failed'}"))

    def _list_file(self, paths: list[str]) -> str:
        fd, name = tempfile.mkstemp(prefix="files-", dir=self.workdir)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write("".join(p + "\n" for p in paths))
        return name

    # -- the log -------------------------------------------------------------------------
    def start_log_listing(self):
        return start(self.binary, "lsjson", "-R", "--files-only", "--no-mimetype",
                     self.at(LOG_DIR))

    @staticmethod
    def parse_listing(proc_result: tuple[int, bytes, bytes], what: str
                      ) -> dict[str, Listed] | None:
        """{relative path: Listed}; None if the folder does not exist."""
        code, out, err = proc_result
        if code == NOT_FOUND or (code != 0 and b"directory not found" in err.lower()):
            return None
        if code != 0:
            raise SyncError(redact(f"cannot list {what}: {last_error(err) or code}"))
        try:
            return {e["Path"]: Listed(int(e["Size"]), str(e.get("ModTime", "")))
                    for e in json.loads(out or b"[]")}
        except (ValueError, KeyError, TypeError):
            raise SyncError(f"unexpected listing of {what}") from None

    def list_log(self) -> dict[str, Listed] | None:
        return self.parse_listing(finish(self.start_log_listing()), "the sync log")

    def download(self, src_dir: str, paths: list[str], target: str) -> None:
        """Copy ``src_dir/<path>`` for every path into ``target/<path>`` (missing objects
        are simply not there afterwards)."""
        if not paths:
            return
        files = self._list_file(paths)
        try:
            # Sizes and checksums are the remote's word: the caller checks every file
            # against the hash its record announced (a cut object arrives, and is
            # refused there, instead of failing the whole batch).
            proc = run(self.binary, "copy", self.at(src_dir) if src_dir else self.remote,
                       target, "--files-from-raw", files, *SAFE, "--ignore-size",
                       "--ignore-checksum", timeout=3600)
        finally:
            os.unlink(files)
        if proc.returncode not in (0, NOT_FOUND):
            # One object failing is judged by the caller; nothing arriving at all is the
            # remote failing (never to be mistaken for objects deleted there).
            arrived = any(os.path.exists(os.path.join(target, p)) for p in paths)
            if not arrived:
                raise self._fail("download failed", proc.stderr)

    # -- publishing ------------------------------------------------------------------------
    def upload_dir(self, local: str, remote_dir: str) -> None:
        """Upload a local folder (a batch's outgoing folder) to a new remote folder."""
        proc = run(self.binary, "copy", local, self.at(remote_dir), "--ignore-times",
                   "--no-check-dest", timeout=3600)
        if proc.returncode != 0:
            raise self._fail("upload failed", proc.stderr)

    def moveto(self, src: str, dst: str, missing_ok: bool = False) -> bool:
        """Server-side move of one object; False if ``src`` is missing and that is OK."""
        proc = run(self.binary, "moveto", self.at(src), self.at(dst), "--ignore-times")
        if proc.returncode == 0:
            return True
        err = proc.stderr.lower()
        if missing_ok and (proc.returncode == NOT_FOUND or b"not found" in err
                           or b"no such file" in err):
            return False
        raise self._fail(f"cannot move {src}", proc.stderr)

    def move_into_place(self, stage_dir: str, paths: list[str]) -> None:
        """Move ``stage_dir/<path>`` to ``<path>`` for every path (server-side moves; a
        path already moved is skipped)."""
        if not paths:
            return
        files = self._list_file(paths)
        try:
            proc = run(self.binary, "move", self.at(stage_dir), self.remote,
                       "--files-from-raw", files, *SAFE, timeout=3600)
        finally:
            os.unlink(files)
        if proc.returncode not in (0, NOT_FOUND) and b"not found" not in proc.stderr.lower():
            raise self._fail("cannot move staged objects into place", proc.stderr)

    def delete(self, paths: list[str]) -> None:
        if not paths:
            return
        files = self._list_file(paths)
        try:
            proc = run(self.binary, "delete", self.remote, "--files-from-raw", files,
                       "--no-traverse", timeout=3600)
        finally:
            os.unlink(files)
        if proc.returncode not in (0, NOT_FOUND) and b"not found" not in proc.stderr.lower():
            raise self._fail("cannot delete", proc.stderr)

    def purge(self, rel: str) -> None:
        proc = run(self.binary, "purge", self.at(rel))
        if proc.returncode not in (0, NOT_FOUND) and b"not found" not in proc.stderr.lower():
            raise self._fail(f"cannot remove {rel}", proc.stderr)

    def list_mirror(self) -> dict[str, Listed]:
        """Every object of the mirror (the daily check): one recursive listing."""
        result = finish(start(self.binary, "lsjson", "-R", "--files-only", "--no-mimetype",
                              "--exclude", f"/{layout.SYNC_AREA}/**",
                              "--exclude", "/" + layout.CONFIG_PATH, self.remote),
                        timeout=3600)
        return self.parse_listing(result, "the remote") or {}
