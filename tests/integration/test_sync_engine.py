"""Issue 12, sync engine 2 (docs/SYNC.md): edits are never lost whatever the timing, a
change costs what it changed, and a provider that rolls back, deletes, swaps or replays
is detected. Two simulated devices (separate config dirs) against rclone's local backend
and real loopback servers: ``rclone serve webdav`` without modification times (rclone's
default WebDAV vendor cannot set them), the same server as a Nextcloud-style remote
(vendor owncloud: modification times through X-OC-Mtime) and ``rclone serve sftp``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptfs.volume import Volume
from tests.conftest import HAVE_FUSE, PASSWORD, Mount, wait_for
from tests.integration.test_sync import Server, tree
from tests.integration.test_sync_safety import Device

pytestmark = [pytest.mark.timeout(300)]
needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")

ALL = ["local", "webdav", "webdav-nextcloud", "sftp"]


def spec_for(kind: str, store: Path, servers: list) -> str:
    if kind == "local":
        return str(store / "vault")
    server = Server("sftp" if kind == "sftp" else "webdav", store).start()
    servers.append(server)
    spec = server.remote
    if kind == "webdav-nextcloud":
        spec = spec.replace("/':vault", "/',vendor=owncloud:vault")
    return spec


@pytest.fixture
def remote_kind(request):
    return request.param


@pytest.fixture
def remote(request, tmp_path: Path):
    """(spec, the folder holding the remote's objects) for request.param."""
    store = tmp_path / "cloud"
    store.mkdir()
    servers: list[Server] = []
    try:
        yield spec_for(request.param, store, servers), store / "vault"
    finally:
        for s in servers:
            s.stop()


def pair(tmp_path: Path, spec: str) -> tuple[Device, Device]:
    a, b = Device(tmp_path, "a"), Device(tmp_path, "b")
    a.ok("init", "--quiet", str(a.backing), "--remote", spec)
    va = a.vol()
    va.mkdir_path("/docs")
    va.write_file("/docs/report.txt", b"v1 of the report")
    va.write_file("/notes.txt", b"notes")
    a.ok("sync", str(a.backing))
    b.ok("clone", spec, str(b.backing))
    return a, b


def field(out: str, name: str) -> int:
    m = re.search(rf"\b{name}=(\d+)", out)
    assert m, out
    return int(m.group(1))


def read(dev: Device, path: str) -> bytes:
    return Volume.unlock(str(dev.backing), passphrase=PASSWORD.encode(),
                         read_only=True).read_file(path)


def names(dev: Device, path: str = "/") -> list[str]:
    return Volume.unlock(str(dev.backing), passphrase=PASSWORD.encode(),
                         read_only=True).listdir(path)


# -- 1. no edit is ever lost ---------------------------------------------------------------
@pytest.mark.parametrize("remote", ALL, indirect=True)
def test_edits_that_keep_size_and_mtime_all_arrive(tmp_path: Path, remote) -> None:
    """Same-size edits, several within one second, and edits whose modification time is
    put back (cp -p, touch -r, rsync -t) all reach the other device."""
    spec, _store = remote
    a, b = pair(tmp_path, spec)
    va = a.vol()
    ino = va.lookup(*va.resolve_parent("/docs/report.txt")).ino  # a kernel-style reference
    old = va.getattr(ino)
    for i in range(3):  # three saves inside one second, same size, mtime put back
        text = f"v{i + 2} of the REPORT".encode()[:16].ljust(16, b"!")
        va.write_file("/docs/report.txt", text)
        va.setattr(ino, atime_ns=old.atime_ns, mtime_ns=old.mtime_ns)
        assert va.getattr(ino).size == old.size and va.getattr(ino).mtime_ns == old.mtime_ns
        out = a.ok("sync", str(a.backing))
        assert field(out, "uploads") == 1, out
        b.ok("sync", str(b.backing))
        assert read(b, "/docs/report.txt") == text, i
    assert a.ok("status", str(a.backing)).count("pending:         0 ") == 1


# -- 2. concurrent syncs -------------------------------------------------------------------
@pytest.mark.parametrize("remote", ["local", "webdav", "sftp"], indirect=True)
def test_simultaneous_syncs_keep_both_saves_every_round(tmp_path: Path, remote) -> None:
    spec, _store = remote
    a, b = pair(tmp_path, spec)
    env = dict(os.environ, CRYPTFS_PASSWORD=PASSWORD)
    for rnd in range(3):
        mine = {a: f"A's save {rnd}".encode(), b: f"B's save {rnd}".encode()}
        for dev, text in mine.items():
            dev.vol().write_file("/docs/report.txt", text)
        procs = [subprocess.Popen([sys.executable, "-m", "cryptfs", "sync", str(d.backing)],
                                  env={**env, "XDG_CONFIG_HOME": str(d.config)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for d in (a, b)]
        for p in procs:
            _out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        for _ in range(2):  # each sees the other's record, then the conflict copies
            a.ok("sync", str(a.backing))
            b.ok("sync", str(b.backing))
        seen = []
        for dev in (a, b):
            copies = sorted(n for n in names(dev, "/docs") if "(conflict " in n)
            versions = {read(dev, "/docs/report.txt")} | {
                read(dev, "/docs/" + c) for c in copies}
            assert {mine[a], mine[b]} <= versions, (rnd, versions)
            seen.append((read(dev, "/docs/report.txt"), copies))
        assert seen[0] == seen[1], seen  # both devices show the same pair


# -- 3. torn uploads and truncated objects -------------------------------------------------
@pytest.mark.parametrize("remote", ["local", "webdav"], indirect=True)
def test_a_truncated_object_never_replaces_a_good_file(tmp_path: Path, remote) -> None:
    spec, store = remote
    a, b = pair(tmp_path, spec)
    big = os.urandom(300_000)
    a.vol().write_file("/docs/report.txt", big)
    a.ok("sync", str(a.backing))
    obj = store / a.vol().backing_path_of("/docs/report.txt")
    obj.write_bytes(obj.read_bytes()[:100_000])  # cut, as a broken upload leaves it
    proc = b.run("sync", str(b.backing))
    out = proc.stdout.decode()
    assert proc.returncode == 14, out
    assert "integrity: modified: /docs/report.txt" in out
    assert read(b, "/docs/report.txt") == b"v1 of the report"  # the good old version
    assert "pending=1" in out
    status = b.ok("status", str(b.backing), "--names")
    assert "modified: /docs/report.txt" in status and "waiting:         1" in status
    proc = a.run("sync", str(a.backing), "--verify")  # the writer notices, puts it back
    assert proc.returncode == 14 and b"modified: /docs/report.txt" in proc.stdout
    b.ok("sync", str(b.backing))
    assert read(b, "/docs/report.txt") == big


@pytest.mark.parametrize("remote", ["local", "webdav"], indirect=True)
def test_kill_9_mid_upload_then_the_next_sync_completes(tmp_path: Path, remote) -> None:
    spec, _store = remote
    a, b = pair(tmp_path, spec)
    va = a.vol()
    data = {f"/big{i}": os.urandom(1 << 20) for i in range(4)}
    for path, content in data.items():
        va.write_file(path, content)
    va.write_file("/docs/report.txt", b"edited with the big ones")
    env = dict(os.environ, CRYPTFS_PASSWORD=PASSWORD, XDG_CONFIG_HOME=str(a.config),
               CRYPTFS_RCLONE_ARGS="--bwlimit 1M")
    proc = subprocess.Popen([sys.executable, "-m", "cryptfs", "sync", str(a.backing)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGKILL)  # cryptfs and rclone, mid-upload
    proc.wait(10)
    # whatever was cut lies in the staging area only: B sees the old state, whole
    b.ok("sync", str(b.backing))
    assert read(b, "/docs/report.txt") == b"v1 of the report"
    a.ok("sync", str(a.backing))
    b.ok("sync", str(b.backing))
    for path, content in data.items():
        assert read(b, path) == content
    assert read(b, "/docs/report.txt") == b"edited with the big ones"
    assert a.run("audit-remote", str(a.backing)).returncode == 0


# -- 4. renames cost O(1) ------------------------------------------------------------------
@pytest.mark.parametrize("remote", ["local", "sftp"], indirect=True)
def test_renaming_a_500_file_folder_moves_a_few_objects(tmp_path: Path, remote) -> None:
    spec, _store = remote
    a, b = pair(tmp_path, spec)
    va = a.vol()
    va.mkdir_path("/photos")
    for i in range(500):
        va.write_file(f"/photos/img{i:03d}.jpg", b"jpeg" * 10)
    assert "pending:         502 changed" in a.ok("status", str(a.backing))
    out = a.ok("pull", str(a.backing))  # pull is a sync: it sends too
    assert field(out, "uploads") == 502  # 500 files, the folder's entry and back-reference
    b.ok("sync", str(b.backing))
    va.rename_path("/photos", "/archive-2026")
    out = a.ok("sync", str(a.backing))
    assert field(out, "uploads") <= 3 and field(out, "deletes") <= 1, out
    calls_a = field(out, "remote_calls")
    out = b.ok("sync", str(b.backing))
    assert field(out, "downloads") <= 3, out
    assert field(out, "remote_calls") <= calls_a + 2
    assert len(names(b, "/archive-2026")) == 500 and "photos" not in names(b)
    assert "pending:         0 changed" in a.ok("status", str(a.backing))


# -- 5. what a provider does is detected ---------------------------------------------------
def test_rollback_is_detected_in_sync_status_and_audit(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    rel = a.vol().backing_path_of("/docs/report.txt")
    old = (Path(spec) / rel).read_bytes()
    a.vol().write_file("/docs/report.txt", b"v2 of the report, newer")
    a.ok("sync", str(a.backing))
    (Path(spec) / rel).write_bytes(old)  # the provider serves the older ciphertext
    proc = b.run("sync", str(b.backing))
    assert proc.returncode == 14
    assert b"integrity: rolled-back: /docs/report.txt" in proc.stdout
    assert read(b, "/docs/report.txt") == b"v1 of the report"  # never shown as current
    status = b.ok("status", str(b.backing), "--names")
    assert "rolled-back: /docs/report.txt" in status and "1 problem(s)" in status
    assert "rolled-back: " + rel in b.ok("status", str(b.backing))  # no passphrase: backing
    proc = a.run("audit-remote", str(a.backing))
    assert proc.returncode == 14 and b"rolled-back: /docs/report.txt" in proc.stdout
    # the writer's daily check finds nothing by size (same size), but a full check does
    out = a.run("sync", str(a.backing), "--full").stdout.decode()
    assert "modified: /docs/report.txt" in out
    b.ok("sync", str(b.backing))
    assert read(b, "/docs/report.txt") == b"v2 of the report, newer"


def test_deletion_without_record_and_swap_are_detected(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    va = a.vol()
    va.write_file("/docs/a.txt", b"text of a, twenty")
    va.write_file("/docs/b.txt", b"text of b, longer one")
    a.ok("sync", str(a.backing))
    b.ok("sync", str(b.backing))
    ra, rb = va.backing_path_of("/docs/a.txt"), va.backing_path_of("/docs/b.txt")
    va.write_file("/docs/a.txt", b"new a")
    va.write_file("/docs/b.txt", b"new b, also")
    a.ok("sync", str(a.backing))
    pa, pb = Path(spec) / ra, Path(spec) / rb
    da, db_ = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db_)  # swapped between names
    pb.write_bytes(da)
    notes = Path(spec) / va.backing_path_of("/notes.txt")
    notes.unlink()  # deleted, and no record says so
    out = b.run("sync", str(b.backing)).stdout.decode()
    assert "swapped: /docs/a.txt" in out and "swapped: /docs/b.txt" in out
    assert read(b, "/docs/a.txt") == b"text of a, twenty"
    audit = a.run("audit-remote", str(a.backing)).stdout.decode()
    assert "swapped: /docs/a.txt" in audit and "missing: /notes.txt" in audit
    out = a.run("sync", str(a.backing), "--verify").stdout.decode()
    assert "missing: /notes.txt" in out  # found by the listing check, and put back
    assert notes.exists()
    status = a.ok("status", str(a.backing), "--names")
    assert "missing: /notes.txt" in status


def test_replayed_and_removed_records_are_detected(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    va = a.vol()
    va.write_file("/one.txt", b"1")
    a.ok("sync", str(a.backing))
    b.ok("sync", str(b.backing))
    (log_dir,) = (Path(spec) / "cryptfs-sync" / "log").iterdir()
    first = sorted(log_dir.iterdir())[0]
    seq = int(sorted(log_dir.iterdir())[-1].name)
    replay = log_dir / f"{seq + 1:012d}"
    shutil.copyfile(first, replay)  # an old record served as the next one
    proc = b.run("sync", str(b.backing))
    assert proc.returncode == 14 and b"record-replayed" in proc.stdout
    replay.unlink()
    va.write_file("/two.txt", b"2")
    a.ok("sync", str(a.backing))
    va.write_file("/three.txt", b"3")
    a.ok("sync", str(a.backing))
    removed = log_dir / f"{seq + 1:012d}"
    assert removed.exists()
    removed.unlink()  # a record removed from the log
    proc = b.run("sync", str(b.backing))
    out = proc.stdout.decode()
    assert "record-removed" in out and "full reconciliation" in out
    assert sorted(names(b)) == ["docs", "notes.txt", "one.txt", "three.txt", "two.txt"]
    out = a.run("sync", str(a.backing)).stdout.decode()  # the writer puts it back
    assert "record-removed" in out and removed.exists()


# -- 6. a device that was away longer than the records are kept ----------------------------
def test_device_away_past_compaction_catches_up_losing_nothing(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    b.vol().write_file("/notes.txt", b"B edited the notes offline")
    b.vol().write_file("/from-b.txt", b"new on B")
    va = a.vol()
    short = {"CRYPTFS_TESTONLY_RECORD_AGE": "0"}
    for i in range(3):
        va.write_file(f"/a{i}.txt", f"A {i}".encode())
        a.ok("sync", str(a.backing), env=short)
    va.write_file("/notes.txt", b"A edited the notes too")
    a.ok("sync", str(a.backing), env=short)
    log_dir = next((Path(spec) / "cryptfs-sync" / "log").iterdir())
    assert len(list(log_dir.iterdir())) == 1  # compacted: only the newest stays
    out = b.ok("sync", str(b.backing))
    assert "full reconciliation" in out
    a.ok("sync", str(a.backing))
    for dev in (a, b):
        got = names(dev)
        for i in range(3):
            assert read(dev, f"/a{i}.txt") == f"A {i}".encode()
        assert read(dev, "/from-b.txt") == b"new on B"
        copies = [n for n in got if n.startswith("notes (conflict ")]
        versions = {read(dev, "/notes.txt"), *(read(dev, "/" + c) for c in copies)}
        assert versions == {b"B edited the notes offline", b"A edited the notes too"}


# -- 7. idle cost and the mount ------------------------------------------------------------
def test_an_idle_poll_is_one_remote_call(tmp_path: Path) -> None:
    """In process, as the mount's autosync runs it: after the first sync, a poll that
    finds nothing costs one listing of the log, whatever the size of the vault."""
    from cryptfs.settings import VaultSettings
    from cryptfs.sync import Syncer, VaultKeys, rclone
    from cryptfs.sync.engine import Engine

    spec = str(tmp_path / "cloud")
    a, _b = pair(tmp_path, spec)
    os.environ["XDG_CONFIG_HOME"] = str(a.config)  # monkeypatched back by the fixture
    vol = a.vol()
    syncer = Syncer(str(a.backing), VaultSettings.load(str(a.backing)),
                    vault=VaultKeys(vol.master_key, vol.config, vol))
    engine = Engine(syncer)
    engine.run(scan_all=True)
    for _ in range(3):
        before = rclone.calls()
        result = engine.run()
        assert rclone.calls() - before == 1 == result.calls
    vol.write_file("/docs/new.txt", b"x")  # not journalled: only a scan finds it
    assert engine.run(scan_all=True).uploads == 1
    engine.close()


@needs_fuse
def test_mounts_with_default_settings_use_engine_2(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    ma, mb = tmp_path / "ma", tmp_path / "mb"
    ma.mkdir()
    mb.mkdir()
    env_a = {"XDG_CONFIG_HOME": str(a.config)}
    old = os.environ.get("XDG_CONFIG_HOME")
    try:
        os.environ.update(env_a)
        mount_a = Mount(a.backing, ma).start()
        os.environ["XDG_CONFIG_HOME"] = str(b.config)
        mount_b = Mount(b.backing, mb).start()
    finally:
        os.environ["XDG_CONFIG_HOME"] = old or ""
    try:
        (ma / "docs" / "report.txt").write_text("v1 of the REPORT")  # same size
        assert wait_for(lambda: (mb / "docs" / "report.txt").read_text() ==
                        "v1 of the REPORT", 60)
        (mb / "from-b.txt").write_text("B")
        os.rename(mb / "notes.txt", mb / "renamed.txt")
        assert wait_for(lambda: (ma / "renamed.txt").exists() and
                        not (ma / "notes.txt").exists() and (ma / "from-b.txt").exists(), 60)
        assert (ma / "renamed.txt").read_text() == "notes"
        assert any((Path(spec) / "cryptfs-sync" / "log").iterdir())
    finally:
        mount_a.stop()
        mount_b.stop()
    assert tree(Path(spec) / "d") == tree(a.backing / "d") == tree(b.backing / "d")


@pytest.mark.parametrize("cut", ["before the record", "after the record"])
def test_a_batch_cut_anywhere_is_finished_or_redone(tmp_path: Path, cut: str,
                                                    monkeypatch) -> None:
    """A sync that dies between its steps (SYNC.md §4): the next one finishes the batch
    whose record reached the log, or drops the one whose record did not and publishes its
    changes again; the other device gets every change exactly once."""
    from cryptfs.settings import VaultSettings
    from cryptfs.sync import Syncer, VaultKeys
    from cryptfs.sync.engine import Engine
    from cryptfs.sync.rclone import SyncError
    from cryptfs.sync.remote import Remote

    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(a.config))
    vol = a.vol()
    engine = Engine(Syncer(str(a.backing), VaultSettings.load(str(a.backing)),
                           vault=VaultKeys(vol.master_key, vol.config, vol)))
    vol.write_file("/docs/report.txt", b"edited before the crash")
    vol.write_file("/new.txt", b"new before the crash")
    name = "moveto" if cut == "before the record" else "move_into_place"
    real = getattr(Remote, name)

    def dies(self, *args, **kw):
        raise SyncError("killed")

    monkeypatch.setattr(Remote, name, dies)
    with pytest.raises(SyncError):
        engine.run(scan_all=True)
    monkeypatch.setattr(Remote, name, real)
    log_dir = next((Path(spec) / "cryptfs-sync" / "log").iterdir(), None)
    records_before = len(list(log_dir.iterdir())) if log_dir else 0
    assert records_before == (0 if cut == "before the record" else 1)
    result = engine.run(scan_all=True)
    assert result.problems == []
    log_dir = next((Path(spec) / "cryptfs-sync" / "log").iterdir())
    assert len(list(log_dir.iterdir())) == 1  # one record for the batch, never two
    engine.close()
    b.ok("sync", str(b.backing))
    assert read(b, "/docs/report.txt") == b"edited before the crash"
    assert read(b, "/new.txt") == b"new before the crash"
    assert a.run("audit-remote", str(a.backing)).returncode == 0


@needs_fuse
def test_the_journal_survives_kill_9_of_the_daemon(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = pair(tmp_path, spec)
    mnt = tmp_path / "ma"
    mnt.mkdir()
    import json

    (settings,) = (a.config / "cryptfs" / "vaults").glob("*.json")
    syncs = json.loads(settings.read_text())["syncs"]
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(a.config)
    try:
        m = Mount(a.backing, mnt, ("--sync-interval", "600", "--poll-interval", "600"))
        m.start()
    finally:
        os.environ["XDG_CONFIG_HOME"] = old or ""
    try:
        (state,) = a.state_dirs()
        # the mount's first sync (it compares every folder) is over
        assert wait_for(lambda: json.loads(settings.read_text())["syncs"] > syncs)
        (mnt / "docs" / "after-start.txt").write_text("written, then the daemon dies")
        m.kill()
    finally:
        m.stop()
    folder = a.vol().storage_path_of("/docs")
    assert folder in (state / "journal").read_text().split("\n")
    a.ok("sync", str(a.backing))
    b.ok("sync", str(b.backing))
    assert read(b, "/docs/after-start.txt") == b"written, then the daemon dies"
