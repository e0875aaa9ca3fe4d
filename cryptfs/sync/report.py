"""What engine 2 knows, for ``status`` and ``audit-remote`` (docs/SYNC.md §7), without
running a sync: pending counts, detected problems, and a downloaded copy of the remote
checked against the authenticated state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import authstate, scan
from .db import SyncDB
from .engine import DB_NAME, PROBLEM_TEXT
from .journal import Journal
from .records import RecordError, log_name, open_record, parse_log_name
from .remote import LOG_DIR

RECENT = 86400.0  # resolved problems stay visible in status this long


def open_db(state_dir: Path) -> SyncDB | None:
    """The pair's engine-2 database if it exists and is initialized (never creates one)."""
    path = Path(state_dir) / DB_NAME
    if not path.exists():
        return None
    db = SyncDB(path)
    if not db.initialized:
        db.close()
        return None
    return db


@dataclass
class Pending:
    changed: int = 0  # local paths that differ from the synced map (not uploaded yet)
    waiting: int = 0  # paths whose authenticated version could not be fetched yet
    journalled: int = 0  # folders the mount journalled since the last sync


def pending(db: SyncDB, backing: str, state_dir: Path) -> Pending:
    """Local changes not published yet (a stat of every file against the synced map, no
    hashing: a file whose stat changed counts) and downloads still waiting."""
    out = Pending()
    out.journalled = len(Journal(state_dir).pending())
    out.waiting = len(db.pending_paths())
    seen: set[str] = set()
    for folder in sorted(scan.all_folders(backing) | db.folders()):
        rows = db.rows_in(folder)
        for rel, st in scan.list_folder(backing, folder).items():
            seen.add(rel)
            row = rows.get(rel)
            if row is None or row.s_hash is None or not row.stat_matches(st):
                out.changed += 1
        out.changed += sum(1 for rel, row in rows.items()
                           if row.s_hash is not None and rel not in seen)
    return out


def problems(db: SyncDB) -> list[tuple[str, str, str, float, float | None]]:
    return db.problems(include_resolved_since=time.time() - RECENT)


@dataclass
class AuditFinding:
    kind: str
    path: str  # backing path (or log path)
    detail: str


@dataclass
class Audit:
    findings: list[AuditFinding] = field(default_factory=list)
    objects: int = 0
    records: int = 0


def audit_tree(db: SyncDB, root: str, key: bytes, me: str) -> Audit:
    """Check a downloaded copy of the remote (``root``) against the authenticated state
    and the logs: every object's hash, objects missing or unannounced, every record."""
    audit = Audit()
    present: dict[str, str] = {}
    for top in ("d", "x"):
        for dirpath, _dirs, files in os.walk(os.path.join(root, top)):
            for name in files:
                if not scan.syncable(name):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                present[rel] = scan.hash_file(full)[0]
    audit.objects = len(present)
    by_hash: dict[str, list[str]] = {}
    expected: dict[str, str] = {}
    for row in db.all_rows():
        if row.t_hash is not None:
            expected[row.path] = row.t_hash
            by_hash.setdefault(row.t_hash, []).append(row.path)
    for rel, want in sorted(expected.items()):
        got = present.get(rel)
        if got is None:
            audit.findings.append(AuditFinding("missing", rel, PROBLEM_TEXT["missing"]))
        elif got != want:
            audit.findings.append(_classify(db, rel, got, by_hash))
    for rel in sorted(set(present) - set(expected)):
        audit.findings.append(AuditFinding("unannounced", rel, PROBLEM_TEXT["unannounced"]))
    audit.records, record_findings = _audit_logs(db, Path(root, LOG_DIR), key, me)
    audit.findings += record_findings
    return audit


def _classify(db: SyncDB, rel: str, got: str, by_hash: dict[str, list[str]]) -> AuditFinding:
    others = [p for p in by_hash.get(got, []) if p != rel]
    if others:
        return AuditFinding("swapped", rel, f"{PROBLEM_TEXT['swapped']}: it holds the "
                            f"version of {others[0]}")
    row = db.row(rel)
    older = authstate.known_versions(db, rel) | ({row.s_hash} if row and row.s_hash else set())
    if got in older or got in authstate.lost_hashes(db, rel):
        return AuditFinding("rolled-back", rel, PROBLEM_TEXT["rolled-back"])
    return AuditFinding("modified", rel, PROBLEM_TEXT["modified"])


def _audit_logs(db: SyncDB, log_root: Path, key: bytes, me: str
                ) -> tuple[int, list[AuditFinding]]:
    """Every record opens under its own name and each device's records form an unbroken
    chain; no device's log is shorter than what this device applied or wrote."""
    findings = []
    logs: dict[str, list[int]] = {}
    if log_root.is_dir():
        for dev_dir in log_root.iterdir():
            for f in dev_dir.iterdir() if dev_dir.is_dir() else []:
                parsed = parse_log_name(f"{dev_dir.name}/{f.name}")
                if parsed:
                    logs.setdefault(parsed[0], []).append(parsed[1])
    count = 0
    positions = db.devices()
    own_seq = db.get_int("seq")
    for dev, seqs in sorted(logs.items()):
        seqs.sort()
        prev_hash = None
        prev_seq = None
        for seq in seqs:
            name = log_name(dev, seq)
            path = f"{LOG_DIR}/{name}"
            count += 1
            try:
                rec, digest = open_record(key, (log_root / name).read_bytes(), name)
            except (OSError, RecordError) as exc:
                kind = "record-replayed" if "under the name" in str(exc) else "record-altered"
                findings.append(AuditFinding(kind, path, f"{PROBLEM_TEXT[kind]}: {exc}"))
                prev_hash = None
                prev_seq = seq
                continue
            if prev_seq is not None and seq != prev_seq + 1:
                findings.append(AuditFinding("record-removed",
                                             f"{LOG_DIR}/{log_name(dev, prev_seq + 1)}",
                                             PROBLEM_TEXT["record-removed"]))
            elif prev_hash is not None and rec.prev != prev_hash:
                findings.append(AuditFinding("record-altered", path,
                                             f"{PROBLEM_TEXT['record-altered']}: it does not "
                                             "follow the record before it"))
            prev_hash, prev_seq = digest, seq
        applied = own_seq if dev == me else positions.get(dev, (0, "", 0))[0]
        if seqs and seqs[-1] < applied:
            findings.append(AuditFinding("log-rolled-back", f"{LOG_DIR}/{dev}",
                                         f"the log of device {dev} ends at {seqs[-1]}, but "
                                         f"record {applied} was already applied (removed)"))
    for dev, (pos, _h, _l) in positions.items():
        if dev not in logs and pos > 0:
            findings.append(AuditFinding("log-rolled-back", f"{LOG_DIR}/{dev}",
                                         f"the log of device {dev} is gone (removed)"))
    return count, findings
