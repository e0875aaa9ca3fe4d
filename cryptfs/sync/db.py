"""Engine 2's state for one (vault, remote) pair: an SQLite database in the pair's state
directory (docs/SYNC.md §4, §6), outside the synced tree.

Tables:

- ``paths``: one row per backing path that this device or the authenticated state knows:
  the synced hash ``s_hash`` with the local file's (size, mtime, ctime, inode) when it had
  it, the device whose version that is (``origin``), the authenticated hash ``t_hash``
  (with the size and the change that set it), and ``pending`` (the local file still has
  to be brought to ``t_hash``) / ``keep`` (this device's version must be kept as a
  conflict copy when it is). Indexed by folder: a sync reads the rows of the folders it
  looks at, never the whole table.
- ``history``: recent changes per path, in record order, with whether each applied or
  lost and the state before and after it (authstate.py replays them when a record
  arrives late).
- ``devices``: the position in every other device's log.
- ``own_records``: the bytes of this device's records still in the log.
- ``batch``: the batch being published (until it is done, §4).
- ``problems``: what was detected (§7), by backing path.
- ``restores``: remote objects to put back after a lost race (§5).
- ``stages``: this device's staging batches, deleted an hour after they were written.
- ``meta``: this device's id, seq, last record hash, lamport clock; timestamps.

Nothing plaintext is stored: paths are backing paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS paths(
  path TEXT PRIMARY KEY, folder TEXT NOT NULL,
  s_hash TEXT, size INTEGER, mtime INTEGER, ctime INTEGER, ino INTEGER, origin TEXT,
  t_hash TEXT, t_size INTEGER, t_dev TEXT, t_seq INTEGER,
  pending INTEGER NOT NULL DEFAULT 0, keep INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS paths_folder ON paths(folder);
CREATE INDEX IF NOT EXISTS paths_pending ON paths(pending) WHERE pending = 1;
CREATE INDEX IF NOT EXISTS paths_thash ON paths(t_hash);
CREATE TABLE IF NOT EXISTS history(
  path TEXT NOT NULL, lamport INTEGER NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
  idx INTEGER NOT NULL, base TEXT, hash TEXT, size INTEGER, source TEXT, batch TEXT,
  status TEXT NOT NULL, before TEXT, after TEXT, recv REAL NOT NULL,
  PRIMARY KEY(path, lamport, device, seq, idx));
CREATE TABLE IF NOT EXISTS devices(
  device TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL,
  lamport INTEGER NOT NULL, host TEXT, seen TEXT, time INTEGER);
CREATE TABLE IF NOT EXISTS own_records(seq INTEGER PRIMARY KEY, blob BLOB NOT NULL,
  time INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batch(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER,
  name TEXT, record BLOB, body_hash TEXT, lamport INTEGER, changes TEXT, folders TEXT,
  state TEXT);
CREATE TABLE IF NOT EXISTS problems(id INTEGER PRIMARY KEY, kind TEXT, path TEXT,
  detail TEXT, time REAL, resolved REAL);
CREATE TABLE IF NOT EXISTS restores(path TEXT PRIMARY KEY, hash TEXT);
CREATE TABLE IF NOT EXISTS stages(name TEXT PRIMARY KEY, time REAL);
CREATE TABLE IF NOT EXISTS frozen(path TEXT PRIMARY KEY);
"""


@dataclass
class PathRow:
    path: str
    folder: str
    s_hash: str | None
    size: int | None
    mtime: int | None
    ctime: int | None
    ino: int | None
    origin: str | None
    t_hash: str | None
    t_size: int | None
    t_dev: str | None
    t_seq: int | None
    pending: int
    keep: int

    def stat_matches(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime, self.ctime, self.ino) == (
            st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass
class HistoryRow:
    path: str
    lamport: int
    device: str
    seq: int
    idx: int
    base: str | None
    hash: str | None
    size: int | None
    source: str | None
    batch: str | None
    status: str
    before: str | None
    after: str | None
    recv: float

    @property
    def key(self) -> tuple[int, str, int, int]:
        return (self.lamport, self.device, self.seq, self.idx)


_PATH_COLS = ("path, folder, s_hash, size, mtime, ctime, ino, origin, t_hash, t_size, t_dev, "
              "t_seq, pending, keep")
_HIST_COLS = ("path, lamport, device, seq, idx, base, hash, size, source, batch, status, "
              "before, after, recv")

# Column lists are constants of this module (never input): the queries below are fixed.
_Q_ROW = f"SELECT {_PATH_COLS} FROM paths WHERE path = ?"  # noqa: S608
_Q_ROWS_IN = f"SELECT {_PATH_COLS} FROM paths WHERE folder = ?"  # noqa: S608
_Q_ALL = f"SELECT {_PATH_COLS} FROM paths"  # noqa: S608
_Q_PUT = f"INSERT OR REPLACE INTO paths({_PATH_COLS}) VALUES ({','.join('?' * 14)})"  # noqa: S608
_Q_RESET = f"INSERT INTO paths({_PATH_COLS}) VALUES (?,?,?,?,?,?,?,'',?,?,'',0,0,0)"  # noqa: S608
_Q_HIST = (f"SELECT {_HIST_COLS} FROM history WHERE path = ? "  # noqa: S608
           "ORDER BY lamport, device, seq, idx")
_Q_PUT_HIST = f"INSERT OR REPLACE INTO history({_HIST_COLS}) VALUES ({','.join('?' * 14)})"  # noqa: S608


def folder_of(path: str) -> str:
    return path.rpartition("/")[0]


class SyncDB:
    """One connection to one pair's database; not shared between threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not self.path.exists()
        self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None,
                                    check_same_thread=False)  # the daemon: one sync at a time
        if fresh:
            os.chmod(self.path, 0o600)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta -----------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: object) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                          (key, str(value)))

    def get_int(self, key: str, default: int = 0) -> int:
        value = self.get(key)
        return int(value) if value is not None else default

    def get_float(self, key: str, default: float = 0.0) -> float:
        value = self.get(key)
        return float(value) if value is not None else default

    @property
    def initialized(self) -> bool:
        return self.get("initialized") == "1"

    # -- paths ----------------------------------------------------------------------------
    def row(self, path: str) -> PathRow | None:
        r = self.conn.execute(_Q_ROW, (path,)).fetchone()
        return PathRow(*r) if r else None

    def rows_in(self, folder: str) -> dict[str, PathRow]:
        return {r[0]: PathRow(*r) for r in self.conn.execute(_Q_ROWS_IN, (folder,))}

    def all_rows(self) -> Iterator[PathRow]:
        for r in self.conn.execute(_Q_ALL):
            yield PathRow(*r)

    def folders(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT folder FROM paths")}

    def pending_paths(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT path FROM paths WHERE pending = 1")]

    def paths_with_t(self, t_hash: str) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT path FROM paths WHERE t_hash = ?",
                                                (t_hash,))]

    def put_row(self, row: PathRow) -> None:
        if row.s_hash is None and row.t_hash is None and not row.pending:
            self.conn.execute("DELETE FROM paths WHERE path = ?", (row.path,))
            return
        self.conn.execute(
            _Q_PUT,
            (row.path, row.folder, row.s_hash, row.size, row.mtime, row.ctime, row.ino,
             row.origin, row.t_hash, row.t_size, row.t_dev, row.t_seq, row.pending,
             row.keep))

    def new_row(self, path: str) -> PathRow:
        return PathRow(path, folder_of(path), None, None, None, None, None, None, None, None,
                       None, None, 0, 0)

    def row_or_new(self, path: str) -> PathRow:
        return self.row(path) or self.new_row(path)

    def reset_paths(self, rows: Iterable[tuple[str, str, int, int, int, int]]) -> None:
        """Start over from the local files: (path, hash, size, mtime, ctime, ino) each
        becomes both the synced and the authenticated version."""
        self.conn.execute("DELETE FROM paths")
        self.conn.execute("DELETE FROM history")
        self.conn.execute("DELETE FROM restores")
        self.conn.executemany(
            _Q_RESET,
            ((p, folder_of(p), h, size, mtime, ctime, ino, h, size)
             for p, h, size, mtime, ctime, ino in rows))

    # -- history ---------------------------------------------------------------------------
    def history(self, path: str) -> list[HistoryRow]:
        return [HistoryRow(*r) for r in self.conn.execute(_Q_HIST, (path,))]

    def put_history(self, h: HistoryRow) -> None:
        self.conn.execute(_Q_PUT_HIST,
                          (h.path, h.lamport, h.device, h.seq, h.idx, h.base, h.hash, h.size,
                           h.source, h.batch, h.status, h.before, h.after, h.recv))

    def prune_history(self, older_than: float) -> None:
        self.conn.execute("DELETE FROM history WHERE recv < ?", (older_than,))

    def own_change_status(self, device: str, seq: int) -> dict[str, str]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT path, status FROM history WHERE device = ? AND seq = ?", (device, seq))}

    # -- devices ---------------------------------------------------------------------------
    def devices(self) -> dict[str, tuple[int, str, int]]:
        return {r[0]: (r[1], r[2], r[3]) for r in self.conn.execute(
            "SELECT device, seq, hash, lamport FROM devices")}

    def device_seen(self) -> dict[str, dict[str, int]]:
        out = {}
        for device, seen in self.conn.execute("SELECT device, seen FROM devices"):
            try:
                out[device] = {str(k): int(v) for k, v in json.loads(seen or "{}").items()}
            except (ValueError, AttributeError, TypeError):
                out[device] = {}
        return out

    def set_device(self, device: str, seq: int, body_hash: str, lamport: int, host: str,
                   seen: dict[str, int], when: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO devices VALUES (?,?,?,?,?,?,?)",
                          (device, seq, body_hash, lamport, host, json.dumps(seen), when))

    def reset_devices(self) -> None:
        self.conn.execute("DELETE FROM devices")

    # -- own records -----------------------------------------------------------------------
    def add_own_record(self, seq: int, blob: bytes) -> None:
        self.conn.execute("INSERT OR REPLACE INTO own_records VALUES (?,?,?)",
                          (seq, blob, int(time.time())))

    def own_records(self) -> dict[int, tuple[bytes, int]]:
        return {r[0]: (r[1], r[2]) for r in self.conn.execute(
            "SELECT seq, blob, time FROM own_records")}

    def drop_own_records(self, seqs: Iterable[int]) -> None:
        self.conn.executemany("DELETE FROM own_records WHERE seq = ?", ((s,) for s in seqs))

    # -- the batch being published ---------------------------------------------------------
    def batch(self) -> dict | None:
        r = self.conn.execute("SELECT seq, name, record, body_hash, lamport, changes, folders, "
                              "state FROM batch WHERE id = 1").fetchone()
        if r is None:
            return None
        return {"seq": r[0], "name": r[1], "record": r[2], "body_hash": r[3],
                "lamport": r[4], "changes": json.loads(r[5]), "folders": json.loads(r[6]),
                "state": r[7]}

    def set_batch(self, seq: int, name: str, record: bytes, body_hash: str, lamport: int,
                  changes: list[dict], folders: list[str], state: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO batch VALUES (1,?,?,?,?,?,?,?,?)",
                          (seq, name, record, body_hash, lamport, json.dumps(changes),
                           json.dumps(folders), state))

    def set_batch_state(self, state: str) -> None:
        self.conn.execute("UPDATE batch SET state = ? WHERE id = 1", (state,))

    def drop_batch(self) -> None:
        self.conn.execute("DELETE FROM batch")

    # -- problems --------------------------------------------------------------------------
    def add_problem(self, kind: str, path: str, detail: str) -> bool:
        """Record a detection; False if the same one is already open."""
        if self.conn.execute("SELECT 1 FROM problems WHERE kind = ? AND path = ? AND "
                             "resolved IS NULL", (kind, path)).fetchone():
            return False
        self.conn.execute("INSERT INTO problems(kind, path, detail, time) VALUES (?,?,?,?)",
                          (kind, path, detail, time.time()))
        return True

    def problems(self, include_resolved_since: float | None = None
                 ) -> list[tuple[str, str, str, float, float | None]]:
        since = include_resolved_since if include_resolved_since is not None else 1e30
        return list(self.conn.execute(
            "SELECT kind, path, detail, time, resolved FROM problems WHERE resolved IS NULL "
            "OR resolved >= ? ORDER BY time", (since,)))

    def resolve_problems(self, path: str, kinds: Iterable[str] | None = None) -> None:
        now = time.time()
        if kinds is None:
            self.conn.execute("UPDATE problems SET resolved = ? WHERE path = ? AND resolved "
                              "IS NULL", (now, path))
        else:
            self.conn.executemany("UPDATE problems SET resolved = ? WHERE path = ? AND "
                                  "kind = ? AND resolved IS NULL",
                                  ((now, path, k) for k in kinds))

    # -- restores and stages ----------------------------------------------------------
    def add_restore(self, path: str, t_hash: str | None) -> None:
        self.conn.execute("INSERT OR REPLACE INTO restores VALUES (?, ?)", (path, t_hash))

    def restores(self) -> dict[str, str | None]:
        return dict(self.conn.execute("SELECT path, hash FROM restores"))

    def drop_restore(self, path: str) -> None:
        self.conn.execute("DELETE FROM restores WHERE path = ?", (path,))

    def add_stage(self, name: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO stages VALUES (?, ?)", (name, time.time()))

    def stages(self) -> dict[str, float]:
        return dict(self.conn.execute("SELECT name, time FROM stages"))

    def drop_stages(self, names: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM stages WHERE name = ?", ((n,) for n in names))

    # -- paths kept off the remote by the ignore rules after they were synced ---------------
    def frozen(self) -> set[str]:
        """Synced paths an ignore rule froze: never published, not even their deletion."""
        return {r[0] for r in self.conn.execute("SELECT path FROM frozen")}

    def set_frozen(self, add: Iterable[str], drop: Iterable[str]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO frozen VALUES (?)", ((p,) for p in add))
        self.conn.executemany("DELETE FROM frozen WHERE path = ?", ((p,) for p in drop))

    def count_paths(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM paths").fetchone()[0]
