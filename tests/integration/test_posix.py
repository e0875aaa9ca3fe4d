"""POSIX semantics through a real mount, one test per class of bug the peers are known for
(issue 11): hard-link identity, the daemon's umask, set-group-ID directories, permission
checks with the caller's rights (run as a normal user), "." and "..", directories holding
a file deleted while open, backing file systems without renameat2 flags (sshfs), long
symlink targets, preallocation."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import (
    HAVE_FUSE,
    PASSWORD,
    Mount,
    cryptfs_cmd,
    force_unmount,
    is_mounted,
)

pytestmark = [pytest.mark.mount, pytest.mark.timeout(120),
              pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")]


# -- 1. one inode per file: every name of a hard link tells the truth at once ------------
def test_hard_links_are_one_inode_through_every_name(work: Path) -> None:
    a, b = work / "a", work / "b"
    a.write_text("x")
    assert a.stat().st_nlink == 1  # cached by the kernel now
    os.link(a, b)
    assert a.stat().st_nlink == 2 and b.stat().st_nlink == 2
    assert a.stat().st_ino == b.stat().st_ino
    os.chmod(b, 0o600)
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    os.utime(b, ns=(10**18, 10**18))
    assert a.stat().st_mtime_ns == 10**18
    with open(b, "a") as fh:
        fh.write("yz")
    assert a.stat().st_size == 3 and a.read_text() == "xyz"
    ctime = a.stat().st_ctime_ns
    b.unlink()
    assert a.stat().st_nlink == 1 and a.stat().st_ctime_ns >= ctime


def test_copies_keep_hard_links_made_a_moment_before(work: Path, tmp_path: Path) -> None:
    src = work / "src"
    src.mkdir()
    (src / "one").write_text("shared")
    os.link(src / "one", src / "two")
    for tool, dest in ((["cp", "-a"], tmp_path / "cp"), (["rsync", "-aH"], tmp_path / "rs")):
        if shutil.which(tool[0]) is None:
            continue
        subprocess.run([*tool, f"{src}/", str(dest)], check=True)
        assert (dest / "one").stat().st_ino == (dest / "two").stat().st_ino, tool


def test_rename_over_another_link_of_itself_keeps_both(work: Path) -> None:
    a, b = work / "a", work / "b"
    a.write_text("x")
    os.link(a, b)
    fd = os.open(b, os.O_RDONLY)  # the target being open must not matter
    try:
        os.rename(a, b)
    finally:
        os.close(fd)
    assert a.exists() and b.exists() and a.stat().st_nlink == 2


# -- 2. the daemon's umask is never applied again ------------------------------------------
def test_modes_are_exactly_what_the_caller_asked(tmp_path: Path, vault_dir: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt, umask=0o077).start()
    old = os.umask(0)
    try:
        os.close(os.open(mnt / "f", os.O_CREAT | os.O_WRONLY, 0o777))
        os.mkdir(mnt / "d", 0o777)
        os.mkfifo(mnt / "p", 0o666)
        os.mknod(mnt / "n", 0o640 | stat.S_IFREG)
        modes = {n: stat.S_IMODE((mnt / n).stat().st_mode) for n in ("f", "d", "p", "n")}
    finally:
        os.umask(old)
        m.stop()
    assert modes == {"f": 0o777, "d": 0o777, "p": 0o666, "n": 0o640}


# -- 3. set-group-ID directories -------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand out groups")
def test_setgid_directory_passes_on_its_group(tmp_path: Path, vault_dir: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt, ("-o", "allow_other")).start()
    try:
        d = mnt / "shared"
        d.mkdir()
        os.chown(d, 0, 4321)
        os.chmod(d, 0o2775)
        (d / "sub").mkdir()
        (d / "file").write_text("x")
        os.mkfifo(d / "fifo")
        sub, f, fifo = (d / "sub").stat(), (d / "file").stat(), (d / "fifo").stat()
    finally:
        m.stop()
    assert sub.st_gid == 4321 and sub.st_mode & stat.S_ISGID
    assert f.st_gid == 4321 and fifo.st_gid == 4321
    assert not f.st_mode & stat.S_ISGID


# -- 4. permissions are checked with the caller's rights: a normal user's mount -------------
USER_SCRIPT = textwrap.dedent("""
    import os, sys
    mnt = sys.argv[1]
    for mode in (0o500, 0o555, 0o400, 0o000):
        d = os.path.join(mnt, f"d{mode:o}")
        os.mkdir(d)
        os.chmod(d, mode)
        os.rmdir(d)
    f = os.path.join(mnt, "wo")
    with open(f, "w") as fh:
        fh.write("0123456789")
    os.chmod(f, 0o200)
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"append")
    os.close(fd)
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, b"XX", 2)
    os.close(fd)
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"truncated and written")
    os.close(fd)
    os.chmod(f, 0o600)
    assert open(f).read() == "truncated and written", open(f).read()
    ro = os.path.join(mnt, "ro")
    os.mkdir(ro)
    open(os.path.join(ro, "inside"), "w").write("x")
    os.chmod(ro, 0o555)
    os.rename(os.path.join(mnt, "wo"), os.path.join(mnt, "wo2"))
    try:
        open(os.path.join(ro, "new"), "w")
    except PermissionError:
        pass
    else:
        raise AssertionError("created a file in a 0555 directory")
    os.chmod(ro, 0o755)
    print("user checks ok")
""")


def test_permissions_as_a_normal_user(normal_user, user_dir: Path) -> None:
    vault, mnt = user_dir / "vault", normal_user.mkdir(user_dir / "mnt")
    proc = normal_user.cryptfs("init", "--quiet", str(vault))
    assert proc.returncode == 0, proc.stderr
    env = normal_user.env(CRYPTFS_PASSWORD=PASSWORD)
    daemon = subprocess.Popen(normal_user.cryptfs_argv("mount", "-f", str(vault), str(mnt)),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt) and time.monotonic() < deadline:
            assert daemon.poll() is None, daemon.stderr.read()
            time.sleep(0.05)
        script = user_dir / "check.py"
        script.write_text(USER_SCRIPT)
        os.chmod(script, 0o644)
        proc = normal_user.run([*normal_user.python, str(script), str(mnt)])
        assert proc.returncode == 0 and b"user checks ok" in proc.stdout, proc.stderr
        proc = normal_user.run(["stat", "-c", "%u %a", str(mnt / "wo2")])
        assert proc.stdout.decode().split() == [str(normal_user.uid), "600"]
    finally:
        normal_user.run(["fusermount3", "-u", str(mnt)])
        force_unmount(mnt)
        daemon.wait(20)


# -- 5. "." and ".." --------------------------------------------------------------------------
def test_dot_and_dotdot_are_listed(work: Path) -> None:
    (work / "e").mkdir()
    out = subprocess.run(["ls", "-a", str(work / "e")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [".", ".."]
    ids = subprocess.run(["ls", "-ai", str(work / "e")], capture_output=True, text=True,
                         check=True).stdout.split()
    inodes = dict(zip(ids[1::2], ids[0::2]))
    assert int(inodes["."]) == (work / "e").stat().st_ino
    assert int(inodes[".."]) == work.stat().st_ino


# -- 6. a file deleted while open ---------------------------------------------------------
def test_directory_of_a_file_deleted_while_open_can_be_removed(work: Path) -> None:
    d = work / "e"
    d.mkdir()
    (d / "f").write_text("still readable")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        (d / "f").unlink()
        d.rmdir()  # nothing hidden is left behind in it
        assert not d.exists()
        assert os.pread(fd, 100, 0) == b"still readable"
        os.pwrite(fd, b"STILL", 0)
        os.fchmod(fd, 0o600)
        assert os.fstat(fd).st_nlink == 0 and stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.pread(fd, 100, 0) == b"STILL readable"
    finally:
        os.close(fd)
    (work / ".fuse_hidden0000000100000001").write_text("an ordinary file")
    assert ".fuse_hidden0000000100000001" in os.listdir(work)


# -- 7. a backing directory on a file system without renameat2 flags (sshfs) -------------------
@pytest.fixture
def sshfs_dir(tmp_path: Path):
    server = "/usr/lib/openssh/sftp-server"
    if shutil.which("sshfs") is None or not os.path.exists(server):
        pytest.skip("needs sshfs and openssh-sftp-server")
    src, mnt = tmp_path / "sftp-src", tmp_path / "sshfs"
    src.mkdir()
    mnt.mkdir()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    srv = subprocess.Popen([server], stdin=r1, stdout=w2)
    cli = subprocess.Popen(["sshfs", "-f", "-o", "passive", f":{src}", str(mnt)],
                           stdin=r2, stdout=w1, stderr=subprocess.DEVNULL)
    for fd in (r1, w1, r2, w2):
        os.close(fd)
    deadline = time.monotonic() + 20
    while not is_mounted(mnt):
        assert cli.poll() is None and time.monotonic() < deadline, "sshfs did not mount"
        time.sleep(0.05)
    try:
        yield mnt
    finally:
        force_unmount(mnt)
        for proc in (cli, srv):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_vault_on_sshfs(sshfs_dir: Path, tmp_path: Path) -> None:
    vault, mnt = sshfs_dir / "vault", tmp_path / "mnt"
    mnt.mkdir()
    cryptfs_cmd("init", "--quiet", str(vault), check=True)
    m = Mount(vault, mnt).start()
    try:
        (mnt / "dir").mkdir()
        (mnt / "dir" / "a").write_text("a")
        (mnt / "b").write_text("b")
        subprocess.run(["mv", "-n", str(mnt / "b"), str(mnt / "dir" / "a")], check=False)
        assert (mnt / "dir" / "a").read_text() == "a" and (mnt / "b").exists()
        subprocess.run(["mv", "-n", str(mnt / "b"), str(mnt / "dir" / "c")], check=True)
        os.rename(mnt / "dir", mnt / "moved")
        assert (mnt / "moved" / "c").read_text() == "b"
        os.link(mnt / "moved" / "c", mnt / "hard")  # (SFTP reports no link counts)
        assert (mnt / "hard").read_text() == "b"
        (mnt / "moved" / "a").unlink()
        (mnt / "moved" / "c").unlink()
        (mnt / "moved").rmdir()
    finally:
        m.stop()
    assert cryptfs_cmd("fsck", str(vault)).returncode == 0


# -- 8. long symlink targets, preallocation ------------------------------------------------------
def test_symlink_targets_up_to_path_max(work: Path) -> None:
    target = ("/" + "x" * 199) * 21
    target = target[:4095]
    assert len(target) == 4095
    os.symlink(target, work / "long")
    assert os.readlink(work / "long") == target
    assert (work / "long").lstat().st_size == 4095
    with pytest.raises(OSError) as info:
        os.symlink("y" * 4096, work / "too-long")
    assert info.value.errno == errno.ENAMETOOLONG


def test_posix_fallocate_extends_with_zeros(work: Path) -> None:
    f = work / "pre"
    f.write_bytes(b"head")
    fd = os.open(f, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)  # glibc falls back to writing if needed
    finally:
        os.close(fd)
    data = f.read_bytes()
    assert len(data) == 1 << 20 and data[:4] == b"head" and not data[4:].strip(b"\0")

