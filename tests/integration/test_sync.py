"""Cloud sync against rclone's local backend and real rclone servers on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptfs.settings import VaultSettings
from cryptfs.sync import rclone_binary
from cryptfs.volume import Volume
from tests.conftest import HAVE_FUSE, PASSWORD, Mount, cryptfs_cmd, wait_for

pytestmark = [pytest.mark.timeout(180)]
needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")
RCLONE = rclone_binary()


class Server:
    """``rclone serve webdav|sftp`` over a directory, on a loopback port the OS picks."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root, self.port = kind, root, 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        args = [RCLONE, "serve", self.kind, str(self.root), "--addr", f"127.0.0.1:{self.port}"]
        if self.kind == "sftp":
            args += ["--user", "u", "--pass", "p"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            if m and ("started" in line or "listening" in line):
                self.port = int(m.group(1))
                return self
        raise AssertionError("rclone serve did not start")

    def stop(self) -> None:
        if self.proc:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    @property
    def remote(self) -> str:
        if self.kind == "webdav":
            return f":webdav,url='http://127.0.0.1:{self.port}/':vault"
        obscured = subprocess.run([RCLONE, "obscure", "p"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        return f":sftp,host=127.0.0.1,port={self.port},user=u,pass={obscured}:vault"


@pytest.fixture
def servers():
    """Start rclone servers through this; every one is stopped at teardown."""
    started: list[Server] = []

    def start(kind: str, root: Path) -> Server:
        server = Server(kind, root).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=["local", "webdav", "sftp"])
def remote(request, tmp_path: Path):
    store = tmp_path / "cloud"
    store.mkdir()
    if request.param == "local":
        yield str(store / "vault"), store / "vault"
        return
    server = Server(request.param, store).start()
    try:
        yield server.remote, store / "vault"
    finally:
        server.stop()


def tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes; symlinks (and rclone's .rclonelink stand-ins) as their target."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            rel = str(p.relative_to(root))
            if rel.startswith("cryptfs-sync/"):
                continue  # engine 2's records and staging area (docs/SYNC.md §1)
            if p.is_symlink():
                out[rel] = b"link:" + os.readlink(p).encode()
            elif rel.endswith(".rclonelink"):
                out[rel[: -len(".rclonelink")]] = b"link:" + p.read_bytes()
            else:
                out[rel] = p.read_bytes()
    return out


def two_devices(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """Vault A synced to a local remote and cloned as B: (a, b, mount point a, b)."""
    store = tmp_path / "cloud"
    a, b = tmp_path / "a", tmp_path / "b"
    cryptfs_cmd("init", "--quiet", str(a), "--remote", str(store), check=True)
    cryptfs_cmd("sync", str(a), check=True)
    assert cryptfs_cmd("clone", str(store), str(b)).returncode == 0
    ma, mb = tmp_path / "ma", tmp_path / "mb"
    ma.mkdir()
    mb.mkdir()
    return a, b, ma, mb


def test_sync_clone_and_audit(tmp_path: Path, remote) -> None:
    spec, store = remote
    vault = tmp_path / "vault"
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode())
    vol.mkdir_path("/docs")
    vol.write_file("/docs/report.txt", b"quarterly numbers" * 100)
    vol.write_file("/" + "long name " * 20, os.urandom(50000))
    vol.symlink_path("/link", "docs/report.txt")
    proc = cryptfs_cmd("sync", str(vault), "--remote", spec)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith("sync: ok") and "transfers=" in out
    assert tree(store) == tree(vault)
    status = cryptfs_cmd("status", str(vault), check=True).stdout.decode()
    from cryptfs.sync import redact

    assert redact(spec) in status and "last error:      none" in status
    if "pass=" in spec:  # inline credentials are never shown
        assert spec not in status and spec not in out and "pass=***" in out
    clone = tmp_path / "clone"
    proc = cryptfs_cmd("clone", spec, str(clone))
    assert proc.returncode == 0, proc.stderr
    assert cryptfs_cmd("cat", str(clone), "docs/report.txt",
                       check=True).stdout == b"quarterly numbers" * 100
    proc = cryptfs_cmd("audit-remote", str(vault))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert b"every object is valid ciphertext" in proc.stdout
    # incremental: one change, one upload
    vol.write_file("/docs/report.txt", b"changed")
    out = cryptfs_cmd("sync", str(vault), check=True).stdout.decode()
    assert "transfers=1 " in out, out


def test_audit_remote_finds_foreign_and_tampered_objects(tmp_path: Path) -> None:
    vault, store = tmp_path / "vault", tmp_path / "cloud"
    cryptfs_cmd("init", "--quiet", str(vault), "--remote", str(store), check=True)
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode())
    vol.write_file("/a", b"a" * 5000)
    cryptfs_cmd("sync", str(vault), check=True)
    (store / "plaintext-notes.txt").write_text("oops")
    obj = store / vol.backing_path_of("/a")
    raw = bytearray(obj.read_bytes())
    raw[100] ^= 1
    obj.write_bytes(bytes(raw))
    proc = cryptfs_cmd("audit-remote", str(vault), "--json")
    assert proc.returncode == 14
    import json

    kinds = sorted(p["kind"] for p in json.loads(proc.stdout)["problems"])
    assert kinds == ["content", "foreign", "modified"]  # fsck, and the records (engine 2)


def test_nothing_plaintext_reaches_the_remote(tmp_path: Path) -> None:
    if not HAVE_FUSE:
        pytest.skip("needs FUSE")
    canary = "Q7CanaryXk2"
    vault, store, mnt = tmp_path / "vault", tmp_path / "cloud", tmp_path / "mnt"
    mnt.mkdir()
    cryptfs_cmd("init", "--quiet", str(vault), "--remote", str(store), check=True)
    m = Mount(vault, mnt, ("--sync-interval", "0.5")).start()
    try:
        (mnt / f"dir-{canary}").mkdir()
        (mnt / f"dir-{canary}" / f"file-{canary}.txt").write_text(canary * 500)
        (mnt / ("long-" + canary * 20)).write_text(canary)
        os.symlink(f"target-{canary}", mnt / f"link-{canary}")
        os.setxattr(mnt / f"dir-{canary}", f"user.{canary}", canary.encode() * 3)
        os.setxattr(mnt / f"dir-{canary}" / f"file-{canary}.txt", "user.note",
                    canary.encode())
    finally:
        m.stop()  # unmount uploads what is pending
    objects = 0
    for dirpath, dirs, files in os.walk(store):
        for name in dirs + files:
            assert canary not in name
            objects += 1
            p = Path(dirpath, name)
            if p.is_file():
                assert canary.encode() not in p.read_bytes()
    assert objects >= 8
    assert cryptfs_cmd("audit-remote", str(vault)).returncode == 0


@pytest.mark.parametrize("bad", [
    "local:/tmp/x$(touch {marker})", "local:/tmp/`touch {marker}`", 'local:/tmp/a"b',
    "local:/tmp/a;touch {marker}", "local:/tmp/a\ntouch {marker}", "local:/tmp/a\\b",
    "/tmp/$HOME",
])
def test_hostile_remotes_are_refused(tmp_path: Path, bad: str) -> None:
    marker = tmp_path / "pwned"
    vault = tmp_path / "vault"
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    remote = bad.format(marker=marker)
    for args in (["sync", str(vault), "--remote", remote], ["remote", "set", str(vault), remote],
                 ["clone", remote, str(tmp_path / "c")]):
        proc = cryptfs_cmd(*args)
        assert proc.returncode != 0
        assert b"refuses" in proc.stderr
    assert not marker.exists()


def test_hostile_backing_path_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    vault = tmp_path / f"v$(touch {marker})"
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    proc = cryptfs_cmd("sync", str(vault), "--remote", str(tmp_path / "cloud"))
    assert proc.returncode == 16 and b"refuses" in proc.stderr
    assert not marker.exists()


def test_rclone_python_quoting_is_never_reached_with_odd_but_safe_names(tmp_path: Path) -> None:
    """Spaces, quotes and parentheses in paths work (only shell-active characters are
    refused)."""
    vault = tmp_path / "my vault (2026) it's"
    store = tmp_path / "cloud dir's"
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    Volume.unlock(str(vault), passphrase=PASSWORD.encode()).write_file("/x", b"x")
    assert cryptfs_cmd("sync", str(vault), "--remote", str(store)).returncode == 0
    clone = tmp_path / "clone 2"
    proc = cryptfs_cmd("clone", str(store), str(clone))
    assert proc.returncode == 0, proc.stderr
    assert cryptfs_cmd("cat", str(clone), "x", check=True).stdout == b"x"


def test_two_devices_conflicts_renames_and_deletes(tmp_path: Path) -> None:
    store = tmp_path / "cloud"
    a, b = tmp_path / "a", tmp_path / "b"
    cryptfs_cmd("init", "--quiet", str(a), "--remote", str(store), check=True)
    va = Volume.unlock(str(a), passphrase=PASSWORD.encode())
    va.mkdir_path("/shared")
    va.write_file("/shared/doc.txt", b"v1")
    va.write_file("/shared/old-name.txt", b"rename me")
    va.write_file("/shared/gone.txt", b"delete me")
    cryptfs_cmd("sync", str(a), check=True)
    assert cryptfs_cmd("clone", str(store), str(b)).returncode == 0
    vb = Volume.unlock(str(b), passphrase=PASSWORD.encode())
    # both edit the same file offline; A renames and deletes; B adds a file
    va.write_file("/shared/doc.txt", b"edit on A")
    va.rename_path("/shared/old-name.txt", "/shared/new-name.txt")
    va.unlink_path("/shared/gone.txt")
    vb.write_file("/shared/doc.txt", b"edit on B")
    vb.write_file("/shared/from-b.txt", b"B")
    cryptfs_cmd("sync", str(a), check=True)
    out = cryptfs_cmd("sync", str(b), check=True).stdout.decode()
    assert "conflicts=1" in out
    cryptfs_cmd("sync", str(a), check=True)
    for vol in (va, vb):
        vol.clear_caches()
        names = vol.listdir("/shared")
        conflict = [n for n in names if "(conflict " in n]
        assert sorted(set(names) - set(conflict)) == ["doc.txt", "from-b.txt", "new-name.txt"]
        assert len(conflict) == 1 and conflict[0].endswith(".txt")
        assert vol.read_file("/shared/doc.txt") == b"edit on A"
        assert vol.read_file("/shared/" + conflict[0]) == b"edit on B"


def test_remote_emptied_is_not_mirrored_as_deletions(tmp_path: Path) -> None:
    import shutil

    vault, store = tmp_path / "vault", tmp_path / "cloud"
    cryptfs_cmd("init", "--quiet", str(vault), "--remote", str(store), check=True)
    Volume.unlock(str(vault), passphrase=PASSWORD.encode()).write_file("/precious", b"x")
    cryptfs_cmd("sync", str(vault), check=True)
    shutil.rmtree(store)
    store.mkdir()
    proc = cryptfs_cmd("sync", str(vault))
    assert proc.returncode == 16 and b"refusing to sync" in proc.stderr
    assert cryptfs_cmd("cat", str(vault), "precious", check=True).stdout == b"x"


def test_config_can_stay_off_the_remote(tmp_path: Path) -> None:
    vault, store = tmp_path / "vault", tmp_path / "cloud"
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    cryptfs_cmd("remote", "set", str(vault), str(store), "--no-upload-config", check=True)
    Volume.unlock(str(vault), passphrase=PASSWORD.encode()).write_file("/f", b"f")
    cryptfs_cmd("sync", str(vault), check=True)
    assert not (store / "cryptfs.conf").exists()
    proc = cryptfs_cmd("clone", str(store), str(tmp_path / "c1"))
    assert proc.returncode != 0 and b"--config-file" in proc.stderr
    proc = cryptfs_cmd("clone", str(store), str(tmp_path / "c2"), "--config-file",
                       str(vault / "cryptfs.conf"))
    assert proc.returncode == 0, proc.stderr
    assert cryptfs_cmd("cat", str(tmp_path / "c2"), "f", check=True).stdout == b"f"


def test_kill_9_during_sync_then_next_sync_completes(tmp_path: Path) -> None:
    vault, store = tmp_path / "vault", tmp_path / "cloud"
    cryptfs_cmd("init", "--quiet", str(vault), "--remote", str(store), check=True)
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode())
    for i in range(4):
        vol.write_file(f"/big{i}", os.urandom(2 << 20))
    env = dict(os.environ, CRYPTFS_PASSWORD=PASSWORD, CRYPTFS_RCLONE_ARGS="--bwlimit 2M")
    proc = subprocess.Popen([sys.executable, "-m", "cryptfs", "sync", str(vault)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)  # cryptfs and rclone, mid-transfer
    proc.wait(10)
    result = cryptfs_cmd("sync", str(vault))
    assert result.returncode == 0, result.stderr
    assert tree(store) == tree(vault)
    assert cryptfs_cmd("audit-remote", str(vault)).returncode == 0


@needs_fuse
def test_mounted_autosync_outage_and_unmount_flush(tmp_path: Path, servers) -> None:
    store = tmp_path / "cloud"
    store.mkdir()
    server = servers("webdav", store)
    vault, mnt = tmp_path / "vault", tmp_path / "mnt"
    mnt.mkdir()
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    m = Mount(vault, mnt, ("--remote", server.remote, "--sync-interval", "0.5")).start()
    try:
        written = time.time()
        (mnt / "first.txt").write_text("1")
        # a sync that started after the write has completed (not merely uploaded a file)
        assert wait_for(lambda: (VaultSettings.load(str(vault)).last_sync or 0) > written)
        assert len(tree(store)) >= 3, "first change never reached remote"
        server.stop()  # outage
        status = lambda: cryptfs_cmd("status", str(vault)).stdout.decode()  # noqa: E731
        (mnt / "probe.txt").write_text("p")  # a change, so that a sync is attempted
        assert wait_for(lambda: "last error:      none" not in status(), 30)
        # changes made while the remote is down (not racing a running upload, which
        # bisync would answer with a full merge: see README, "interrupted syncs")
        (mnt / "second.txt").write_text("2")
        (mnt / "first.txt").unlink()
        assert (mnt / "second.txt").read_text() == "2"  # the mount keeps working
        time.sleep(2)  # at least one more failed attempt
        server.start()  # same port
        assert wait_for(lambda: "last error:      none" in status(), 90), status()
        vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode(), read_only=True)
        second = vol.backing_path_of("/second.txt")
        first = vol.backing_path_of("/first.txt")
        assert (store / "vault" / second).exists() and not (store / "vault" / first).exists()
        (mnt / "third.txt").write_text("3")
    finally:
        m.stop()
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode(), read_only=True)
    third = vol.backing_path_of("/third.txt")
    assert (store / "vault" / third).exists(), "unmount did not upload the pending change"


@needs_fuse
def test_unmount_reports_what_could_not_be_uploaded(tmp_path: Path, servers,
                                                     isolated_settings) -> None:
    store = tmp_path / "cloud"
    store.mkdir()
    server = servers("webdav", store)
    vault, mnt = tmp_path / "vault", tmp_path / "mnt"
    mnt.mkdir()
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    proc = cryptfs_cmd("mount", str(vault), str(mnt), "--remote", server.remote,
                       "--sync-interval", "30", "--log", str(tmp_path / "log"))
    assert proc.returncode == 0, proc.stderr
    try:
        wait_for(lambda: "last sync:       never" not in cryptfs_cmd(
            "status", str(vault)).stdout.decode())
        server.stop()
        (mnt / "unsent.txt").write_text("x")
    finally:
        proc = cryptfs_cmd("unmount", str(mnt))
    assert proc.returncode == 16, proc.stderr
    assert b"1 change(s)" in proc.stderr and b"next sync" in proc.stderr
    # nothing plaintext outside the mount: not in the message, the settings or the log
    assert b"unsent" not in proc.stderr
    for f in (isolated_settings / "config").rglob("*"):
        if f.is_file():
            assert b"unsent" not in f.read_bytes(), f
    assert b"unsent" not in (tmp_path / "log").read_bytes()
    names = cryptfs_cmd("status", str(vault), "--names", check=True).stdout
    assert b"not uploaded: /unsent.txt" in names
    server.start()
    assert cryptfs_cmd("sync", str(vault)).returncode == 0
    assert cryptfs_cmd("audit-remote", str(vault), "--remote", server.remote).returncode == 0


@needs_fuse
def test_two_mounts_against_one_remote(tmp_path: Path) -> None:
    a, b, ma, mb = two_devices(tmp_path)
    opts = ("--sync-interval", "0.5", "--poll-interval", "1")
    mount_a = Mount(a, ma, opts).start()
    mount_b = Mount(b, mb, opts).start()
    try:
        (ma / "from-a.txt").write_text("hello from A")
        assert wait_for(lambda: (mb / "from-a.txt").exists(), 60)
        assert (mb / "from-a.txt").read_text() == "hello from A"
        (mb / "from-b").mkdir()
        (mb / "from-b" / "x").write_text("B")
        os.rename(mb / "from-a.txt", mb / "renamed-by-b.txt")
        assert wait_for(lambda: (ma / "renamed-by-b.txt").exists()
                        and not (ma / "from-a.txt").exists(), 60)
        assert (ma / "from-b" / "x").read_text() == "B"
    finally:
        mount_a.stop()
        mount_b.stop()


@needs_fuse
def test_writeback_mount_sees_what_a_pull_changed(tmp_path: Path) -> None:
    """With the writeback cache the kernel keeps its own file sizes; a pull that grows or
    shrinks a file the kernel has cached must still show the new bytes, whole."""
    a, b, ma, mb = two_devices(tmp_path)
    opts = ("--sync-interval", "0.5", "--poll-interval", "1")
    mount_a = Mount(a, ma, (*opts, "--writeback")).start()
    mount_b = Mount(b, mb, opts).start()
    try:
        (ma / "docs").mkdir()
        (ma / "docs" / "notes.txt").write_text("short")
        (ma / "top.txt").write_text("a rather long first version")
        assert wait_for(lambda: (mb / "docs" / "notes.txt").exists()
                        and (mb / "top.txt").exists(), 60)
        # A's kernel now caches both files with their sizes.
        assert (ma / "docs" / "notes.txt").read_text() == "short"
        assert (ma / "top.txt").stat().st_size == 27
        refused = cryptfs_cmd("sync", str(a))
        assert refused.returncode == 1 and b"--writeback" in refused.stderr
        (mb / "docs" / "notes.txt").write_text("a much longer version from B")
        (mb / "top.txt").write_text("short B")
        assert wait_for(lambda: (ma / "top.txt").read_text() == "short B"
                        and (ma / "docs" / "notes.txt").read_text()
                        == "a much longer version from B", 60)
        assert (ma / "docs" / "notes.txt").stat().st_size == 28
        assert (ma / "top.txt").stat().st_size == 7
    finally:
        mount_a.stop()
        mount_b.stop()


def test_xattrs_travel_with_sync_and_clone(tmp_path: Path) -> None:
    """Extended attributes live inside the vault's objects: they survive a remount, a
    sync and a clone on another device, and a change there comes back."""
    vault, store, clone = tmp_path / "vault", tmp_path / "cloud", tmp_path / "clone"
    cryptfs_cmd("init", "--quiet", str(vault), "--remote", str(store), check=True)
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode())
    vol.mkdir_path("/d")
    vol.write_file("/d/f", b"content")
    vol.setxattr(vol.resolve("/d/f"), b"user.xdg.origin.url", b"https://example.org/")
    vol.setxattr(vol.resolve("/d"), b"user.comment", b"folder")
    vol.close()
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode())  # a remount
    assert vol.getxattr(vol.resolve("/d/f"), b"user.xdg.origin.url") == b"https://example.org/"
    cryptfs_cmd("sync", str(vault), check=True)
    assert cryptfs_cmd("clone", str(store), str(clone)).returncode == 0
    other = Volume.unlock(str(clone), passphrase=PASSWORD.encode())
    assert other.getxattr(other.resolve("/d/f"), b"user.xdg.origin.url") == \
        b"https://example.org/"
    assert other.getxattr(other.resolve("/d"), b"user.comment") == b"folder"
    other.setxattr(other.resolve("/d/f"), b"user.tag", b"from the clone")
    cryptfs_cmd("sync", str(clone), check=True)
    cryptfs_cmd("sync", str(vault), check=True)
    vol.clear_caches()
    assert vol.listxattr(vol.resolve("/d/f")) == [b"user.tag", b"user.xdg.origin.url"]
    assert vol.getxattr(vol.resolve("/d/f"), b"user.tag") == b"from the clone"
