"""Issue 9: a sync never destroys a vault. Two simulated devices (separate config dirs,
so separate local settings and sync state) against rclone's local backend and a real
``rclone serve webdav`` on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cryptfs.volume import Volume
from tests.conftest import HAVE_FUSE, PASSWORD, cryptfs_cmd
from tests.integration.test_sync import RCLONE, Server, tree

pytestmark = [pytest.mark.timeout(240)]
needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")


class Device:
    """One machine: its own backing directory and its own ~/.config (settings, state)."""

    def __init__(self, base: Path, name: str) -> None:
        self.backing = base / name
        self.config = base / f"{name}-config"
        self.config.mkdir()

    def run(self, *args: str, password: str | None = PASSWORD, env: dict | None = None,
            input_: bytes | None = None) -> subprocess.CompletedProcess:
        return cryptfs_cmd(*args, password=password, input_=input_,
                           env={"XDG_CONFIG_HOME": str(self.config), **(env or {})})

    def ok(self, *args: str, **kw) -> str:
        proc = self.run(*args, **kw)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout.decode()

    def vol(self, password: str = PASSWORD) -> Volume:
        return Volume.unlock(str(self.backing), passphrase=password.encode())

    def state_dirs(self) -> list[Path]:
        root = self.config / "cryptfs" / "sync"
        return [p for p in root.glob("*/*") if p.is_dir()]


@pytest.fixture(params=["local", "webdav"])
def remote(request, tmp_path: Path):
    """(remote spec, the directory that holds the remote's objects)."""
    store = tmp_path / "cloud"
    store.mkdir()
    if request.param == "local":
        yield str(store / "vault"), store / "vault"
        return
    server = Server("webdav", store).start()
    try:
        yield server.remote, store / "vault"
    finally:
        server.stop()


def synced_pair(tmp_path: Path, spec: str) -> tuple[Device, Device]:
    """Device A made the vault and synced it; device B cloned it."""
    a, b = Device(tmp_path, "a"), Device(tmp_path, "b")
    a.ok("init", "--quiet", str(a.backing), "--remote", spec)
    va = a.vol()
    va.mkdir_path("/docs")
    va.write_file("/docs/report.txt", b"v1 of the report")
    va.write_file("/docs/keep.txt", b"keep")
    va.write_file("/notes.txt", b"notes")
    a.ok("sync", str(a.backing))
    b.ok("clone", spec, str(b.backing))
    return a, b


# -- 1. vault identity ---------------------------------------------------------------------
def test_a_second_vault_never_overwrites_the_first(tmp_path: Path, remote) -> None:
    spec, store = remote
    a, b = synced_pair(tmp_path, spec)
    before = tree(store)
    # A new user types init where clone was meant: refused, nothing created.
    c = Device(tmp_path, "c")
    proc = c.run("init", "--quiet", str(c.backing), "--remote", spec)
    assert proc.returncode == 16, proc.stderr
    assert b"not empty" in proc.stderr and b"cryptfs clone" in proc.stderr
    assert not c.backing.exists()
    # A vault made without --remote and pointed at it later: every sync refuses.
    c.ok("init", "--quiet", str(c.backing))
    c.vol().write_file("/other.txt", b"another vault")
    c.ok("remote", "set", str(c.backing), spec)
    for verb in ("sync", "pull"):
        proc = c.run(verb, str(c.backing))
        assert proc.returncode == 16, proc.stderr
        assert b"holds another vault" in proc.stderr and b"cryptfs clone" in proc.stderr
    assert tree(store) == before  # nothing transferred
    assert c.vol().read_file("/other.txt") == b"another vault"
    # A keeps working with its own config, passphrase and files.
    a.ok("sync", str(a.backing))
    assert a.vol().read_file("/docs/report.txt") == b"v1 of the report"
    b.ok("sync", str(b.backing))
    assert b.vol().read_file("/notes.txt") == b"notes"


@needs_fuse
def test_a_mounted_second_vault_never_touches_the_remote(tmp_path: Path) -> None:
    """The issue's scenario with mounts: B mounts its own vault with A's remote."""
    from tests.conftest import wait_for

    spec = str(tmp_path / "cloud")
    a, _b = synced_pair(tmp_path, spec)
    before = tree(Path(spec))
    c = Device(tmp_path, "c")
    c.ok("init", "--quiet", str(c.backing))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    c.ok("mount", str(c.backing), str(mnt), "--remote", spec, "--sync-interval", "0.5",
         "--log", str(tmp_path / "c.log"))
    try:
        (mnt / "mine.txt").write_text("C's file")  # the mount keeps working
        assert wait_for(lambda: b"holds another vault" in c.run(
            "status", str(c.backing)).stdout, 60)
    finally:
        proc = c.run("unmount", str(mnt))
    assert proc.returncode == 16 and b"holds another vault" in proc.stderr
    assert tree(Path(spec)) == before
    assert a.vol().read_file("/notes.txt") == b"notes"
    a.ok("sync", str(a.backing))


def test_a_remote_that_lost_its_root_marker_gets_it_back(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, _b = synced_pair(tmp_path, spec)
    marker = a.vol().root_storage + "/cryptfs.back"
    (Path(spec) / marker).unlink()
    a.ok("sync", str(a.backing))
    assert (a.backing / marker).exists() and (Path(spec) / marker).exists()
    assert a.vol().read_file("/notes.txt") == b"notes"


def test_a_remote_with_other_files_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "cloud"
    store.mkdir()
    (store / "holiday.jpg").write_bytes(b"not a vault")
    a = Device(tmp_path, "a")
    a.ok("init", "--quiet", str(a.backing))
    a.ok("remote", "set", str(a.backing), str(store))
    proc = a.run("sync", str(a.backing))
    assert proc.returncode == 16 and b"holds no cryptfs vault" in proc.stderr
    assert sorted(os.listdir(store)) == ["holiday.jpg"]


def test_passwd_elsewhere_arrives_verified_and_a_forged_config_never(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = synced_pair(tmp_path, spec)
    a.ok("passwd", str(a.backing), env={"CRYPTFS_NEW_PASSWORD": "new pass"})
    out = a.ok("sync", str(a.backing), password="new pass")
    assert "uploaded this device's new cryptfs.conf" in out
    out = b.ok("sync", str(b.backing))  # B still opens with the old passphrase
    assert "adopted the remote's cryptfs.conf" in out
    assert (b.backing / "cryptfs.conf").read_bytes() == (a.backing / "cryptfs.conf").read_bytes()
    b.ok("ls", str(b.backing), password="new pass")
    # A config that does not verify under this vault's key (another vault's, or forged
    # with the same vault_id) is never adopted: the sync is refused.
    other = Device(tmp_path, "other")
    other.ok("init", "--quiet", str(other.backing))
    forged = json.loads((other.backing / "cryptfs.conf").read_text())
    forged["vault_id"] = json.loads((a.backing / "cryptfs.conf").read_text())["vault_id"]
    (Path(spec) / "cryptfs.conf").write_text(json.dumps(forged))
    mine = (b.backing / "cryptfs.conf").read_bytes()
    proc = b.run("sync", str(b.backing), password="new pass")
    assert proc.returncode == 16 and b"does not open with this vault's key" in proc.stderr
    assert (b.backing / "cryptfs.conf").read_bytes() == mine


def test_passwd_on_both_devices_the_remote_wins_and_nothing_is_lost(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = synced_pair(tmp_path, spec)
    a.ok("passwd", str(a.backing), env={"CRYPTFS_NEW_PASSWORD": "passphrase A"})
    b.ok("passwd", str(b.backing), env={"CRYPTFS_NEW_PASSWORD": "passphrase B"})
    a.ok("sync", str(a.backing), password="passphrase A")
    out = b.ok("sync", str(b.backing), password="passphrase B")
    assert "changed on this device and on another one" in out
    b.ok("ls", str(b.backing), password="passphrase A")
    superseded = list(b.config.rglob("config.superseded"))
    assert len(superseded) == 1  # B's own config is kept, and opens with B's passphrase
    from cryptfs.config import VaultConfig

    VaultConfig.parse(superseded[0].read_bytes()).unlock(b"passphrase B")


# -- 2. sync state that cannot wedge or mislead -------------------------------------------
@pytest.mark.parametrize("damage", ["empty lock", "empty listings", "cut listing",
                                    "everything lost"])
def test_damaged_sync_state_is_recovered(tmp_path: Path, damage: str) -> None:
    spec = str(tmp_path / "cloud")
    a, _b = synced_pair(tmp_path, spec)
    va = a.vol()
    gone = va.backing_path_of("/notes.txt")
    (state,) = a.state_dirs()
    listings = sorted((state / "bisync").glob("*.lst"))
    assert len(listings) == 2
    if damage == "empty lock":
        (state / "bisync" / (listings[0].name.rsplit(".path1", 1)[0] + ".lck")).write_bytes(b"")
    elif damage == "empty listings":
        for lst in listings:
            lst.write_bytes(b"")
    elif damage == "cut listing":
        data = listings[0].read_bytes()
        listings[0].write_bytes(data[: len(data) - 7])
    else:
        shutil.rmtree(state)
    va.write_file("/docs/report.txt", b"v2, edited after the crash")
    va.unlink_path("/notes.txt")
    proc = a.run("sync", str(a.backing))
    assert proc.returncode == 0, proc.stderr
    assert a.run("sync", str(a.backing)).returncode == 0  # and it stays unwedged
    remote_vol = Volume.unlock(spec, passphrase=PASSWORD.encode(), read_only=True)
    if damage != "everything lost":  # the good copy of the state is put back
        assert remote_vol.read_file("/docs/report.txt") == b"v2, edited after the crash"
        assert not (Path(spec) / gone).exists()
    else:  # no state at all: both versions are kept, the file comes back, user told
        (copy,) = [n for n in remote_vol.listdir("/docs") if "(conflict " in n]
        assert remote_vol.read_file("/docs/" + copy) == b"v2, edited after the crash"
        assert remote_vol.read_file("/docs/report.txt") == b"v1 of the report"
        assert b"conflicts=1" in proc.stdout
        assert b"from the remote: 1 file(s)" in proc.stdout and b"/notes.txt" in proc.stdout


def test_lost_state_never_loses_an_edit(tmp_path: Path, remote) -> None:
    spec, _store = remote
    a, b = synced_pair(tmp_path, spec)
    vb = b.vol()
    vb.write_file("/docs/report.txt", b"B's edit, made first")
    vb.unlink_path("/docs/keep.txt")  # deleted here while the state is lost
    va = a.vol()
    va.write_file("/docs/report.txt", b"A's edit, newer")
    a.ok("sync", str(a.backing))
    for state in b.state_dirs():  # a new OS on the same data disk
        shutil.rmtree(state)
    out = b.ok("sync", str(b.backing))
    assert "conflicts=1" in out and "no sync state" in out
    assert "from the remote: 1 file(s)" in out and "/docs/keep.txt" in out
    a.ok("sync", str(a.backing))
    for vol in (a.vol(), b.vol()):
        names = vol.listdir("/docs")
        (copy,) = [n for n in names if "(conflict " in n]
        assert vol.read_file("/docs/report.txt") == b"A's edit, newer"
        assert vol.read_file("/docs/" + copy) == b"B's edit, made first"


def test_remote_set_to_a_new_remote_uploads_everything(tmp_path: Path) -> None:
    first, second = tmp_path / "cloud1", tmp_path / "cloud2"
    a, _b = synced_pair(tmp_path, str(first))
    a.ok("remote", "set", str(a.backing), str(second))
    status = a.ok("status", str(a.backing))
    assert "pending:         everything (never synced to this remote)" in status
    out = a.ok("sync", str(a.backing))
    assert "sync: ok" in out
    assert tree(second) == tree(first)
    a.vol().write_file("/new.txt", b"new")
    out = a.ok("sync", str(a.backing))
    assert "transfers=1 " in out
    status = a.ok("status", str(a.backing))
    assert "last error:      none" in status and "pending:         0 " in status
    # A remote emptied on purpose: refused, then filled again after 'remote set'.
    shutil.rmtree(second)
    proc = a.run("sync", str(a.backing))
    assert proc.returncode == 16 and b"remote set" in proc.stderr
    a.ok("remote", "set", str(a.backing), str(second))
    a.ok("sync", str(a.backing))
    assert tree(second) == tree(a.backing)


@pytest.mark.parametrize("what", ["deleted", "renamed"])
def test_folder_gone_on_one_device_while_edited_on_the_other_stays_reachable(
        tmp_path: Path, what: str) -> None:
    spec = str(tmp_path / "cloud")
    a, b = synced_pair(tmp_path, spec)
    va = a.vol()
    if what == "deleted":
        va.unlink_path("/docs/report.txt")
        va.unlink_path("/docs/keep.txt")
        va.rmdir_path("/docs")
    else:
        va.rename_path("/docs", "/papers")
    b.vol().write_file("/docs/report.txt", b"edited on B meanwhile")
    a.ok("sync", str(a.backing))
    out = b.ok("sync", str(b.backing))
    if what == "deleted":  # the folder comes back with the edit, nothing else of it
        assert "repaired: directory /docs" in out
    a.ok("sync", str(a.backing))
    for dev in (a, b):
        vol = dev.vol()
        if what == "deleted":
            assert vol.listdir("/docs") == ["report.txt"]
            assert vol.read_file("/docs/report.txt") == b"edited on B meanwhile"
        else:  # a folder is one object wherever it moves: the edit went with it
            assert "docs" not in vol.listdir("/")
            assert vol.read_file("/papers/report.txt") == b"edited on B meanwhile"
        proc = dev.run("fsck", str(dev.backing))
        assert proc.returncode == 0, proc.stdout
    docs = b.vol().backing_path_of("/docs" if what == "deleted" else "/papers")
    assert docs.endswith(".d") and (Path(spec) / docs).exists()  # the entry went up too


# -- 3. recovery and key hygiene --------------------------------------------------------------
def test_lost_config_is_rebuilt_with_the_recovery_key(tmp_path: Path) -> None:
    a = Device(tmp_path, "a")
    key = a.ok("init", "--quiet", "--block-size", "4096", str(a.backing)).strip()
    data = os.urandom(50000)
    a.vol().write_file("/big.bin", data)
    (a.backing / "cryptfs.conf").unlink()
    shutil.rmtree(a.config / "cryptfs" / "vaults")  # and this device's copy: all gone
    proc = a.run("ls", str(a.backing))
    assert proc.returncode == 11 and b"cryptfs recover" in proc.stderr
    assert b"create one with" not in proc.stderr
    proc = a.run("recover", str(a.backing), "--masterkey", "-", password=None,
                 input_=key.encode() + b"\n", env={"CRYPTFS_NEW_PASSWORD": "fresh"})
    assert proc.returncode == 0, proc.stderr
    assert b"block size 4096" in proc.stdout
    assert a.run("cat", str(a.backing), "big.bin", password="fresh").stdout == data
    # a key of another vault is refused, nothing written
    (a.backing / "cryptfs.conf").unlink()
    proc = a.run("recover", str(a.backing), "--masterkey", "-", password=None,
                 input_=b"11" * 32 + b"\n", env={"CRYPTFS_NEW_PASSWORD": "x"})
    assert proc.returncode == 10 and not (a.backing / "cryptfs.conf").exists()


def test_lost_or_replaced_config_is_restored_from_a_saved_copy(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, _b = synced_pair(tmp_path, spec)
    key_check = a.vol().config.vault_id
    # replaced by another vault's config (what the old sync did): refused, with advice
    other = Device(tmp_path, "other")
    other.ok("init", "--quiet", str(other.backing))
    shutil.copyfile(other.backing / "cryptfs.conf", a.backing / "cryptfs.conf")
    proc = a.run("ls", str(a.backing))
    assert proc.returncode == 11 and b"cryptfs recover" in proc.stderr
    out = a.ok("recover", str(a.backing))
    assert "this device's saved copy" in out
    assert a.vol().config.vault_id == key_check
    # lost, and this device's copy too: the remote's copy, with the passphrase
    (a.backing / "cryptfs.conf").unlink()
    for copy in (a.config / "cryptfs" / "vaults").glob("*.conf"):
        copy.unlink()
    out = a.ok("recover", str(a.backing))
    assert "the remote" in out
    assert a.vol().read_file("/notes.txt") == b"notes"


def test_masterkey_from_stdin_and_fd(tmp_path: Path) -> None:
    a = Device(tmp_path, "a")
    key = a.ok("init", "--quiet", str(a.backing)).strip()
    a.vol().write_file("/f", b"f")
    proc = a.run("ls", str(a.backing), "--masterkey", "-", password=None,
                 input_=key.encode() + b"\n")
    assert proc.returncode == 0 and proc.stdout == b"f\n" and not proc.stderr
    read_fd, write_fd = os.pipe()
    os.write(write_fd, key.encode())
    os.close(write_fd)
    env = dict(os.environ, XDG_CONFIG_HOME=str(a.config))
    env.pop("CRYPTFS_PASSWORD", None)
    proc = subprocess.run([sys.executable, "-m", "cryptfs", "cat", str(a.backing), "f",
                           "--masterkey-fd", str(read_fd)], pass_fds=(read_fd,), env=env,
                          capture_output=True, timeout=60, check=False)
    os.close(read_fd)
    assert proc.returncode == 0 and proc.stdout == b"f", proc.stderr


@needs_fuse
def test_masterkey_argument_never_stays_in_argv(tmp_path: Path) -> None:
    a = Device(tmp_path, "a")
    key = a.ok("init", "--quiet", str(a.backing)).strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    import re

    from tests.conftest import force_unmount

    proc = a.run("mount", str(a.backing), str(mnt), "--masterkey", key, password=None)
    found = re.search(rb"daemon pid (\d+)", proc.stdout)
    if found is None:
        force_unmount(mnt)
    assert proc.returncode == 0 and found, proc.stderr
    pid = int(found.group(1))
    try:
        assert b"visible to other users" in proc.stderr
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert key.encode() not in cmdline and key.replace("-", "").encode() not in cmdline
        assert b"--masterkey-fd" in cmdline
        (mnt / "k").write_text("k")
    finally:
        a.run("unmount", str(mnt))
        force_unmount(mnt)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_logs_show_no_plaintext_names(tmp_path: Path) -> None:
    spec = str(tmp_path / "cloud")
    a, b = synced_pair(tmp_path, spec)
    a.vol().write_file("/docs/report.txt", b"A")
    b.vol().write_file("/docs/report.txt", b"B")
    a.ok("sync", str(a.backing))
    proc = b.run("sync", str(b.backing))
    assert proc.returncode == 0 and b"conflicts=1" in proc.stdout
    assert b"sync conflict" in proc.stderr  # the log line, by backing path
    assert b"report" not in proc.stderr and b"docs" not in proc.stderr


def test_lognames_default_and_plaintext(tmp_path: Path) -> None:
    from cryptfs import lognames

    vol, _ = Volume.initialize(str(tmp_path / "v"), PASSWORD.encode())
    vol.write_file("/secret-name.txt", b"x")
    try:
        lognames.configure(False, vol)
        shown = lognames.shown("/secret-name.txt")
        assert "secret" not in shown and shown.startswith("backing:")
        assert (tmp_path / "v" / shown[len("backing:"):]).exists()
        lognames.configure(False, None)
        assert "secret" not in lognames.shown("/secret-name.txt")
        lognames.configure(True, vol)
        assert "secret-name" in lognames.shown("/secret-name.txt")
    finally:
        lognames.configure(False, None)


@pytest.mark.parametrize("spec, secret", [
    (":sftp,host=h,user=u,pass=0bSCuReD:vault", "0bSCuReD"),
    (":webdav,url='https://bob:hunter2@dav.example.org/',vendor=other:vault", "hunter2"),
    (":s3,access_key_id=AKIA1,secret_access_key='wJalr/K7':bucket", "wJalr/K7"),
    ("name,token='{\"access_token\":\"ya29\"}':path", "ya29"),
])
def test_inline_credentials_are_redacted(spec: str, secret: str) -> None:
    from cryptfs.sync import redact

    shown = redact(spec)
    assert secret not in shown and "***" in shown
    assert redact("mydrive:backups/vault") == "mydrive:backups/vault"


# -- encrypted rclone.conf ---------------------------------------------------------------------
@pytest.fixture
def encrypted_rclone_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "rclone-enc.conf"
    conf.write_text("[cloud]\ntype = local\n")
    subprocess.run([RCLONE, "config", "encryption", "set", "--password-command",
                    "echo s3cret"], env=dict(os.environ, RCLONE_CONFIG=str(conf)),
                   capture_output=True, check=True, timeout=60)
    assert b"RCLONE_ENCRYPT_V0" in conf.read_bytes()
    return conf


def test_encrypted_rclone_config(tmp_path: Path, encrypted_rclone_conf: Path) -> None:
    a = Device(tmp_path, "a")
    a.ok("init", "--quiet", str(a.backing))
    a.vol().write_file("/f", b"f")
    spec = f"cloud:{tmp_path / 'store'}"
    a.ok("remote", "set", str(a.backing), spec)
    conf = {"RCLONE_CONFIG": str(encrypted_rclone_conf)}
    # no password and no terminal: a clear error at once, never a hang
    proc = a.run("sync", str(a.backing), env=conf)
    assert proc.returncode == 16 and b"RCLONE_CONFIG_PASS" in proc.stderr
    assert b"RCLONE_PASSWORD_COMMAND" in proc.stderr
    a.ok("sync", str(a.backing), env={**conf, "RCLONE_CONFIG_PASS": "s3cret"})
    a.vol().write_file("/g", b"g")
    out = a.ok("sync", str(a.backing), env={**conf, "RCLONE_PASSWORD_COMMAND": "echo s3cret"})
    assert "transfers=1 " in out
    assert (tmp_path / "store" / "cryptfs.conf").exists()


def test_encrypted_rclone_config_is_asked_once_on_a_terminal(
        tmp_path: Path, encrypted_rclone_conf: Path) -> None:
    import pty
    import time

    a = Device(tmp_path, "a")
    a.ok("init", "--quiet", str(a.backing))
    a.vol().write_file("/f", b"f")
    a.ok("remote", "set", str(a.backing), f"cloud:{tmp_path / 'store'}")
    env = dict(os.environ, XDG_CONFIG_HOME=str(a.config), CRYPTFS_PASSWORD=PASSWORD,
               RCLONE_CONFIG=str(encrypted_rclone_conf))
    env.pop("RCLONE_CONFIG_PASS", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: cryptfs sync on a terminal
        os.execve(sys.executable, [sys.executable, "-m", "cryptfs", "sync", str(a.backing)],
                  env)
    output, answered = b"", 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if output.count(b"rclone config password") > answered:
                answered += 1
                os.write(fd, b"s3cret\n")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert output.count(b"rclone config password") == 1, output
    assert b"sync: ok" in output


# -- README ----------------------------------------------------------------------------------
def test_readme_and_help_list_every_exit_code() -> None:
    from cryptfs.cli import EXIT_CODES
    from cryptfs.errors import ExitCode

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in [*ExitCode, 130]:
        assert f"\n| {int(code)} |" in readme, code
        assert f"\n  {int(code)} " in EXIT_CODES, code
