"""Every filesystem operation through a real FUSE mount."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.timeout(120)]

_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: Path, dst: Path, flags: int) -> int:
    ret = _libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags)
    return 0 if ret == 0 else ctypes.get_errno()


def test_create_read_write(work: Path) -> None:
    f = work / "f"
    f.write_bytes(b"hello")
    assert f.read_bytes() == b"hello"
    assert f.stat().st_size == 5
    data = os.urandom(3 * 16384 + 17)
    f.write_bytes(data)
    assert f.read_bytes() == data


def test_open_flags(work: Path) -> None:
    f = work / "f"
    fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, b"abc")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    os.close(fd)
    assert f.read_bytes() == b"abcdef"
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert f.read_bytes() == b""
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_write_only_file_mode(work: Path) -> None:
    f = work / "wo"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o200)
    os.pwrite(fd, b"x" * 5000, 0)
    os.pwrite(fd, b"y", 2)  # read-modify-write of a block the user cannot read
    os.close(fd)
    os.chmod(f, 0o600)
    assert f.read_bytes() == b"xxy" + b"x" * 4997


def test_holes_and_overlapping_writes(work: Path) -> None:
    f = work / "h"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"end", 1_000_000)
    assert os.pread(fd, 10, 500_000) == bytes(10)
    os.pwrite(fd, b"A" * 40000, 10000)
    os.pwrite(fd, b"B" * 100, 20000)
    expect = bytearray(1_000_003)
    expect[1_000_000:] = b"end"
    expect[10000:50000] = b"A" * 40000
    expect[20000:20100] = b"B" * 100
    assert os.pread(fd, 2_000_000, 0) == bytes(expect)
    os.close(fd)


def test_truncate_up_and_down(work: Path) -> None:
    f = work / "t"
    data = os.urandom(50000)
    f.write_bytes(data)
    os.truncate(f, 20000)
    assert f.read_bytes() == data[:20000]
    os.truncate(f, 70000)
    assert f.read_bytes() == data[:20000] + bytes(50000)
    fd = os.open(f, os.O_RDWR)
    os.ftruncate(fd, 16384)
    assert os.fstat(fd).st_size == 16384
    os.close(fd)
    assert f.read_bytes() == data[:16384]


def test_directories(work: Path) -> None:
    d = work / "d"
    d.mkdir(mode=0o750)
    assert stat.S_IMODE(d.stat().st_mode) == 0o750
    (d / "x").write_text("x")
    with pytest.raises(OSError) as info:
        d.rmdir()
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        d.mkdir()
    (d / "x").unlink()
    d.rmdir()
    assert not d.exists()
    with pytest.raises(FileNotFoundError):
        (work / "nope" / "x").write_text("x")


def test_rename(work: Path) -> None:
    (work / "a").mkdir()
    (work / "b").mkdir()
    (work / "a" / "f").write_text("1")
    (work / "a" / "sub").mkdir()
    (work / "a" / "sub" / "deep").write_text("deep")
    os.rename(work / "a" / "f", work / "b" / "g")
    assert (work / "b" / "g").read_text() == "1"
    (work / "b" / "h").write_text("old")
    os.rename(work / "b" / "g", work / "b" / "h")
    assert (work / "b" / "h").read_text() == "1"
    os.rename(work / "a", work / "b" / "a2")
    assert (work / "b" / "a2" / "sub" / "deep").read_text() == "deep"
    assert sorted(os.listdir(work / "b")) == ["a2", "h"]
    (work / "empty").mkdir()
    os.rename(work / "b" / "a2" / "sub", work / "empty")  # over an empty directory
    assert (work / "empty" / "deep").read_text() == "deep"


def test_rename_flags(work: Path) -> None:
    a, b = work / "a", work / "b"
    a.write_text("A")
    b.write_text("B")
    assert renameat2(a, b, 1) == errno.EEXIST  # RENAME_NOREPLACE
    assert renameat2(a, b, 2) == 0  # RENAME_EXCHANGE
    assert a.read_text() == "B" and b.read_text() == "A"
    assert renameat2(a, b, 4) == errno.EINVAL  # RENAME_WHITEOUT: refused, nothing lost
    assert a.read_text() == "B" and b.read_text() == "A"


def test_hard_links(work: Path) -> None:
    f = work / "f"
    f.write_text("shared")
    os.link(f, work / "g")
    assert f.stat().st_nlink == 2
    assert f.stat().st_ino == (work / "g").stat().st_ino
    with open(work / "g", "a") as fh:
        fh.write("!")
    # libfuse's path API gives each link its own kernel inode: the other name's cached
    # size catches up after the 1 s attribute timeout (README, known limitations).
    time.sleep(1.1)
    assert f.read_text() == "shared!"
    f.unlink()
    assert (work / "g").read_text() == "shared!"


def test_hard_links_with_both_names_open(work: Path) -> None:
    a, b = work / "a", work / "b"
    a.write_bytes(b"0" * 10000)
    os.link(a, b)
    fa = os.open(a, os.O_RDWR)
    fb = os.open(b, os.O_RDWR)

    def eventually(check) -> bool:
        # The daemon drops the other name's kernel cache from a helper thread right
        # after the write returns (never inside it: that could deadlock the kernel).
        deadline = time.monotonic() + 0.9  # well under the 1 s attribute timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.01)
        return False

    try:
        assert os.pread(fb, 10, 0) == b"0" * 10  # b's pages are now cached
        os.pwrite(fa, b"written via a", 0)
        assert eventually(lambda: os.pread(fb, 13, 0) == b"written via a")
        os.pwrite(fb, b"B", 20000)  # grows the file through b
        assert eventually(lambda: os.fstat(fa).st_size == 20001)
        assert os.pread(fa, 1, 20000) == b"B"
    finally:
        os.close(fa)
        os.close(fb)


def test_symlinks(work: Path) -> None:
    (work / "target").write_text("t")
    os.symlink("target", work / "rel")
    os.symlink("/etc/hostname", work / "abs")
    os.symlink("dangling/é/x", work / "dangling")
    assert os.readlink(work / "rel") == "target"
    assert (work / "rel").read_text() == "t"
    assert os.readlink(work / "abs") == "/etc/hostname"
    assert os.readlink(work / "dangling") == "dangling/é/x"
    assert os.lstat(work / "dangling").st_size == len("dangling/é/x".encode())


def test_metadata(work: Path) -> None:
    f = work / "m"
    f.write_text("x")
    os.chmod(f, 0o640)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    if os.geteuid() == 0:  # a normal user may not give files away (EPERM, as anywhere)
        os.chown(f, 1234, 5678)
        assert (f.stat().st_uid, f.stat().st_gid) == (1234, 5678)
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    st = f.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    os.utime(f)  # now
    assert f.stat().st_mtime_ns > 2_000_000_456
    sv = os.statvfs(work)
    assert sv.f_namemax == 255 and sv.f_blocks > 0


def test_fsync(work: Path) -> None:
    fd = os.open(work / "s", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    dfd = os.open(work, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def test_special_files(work: Path) -> None:
    os.mkfifo(work / "fifo")
    assert stat.S_ISFIFO(os.stat(work / "fifo").st_mode)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(work / "sock"))
    sock.close()
    assert stat.S_ISSOCK(os.stat(work / "sock").st_mode)
    if os.geteuid() == 0:
        os.mknod(work / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        st = os.stat(work / "null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_access(work: Path) -> None:
    (work / "a").write_text("x")
    assert os.access(work / "a", os.R_OK | os.W_OK)
    assert not os.access(work / "missing", os.F_OK)


def test_mmap(work: Path) -> None:
    f = work / "mm"
    f.write_bytes(bytes(100000))
    with open(f, "r+b") as fh:
        mm = mmap.mmap(fh.fileno(), 0)
        mm[5000:5005] = b"hello"
        mm.flush()
        assert mm[5000:5005] == b"hello"
        mm.close()
    assert f.read_bytes()[5000:5005] == b"hello"


def test_names(work: Path) -> None:
    names = ["ü" * 127, "x" * 255, "with space", "日本語のファイル名", "a\tb", "-dash",
             "e\u0301", "😀" * 63]
    for n in names:
        (work / n).write_text(n)
    assert sorted(os.listdir(work)) == sorted(names)
    for n in names:
        assert (work / n).read_text() == n
    raw = os.fsencode(work) + b"/latin1-\xe9"
    with open(raw, "wb") as fh:
        fh.write(b"bytes")
    assert b"latin1-\xe9" in os.listdir(os.fsencode(work))
    with pytest.raises(OSError) as info:
        (work / ("x" * 256)).write_text("x")
    assert info.value.errno == errno.ENAMETOOLONG


def test_user_xattrs(work: Path) -> None:
    f, d = work / "x", work / "d"
    f.write_text("x")
    d.mkdir()
    os.setxattr(f, "user.tag", b"red")
    os.setxattr(d, "user.tag", b"blue")
    assert os.getxattr(f, "user.tag") == b"red" and os.getxattr(d, "user.tag") == b"blue"
    assert os.listxattr(f) == ["user.tag"]
    with pytest.raises(OSError) as info:
        os.setxattr(f, "user.tag", b"x", os.XATTR_CREATE)
    assert info.value.errno == errno.EEXIST
    with pytest.raises(OSError) as info:
        os.setxattr(f, "user.none", b"x", os.XATTR_REPLACE)
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.getxattr(f, "user.none")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.setxattr(f, "user." + "n" * 251, b"x")
    assert info.value.errno == errno.ERANGE
    with pytest.raises(OSError) as info:
        os.setxattr(f, "trusted.x" if os.geteuid() else "security.x", b"x")
    assert info.value.errno in (errno.EOPNOTSUPP, errno.EPERM)
    os.link(f, work / "hard")
    assert os.getxattr(work / "hard", "user.tag") == b"red"  # one inode, one set
    os.rename(f, work / "renamed")
    assert os.getxattr(work / "renamed", "user.tag") == b"red"
    os.removexattr(work / "renamed", "user.tag")
    assert os.listxattr(work / "hard") == []
    os.symlink("x", work / "ln")
    with pytest.raises(OSError) as info:
        os.setxattr(work / "ln", "user.tag", b"x", follow_symlinks=False)
    assert info.value.errno == errno.EPERM


def test_concurrent_writers_same_file(work: Path) -> None:
    f = work / "c"
    f.write_bytes(bytes(64 * 4096))
    errors = []

    def writer(k: int) -> None:
        try:
            fd = os.open(f, os.O_WRONLY)
            for i in range(k, 64, 4):  # interleaved 4 KiB pieces of the same blocks
                os.pwrite(fd, bytes([k + 1]) * 4096, i * 4096)
            os.close(fd)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    data = f.read_bytes()
    for i in range(64):
        assert data[i * 4096:(i + 1) * 4096] == bytes([i % 4 + 1]) * 4096


def test_many_files_in_parallel(work: Path) -> None:
    def job(k: int) -> None:
        for i in range(20):
            p = work / f"p{k}-{i}"
            p.write_bytes(bytes([k]) * (1000 * i + 1))
            assert p.read_bytes() == bytes([k]) * (1000 * i + 1)

    threads = [threading.Thread(target=job, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(os.listdir(work)) == 120


def test_processes_append_concurrently(work: Path) -> None:
    f = work / "log"
    f.write_bytes(b"")
    script = ("import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_APPEND)\n"
              "for i in range(200): os.write(fd, (sys.argv[2]*99+'\\n').encode())\n")
    procs = [subprocess.Popen(["python3", "-c", script, str(f), ch]) for ch in "abc"]
    for p in procs:
        assert p.wait(60) == 0
    lines = f.read_text().splitlines()
    assert len(lines) == 600
    assert all(len(set(line)) == 1 and len(line) == 99 for line in lines)
