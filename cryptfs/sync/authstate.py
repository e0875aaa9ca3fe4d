"""The authenticated state T (docs/SYNC.md §5): a deterministic function of the set of
records.

Changes are ordered by (lamport, device, seq, index). Going through them in that order, a
change *applies* if its base is the current T of its path (or its hash already is), and
T becomes its hash; otherwise it is *lost*. A change that arrives after changes ordered
behind it (a concurrent record seen late) makes its path's recent history be gone through
again from the point where it belongs, so every device that saw the same records agrees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .db import HistoryRow, SyncDB
from .records import Change


@dataclass
class Flip:
    """A change whose outcome is new (just added) or changed by a replay."""

    path: str
    device: str
    seq: int
    status: str  # "applied" | "lost"
    was: str | None  # the earlier status, None for a new change
    hash: str | None  # the change's hash (None: a del)


def applies(base: str | None, new: str | None, current: str | None) -> bool:
    return base == current or new == current


def add_change(db: SyncDB, key: tuple[int, str, int, int], change: Change,
               batch: str | None, recv: float | None = None) -> tuple[list[Flip], bool]:
    """Add one change to its path's history and bring T up to date; returns the changes
    whose outcome is new or different, and whether T of the path changed. A change that
    is already known is ignored."""
    lamport, device, seq, idx = key
    path = change.path
    recv = time.time() if recv is None else recv
    rows = db.history(path)
    if any(r.key == key for r in rows):
        return [], False
    row = db.row_or_new(path)
    current = row.t_hash
    new = HistoryRow(path, lamport, device, seq, idx, change.base,
                     change.hash if change.op == "put" else None,
                     change.size if change.op == "put" else None, change.source, batch,
                     "", None, None, recv)
    later = [r for r in rows if r.key > key]
    if not later:
        todo, start = [new], current
    else:
        todo = sorted([new, *later], key=lambda r: r.key)
        start = later[0].before
    flips: list[Flip] = []
    t = start
    last_setter: HistoryRow | None = None
    for r in todo:
        ok = applies(r.base, r.hash, t)
        status = "applied" if ok else "lost"
        r.before = t
        if ok:
            if r.hash != t or last_setter is None:
                last_setter = r
            t = r.hash
        r.after = t
        if r is new or r.status != status:
            flips.append(Flip(r.path, r.device, r.seq, status, r.status or None, r.hash))
        r.status = status
        db.put_history(r)
    if last_setter is None:
        # nothing in the replay set T; keep who set it before
        setter = _setter_before(rows, key)
    else:
        setter = last_setter
    changed = t != current
    if changed or setter is not None:
        row.t_hash = t
        if setter is not None:
            row.t_size = setter.size
            row.t_dev = setter.device
            row.t_seq = setter.seq
        if t is None:
            row.t_size = None
        if row.t_hash != row.s_hash:
            row.pending = 1
        db.put_row(row)
    return flips, changed


def _setter_before(rows: list[HistoryRow], key: tuple[int, str, int, int]
                   ) -> HistoryRow | None:
    best = None
    for r in rows:
        if r.key < key and r.status == "applied":
            best = r
    return best


def lost_hashes(db: SyncDB, path: str) -> set[str | None]:
    """Versions of ``path`` that lost a race (their writers may have put them on the
    remote after the winner)."""
    return {r.hash for r in db.history(path) if r.status == "lost"}


def known_versions(db: SyncDB, path: str) -> set[str]:
    """Every version of ``path`` this device knows of from recent records."""
    out = set()
    for r in db.history(path):
        if r.hash:
            out.add(r.hash)
        if r.base:
            out.add(r.base)
    return out
