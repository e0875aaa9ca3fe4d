"""Two-way sync of one vault's backing directory with its remote (rclone bisync).

One run, under this device's sync lock for the (vault, remote) pair:

1. recover the sync state (stale locks removed; listings a crash left empty or cut are
   replaced by our copy of the last good ones; state.py);
2. check that the remote is empty or holds this vault, before anything is transferred,
   and bring the config in step (identity.py);
3. without a last common state, move this device's version of every differing file aside
   first, so the merge keeps both (resync.py); else an ordinary bisync;
4. name the conflict copies bisync made, put back back-references the run removed and
   reattach folders it left unreachable (repair.py), and upload those in a second pass;
5. keep a copy of the new listings and of every folder's back-reference.

Before each bisync pass the vault's ignore rules (``/.cryptfsignore`` and the defaults)
are turned into the backing paths rclone must not see (ignore.py).

Conflicts: when a file changed on both sides, the remote's version keeps the name and
this device's version is kept as ``NAME (conflict YYYY-MM-DD HOST).EXT`` — both survive,
as with Dropbox, and the copy carries the name of the device whose version it is.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import conflicts
from ..config import VaultConfig
from ..settings import VaultSettings
from ..volume import Volume
from . import identity, ignore, layout, repair, resync
from .rclone import (
    ANSI,
    SyncError,
    check_location,
    count_call,
    ensure_config_password,
    extra_args,
    last_error,
    prepare_environment,
    quoted_filters,
    redact,
    run,
)
from .state import SyncState

log = logging.getLogger("cryptfs")


@dataclass
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    speed: float = 0.0
    eta: float | None = None


@dataclass
class SyncResult:
    seconds: float = 0.0
    transfers: int = 0
    bytes: int = 0
    deletes: int = 0
    renamed_conflicts: list[str] = field(default_factory=list)  # shown plaintext names
    conflict_paths: list[str] = field(default_factory=list)  # their backing paths
    merged_without_state: bool = False
    only_remote: list[str] = field(default_factory=list)  # backing paths brought here
    repaired_dirs: list[str] = field(default_factory=list)  # storage folders reattached
    config_note: str | None = None
    ignored: int = 0  # ignored paths kept off the remote (tops of ignored subtrees)
    merge: object = None  # the resync.MergeReport of a merge without state


@dataclass
class VaultKeys:
    """What a sync needs of the unlocked vault (the Volume knows its layout)."""

    master_key: bytes
    config: VaultConfig
    volume: Volume


class Syncer:
    """Two-way sync of one vault's backing directory with its remote."""

    def __init__(self, backing: str, settings: VaultSettings | None = None,
                 remote: str | None = None, rclone_config: str | None = None,
                 vault: VaultKeys | None = None) -> None:
        self.backing = check_location(os.path.abspath(backing), "backing directory")
        self.settings = settings or VaultSettings.load(backing)
        remote = remote or self.settings.remote
        if not remote:
            raise SyncError("no remote for this vault: give --remote REMOTE:PATH or run "
                            "'cryptfs remote set BACKING REMOTE:PATH'")
        self.remote = check_location(remote, "remote")
        self.shown_remote = redact(self.remote)
        self.binary = prepare_environment(rclone_config)
        ensure_config_password(self.binary)
        self.vault = vault
        self.state = SyncState(self.settings, self.remote)
        self._proc: subprocess.Popen | None = None
        self._filter_file: Path | None = None
        self._ignored = 0

    # -- filters -----------------------------------------------------------------------
    def filter_args(self) -> list[str]:
        """rclone filter flags: the format's own excludes, and the backing paths of
        ignored plaintext paths once ``prepare_ignore`` has run."""
        if self._filter_file is not None:
            return ["--filter-from", str(self._filter_file)]
        args = []
        for pattern in layout.BISYNC_EXCLUDES:
            args += ["--exclude", pattern]
        return args

    def prepare_ignore(self) -> None:
        """Evaluate the vault's ignore rules now (the tree and the rules may have
        changed since the last pass) and write rclone's filter file."""
        assert self.vault is not None
        plan = ignore.plan(self.vault.volume, self.state.dir, self.state.listings())
        self._filter_file = ignore.write_filter(plan, self.state.dir)
        self._ignored = len(plan.walk.ignored)

    def scrub(self, message: str) -> str:
        """An rclone message fit to show or store: the remote's credentials redacted."""
        return redact(message.replace(self.remote, self.shown_remote))

    # -- bisync ------------------------------------------------------------------------
    def bisync(self, progress: Callable[[Progress], None] | None = None) -> SyncResult:
        if self.vault is None:
            raise SyncError("internal error: a sync needs the unlocked vault")
        started = time.monotonic()
        with self.state.locked():
            try:
                result = self._bisync_locked(progress)
            except SyncError as exc:
                raise type(exc)(self.scrub(str(exc))) from None
        result.seconds = time.monotonic() - started
        return result

    def _bisync_locked(self, progress: Callable[[Progress], None] | None, *,
                       fresh: bool = False, authentic=None,
                       synced_before: bool = False) -> SyncResult:
        """One run under the lock. Engine 2 (engine.py) runs it as its full
        reconciliation: ``fresh`` merges without earlier listings (engine 2 leaves them
        stale), ``authentic(rel)`` tells which local files the authenticated state vouches
        for (resync.merge_without_state), ``synced_before`` that this pair has synced."""
        assert self.vault is not None
        if fresh:
            self.state.drop_listings()
        have_state = self.state.prepare_listings()
        marker_path, marker = layout.root_marker(self.vault.volume)
        found = identity.inspect_remote(self.binary, self.remote, marker_path)
        identity.check_identity(found, self.remote, self.backing, self.vault.config,
                                self.vault.master_key, marker,
                                synced_before=have_state or synced_before)
        note = identity.reconcile_config(self.binary, self.remote, self.backing, self.state,
                                         found, self.settings.upload_config)
        if found.empty:
            self._mkdir_remote()
        elif found.root_marker is None:
            # A remote that lost only the root's back-reference: put it back before
            # bisync could mirror that as a deletion here (a vault-level file changes
            # only on purpose).
            self._upload(marker_path)
        known_backrefs = {**self.state.backrefs(), **layout.read_backrefs(self.backing)}
        before = set(self._conflict_copies())
        self.prepare_ignore()
        merge = None
        if not have_state and not found.empty:
            merge = resync.merge_without_state(self.binary, self.backing, self.remote,
                                               self.vault.volume, self.filter_args(),
                                               authentic)
        result = self._run_bisync(not have_state, progress)
        result.config_note = note
        result.ignored = self._ignored
        if merge is not None:
            result.merged_without_state = True
            result.renamed_conflicts += merge.conflicts
            result.conflict_paths += merge.conflict_paths
            result.only_remote = merge.only_remote
            result.merge = merge
        for shown, path in self._name_new_conflicts(before):
            result.renamed_conflicts.append(shown)
            result.conflict_paths.append(path)
        restored = repair.restore_backrefs(self.vault.volume, known_backrefs)
        result.repaired_dirs = sorted(set(restored) |
                                      set(repair.repair_structure(self.vault.volume)))
        if len(result.renamed_conflicts) > len(merge.conflicts if merge else []) or \
                result.repaired_dirs:
            self.prepare_ignore()  # a reattached folder may be ignored
            more = self._run_bisync(False, progress)
            result.transfers += more.transfers
            result.bytes += more.bytes
        self.state.save_good()
        self.state.save_backrefs(layout.read_backrefs(self.backing))
        return result

    def _upload(self, rel: str) -> None:
        from .rclone import join_remote

        proc = run(self.binary, "copyto", os.path.join(self.backing, rel),
                   join_remote(self.remote, rel))
        if proc.returncode != 0:
            raise SyncError(last_error(proc.stderr) or f"cannot upload {rel}")

    def _mkdir_remote(self) -> None:
        proc = run(self.binary, "mkdir", self.remote)
        if proc.returncode != 0:
            raise SyncError(last_error(proc.stderr) or f"cannot create {self.remote}")

    def _run_bisync(self, resync_run: bool, progress: Callable[[Progress], None] | None
                    ) -> SyncResult:
        wd = self.state.workdir
        wd.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [self.binary, "bisync", self.backing, self.remote,
                "--workdir", str(wd), "--resilient", "--recover", "--force",
                "--conflict-resolve", "path2", "--conflict-loser", "num",
                "--conflict-suffix", conflicts.BISYNC_SUFFIX,
                "--max-lock", "2m", "--transfers", "8", "--checkers", "16",
                "--use-json-log", "--stats", "0.5s", "--stats-log-level", "NOTICE",
                "-v", *self.filter_args(), *extra_args()]
        if resync_run:
            # Differing files were moved aside first (resync.py): what is left differs
            # only where one side lacks the file.
            argv += ["--resync", "--resync-mode", "newer"]
        log.debug("running rclone bisync (resync=%s)", resync_run)
        count_call("bisync")
        result = SyncResult()
        errors: list[str] = []
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True, errors="replace")
        try:
            assert self._proc.stderr is not None
            for line in self._proc.stderr:
                self._parse_line(line, result, errors, progress)
            code = self._proc.wait()
        finally:
            self._proc = None
        if code != 0:
            if any("must run --resync" in e.lower() for e in errors):
                # bisync gave up on its state: never retry with the same state (that would
                # wedge every later sync); the next run merges without it (resync.py).
                self.state.forget_listings()
            useful = [e for e in errors if "aborted" not in e.lower()] or errors
            raise SyncError(useful[0] if useful else f"rclone bisync exited with {code}")
        return result

    def stop(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.terminate()

    @staticmethod
    def _parse_line(line: str, result: SyncResult, errors: list[str],
                    progress: Callable[[Progress], None] | None) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                errors.append(line.strip())
            return
        if not isinstance(entry, dict):
            return
        stats = entry.get("stats")
        if isinstance(stats, dict):
            result.transfers = max(result.transfers, int(stats.get("transfers", 0)))
            result.bytes = max(result.bytes, int(stats.get("bytes", 0)))
            result.deletes = max(result.deletes, int(stats.get("deletes", 0)))
            if progress:
                progress(Progress(int(stats.get("transfers", 0)),
                                  int(stats.get("totalTransfers", 0)),
                                  int(stats.get("bytes", 0)), int(stats.get("totalBytes", 0)),
                                  float(stats.get("speed", 0.0)), stats.get("eta")))
        if entry.get("level") in ("error", "critical"):
            errors.append(ANSI.sub("", str(entry.get("msg", ""))).strip())

    # -- conflicts ---------------------------------------------------------------------
    def _conflict_copies(self) -> list[str]:
        found = []
        for root, _dirs, files in os.walk(self.backing):
            found.extend(os.path.join(root, f) for f in files
                         if f.rsplit(".", 1)[-1].startswith(conflicts.BISYNC_SUFFIX))
        return found

    def _name_new_conflicts(self, before: set[str]) -> list[tuple[str, str]]:
        """bisync kept this device's losing version as ``<enc>.cryptfsconflictN``; give
        it a real encrypted name that says whose version it is. Returns (shown name,
        backing-relative path) of each."""
        assert self.vault is not None
        renamed = []
        for path in self._conflict_copies():
            if path in before:
                continue
            done = repair.name_conflict_copy(self.vault.volume, path)
            if done is None:
                continue
            rel = done[1]
            renamed.append((done[0], rel))
            log.warning("sync conflict: kept this device's version as %s", rel)
        return renamed

    # -- one-way operations (rclone-python) ---------------------------------------------
    def download_config(self, target: str) -> bool:
        """Fetch the remote's cryptfs.conf into ``target``; False if it has none."""
        from .rclone import join_remote

        proc = run(self.binary, "copyto", join_remote(self.remote, layout.CONFIG_PATH),
                   target)
        if proc.returncode == 0 and os.path.exists(target):
            return True
        found = identity.inspect_remote(self.binary, self.remote)
        if found.empty:
            raise SyncError(f"{self.shown_remote} is empty or missing: nothing to clone")
        if found.config is None:
            return False
        raise SyncError(self.scrub(last_error(proc.stderr) or "cannot download cryptfs.conf"))

    def clone_into_backing(self) -> None:
        """Download the whole remote (but its config) into the backing directory."""
        from rclone_python import rclone

        try:
            rclone.copy(self.remote, self.backing, show_progress=sys.stderr.isatty(),
                        args=[*quoted_filters(self.filter_args()), *extra_args()])
        except Exception as exc:  # rclone_python raises RcloneException(ChildProcessError)
            raise SyncError(self.scrub(f"download from {self.remote} failed: "
                                       f"{getattr(exc, 'error_msg', '') or exc}")) from None

    def download_to(self, target: str) -> None:
        from rclone_python import rclone

        check_location(target, "download directory")
        try:
            rclone.copy(self.remote, target, show_progress=False,
                        args=[*extra_args()])
        except Exception as exc:
            raise SyncError(self.scrub(f"download from {self.remote} failed: "
                                       f"{getattr(exc, 'error_msg', '') or exc}")) from None

    def list_remote(self) -> list[dict]:
        from rclone_python import rclone

        try:
            return rclone.ls(self.remote, args=["-R", *extra_args()])
        except Exception as exc:
            raise SyncError(self.scrub(f"cannot list {self.remote}: "
                                       f"{getattr(exc, 'error_msg', '') or exc}")) from None
