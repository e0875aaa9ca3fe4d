"""Sync ignore rules (issue 13, item 4) with two simulated devices against rclone's local
backend, through a mount with --remote, and as a normal user: ignored paths never reach
the remote (not even as ciphertext), stay readable here, travel to nobody; adding or
removing a rule deletes nothing anywhere; a path no longer ignored is uploaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cryptfs.sync import rclone_binary
from cryptfs.volume import Volume
from tests.conftest import HAVE_FUSE, PASSWORD, Mount, User, cryptfs_cmd, is_mounted, wait_for
from tests.integration.test_sync import tree
from tests.integration.test_sync_safety import Device

pytestmark = [pytest.mark.timeout(240)]
needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")
CANARY = "Zq8IgnoredCanary"


def backing_objects(vol: Volume, path: str) -> set[str]:
    """Every backing path (relative) that holds the plaintext ``path``: its entry, and
    for a directory every object in its storage folder and below."""
    out = {vol.backing_path_of(path)}
    if vol.stat(path).mode & 0o170000 == 0o040000:
        for top, _dirs, _files in vol.walk(path):
            storage = vol.storage_path_of(top)
            out |= {f"{storage}/{n}" for n in os.listdir(Path(vol.backing, storage))}
    return out


def on_remote(store: Path) -> set[str]:
    return {str(Path(d, f).relative_to(store)) for d, _, fs in os.walk(store) for f in fs}


def assert_no_canary(store: Path) -> None:
    for dirpath, dirs, files in os.walk(store):
        for name in dirs + files:
            assert CANARY not in name
            p = Path(dirpath, name)
            if p.is_file():
                assert CANARY.encode() not in p.read_bytes(), p


def vault_pair(tmp_path: Path) -> tuple[Device, Device, Path]:
    store = tmp_path / "cloud"
    a, b = Device(tmp_path, "a"), Device(tmp_path, "b")
    a.ok("init", "--quiet", str(a.backing), "--remote", str(store))
    return a, b, store


def test_ignored_paths_never_reach_the_remote_and_stay_readable(tmp_path: Path) -> None:
    a, b, store = vault_pair(tmp_path)
    va = a.vol()
    va.write_file("/.cryptfsignore", b"build/\n*.log\n!keep.log\n")
    va.mkdir_path("/build")
    va.mkdir_path("/build/out")
    va.write_file("/build/out/app.o", CANARY.encode() * 50)
    va.setxattr(va.resolve("/build/out"), b"user.note", CANARY.encode())
    va.write_file("/debug.log", CANARY.encode())
    va.write_file("/keep.log", b"kept and synced")
    va.mkdir_path("/.Trash-1000")  # a default rule
    va.mkdir_path("/.Trash-1000/files")
    va.write_file("/.Trash-1000/files/old.txt", CANARY.encode())
    va.write_file("/.~lock.report.odt#", CANARY.encode())
    va.write_file("/report.odt", b"the report")
    ignored = set()
    for p in ("/build", "/debug.log", "/.Trash-1000", "/.~lock.report.odt#"):
        ignored |= backing_objects(va, p)
    out = a.ok("sync", str(a.backing))
    assert "sync: ok" in out
    remote = on_remote(store)
    assert not remote & ignored
    assert not any(p.startswith("x/") for p in remote)  # only the ignored dir had xattrs
    assert_no_canary(store)
    # what the sync does keep local is never written in plaintext outside the vault
    for f in a.config.rglob("*"):
        if f.is_file():
            assert CANARY.encode() not in f.read_bytes() and b"debug.log" not in \
                f.read_bytes(), f
    # readable here, offline and listed by 'cryptfs ignore'
    assert a.ok("cat", str(a.backing), "build/out/app.o") == CANARY * 50
    listed = a.ok("ignore", str(a.backing))
    assert listed.splitlines() == [
        "/.Trash-1000/  (default:3: .Trash-*/)", "/.~lock.report.odt#  (default:11: .~lock.*#)",
        "/build/  (.cryptfsignore:1: build/)", "/debug.log  (.cryptfsignore:2: *.log)"]
    check = a.ok("ignore", str(a.backing), "--check", "build/out/app.o")
    assert check.startswith("ignored: /build/out/app.o (inside /build/, ignored by")
    check = a.ok("ignore", str(a.backing), "--check", "keep.log")
    assert check.startswith("synced: /keep.log (re-included by .cryptfsignore:3: !keep.log")
    # the other device gets the rest, and the rules
    b.ok("clone", str(store), str(b.backing))
    vb = b.vol()
    assert sorted(vb.listdir("/")) == [".cryptfsignore", "keep.log", "report.odt"]
    assert vb.read_file("/keep.log") == b"kept and synced"
    assert cryptfs_cmd("fsck", str(b.backing)).returncode == 0
    assert a.run("audit-remote", str(a.backing)).returncode == 0


def test_ignoring_what_the_remote_has_deletes_nothing_anywhere(tmp_path: Path) -> None:
    a, b, store = vault_pair(tmp_path)
    va = a.vol()
    va.write_file("/notes.log", b"v1 uploaded")
    va.mkdir_path("/cache")
    va.write_file("/cache/blob", b"cached v1")
    a.ok("sync", str(a.backing))
    b.ok("clone", str(store), str(b.backing))
    uploaded = backing_objects(va, "/notes.log") | backing_objects(va, "/cache")
    assert uploaded <= on_remote(store)
    before = {p: (store / p).read_bytes() for p in uploaded}
    # A adds the rules; both devices sync (B receives them with this sync)
    va.write_file("/.cryptfsignore", b"*.log\ncache/\n")
    va.write_file("/notes.log", b"v2 edited while ignored")
    for device in (a, b, a, b):
        device.ok("sync", str(device.backing))
    assert {p: (store / p).read_bytes() for p in uploaded} == before  # frozen, not deleted
    vb = b.vol()
    assert vb.read_file("/notes.log") == b"v1 uploaded"
    assert vb.read_file("/cache/blob") == b"cached v1"
    assert va.read_file("/notes.log") == b"v2 edited while ignored"
    assert "/notes.log" in b.ok("ignore", str(b.backing))
    # deleting an ignored path here does not bring the remote's old copy back
    va.unlink_path("/cache/blob")
    va.rmdir_path("/cache")
    va.unlink_path("/notes.log")
    a.ok("sync", str(a.backing))
    a.ok("sync", str(a.backing))
    va.clear_caches()
    assert sorted(va.listdir("/")) == [".cryptfsignore"]
    assert {p: (store / p).read_bytes() for p in uploaded} == before
    assert cryptfs_cmd("fsck", str(a.backing)).returncode == 0


def test_a_path_no_longer_ignored_is_uploaded(tmp_path: Path) -> None:
    a, b, store = vault_pair(tmp_path)
    va = a.vol()
    va.write_file("/.cryptfsignore", b"drafts/\nsecret.txt\n")
    va.mkdir_path("/drafts")
    va.write_file("/drafts/chapter1.txt", b"chapter one")
    va.write_file("/secret.txt", b"now shared")
    a.ok("sync", str(a.backing))
    b.ok("clone", str(store), str(b.backing))
    assert sorted(b.vol().listdir("/")) == [".cryptfsignore"]
    va.write_file("/.cryptfsignore", b"# nothing ignored but the defaults\n")
    out = a.ok("sync", str(a.backing))
    assert "transfers=0 " not in out
    assert backing_objects(va, "/drafts") | backing_objects(va, "/secret.txt") <= \
        on_remote(store)
    b.ok("sync", str(b.backing))
    vb = b.vol()
    assert vb.read_file("/drafts/chapter1.txt") == b"chapter one"
    assert vb.read_file("/secret.txt") == b"now shared"
    assert not [n for n in vb.listdir("/") if "(conflict" in n]


def test_a_directory_renamed_to_an_ignored_name_moves_on_the_other_device(
        tmp_path: Path) -> None:
    """The entry of a synced folder moves to an ignored name: the other device keeps its
    contents under the new name (never a second, stale name for the same folder here)."""
    a, b, store = vault_pair(tmp_path)
    va = a.vol()
    va.write_file("/.cryptfsignore", b"build/\n")
    va.mkdir_path("/out")
    va.write_file("/out/app", b"binary")
    a.ok("sync", str(a.backing))
    b.ok("clone", str(store), str(b.backing))
    va.rename_path("/out", "/build")
    va.write_file("/build/new-file", CANARY.encode())
    for device in (a, b, a):
        device.ok("sync", str(device.backing))
    va.clear_caches()
    assert sorted(va.listdir("/")) == [".cryptfsignore", "build"]
    vb = b.vol()
    assert sorted(vb.listdir("/")) == [".cryptfsignore", "build"]
    assert vb.read_file("/build/app") == b"binary"
    assert_no_canary(store)
    for device in (a, b):
        proc = cryptfs_cmd("fsck", str(device.backing))
        assert proc.returncode == 0 and b"duplicate" not in proc.stdout, proc.stdout


@needs_fuse
def test_the_mounts_own_sync_applies_the_rules(tmp_path: Path) -> None:
    vault, store, mnt = tmp_path / "vault", tmp_path / "cloud", tmp_path / "mnt"
    mnt.mkdir()
    cryptfs_cmd("init", "--quiet", str(vault), "--remote", str(store), check=True)
    m = Mount(vault, mnt, ("--sync-interval", "0.5")).start()
    try:
        (mnt / ".cryptfsignore").write_text("private/\n")
        (mnt / "private").mkdir()
        (mnt / "private" / f"{CANARY}.txt").write_text(CANARY * 10)
        (mnt / f".{CANARY}.txt.swp").write_text(CANARY)  # a default rule
        (mnt / "shared.txt").write_text("shared")
    finally:
        m.stop()  # unmount uploads what is pending
    vol = Volume.unlock(str(vault), passphrase=PASSWORD.encode(), read_only=True)
    remote = on_remote(store)
    assert vol.backing_path_of("/shared.txt") in remote
    assert vol.backing_path_of("/.cryptfsignore") in remote
    assert not remote & (backing_objects(vol, "/private") |
                         backing_objects(vol, f"/.{CANARY}.txt.swp"))
    assert_no_canary(store)
    assert vol.read_file(f"/private/{CANARY}.txt") == CANARY.encode() * 10


@needs_fuse
def test_ignore_rules_as_a_normal_user(normal_user: User, user_dir: Path) -> None:
    vault, store, mnt = user_dir / "vault", user_dir / "cloud", normal_user.mkdir(
        user_dir / "mnt")
    # rclone as an installation has it: beside the Python that runs cryptfs (the test
    # user may run another interpreter than this environment's)
    path = {"PATH": f"{Path(rclone_binary()).parent}:/usr/bin:/bin"}
    proc = normal_user.cryptfs("init", "--quiet", str(vault), "--remote", str(store),
                               env=path)
    assert proc.returncode == 0, proc.stderr
    proc = normal_user.cryptfs("mount", str(vault), str(mnt), "--sync-interval", "0.5",
                               env=path)
    assert proc.returncode == 0, proc.stderr
    try:
        script = ('cd "$0" && printf "node_modules/\\n" > .cryptfsignore && '
                  'mkdir -p node_modules/pkg .Trash-$(id -u)/files && '
                  f'echo {CANARY} > node_modules/pkg/index.js && '
                  f'echo {CANARY} > .Trash-$(id -u)/files/old && echo ok > app.js')
        done = normal_user.run(["sh", "-c", script, str(mnt)])
        assert done.returncode == 0, done.stderr
    finally:
        proc = normal_user.cryptfs("unmount", str(mnt), env=path)
    assert proc.returncode == 0, proc.stderr
    assert wait_for(lambda: not is_mounted(mnt))
    listed = normal_user.cryptfs("ignore", str(vault))
    assert listed.returncode == 0, listed.stderr
    assert b"/node_modules/  (.cryptfsignore:1: node_modules/)" in listed.stdout
    assert f"/.Trash-{normal_user.uid}/  (default:3: .Trash-*/)".encode() in listed.stdout
    assert b"app.js" in normal_user.cryptfs("ls", str(vault)).stdout
    assert_no_canary(store)
    assert len(tree(store)) >= 4  # config, root back-reference, .cryptfsignore, app.js
