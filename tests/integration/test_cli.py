"""The command line as a user runs it: init, mount, unmount, passwd, offline tools, errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cryptfs.sync import process_alive
from tests.conftest import HAVE_FUSE, PASSWORD, Mount, cryptfs_cmd, force_unmount, is_mounted

pytestmark = pytest.mark.timeout(120)


def test_init_prints_recovery_key_once(tmp_path: Path) -> None:
    proc = cryptfs_cmd("init", str(tmp_path / "v"), check=True)
    out = proc.stdout.decode()
    key = re.search(r"([0-9a-f]{8}-){7}[0-9a-f]{8}", out)
    assert key and "offline" in out
    assert key.group(0) not in "".join(p.read_text(errors="replace")
                                       for p in (tmp_path / "v").rglob("*") if p.is_file())
    quiet = cryptfs_cmd("init", "--quiet", str(tmp_path / "w"), check=True).stdout.decode()
    assert re.fullmatch(r"([0-9a-f]{8}-){7}[0-9a-f]{8}\n", quiet)


def test_init_refuses_non_empty(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "x").write_text("x")
    proc = cryptfs_cmd("init", str(tmp_path / "v"))
    assert proc.returncode == 11 or proc.returncode == 1
    assert b"not empty" in proc.stderr


def test_init_block_size(tmp_path: Path) -> None:
    bad = cryptfs_cmd("init", "--quiet", "--block-size", "5000", str(tmp_path / "bad"))
    assert bad.returncode == 2 and b"power of two" in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was created
    assert cryptfs_cmd("init", "--quiet", "--block-size", "4096", str(tmp_path / "v"),
                       check=True).returncode == 0
    info = cryptfs_cmd("info", str(tmp_path / "v"), check=True)
    assert b"block size:      4096 bytes" in info.stdout


def test_info_needs_no_passphrase(vault_dir: Path) -> None:
    out = cryptfs_cmd("info", str(vault_dir), password=None, check=True).stdout.decode()
    assert "xsalsa20-poly1305" in out and "block size:      16384" in out
    assert "argon2id" in out


def test_missing_and_foreign_vaults(tmp_path: Path) -> None:
    proc = cryptfs_cmd("ls", str(tmp_path / "missing"))
    assert proc.returncode == 11 and len(proc.stderr.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    proc = cryptfs_cmd("ls", str(tmp_path / "empty"))
    assert proc.returncode == 11 and b"not a cryptfs vault" in proc.stderr
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "cryptfs.conf").write_text('{"hello": 1}')
    assert cryptfs_cmd("ls", str(tmp_path / "foreign")).returncode == 11


def test_wrong_passphrase(vault_dir: Path, tmp_path: Path) -> None:
    proc = cryptfs_cmd("ls", str(vault_dir), password="wrong")
    assert proc.returncode == 10
    assert proc.stderr.decode().strip() == "cryptfs: wrong passphrase"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = cryptfs_cmd("mount", str(vault_dir), str(mnt), password="wrong")
    assert proc.returncode == 10 and not is_mounted(mnt)


def test_passphrase_sources(vault_dir: Path, tmp_path: Path) -> None:
    passfile = tmp_path / "pass"
    passfile.write_text(PASSWORD + "\nsecond line\n")
    assert cryptfs_cmd("ls", str(vault_dir), "--passfile", str(passfile),
                       password="wrong").returncode == 0
    ext = f"{sys.executable} -c \"print('{PASSWORD}')\""
    assert cryptfs_cmd("ls", str(vault_dir), "--extpass", ext, password=None).returncode == 0
    # extpass children do not see CRYPTFS_PASSWORD
    leak = f"{sys.executable} -c \"import os; print(os.environ.get('CRYPTFS_PASSWORD', 'x'))\""
    assert cryptfs_cmd("ls", str(vault_dir), "--extpass", leak).returncode == 10
    proc = cryptfs_cmd("ls", str(vault_dir), password=None)
    assert proc.returncode != 0 and b"no passphrase" in proc.stderr


def test_offline_ls_cat_and_names(vault_dir: Path) -> None:
    from cryptfs.volume import Volume

    vol = Volume.unlock(str(vault_dir), passphrase=PASSWORD.encode())
    vol.mkdir_path("/Docs")
    vol.write_file("/Docs/a file.txt", b"content\n")
    vol.symlink(*vol.resolve_parent("/ln"), b"Docs/a file.txt")
    vol.close()
    out = cryptfs_cmd("ls", str(vault_dir), check=True).stdout.decode()
    assert out.split() == ["Docs/", "ln"]
    out = cryptfs_cmd("ls", "-l", "-R", str(vault_dir), check=True).stdout.decode()
    assert "a file.txt" in out and "-> Docs/a file.txt" in out
    assert cryptfs_cmd("cat", str(vault_dir), "Docs/a file.txt",
                       check=True).stdout == b"content\n"
    assert cryptfs_cmd("cat", str(vault_dir), "/Docs/a file.txt",
                       check=True).stdout == b"content\n"
    assert cryptfs_cmd("cat", str(vault_dir), "/nope").returncode == 15
    enc = cryptfs_cmd("encrypt-name", str(vault_dir), "/Docs/a file.txt",
                      check=True).stdout.decode().strip()
    assert (vault_dir / enc).is_file() and enc.startswith("d/") and len(enc) <= 250
    dec = cryptfs_cmd("decrypt-name", str(vault_dir), enc, check=True).stdout.decode().strip()
    assert dec == "/Docs/a file.txt"
    dec = cryptfs_cmd("decrypt-name", str(vault_dir), str(vault_dir / enc),
                      check=True).stdout.decode().strip()
    assert dec == "/Docs/a file.txt"
    # A directory: its entry file and its storage folder both decrypt to its path.
    entry, storage = cryptfs_cmd("encrypt-name", str(vault_dir), "/Docs",
                                 check=True).stdout.decode().split()
    assert entry.endswith(".d") and (vault_dir / storage).is_dir()
    for backing in (entry, storage):
        assert cryptfs_cmd("decrypt-name", str(vault_dir), backing,
                           check=True).stdout.decode().strip() == "/Docs"
    assert cryptfs_cmd("decrypt-name", str(vault_dir), "d/zz/nothere").returncode != 0


def test_cat_of_tampered_file_exits_14(vault_dir: Path) -> None:
    from cryptfs.volume import Volume

    vol = Volume.unlock(str(vault_dir), passphrase=PASSWORD.encode())
    vol.write_file("/f", b"x" * 100)
    path = vault_dir / vol.backing_path_of("/f")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x40
    path.write_bytes(bytes(raw))
    proc = cryptfs_cmd("cat", str(vault_dir), "/f")
    assert proc.returncode == 14 and proc.stdout == b""


def test_passwd_and_recovery_key(tmp_path: Path) -> None:
    vault = tmp_path / "v"
    key = cryptfs_cmd("init", "--quiet", str(vault), check=True).stdout.decode().strip()
    proc = cryptfs_cmd("passwd", str(vault), env={"CRYPTFS_NEW_PASSWORD": "new pass"})
    assert proc.returncode == 0, proc.stderr
    assert b"old copy" in proc.stdout
    assert cryptfs_cmd("ls", str(vault)).returncode == 10
    assert cryptfs_cmd("ls", str(vault), password="new pass").returncode == 0
    assert cryptfs_cmd("ls", str(vault), "--masterkey", key, password=None).returncode == 0
    assert cryptfs_cmd("ls", str(vault), "--masterkey", "00" * 32, password=None).returncode == 10
    proc = cryptfs_cmd("passwd", str(vault), "--masterkey", key, password=None,
                       env={"CRYPTFS_NEW_PASSWORD": "third passphrase"})
    assert proc.returncode == 0
    assert cryptfs_cmd("ls", str(vault), password="third passphrase").returncode == 0
    assert sorted(os.listdir(vault)) == ["cryptfs.conf", "d"]


needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")


def _daemon_pid(out: bytes) -> int:
    return int(re.search(rb"daemon pid (\d+)", out).group(1))


@needs_fuse
def test_background_mount_and_unmount(vault_dir: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = cryptfs_cmd("mount", str(vault_dir), str(mnt), "--log", str(tmp_path / "log"))
    pid = _daemon_pid(proc.stdout)
    try:
        assert proc.returncode == 0 and is_mounted(mnt)
        (mnt / "f").write_text("bg")
        proc = cryptfs_cmd("mount", str(vault_dir), str(mnt))
        assert proc.returncode == 12 and b"already" in proc.stderr
        proc = cryptfs_cmd("unmount", str(mnt), password=None)
        assert proc.returncode == 0, proc.stderr
        assert not is_mounted(mnt)
        assert not process_alive(pid)
    finally:
        force_unmount(mnt)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert cryptfs_cmd("cat", str(vault_dir), "f", check=True).stdout == b"bg"


@needs_fuse
def test_mountpoint_errors(vault_dir: Path, tmp_path: Path) -> None:
    proc = cryptfs_cmd("mount", str(vault_dir), str(tmp_path / "missing"))
    assert proc.returncode == 12 and b"does not exist" in proc.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    proc = cryptfs_cmd("mount", str(vault_dir), str(full))
    assert proc.returncode == 12 and b"not empty" in proc.stderr
    proc = cryptfs_cmd("mount", str(vault_dir), str(vault_dir))
    assert proc.returncode == 12
    proc = cryptfs_cmd("unmount", str(tmp_path))
    assert proc.returncode == 12 and b"not mounted" in proc.stderr


@needs_fuse
def test_read_only_mount(vault_dir: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt, ("--read-only",)).start()
    try:
        with pytest.raises(OSError) as info:
            (mnt / "x").write_text("x")
        assert info.value.errno == 30  # EROFS
    finally:
        m.stop()


@needs_fuse
def test_masterkey_mount(tmp_path: Path) -> None:
    vault = tmp_path / "v"
    key = cryptfs_cmd("init", "--quiet", str(vault), check=True).stdout.decode().strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = cryptfs_cmd("mount", str(vault), str(mnt), "--masterkey", key, password=None)
    assert proc.returncode == 0, proc.stderr
    pid = _daemon_pid(proc.stdout)
    try:
        (mnt / "k").write_text("k")
    finally:
        assert cryptfs_cmd("unmount", str(mnt)).returncode == 0
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_fuse
def test_stale_mount_after_crash_is_cleaned_by_unmount(vault_dir: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt).start()
    (mnt / "f").write_text("before crash")
    os.killpg(m.proc.pid, signal.SIGKILL)
    m.proc.wait(10)
    m.proc = None
    try:
        assert is_mounted(mnt)
        with pytest.raises(OSError):
            os.listdir(mnt)
        proc = cryptfs_cmd("mount", str(vault_dir), str(mnt))
        assert proc.returncode == 12 and b"unmount" in proc.stderr
        assert cryptfs_cmd("unmount", str(mnt)).returncode == 0
        assert not is_mounted(mnt)
    finally:
        m.stop()
    assert cryptfs_cmd("cat", str(vault_dir), "f", check=True).stdout == b"before crash"


@needs_fuse
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_allow_other_permissions(vault_dir: Path) -> None:
    # pytest's tmp_path is under a 0700 directory; other users need a way in.
    outer = Path(tempfile.mkdtemp(prefix="cryptfs-allow-other-"))
    os.chmod(outer, 0o755)
    mnt = outer / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt, ("-o", "allow_other")).start()
    try:
        assert stat.S_IMODE(mnt.stat().st_mode) == 0o700  # vault root starts private
        os.chmod(mnt, 0o755)
        (mnt / "public").write_text("public")
        (mnt / "private").write_text("private")
        os.chmod(mnt / "private", 0o600)
        (mnt / "shared").mkdir(mode=0o777)
        os.chmod(mnt / "shared", 0o777)

        def as_nobody(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(argv), user=65534, group=65534, extra_groups=[],
                                  capture_output=True, text=True, timeout=30, check=False)

        write = 'echo n > "$1"'
        assert as_nobody("cat", str(mnt / "public")).stdout == "public"
        denied = as_nobody("cat", str(mnt / "private"))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        denied = as_nobody("sh", "-c", write, "sh", str(mnt / "x"))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        made = as_nobody("sh", "-c", write, "sh", str(mnt / "shared" / "mine"))
        assert made.returncode == 0, made.stderr
        st = (mnt / "shared" / "mine").stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    finally:
        m.stop()
        shutil.rmtree(outer, ignore_errors=True)
