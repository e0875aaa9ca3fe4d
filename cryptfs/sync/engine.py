"""Sync engine 2 (docs/SYNC.md): changes travel as changes.

One ``Engine.run`` under the pair's sync lock:

1. take the mount's journal (which folders changed) — or look at every folder;
2. list the log (one rclone call; with the vault identity check when there is work);
3. read new records (one call), check them, fold them into the authenticated state T
   (authstate.py), finish this device's own batch if a crash interrupted it;
4. bring local files to T: downloads checked against their hash before they replace
   anything, conflict copies of local versions that lost (one or two calls);
5. compare the journalled folders with the synced map and publish one batch: staged
   upload with its record (one call), record into the log (one), objects into place
   (one), deletions (one);
6. now and then: delete old staging batches and records, the daily listing check.

The first sync of a pair, a lost state, a gap in the records and ``sync --full`` run the
full reconciliation (bisync.Syncer, a merge without state) and then start T afresh from
the local files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import layout as vault_layout
from ..errors import CryptfsError
from . import authstate, identity, layout, rclone, repair, scan
from .bisync import Progress, Syncer, SyncResult
from .db import PathRow, SyncDB, folder_of
from .journal import Journal
from .rclone import SyncError
from .records import (
    Change,
    Record,
    RecordError,
    body_hash,
    log_name,
    new_device_id,
    object_hash,
    open_record,
    parse_log_name,
    record_key,
)
from .remote import LOG_DIR, STAGE_DIR, Remote

log = logging.getLogger("cryptfs")

STAGE_KEEP = 3600.0  # seconds a staging batch stays on the remote
IDENTITY_EVERY = 600.0  # an idle poll checks the vault identity this often
VERIFY_EVERY = 86400.0  # the daily listing check
MAINTAIN_EVERY = 3600.0
HISTORY_KEEP = 2 * 86400.0
BIG_MOVE = 8 << 20  # renamed objects this big are moved on the remote, not uploaded
MAX_BATCH = 20000
DB_NAME = "engine2.sqlite"


def record_keep() -> float:
    """Seconds a record stays in the log (30 days; tests shorten it)."""
    raw = os.environ.get("CRYPTFS_TESTONLY_RECORD_AGE")
    return float(raw) if raw else 30 * 86400.0


PROBLEM_TEXT = {
    "rolled-back": "the remote holds an older version of this object than the records "
                   "say (rolled back); the local version was kept",
    "modified": "the remote object is not the version the records announce (modified "
                "or damaged); the local version was kept",
    "swapped": "the remote object holds the version of another path (objects swapped)",
    "missing": "the object is gone from the remote but no record deleted it",
    "unannounced": "an object on the remote that no record announced",
    "record-altered": "a change record does not authenticate or breaks its device's hash "
                      "chain (altered)",
    "record-replayed": "a change record is served under another name than its own "
                       "(an old record replayed)",
    "record-removed": "a change record is missing from its device's log (removed)",
    "log-rolled-back": "a device's log is shorter than what this device already applied "
                       "(records removed or rolled back)",
}


class CatchUp(Exception):
    """Records are missing: only a full reconciliation can bring this device up to date."""


@dataclass
class EngineResult(SyncResult):
    engine: int = 2
    full: bool = False
    uploads: int = 0
    downloads: int = 0
    calls: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # kind, path, text
    notes: list[str] = field(default_factory=list)
    pending: int = 0  # paths still waiting for their authenticated version

    @property
    def changed_local(self) -> bool:
        """Whether local files changed (the mount must forget what it cached)."""
        return bool(self.full or self.downloads or self.deletes or self.renamed_conflicts
                    or self.repaired_dirs)

    @property
    def idle(self) -> bool:
        """Nothing went either way and nothing was found."""
        return not (self.changed_local or self.uploads or self.problems or self.transfers)


class Engine:
    """Engine 2 for one (vault, remote) pair; ``syncer`` carries the remote, the rclone
    binary, the state directory and the unlocked vault."""

    def __init__(self, syncer: Syncer) -> None:
        if syncer.vault is None:
            raise SyncError("internal error: a sync needs the unlocked vault")
        self.syncer = syncer
        self.backing = syncer.backing
        self.volume = syncer.vault.volume
        self.state_dir = syncer.state.dir
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.journal = Journal(self.state_dir)
        self.key = record_key(syncer.vault.master_key)
        self.host = socket.gethostname() or "device"
        self._identity_at: float | None = None
        self._db: SyncDB | None = None
        self._scan_everything = False
        self._current = EngineResult()
        # backing paths open in the mount: never replaced under a program (SYNC.md §5)
        self.busy: Callable[[], set[str]] = set
        # backing paths never to publish; None: the vault's .cryptfsignore and defaults
        self.ignored: Callable[[str], bool] | None = None
        self._rules_changed = False

    @property
    def db(self) -> SyncDB:
        if self._db is None:
            self._db = SyncDB(self.state_dir / DB_NAME)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def device(self) -> str:
        return self.db.get("device") or ""

    # -- entry point ---------------------------------------------------------------------
    def run(self, *, full: bool = False, scan_all: bool = False, verify: bool = False,
            progress: Callable[[Progress], None] | None = None) -> EngineResult:
        started = time.monotonic()
        calls_before = rclone.calls()
        with self.syncer.state.locked():
            work = self._workdir()
            self.remote = Remote(self.syncer.binary, self.syncer.remote, str(work))
            try:
                if not self.db.initialized:
                    result = self._full(progress, trusted=False)
                else:
                    try:
                        result = self._incremental(scan_all, verify or full)
                    except CatchUp as exc:
                        log.warning("sync: %s; running a full reconciliation", exc)
                        found = self._current.problems
                        result = self._full(progress, trusted=False)
                        result.problems[:0] = found
                        result.notes.append(f"{exc}: ran a full reconciliation (nothing "
                                            "is deleted; files that differ are kept twice)")
                    else:
                        if full:
                            again = self._full(progress, trusted=True)
                            again.problems[:0] = result.problems
                            again.notes[:0] = result.notes
                            again.uploads += result.uploads
                            again.downloads += result.downloads
                            result = again
            except SyncError as exc:
                raise type(exc)(self.syncer.scrub(str(exc))) from None
            finally:
                shutil.rmtree(work, ignore_errors=True)
        result.calls = rclone.calls() - calls_before
        result.seconds = time.monotonic() - started
        result.transfers = max(result.transfers, result.uploads + result.downloads)
        result.pending = len(self.db.pending_paths())
        return result

    def _workdir(self) -> Path:
        work = self.state_dir / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, mode=0o700)
        return work

    # -- identity --------------------------------------------------------------------------
    def _check_identity(self, result: EngineResult) -> None:
        s = self.syncer
        marker_path, marker = layout.root_marker(self.volume)
        found = identity.inspect_remote(s.binary, s.remote, marker_path)
        identity.check_identity(found, s.remote, s.backing, s.vault.config,
                                s.vault.master_key, marker, synced_before=True)
        note = identity.reconcile_config(s.binary, s.remote, s.backing, s.state, found,
                                         s.settings.upload_config)
        if note:
            result.config_note = note
        if found.root_marker is None:
            s._upload(marker_path)
        self._identity_at = time.monotonic()

    # -- one incremental sync --------------------------------------------------------------
    def _incremental(self, scan_all: bool, verify: bool) -> EngineResult:
        result = self._current = EngineResult()
        db = self.db
        with self.journal.take() as (journalled, trusted):
            scan_all = scan_all or not trusted or self._scan_everything
            work = bool(journalled) or scan_all or verify or db.batch() is not None or \
                bool(db.pending_paths()) or bool(db.restores())
            due = self._identity_at is None or \
                time.monotonic() - self._identity_at > IDENTITY_EVERY
            listing_proc = self.remote.start_log_listing()
            checked = work or due
            if checked:
                self._check_identity(result)
            listing = self.remote.parse_listing(rclone.finish(listing_proc), "the sync log")
            if listing is None:
                if not checked:
                    self._check_identity(result)  # an emptied remote is refused there
                    checked = True
                listing = {}
            logs = self._logs(listing)
            todo = self._new_records(logs, result)
            if todo and not checked:
                self._check_identity(result)
            records = self._read_records(todo, result)
            affected = self._fold(records, logs, result)
            self._check_own_log(logs, result)
            extra_folders = self._finish_batch(logs, result)
            affected |= set(db.pending_paths())
            touched = self._converge(affected, result)
            if verify:
                self._verify(result)
            if scan_all or self._scan_everything:
                folders = scan.all_folders(self.backing) | db.folders()
                self._scan_everything = False
            else:
                folders = scan.folders_of(journalled) | touched | extra_folders
            self._publish(folders, result)
            self._maintain(logs, result)
        self._collect_problems(result)
        return result

    # -- reading the log -------------------------------------------------------------------
    @staticmethod
    def _logs(listing: dict) -> dict[str, list[int]]:
        logs: dict[str, list[int]] = {}
        for name in listing:
            parsed = parse_log_name(name)
            if parsed is not None:
                logs.setdefault(parsed[0], []).append(parsed[1])
        for seqs in logs.values():
            seqs.sort()
        return logs

    def _problem(self, result: EngineResult, kind: str, path: str,
                 detail: str | None = None) -> None:
        text = detail or PROBLEM_TEXT.get(kind, kind)
        if self.db.add_problem(kind, path, text):
            log.error("sync: %s: %s (%s)", kind, path, text)
        result.problems.append((kind, path, text))

    def _new_records(self, logs: dict[str, list[int]], result: EngineResult
                     ) -> list[tuple[str, int]]:
        """(device, seq) of the records to read, in order; CatchUp on a gap."""
        positions = self.db.devices()
        me = self.device
        todo = []
        for dev, seqs in sorted(logs.items()):
            if dev == me:
                continue
            pos = positions.get(dev, (0, "", 0))[0]
            newer = [s for s in seqs if s > pos]
            if not newer:
                if seqs and seqs[-1] < pos:
                    self._problem(result, "log-rolled-back", f"{LOG_DIR}/{dev}",
                                  f"the log of device {dev} ends at {seqs[-1]}, but this "
                                  f"device already applied its record {pos} (records "
                                  "removed or rolled back)")
                continue
            expected = pos + 1
            for s in newer:
                if s != expected:
                    missing = f"{LOG_DIR}/{log_name(dev, expected)}"
                    # compaction deletes the oldest records only: a hole after a
                    # record that is still there is a removal
                    if s != newer[0] or any(x <= pos for x in seqs):
                        self._problem(result, "record-removed", missing)
                    raise CatchUp(f"records {expected}..{s - 1} of device {dev} are "
                                  "missing (pruned while this device was away, or removed)")
                expected += 1
            todo.extend((dev, s) for s in newer)
        for dev, (pos, _h, _l) in positions.items():
            if dev != me and dev not in logs and pos > 0:
                self._problem(result, "log-rolled-back", f"{LOG_DIR}/{dev}",
                              f"the log of device {dev} is gone, but this device applied "
                              f"its records up to {pos} (removed)")
        return todo

    def _read_records(self, todo: list[tuple[str, int]], result: EngineResult
                      ) -> list[tuple[Record, str]]:
        if not todo:
            return []
        target = self.remote.workdir + "/records"
        names = [log_name(d, s) for d, s in todo]
        self.remote.download(LOG_DIR, names, target)
        positions = self.db.devices()
        out = []
        broken: set[str] = set()
        for dev, seq in todo:
            if dev in broken:
                continue
            name = log_name(dev, seq)
            path = f"{LOG_DIR}/{name}"
            try:
                blob = Path(target, name).read_bytes()
            except OSError:
                broken.add(dev)  # listed, then gone: next poll
                continue
            prev_seq, prev_hash, prev_lamport = positions.get(dev, (0, "", 0))
            try:
                rec, digest = open_record(self.key, blob, name)
            except RecordError as exc:
                kind = "record-replayed" if "under the name" in str(exc) else \
                    "record-altered"
                self._problem(result, kind, path, f"{PROBLEM_TEXT[kind]}: {exc}")
                broken.add(dev)
                continue
            if prev_seq and prev_hash and rec.prev != prev_hash:
                self._problem(result, "record-altered", path,
                              f"{PROBLEM_TEXT['record-altered']}: it does not follow record "
                              f"{prev_seq} of its device")
                broken.add(dev)
                continue
            if rec.lamport <= prev_lamport:
                self._problem(result, "record-altered", path, "a change record is older "
                              "than its device's previous record (reordered)")
                broken.add(dev)
                continue
            positions[dev] = (seq, digest, rec.lamport)
            out.append((rec, digest))
            self.db.resolve_problems(path)
        return out

    def _fold(self, records: list[tuple[Record, str]], logs: dict[str, list[int]],
              result: EngineResult) -> set[str]:
        """Fold records into T; returns the paths whose T (or fate) changed."""
        db = self.db
        me = self.device
        affected: set[str] = set()
        records.sort(key=lambda r: (r[0].lamport, r[0].device, r[0].seq))
        for rec, digest in records:
            with db.transaction():
                for idx, change in enumerate(rec.changes):
                    flips, changed = authstate.add_change(
                        db, (rec.lamport, rec.device, rec.seq, idx), change, rec.batch)
                    if changed:
                        affected.add(change.path)
                    self._after_flips(flips, affected)
                db.set_device(rec.device, rec.seq, digest, rec.lamport, rec.host,
                              rec.seen, rec.time)
                db.set("lamport", max(db.get_int("lamport"), rec.lamport))
            for dev, seen_seq in rec.seen.items():
                listed = logs.get(dev, [])
                if dev != me and dev != rec.device and listed and seen_seq > listed[-1]:
                    self._problem(result, "record-removed",
                                  f"{LOG_DIR}/{log_name(dev, seen_seq)}",
                                  f"device {rec.device} applied record {seen_seq} of device "
                                  f"{dev}, but that log ends at {listed[-1]} (removed)")
        return affected

    def _after_flips(self, flips: list[authstate.Flip], affected: set[str]) -> None:
        db = self.db
        me = self.device
        for flip in flips:
            affected.add(flip.path)
            row = db.row(flip.path)
            if row is None:
                continue
            if flip.device == me and flip.status == "lost" and flip.was != "lost":
                # this device's published version lost a race: keep it as a conflict copy
                # (a put), and put the winner back on the remote once we have it
                if flip.hash is not None:
                    row.keep = 1
                row.pending = 1
                db.put_row(row)
                db.add_restore(flip.path, row.t_hash)
            elif flip.device != me and flip.status == "lost" and row.t_dev == me:
                # another device's losing change may have replaced our winning version
                db.add_restore(flip.path, row.t_hash)

    # -- this device's log -----------------------------------------------------------------
    def _check_own_log(self, logs: dict[str, list[int]], result: EngineResult) -> None:
        me = self.device
        listed = set(logs.get(me, []))
        own = self.db.own_records()
        gone = sorted(s for s in own if s not in listed)
        batch = self.db.batch()
        if batch is not None and batch["state"] == "prepared":
            gone = [s for s in gone if s != batch["seq"]]
        if not gone:
            return
        out = Path(self.remote.workdir, "own")
        out.mkdir(exist_ok=True)
        for seq in gone:
            name = log_name(me, seq)
            self._problem(result, "record-removed", f"{LOG_DIR}/{name}",
                          f"{PROBLEM_TEXT['record-removed']}; this device wrote it, and "
                          "puts it back")
            (out / name.split("/")[1]).write_bytes(own[seq][0])
        self.remote.upload_dir(str(out), f"{LOG_DIR}/{me}")

    # -- bringing local files to T ---------------------------------------------------------
    def _local(self, rel: str, row: PathRow) -> tuple[str | None, os.stat_result | None]:
        try:
            st = os.lstat(os.path.join(self.backing, rel))
        except FileNotFoundError:
            return None, None
        if not stat.S_ISREG(st.st_mode):
            return "", st
        if row.s_hash is not None and row.stat_matches(st):
            return row.s_hash, st
        try:
            return scan.hash_file(os.path.join(self.backing, rel))[0], st
        except OSError:
            return None, None

    def _setter(self, row: PathRow):
        for h in self.db.history(row.path):
            if h.device == row.t_dev and h.seq == row.t_seq and h.hash == row.t_hash:
                return h
        return None

    def _converge(self, paths: set[str], result: EngineResult) -> set[str]:
        """Bring local files to T; returns folders that now hold local changes to
        publish (conflict copies, versions kept against a deletion)."""
        db = self.db
        touched: set[str] = set()
        fetch: list[tuple[PathRow, bool, str | None]] = []
        deletes: list[tuple[PathRow, bool]] = []
        busy = self.busy()
        for rel in sorted(paths):
            row = db.row(rel)
            if row is None:
                continue
            if rel in busy:
                # open in the mount: replacing it would take the file from under the
                # program (its later writes would be lost); the next poll tries again
                if not row.pending:
                    row.pending = 1
                    db.put_row(row)
                continue
            if row.t_hash == row.s_hash and not row.keep:
                if row.pending:
                    row.pending = 0
                    db.put_row(row)
                continue
            local, st = self._local(rel, row)
            keep = bool(row.keep) or (local is not None and local != row.s_hash)
            if row.t_hash is None:
                if local is None:
                    self._agree(row, None, None)
                elif keep:
                    # an edit beats a deletion: the local version stays and goes up again
                    row.s_hash, row.origin, row.pending, row.keep = None, "", 0, 0
                    db.put_row(row)
                    touched.add(row.folder)
                else:
                    deletes.append((row, False))
            elif local == row.t_hash:
                self._agree(row, st, row.t_hash)
            else:
                fetch.append((row, keep, local))
        if fetch:
            touched |= self._fetch(fetch, result)
        if deletes:
            touched |= self._delete_local(deletes, result)
        if touched or fetch or deletes:
            self.volume.clear_caches()
        return touched

    def _agree(self, row: PathRow, st: os.stat_result | None, digest: str | None) -> None:
        row.s_hash = digest
        if st is not None:
            row.size, row.mtime, row.ctime, row.ino = (st.st_size, st.st_mtime_ns,
                                                       st.st_ctime_ns, st.st_ino)
        row.origin = row.t_dev or ""
        row.pending = 0
        row.keep = 0
        self.db.put_row(row)
        self.db.resolve_problems(row.path)

    def _fetch(self, todo: list[tuple[PathRow, bool, str | None]], result: EngineResult
               ) -> set[str]:
        touched: set[str] = set()
        incoming = Path(self.remote.workdir, "incoming")
        waiting = []
        # a rename whose old version is here: link it instead of downloading
        for row, keep, local in todo:
            setter = self._setter(row)
            src = setter.source if setter is not None else None
            if src is not None and self._link_local(src, row):
                touched |= self._place(row, keep, local, None, result)
            else:
                waiting.append((row, keep, local, setter))
        if not waiting:
            return touched
        self.remote.download("", [row.path for row, _k, _l, _s in waiting],
                             str(incoming / "0"))
        second = []
        for row, keep, local, setter in waiting:
            got = incoming / "0" / row.path
            digest = self._digest(got)
            if digest == row.t_hash:
                touched |= self._place(row, keep, local, got, result)
            else:
                second.append((row, keep, local, setter, digest))
        if not second:
            return touched
        # not in place (yet): the writer's staging batch, or a rename's old path
        alternatives: list[str] = []
        for row, _k, _l, setter, _d in second:
            if setter is not None and setter.batch:
                alternatives.append(f"{STAGE_DIR}/{setter.device}/{setter.batch}/{row.path}")
            if setter is not None and setter.source:
                alternatives.append(setter.source)
        self.remote.download("", alternatives, str(incoming / "1"))
        for row, keep, local, setter, digest in second:
            placed = False
            for alt in ([f"{STAGE_DIR}/{setter.device}/{setter.batch}/{row.path}"]
                        if setter is not None and setter.batch else []) + \
                    ([setter.source] if setter is not None and setter.source else []):
                got = incoming / "1" / alt
                if self._digest(got) == row.t_hash:
                    touched |= self._place(row, keep, local, got, result)
                    placed = True
                    break
            if not placed:
                self._mismatch(row, setter, digest, result)
        return touched

    @staticmethod
    def _digest(path: Path) -> str | None:
        try:
            return object_hash(path.read_bytes()) if path.stat().st_size < (64 << 20) \
                else scan.hash_file(str(path))[0]
        except OSError:
            return None

    def _link_local(self, src: str, row: PathRow) -> bool:
        """Link the local file of a rename's old path to the new one if it is the
        announced version; True if done."""
        src_row = self.db.row(src)
        if src_row is None or src_row.s_hash != row.t_hash:
            return False
        full = os.path.join(self.backing, src)
        try:
            st = os.lstat(full)
        except OSError:
            return False
        if not src_row.stat_matches(st):
            return False
        target = os.path.join(self.backing, row.path)
        if os.path.lexists(target):
            return False
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(full, target)
        except OSError:
            return False
        return True

    def _place(self, row: PathRow, keep: bool, local: str | None, got: Path | None,
               result: EngineResult) -> set[str]:
        """Put the verified version ``got`` (None: already linked) at ``row.path``,
        keeping this device's version as a conflict copy when it must be kept."""
        touched: set[str] = set()
        target = os.path.join(self.backing, row.path)
        if got is not None and keep and local is not None:
            if self._keep_as_copy(row.path, result):
                touched.add(row.folder)
        if got is not None:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            mode = self._mode_for(row.path, target)
            os.chmod(got, mode)
            try:
                os.rename(got, target)
            except OSError:  # another file system: copy next to the target, then rename
                tmp = os.path.join(os.path.dirname(target), f"cryptfs.{os.urandom(8).hex()}.tmp")
                shutil.copyfile(got, tmp)
                os.chmod(tmp, mode)
                os.rename(tmp, target)
            result.downloads += 1
        st = os.lstat(target)
        result.bytes += st.st_size if got is not None else 0
        self._agree(row, st, row.t_hash)
        return touched

    @staticmethod
    def _mode_for(rel: str, target: str) -> int:
        try:
            return stat.S_IMODE(os.lstat(target).st_mode)
        except OSError:
            pass
        parsed = vault_layout.parse(rel.rpartition("/")[2])
        if parsed is not None and parsed.kind is vault_layout.Kind.FILE:
            mask = os.umask(0)
            os.umask(mask)
            return 0o666 & ~mask
        return 0o600

    def _keep_as_copy(self, rel: str, result: EngineResult) -> bool:
        """Rename this device's version of ``rel`` to its conflict-copy name; True if it
        was an entry (structural objects take the other version without a copy)."""
        name = rel.rpartition("/")[2]
        parsed = vault_layout.parse(name)
        if parsed is None or parsed.kind is None:
            return False
        sidecar = None
        if parsed.is_long:
            with contextlib.suppress(OSError):
                sidecar = Path(self.backing, folder_of(rel), parsed.sidecar).read_bytes()
        done = repair.name_conflict_copy(self.volume, os.path.join(self.backing, rel))
        if done is None:
            return False
        if sidecar is not None:  # the entry comes back under its name: so does its sidecar
            side = Path(self.backing, folder_of(rel), parsed.sidecar)
            if not side.exists():
                side.write_bytes(sidecar)
        result.renamed_conflicts.append(done[0])
        result.conflict_paths.append(done[1])
        log.warning("sync conflict: kept this device's version as %s", done[1])
        return True

    def _mismatch(self, row: PathRow, setter, digest: str | None,
                  result: EngineResult) -> None:
        """The announced version could not be fetched: wait, or report tampering."""
        db = self.db
        lost = authstate.lost_hashes(db, row.path)
        if digest in lost:
            return  # a losing version is still in place: its writers put the winner back
        if digest is None:
            author = setter.device if setter is not None else row.t_dev
            done = author == self.device or \
                db.devices().get(author or "", (0, "", 0))[0] > (row.t_seq or 0)
            if done and setter is not None:
                self._problem(result, "missing", row.path)
            return
        older = authstate.known_versions(db, row.path) | ({row.s_hash} - {None})
        if digest in older:
            self._problem(result, "rolled-back", row.path)
            return
        others = [p for p in db.paths_with_t(digest) if p != row.path]
        if others:
            self._problem(result, "swapped", row.path,
                          f"{PROBLEM_TEXT['swapped']}: it holds the version of {others[0]}")
            return
        self._problem(result, "modified", row.path)

    def _delete_local(self, todo: list[tuple[PathRow, bool]], result: EngineResult
                      ) -> set[str]:
        touched: set[str] = set()
        going = {row.path for row, _ in todo}
        dirrefs: dict[str, bytes] = {}
        for row, _ in sorted(todo, key=lambda t: t[0].path.endswith(
                "/" + vault_layout.BACKREF_NAME)):
            full = os.path.join(self.backing, row.path)
            name = row.path.rpartition("/")[2]
            if name == vault_layout.BACKREF_NAME:
                others = [p for p in scan.list_folder(self.backing, row.folder)
                          if p not in going and p != row.path]
                if others:
                    # the folder still holds entries here: it stays, with its
                    # back-reference, and comes back on the remote (SYNC.md §5)
                    row.s_hash, row.origin, row.pending, row.keep = None, "", 0, 0
                    self.db.put_row(row)
                    touched.add(row.folder)
                    self._scan_everything = True  # its entry is restored by the repair
                    continue
            if name.endswith(".d"):
                with contextlib.suppress(CryptfsError, OSError):
                    dir_id = self.volume.objects.open_dirref(Path(full).read_bytes())
                    dirrefs[self.volume.storage_of(dir_id)] = dir_id
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
            result.deletes += 1
            self._agree(row, None, None)
            self._rmdir_if_empty(row.folder)
        for storage in dirrefs:
            backref = self.db.row(f"{storage}/{vault_layout.BACKREF_NAME}")
            if backref is not None and backref.pending:
                continue  # its new back-reference is on its way: judged then
            if scan.list_folder(self.backing, storage) and \
                    not self._referenced(storage, dirrefs[storage]):
                self._scan_everything = True
        if self._scan_everything:
            done = repair.repair_structure(self.volume)
            if done:
                result.repaired_dirs.extend(done)
        return touched

    def _referenced(self, storage: str, dir_id: bytes) -> bool:
        """True if the directory entry its back-reference names is there (a directory
        that was moved, not deleted)."""
        try:
            _did, parent_id, name = self.volume.read_backref(storage)
            if parent_id is None:
                return True
            parent = self.volume.storage_of(parent_id)
            stem = self.volume._stem(parent_id, name)
            entry = Path(self.backing, parent, stem.name(vault_layout.Kind.DIR))
            return self.volume.objects.open_dirref(entry.read_bytes()) == dir_id
        except (CryptfsError, OSError):
            return False

    def _rmdir_if_empty(self, folder: str) -> None:
        if not folder.startswith(vault_layout.STORAGE_ROOT + "/"):
            return
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(self.backing, folder))

    # -- finishing this device's interrupted batch -----------------------------------------
    def _finish_batch(self, logs: dict[str, list[int]], result: EngineResult) -> set[str]:
        batch = self.db.batch()
        if batch is None:
            return set()
        if batch["state"] == "prepared":
            if batch["seq"] in logs.get(self.device, []):
                with self.db.transaction():
                    self._commit_published(batch)
            else:
                # never reached the log: drop it; its changes are found again
                with self.db.transaction():
                    self.db.drop_batch()
                return set(batch["folders"])
        self._finish(self.db.batch(), result)
        return set()

    # -- publishing ------------------------------------------------------------------------
    def _ignore_filter(self) -> Callable[[str], bool] | None:
        """The vault's ignore rules (``/.cryptfsignore`` and the defaults) as a filter of
        backing paths; when the rules changed since the last publish, every folder is
        compared once, so paths no longer ignored are published."""
        if self.ignored is not None:
            return self.ignored  # given by the caller (tests)
        from . import ignore

        rules = ignore.read_rules(self.volume)
        digest = hashlib.blake2b((rules.user_text or "").encode("utf-8", "surrogateescape"),
                                 digest_size=16).hexdigest()
        if self.db.get("ignore_rules") != digest:
            self._rules_changed = self.db.get("ignore_rules") is not None
            with self.db.transaction():
                self.db.set("ignore_rules", digest)
        return ignore.path_filter(self.volume, rules)

    def _kept_local(self, ignored: Callable[[str], bool],
                    backrefs: set[str]) -> Callable[[str], bool]:
        """``ignored`` except for the back-reference of a folder the remote has: a synced
        directory that became ignored, or was renamed to an ignored name, keeps it in the
        sync, so the other devices learn where the directory went instead of reattaching
        it under its old name (like sync/ignore.py's plan for the first sync). Such
        back-references are added to ``backrefs``: frozen like the rest of the folder once
        it is deleted here."""
        db = self.db
        suffix = "/" + vault_layout.BACKREF_NAME

        def kept(rel: str) -> bool:
            verdict = ignored(rel)
            if verdict and rel.endswith(suffix):
                row = db.row(rel)
                if row is not None and row.t_hash is not None and \
                        os.path.exists(os.path.join(self.backing, rel)):
                    backrefs.add(rel)
                    return False
            return verdict

        return kept

    def _publish(self, folders: set[str], result: EngineResult) -> None:
        db = self.db
        skip = set(db.pending_paths())
        backrefs: set[str] = set()
        ignored = self._kept_local(self._ignore_filter(), backrefs) if folders else None
        if self._rules_changed:
            self._rules_changed = False
            folders = folders | scan.all_folders(self.backing) | db.folders()
        frozen = db.frozen()
        before = set(frozen)
        changes = scan.compare(db, self.backing, folders, skip, ignored, frozen) \
            if folders else []
        frozen |= backrefs
        if frozen != before:
            with db.transaction():
                db.set_frozen(frozen - before, before - frozen)
        restores = db.restores()
        if not changes and not restores:
            return
        # A rename's put and del must share a batch: split only between puts (which come
        # first) when a batch would be too large, and keep every del in the last batch.
        puts = [c for c in changes if c.op == "put"]
        dels = [c for c in changes if c.op == "del"]
        renamed = {c.source for c in puts if c.source is not None}
        while len(puts) > MAX_BATCH:
            chunk, puts = puts[:MAX_BATCH], puts[MAX_BATCH:]
            for c in chunk:
                c.source = None if c.source in renamed else c.source
            self._publish_batch(chunk, restores, folders, result)
            restores = {}
        self._publish_batch([*puts, *dels], restores, folders, result)

    def _publish_batch(self, changes: list[scan.LocalChange], restores: dict,
                       folders: set[str], result: EngineResult) -> None:
        db = self.db
        me = self.device
        seq = db.get_int("seq") + 1
        lamport = max([db.get_int("lamport"), *(v[2] for v in db.devices().values())]) + 1
        name = f"{seq:012d}-{os.urandom(4).hex()}"
        out = Path(self.remote.workdir, "outgoing", name)
        out.mkdir(parents=True)
        record_changes: list[Change] = []
        stored: list[dict] = []
        for c in changes:
            if c.op == "del":
                record_changes.append(Change("del", c.path, c.base))
                stored.append(record_changes[-1].as_json())
                continue
            src = os.path.join(self.backing, c.path)
            server_move = False
            if c.source is not None and c.local is not None and c.local.size >= BIG_MOVE:
                digest, size, st = c.local.hash, c.local.size, c.local.st
                server_move = True
            else:
                try:
                    st = os.lstat(src)
                    digest, size = _copy_hashing(src, out / c.path)
                except OSError:
                    continue  # vanished meanwhile: the next sync sees it
            ch = Change("put", c.path, c.base, digest, size, c.source)
            record_changes.append(ch)
            item = ch.as_json()
            item["_st"] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            item["_server_move"] = server_move
            stored.append(item)
        restore_puts, restore_dels = [], []
        for rel, want in restores.items():
            row = db.row(rel)
            if row is None or row.t_hash != want:
                with db.transaction():
                    db.drop_restore(rel)
                continue
            if want is None:
                restore_dels.append(rel)
                continue
            local, _st = self._local(rel, row)
            if local == want and not (out / rel).exists():
                try:
                    digest, _size = _copy_hashing(os.path.join(self.backing, rel), out / rel)
                except OSError:
                    continue
                if digest == want:
                    restore_puts.append(rel)
        if not record_changes:
            if restore_puts or restore_dels:
                self._restore_only(out, name, restore_puts, restore_dels, result)
            return
        prev = db.get("last_hash") or ""
        seen = {d: v[0] for d, v in db.devices().items()}
        rec = Record(me, seq, prev, lamport, seen, self.host, name, int(time.time()),
                     record_changes)
        blob = rec.seal(self.key)
        (out / "record").write_bytes(blob)
        batch = {"seq": seq, "name": name, "record": blob, "body_hash": body_hash(rec.body()),
                 "lamport": lamport, "changes": stored,
                 "folders": sorted(folders), "state": "prepared",
                 "restores": {"puts": restore_puts, "dels": restore_dels}}
        with db.transaction():
            db.set_batch(seq, name, blob, batch["body_hash"], lamport,
                         [*stored, {"_restores": batch["restores"]}], sorted(folders),
                         "prepared")
        self.remote.upload_dir(str(out), f"{STAGE_DIR}/{me}/{name}")
        self.remote.moveto(f"{STAGE_DIR}/{me}/{name}/record", f"{LOG_DIR}/{log_name(me, seq)}")
        stored_batch = db.batch()
        with db.transaction():
            self._commit_published(stored_batch)
        self._finish(db.batch(), result)
        result.uploads += sum(1 for c in stored if c.get("op") == "put"
                              and not c.get("_server_move"))
        result.bytes += sum(c["size"] for c in stored if c.get("op") == "put"
                            and not c.get("_server_move"))
        result.deletes += sum(1 for c in stored if c.get("op") == "del")

    def _restore_only(self, out: Path, name: str, puts: list[str], dels: list[str],
                      result: EngineResult) -> None:
        me = self.device
        if puts:
            self.remote.upload_dir(str(out), f"{STAGE_DIR}/{me}/{name}")
            self.remote.move_into_place(f"{STAGE_DIR}/{me}/{name}", puts)
            result.uploads += len(puts)
        self.remote.delete(dels)
        with self.db.transaction():
            for rel in [*puts, *dels]:
                self.db.drop_restore(rel)
                self.db.resolve_problems(rel)  # put back
            if puts:
                self.db.add_stage(f"{me}/{name}")

    def _commit_published(self, batch: dict) -> None:
        """The batch's record is in the log: it is this device's state now (inside a
        transaction)."""
        db = self.db
        me = self.device
        seq, lamport = batch["seq"], batch["lamport"]
        for idx, item in enumerate(c for c in batch["changes"] if "op" in c):
            change = Change.from_json({k: v for k, v in item.items() if not k.startswith("_")})
            flips, _changed = authstate.add_change(db, (lamport, me, seq, idx), change,
                                                   batch["name"])
            row = db.row_or_new(change.path)
            if change.op == "put":
                row.s_hash = change.hash
                row.size, row.mtime, row.ctime, row.ino = item["_st"]
            else:
                row.s_hash = None
                row.size = row.mtime = row.ctime = row.ino = None
            row.origin = me
            row.pending = int(row.t_hash != row.s_hash)
            db.put_row(row)
            self._after_flips([f for f in flips if f.device == me and f.status == "lost"],
                              set())
        db.set("seq", seq)
        db.set("last_hash", batch["body_hash"])
        db.set("lamport", max(db.get_int("lamport"), lamport))
        db.add_own_record(seq, batch["record"])
        db.add_stage(f"{me}/{batch['name']}")
        db.set_batch_state("published")

    def _finish(self, batch: dict | None, result: EngineResult) -> None:
        """Steps 3-4 of §4 for a published batch (again, after a crash)."""
        if batch is None:
            return
        me = self.device
        lost = {p for p, s in self.db.own_change_status(me, batch["seq"]).items()
                if s == "lost"}
        items = [c for c in batch["changes"] if "op" in c]
        restores = next((c["_restores"] for c in batch["changes"] if "_restores" in c),
                        {"puts": [], "dels": []})
        stage = f"{STAGE_DIR}/{me}/{batch['name']}"
        puts = [c["path"] for c in items if c["op"] == "put" and not c.get("_server_move")
                and c["path"] not in lost]
        self.remote.move_into_place(stage, puts + restores["puts"])
        for c in items:
            if c["op"] == "put" and c.get("_server_move") and c["path"] not in lost:
                if not self.remote.moveto(c["from"], c["path"], missing_ok=True):
                    # the old object is gone (moved already): nothing to do
                    pass
        dels = [c["path"] for c in items if c["op"] == "del" and c["path"] not in lost]
        renamed_away = {c["from"] for c in items if c["op"] == "put" and c.get("_server_move")}
        self.remote.delete([p for p in dels if p not in renamed_away] + restores["dels"])
        with self.db.transaction():
            for rel in restores["puts"] + restores["dels"]:
                self.db.drop_restore(rel)
                self.db.resolve_problems(rel)  # put back
            self.db.drop_batch()

    # -- housekeeping ----------------------------------------------------------------------
    def _maintain(self, logs: dict[str, list[int]], result: EngineResult) -> None:
        db = self.db
        now = time.time()
        if now - db.get_float("maintained_at") < MAINTAIN_EVERY and \
                not os.environ.get("CRYPTFS_TESTONLY_RECORD_AGE"):
            return
        me = self.device
        old_stages = [n for n, t in db.stages().items() if now - t > STAGE_KEEP]
        if old_stages:
            filters = Path(self.remote.workdir, "stage-filter")
            filters.write_text("".join(f"+ /{n.split('/', 1)[1]}/**\n" for n in old_stages)
                               + "- **\n")
            rclone.run(self.syncer.binary, "delete", self.remote.at(f"{STAGE_DIR}/{me}"),
                       "--filter-from", str(filters), "--rmdirs")
            with db.transaction():
                db.drop_stages(old_stages)
        keep = record_keep()
        own = db.own_records()
        newest = max(own) if own else 0
        expired = sorted(s for s, (_b, t) in own.items() if now - t > keep and s != newest)
        if expired:
            self.remote.delete([f"{LOG_DIR}/{log_name(me, s)}" for s in expired])
            with db.transaction():
                db.drop_own_records(expired)
        with db.transaction():
            db.prune_history(now - HISTORY_KEEP)
            db.set("maintained_at", now)
        if now - db.get_float("verified_at") > VERIFY_EVERY:
            self._verify(result)
            if db.restores():
                self._publish(set(), result)

    def _verify(self, result: EngineResult) -> None:
        """The daily check (§8): the mirror's listing against T (presence, sizes)."""
        db = self.db
        listing = self.remote.list_mirror()
        again = self.remote.list_log() or {}
        if self._new_records(self._logs(again), EngineResult()):
            return  # records arrived meanwhile: check next time
        with db.transaction():
            for row in db.all_rows():
                if row.t_hash is None or row.pending:
                    continue
                item = listing.pop(row.path, None)
                if item is None or item.size != row.t_size:
                    kind = "missing" if item is None else "modified"
                    self._problem(result, kind, row.path)
                    if row.s_hash == row.t_hash:
                        db.add_restore(row.path, row.t_hash)
            for rel in listing:
                name = rel.rpartition("/")[2]
                if scan.syncable(name) and (rel.startswith("d/") or rel.startswith("x/")):
                    self._problem(result, "unannounced", rel)
            db.set("verified_at", time.time())

    def _collect_problems(self, result: EngineResult) -> None:
        seen = set()
        out = []
        for p in result.problems:
            if (p[0], p[1]) not in seen:
                seen.add((p[0], p[1]))
                out.append(p)
        result.problems = out

    # -- full reconciliation ---------------------------------------------------------------
    def _full(self, progress, trusted: bool) -> EngineResult:
        db = self.db
        listing = self.remote.list_log() or {}
        logs = self._logs(listing)
        authentic = self._authentic if trusted else None
        synced_before = db.initialized or self.syncer.settings.synced_to_current_remote()
        base = self.syncer._bisync_locked(progress, fresh=True, authentic=authentic,
                                          synced_before=synced_before)
        result = EngineResult(**{f: getattr(base, f) for f in SyncResult.__dataclass_fields__})
        result.full = True
        merge = base.merge
        if merge is not None:
            for rel in getattr(merge, "wrong_remote", []):
                kind = self._wrong_kind(rel)
                self._problem(result, kind, rel)
            for rel in getattr(merge, "missing_remote", []):
                self._problem(result, "missing", rel)
            for rel in getattr(merge, "unannounced", []):
                self._problem(result, "unannounced", rel)
        remote_before = getattr(merge, "remote_before", None)
        self._reinit(logs, result)
        if remote_before is not None:
            self._announce(remote_before, result)
        self._collect_problems(result)
        return result

    def _announce(self, remote_before: set[str], result: EngineResult) -> None:
        """The reconciliation put objects on the remote that other devices know nothing
        of (this device's files the remote lacked, conflict copies, repaired entries):
        announce them in a record, so the others apply them like any change (§8)."""
        db = self.db
        new = []
        ignored = self._ignore_filter()
        for folder in sorted(scan.all_folders(self.backing)):
            for rel in scan.list_folder(self.backing, folder):
                if rel not in remote_before and not ignored(rel):
                    row = db.row(rel)
                    if row is not None and row.s_hash is not None:
                        new.append(Change("put", rel, None, row.s_hash, row.size or 0))
        if not new:
            return
        for start in range(0, len(new), MAX_BATCH):
            self._publish_record(new[start:start + MAX_BATCH])
        result.notes.append(f"{len(new)} object(s) the remote lacked were announced to the "
                            "other devices")

    def _publish_record(self, changes: list[Change]) -> None:
        """A record for objects already in place on the remote (inside the lock)."""
        db = self.db
        me = self.device
        seq = db.get_int("seq") + 1
        lamport = max([db.get_int("lamport"), *(v[2] for v in db.devices().values())]) + 1
        name = f"{seq:012d}-{os.urandom(4).hex()}"
        seen = {d: v[0] for d, v in db.devices().items()}
        rec = Record(me, seq, db.get("last_hash") or "", lamport, seen, self.host, name,
                     int(time.time()), changes)
        blob = rec.seal(self.key)
        out = Path(self.remote.workdir, "announce", name)
        out.mkdir(parents=True)
        (out / "record").write_bytes(blob)
        self.remote.upload_dir(str(out), f"{STAGE_DIR}/{me}/{name}")
        self.remote.moveto(f"{STAGE_DIR}/{me}/{name}/record", f"{LOG_DIR}/{log_name(me, seq)}")
        with db.transaction():
            for idx, change in enumerate(changes):
                authstate.add_change(db, (lamport, me, seq, idx), change, name)
                row = db.row_or_new(change.path)
                row.origin = me
                db.put_row(row)
            db.set("seq", seq)
            db.set("last_hash", body_hash(rec.body()))
            db.set("lamport", lamport)
            db.add_own_record(seq, blob)
            db.add_stage(f"{me}/{name}")

    def _authentic(self, rel: str) -> bool | None:
        row = self.db.row(rel)
        if row is None or row.t_hash is None:
            return None
        local, _st = self._local(rel, row)
        return local == row.t_hash

    def _wrong_kind(self, rel: str) -> str:
        return "modified"

    def _reinit(self, logs: dict[str, list[int]], result: EngineResult) -> None:
        """T and the synced map from the local files; positions at the newest records
        listed before the reconciliation (SYNC.md §8)."""
        db = self.db
        rows = []
        ignored = self._ignore_filter()  # kept off the remote: never agreed with it
        for folder in sorted(scan.all_folders(self.backing)):
            for rel, st in scan.list_folder(self.backing, folder).items():
                if ignored(rel):
                    continue
                try:
                    digest, size = scan.hash_file(os.path.join(self.backing, rel))
                except OSError:
                    continue
                rows.append((rel, digest, size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        me = db.get("device") or new_device_id()
        newest = {dev: seqs[-1] for dev, seqs in logs.items() if seqs}
        names = [log_name(d, s) for d, s in newest.items()]
        target = self.remote.workdir + "/newest"
        self.remote.download(LOG_DIR, names, target)
        heads = {}
        for dev, seq in newest.items():
            name = log_name(dev, seq)
            try:
                rec, digest = open_record(self.key, Path(target, name).read_bytes(), name)
                heads[dev] = (seq, digest, rec.lamport, rec.host, rec.seen, rec.time)
            except (OSError, RecordError) as exc:
                self._problem(result, "record-altered", f"{LOG_DIR}/{name}",
                              f"{PROBLEM_TEXT['record-altered']}: {exc}")
                heads[dev] = (seq, "", 0, "", {}, 0)
        with db.transaction():
            db.reset_paths(rows)
            db.reset_devices()
            db.drop_batch()
            for dev, (seq, digest, lamport, host, seen, when) in heads.items():
                if dev == me:
                    if seq > db.get_int("seq"):
                        db.set("seq", seq)
                        db.set("last_hash", digest)
                    continue
                db.set_device(dev, seq, digest, lamport, host, seen, when)
            db.set("device", me)
            db.set("lamport", max([db.get_int("lamport"),
                                   *(h[2] for h in heads.values())]))
            db.set("initialized", 1)
            db.set("verified_at", time.time())
        self._identity_at = time.monotonic()
        # an existing (empty) log folder lets idle polls tell "no records yet" from "the
        # remote is gone" with one listing (object stores have no empty folders: there
        # the identity is checked until the first record exists)
        rclone.run(self.syncer.binary, "mkdir", self.remote.at(LOG_DIR))


def _copy_hashing(src: str, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (parents made); (hash, size) of exactly what was copied."""
    import hashlib

    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.blake2b(digest_size=32)
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while True:
            chunk = fin.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return h.hexdigest(), size

