"""Engine 2's parts without a remote: records, the authenticated state, the journal, the
local comparison (docs/SYNC.md §3-§5)."""

from __future__ import annotations

import itertools
import os
import random
import threading
from pathlib import Path

import pytest

from cryptfs.sync import authstate
from cryptfs.sync.db import SyncDB
from cryptfs.sync.journal import Journal
from cryptfs.sync.records import (
    Change,
    Record,
    RecordError,
    body_hash,
    new_device_id,
    open_record,
    record_key,
)
from cryptfs.sync.scan import compare

KEY = record_key(bytes(range(32)))
H = [f"{i:064x}" for i in range(10)]


def record(dev: str, seq: int, prev: str = "", lamport: int = 1, changes=None) -> Record:
    return Record(dev, seq, prev, lamport, {}, "host", "b", 0,
                  changes or [Change("put", "d/aa/bbb/x", None, H[1], 5)])


# -- records -------------------------------------------------------------------------------
def test_records_open_only_under_their_own_name_and_key() -> None:
    dev = new_device_id()
    rec = record(dev, 3)
    blob = rec.seal(KEY)
    got, digest = open_record(KEY, blob, rec.name)
    assert got == rec and digest == body_hash(rec.body())
    with pytest.raises(RecordError, match="under the name"):
        open_record(KEY, blob, rec.name[:-1] + "4")  # replayed as the next one
    with pytest.raises(RecordError, match="authenticate"):
        open_record(record_key(bytes(32)), blob, rec.name)  # another vault's
    flipped = bytearray(blob)
    flipped[40] ^= 1
    with pytest.raises(RecordError, match="authenticate"):
        open_record(KEY, bytes(flipped), rec.name)
    assert rec.seal(KEY) != blob  # a fresh nonce for every write


@pytest.mark.parametrize("bad", [
    {"op": "put", "path": "../etc/passwd", "base": None, "hash": H[1], "size": 1},
    {"op": "put", "path": "cryptfs.conf", "base": None, "hash": H[1], "size": 1},
    {"op": "put", "path": "d/aa/bb/c", "base": None, "hash": "nothex", "size": 1},
    {"op": "del", "path": "d/aa/bb/c", "base": None},
    {"op": "move", "path": "d/aa/bb/c", "base": None},
])
def test_records_refuse_changes_outside_the_vault_or_malformed(bad) -> None:
    with pytest.raises(RecordError):
        Change.from_json(bad)


# -- the authenticated state ---------------------------------------------------------------
def apply_all(db: SyncDB, changes) -> None:
    for key, change in changes:
        authstate.add_change(db, key, change, "b")


def test_concurrent_changes_resolve_the_same_way_in_any_order(tmp_path: Path) -> None:
    """T is a function of the set of records: every arrival order gives the same state,
    and the first change in (lamport, device) order wins a race."""
    p = "d/aa/bbb/file"
    changes = [
        ((2, "aaaa", 1, 0), Change("put", p, H[0], H[1], 1)),  # A from the base
        ((2, "bbbb", 1, 0), Change("put", p, H[0], H[2], 1)),  # B from the same base
        ((3, "bbbb", 2, 0), Change("put", p, H[2], H[3], 1)),  # B again, on its loser
        ((4, "aaaa", 2, 0), Change("put", p, H[1], H[4], 1)),  # A, on the winner
        ((5, "cccc", 1, 0), Change("del", p, H[4])),  # C deletes the newest
        ((5, "dddd", 1, 0), Change("put", p, H[4], H[5], 1)),  # D edits it meanwhile
    ]
    results = set()
    for n, order in enumerate(itertools.permutations(changes)):
        if n % 7:  # 720 orders; a seventh of them is plenty
            continue
        db = SyncDB(tmp_path / f"{n}.sqlite")
        row = db.new_row(p)
        row.t_hash = row.s_hash = H[0]
        db.put_row(row)
        apply_all(db, order)
        statuses = tuple(r.status for r in db.history(p))
        results.add((db.row(p).t_hash, statuses))
        db.close()
    assert results == {(None, ("applied", "lost", "lost", "applied", "applied", "lost"))}


def test_the_same_object_made_twice_is_no_conflict(tmp_path: Path) -> None:
    db = SyncDB(tmp_path / "db.sqlite")
    p = "d/aa/bbb/dir.d"
    apply_all(db, [((1, "aaaa", 1, 0), Change("put", p, None, H[7], 34)),
                   ((1, "bbbb", 1, 0), Change("put", p, None, H[7], 34))])
    assert [r.status for r in db.history(p)] == ["applied", "applied"]
    assert db.row(p).t_hash == H[7]


def test_a_late_record_flips_a_published_change_to_lost(tmp_path: Path) -> None:
    db = SyncDB(tmp_path / "db.sqlite")
    p = "d/aa/bbb/file"
    row = db.new_row(p)
    row.t_hash = row.s_hash = H[0]
    db.put_row(row)
    flips, _ = authstate.add_change(db, (2, "mmmm", 1, 0), Change("put", p, H[0], H[1], 1), "b")
    assert [f.status for f in flips] == ["applied"]
    flips, changed = authstate.add_change(db, (2, "aaaa", 1, 0),
                                          Change("put", p, H[0], H[2], 1), "b")
    assert changed and db.row(p).t_hash == H[2]
    assert {(f.device, f.status, f.was) for f in flips} == {
        ("aaaa", "applied", None), ("mmmm", "lost", "applied")}


# -- the journal ---------------------------------------------------------------------------
def test_journal_appends_once_per_folder_and_never_into_a_taken_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    for _ in range(3):
        j.record("d/aa/bbb")
    assert (tmp_path / "journal").read_text() == "d/aa/bbb\n"
    with j.take() as (paths, trusted):
        assert paths == {"d/aa/bbb"} and trusted
        j.record("d/aa/bbb")  # changed again while the sync runs: the next sync sees it
    with j.take() as (paths, _):
        assert paths == {"d/aa/bbb"}
    with j.take() as (paths, _):
        assert paths == set()


def test_journal_taken_by_a_failed_sync_is_read_again(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.record("x/ab")
    with pytest.raises(RuntimeError), j.take() as (paths, _):
        raise RuntimeError("remote gone")
    j.record("d/cc/ddd")
    with j.take() as (paths, _):
        assert paths == {"x/ab", "d/cc/ddd"}


def test_journal_loses_nothing_under_concurrent_takes(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    names = [f"d/{i % 50:02d}/f{i}" for i in range(3000)]
    seen: set[str] = set()
    done = threading.Event()

    def taker() -> None:
        taker_j = Journal(tmp_path)
        while not done.is_set():
            with taker_j.take() as (paths, _):
                seen.update(paths)

    t = threading.Thread(target=taker)
    t.start()
    for name in names:
        j.record(name)
    done.set()
    t.join()
    with j.take() as (paths, _):
        seen.update(paths)
    assert seen == set(names)


# -- the local comparison ------------------------------------------------------------------
def test_compare_sees_edits_that_keep_size_and_mtime_and_renames(tmp_path: Path) -> None:
    backing = tmp_path / "v"
    folder = backing / "d" / "aa" / "bbb"
    folder.mkdir(parents=True)
    f = folder / ("a" * 52)
    f.write_bytes(b"1234")
    db = SyncDB(tmp_path / "db.sqlite")
    from cryptfs.sync.scan import hash_file

    st = f.stat()
    row = db.new_row("d/aa/bbb/" + "a" * 52)
    row.s_hash = row.t_hash = hash_file(str(f))[0]
    row.size, row.mtime, row.ctime, row.ino = st.st_size, st.st_mtime_ns, st.st_ctime_ns, \
        st.st_ino
    db.put_row(row)
    assert compare(db, str(backing), {"d/aa/bbb"}) == []
    f.write_bytes(b"5678")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: mtime as before
    (change,) = compare(db, str(backing), {"d/aa/bbb"})
    assert change.op == "put" and change.base == row.s_hash
    f.write_bytes(b"1234")
    os.rename(f, folder / ("b" * 52))
    put, gone = compare(db, str(backing), {"d/aa/bbb"})
    assert (put.op, put.source, gone.op) == ("put", row.path, "del")
    (folder / "cryptfs.0123456789abcdef.tmp").write_bytes(b"temporary")
    assert {c.path.rsplit("/", 1)[1] for c in compare(db, str(backing), {"d/aa/bbb"})} == \
        {"b" * 52, "a" * 52}


def test_random_histories_agree(tmp_path: Path) -> None:
    """Random concurrent histories on a few paths: two devices folding the same records
    in different orders end in the same state."""
    rng = random.Random(12)
    for trial in range(20):
        changes = []
        current = {p: None for p in ("d/aa/b/1", "d/aa/b/2")}
        for i in range(12):
            p = rng.choice(list(current))
            dev = rng.choice(["aaaa", "bbbb", "cccc"])
            base = current[p] if rng.random() < 0.7 else rng.choice([*H[:4], None])
            new = rng.choice(H)
            op = "del" if base is not None and rng.random() < 0.2 else "put"
            ch = Change(op, p, base, None if op == "del" else new, 1)
            changes.append(((rng.randint(1, 6), dev, i, 0), ch))
            if rng.random() < 0.8:
                current[p] = None if op == "del" else new
        states = []
        for k in range(2):
            order = changes[:]
            rng.shuffle(order)
            db = SyncDB(tmp_path / f"{trial}-{k}.sqlite")
            apply_all(db, order)
            states.append({p: (db.row(p).t_hash if db.row(p) else None) for p in current})
            db.close()
        assert states[0] == states[1], trial
