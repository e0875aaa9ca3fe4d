"""Crash consistency, concurrency, hostile backing directories, limits and clear failures."""

from __future__ import annotations

import errno
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cryptfs.volume import Volume
from tests.conftest import HAVE_FUSE, PASSWORD, Mount, cryptfs_cmd, force_unmount, is_mounted

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")]

REC = 4096
BLOCK = 16384  # the default block size (bench/BLOCKSIZE.md)

WRITER = r"""
import os, sys, random
mode, path, journal, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
def record(tag, n):
    return (f"{tag}:{n}:".encode() * 1400)[:4096]
j = open(journal, "a", buffering=1)
try:
    if mode == "append":
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        n = 0
        while True:
            os.write(fd, record(seed, n))
            os.fsync(fd)
            j.write(f"{n}\n")
            n += 1
    else:
        fd = os.open(path, os.O_RDWR)
        v = 0
        while True:
            slot = rng.randrange(64)
            v += 1
            j.write(f"try {slot} {v}\n")
            os.pwrite(fd, record(slot, v), slot * 4096)
            os.fsync(fd)
            j.write(f"done {slot} {v}\n")
except OSError:
    sys.exit(0)
"""


def record(tag: int, n: int) -> bytes:
    return (f"{tag}:{n}:".encode() * 1400)[:REC]


def crash_round(backing: Path, mnt: Path, work: Path, rng: random.Random) -> dict[str, int]:
    m = Mount(backing, mnt).start()
    (mnt / "over").write_bytes(b"".join(record(s, 0) for s in range(64)))
    procs = []
    for i in range(3):
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, "append",
                                       str(mnt / f"app{i}"), str(work / f"j{i}"), str(i)]))
    procs.append(subprocess.Popen([sys.executable, "-c", WRITER, "over", str(mnt / "over"),
                                   str(work / "jo"), "99"]))
    time.sleep(rng.uniform(0.3, 1.2))
    m.kill()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    m = Mount(backing, mnt).start()
    damaged = checked = 0
    try:
        for i in range(3):
            lines = (work / f"j{i}").read_text().split()
            synced = int(lines[-1]) + 1 if lines else 0
            fd = os.open(mnt / f"app{i}", os.O_RDONLY)
            size = os.fstat(fd).st_size
            assert size >= synced * REC
            in_flight_block = synced * REC // BLOCK  # the block the next append rewrote
            for n in range(size // REC):
                try:
                    got = os.pread(fd, REC, n * REC)
                except OSError as exc:
                    # A kill can tear the block being written; records that shared that
                    # block (fsynced or not) go with it. Nothing else may be lost.
                    assert exc.errno == errno.EIO and n * REC // BLOCK >= in_flight_block, \
                        f"record {n} of app{i} lost outside the block in flight"
                    damaged += 1
                    continue
                checked += 1
                if n < synced:
                    assert got == record(i, n), f"fsynced record {n} of app{i} differs"
            os.close(fd)
        latest: dict[int, int] = {}
        tried: dict[int, int] = {}
        for line in (work / "jo").read_text().splitlines():
            kind, slot, v = line.split()
            (latest if kind == "done" else tried)[int(slot)] = int(v)
        fd = os.open(mnt / "over", os.O_RDONLY)
        for slot in range(64):
            allowed = {record(slot, latest.get(slot, 0))}
            if tried.get(slot, 0) > latest.get(slot, 0):
                allowed.add(record(slot, tried[slot]))
            try:
                got = os.pread(fd, REC, slot * REC)
            except OSError as exc:
                block = slot * REC // BLOCK
                in_flight = any(tried[s] > latest.get(s, 0) for s in tried
                                if s * REC // BLOCK == block)
                assert exc.errno == errno.EIO and in_flight, f"slot {slot}: fsynced data lost"
                damaged += 1
                continue
            checked += 1
            assert got in allowed, f"slot {slot} holds neither fsynced nor in-flight data"
        os.close(fd)
        for name in os.listdir(mnt):  # every file opens
            os.close(os.open(mnt / name, os.O_RDONLY))
        for p in mnt.iterdir():
            p.unlink()
        for j in work.iterdir():
            j.unlink()
    finally:
        m.stop()
    return {"damaged_blocks": damaged, "checked_blocks": checked}


def run_crashes(tmp_path: Path, rounds: int, seed: int) -> list[dict[str, int]]:
    backing = tmp_path / "vault"
    cryptfs_cmd("init", "--quiet", str(backing), check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    work = tmp_path / "journal"
    work.mkdir()
    rng = random.Random(seed)
    results = [crash_round(backing, mnt, work, rng) for _ in range(rounds)]
    print(f"crash rounds (seed {seed}): {results}")
    return results


@pytest.mark.timeout(300)
def test_kill_9_during_writes(tmp_path: Path) -> None:
    run_crashes(tmp_path, 3, int(os.environ.get("CRYPTFS_CRASH_SEED", "7")))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill_9_during_writes_heavy(tmp_path: Path) -> None:
    results = run_crashes(tmp_path, 30, 11)
    print("total damaged:", sum(r["damaged_blocks"] for r in results),
          "checked:", sum(r["checked_blocks"] for r in results))


@pytest.mark.timeout(180)
def test_concurrency_stress(mounted: Mount) -> None:
    """Threads on shared and private files for a bounded time; content checked after."""
    mnt = mounted.mnt
    shared = mnt / "shared"
    shared.write_bytes(bytes(16 * 65536))
    stop = time.monotonic() + 5
    errors: list[BaseException] = []
    expected: dict[str, bytes] = {}

    def shared_writer(k: int) -> None:  # each thread owns 4 KiB slots of the shared file
        rng = random.Random(k)
        fd = os.open(shared, os.O_RDWR)
        try:
            while time.monotonic() < stop:
                slot = rng.randrange(64) * 4 + k
                os.pwrite(fd, bytes([k + 1]) * 4096, slot * 4096)
                os.pread(fd, 65536, rng.randrange(16) * 65536)
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(fd)

    def private_worker(k: int) -> None:
        rng = random.Random(100 + k)
        try:
            n = 0
            while time.monotonic() < stop:
                p = mnt / f"private-{k}-{n % 5}"
                data = rng.randbytes(rng.randrange(1, 100000))
                p.write_bytes(data)
                assert p.read_bytes() == data
                expected[str(p)] = data
                if n % 7 == 0:
                    os.rename(p, mnt / f"private-{k}-moved")
                    expected[str(mnt / f"private-{k}-moved")] = expected.pop(str(p))
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=shared_writer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=private_worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "deadlock: a worker did not finish"
    assert not errors, errors
    data = shared.read_bytes()
    for i in range(256):
        block = data[i * 4096:(i + 1) * 4096]
        assert block in (bytes(4096), bytes([i % 4 + 1]) * 4096), f"slot {i} torn"
    for path, content in expected.items():
        assert Path(path).read_bytes() == content


@pytest.mark.timeout(120)
def test_hostile_backing_directory(mounted: Mount, tmp_path: Path) -> None:
    """Whatever a provider plants in the backing store is skipped or EIO, never followed,
    never fatal, and nothing is ever written outside the vault."""
    mnt, backing = mounted.mnt, mounted.backing
    vol = Volume.unlock(str(backing), passphrase=PASSWORD.encode(), read_only=True)
    (mnt / "dir").mkdir()
    (mnt / "dir2").mkdir()
    (mnt / "good").write_bytes(b"good" * 1000)
    (mnt / "badheader").write_bytes(b"x" * 100)
    (mnt / "partial").write_bytes(b"y" * 40000)
    raw = backing / vol.backing_path_of("/badheader")
    raw.write_bytes(b"\x00\x07" + raw.read_bytes()[2:])
    part = backing / vol.backing_path_of("/partial")
    part.write_bytes(part.read_bytes()[:-3])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("must never be touched")
    root = backing / vol.root_storage
    root_id = vol.names.root_id
    # entries that are symlinks (a directory entry and a file entry) pointing outside
    os.symlink(outside, root / (vol.names.encrypt(root_id, b"escape") + ".d"))
    os.symlink("/etc/passwd", root / vol.names.encrypt(root_id, b"etc"))
    # a directory whose storage folder was replaced by a symlink to the outside
    storage = backing / vol.storage_path_of("/dir2")
    shutil.rmtree(storage)
    os.symlink(outside, storage)
    for junk in ("a" * 255, "=" * 10, "b" * 32 + ".s", "cryptfs.back.x", "\udcff".encode(
            "utf-8", "surrogateescape").decode("latin-1"), "not-base32!", "loop"):
        try:
            (root / junk).write_text("junk")
        except OSError:
            pass
    other = tmp_path / "other"
    cryptfs_cmd("init", "--quiet", str(other), check=True)
    ovol = Volume.unlock(str(other), passphrase=PASSWORD.encode())
    ovol.write_file("/from-other-vault", b"x")
    shutil.copy(other / ovol.backing_path_of("/from-other-vault"), root)
    time.sleep(1.1)  # let the kernel's cached entries expire

    names = sorted(os.listdir(mnt))
    assert {"dir", "good", "badheader", "partial"} <= set(names)
    assert not {"from-other-vault", "escape", "etc"} & set(names)
    assert (mnt / "good").read_bytes() == b"good" * 1000
    for bad in ("badheader", "partial"):
        with pytest.raises(OSError) as info:
            (mnt / bad).read_bytes()
        assert info.value.errno == errno.EIO
    for path in (mnt / "escape" / "secret", mnt / "dir2" / "secret", mnt / "etc"):
        with pytest.raises(OSError):
            path.read_text()
    for path in (mnt / "escape" / "new", mnt / "dir2" / "new"):
        with pytest.raises(OSError):
            path.write_text("x")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert is_mounted(mnt) and mounted.proc.poll() is None  # the daemon survived it all
    assert (mnt / "good").read_bytes() == b"good" * 1000
    (mnt / "dir" / "still works").write_text("yes")
    assert (mnt / "dir" / "still works").read_text() == "yes"


@pytest.mark.timeout(120)
def test_many_open_files_and_big_directory(mounted: Mount) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    d = mounted.mnt / "many"
    d.mkdir()
    fds = [os.open(d / f"f{i}", os.O_CREAT | os.O_RDWR, 0o644) for i in range(1000)]
    try:
        for i, fd in enumerate(fds):
            os.write(fd, str(i).encode())
        for i, fd in enumerate(fds):
            assert os.pread(fd, 10, 0) == str(i).encode()
    finally:
        for fd in fds:
            os.close(fd)
    big = mounted.mnt / "big"
    big.mkdir()
    count = int(os.environ.get("CRYPTFS_BIGDIR", "5000"))
    vol = Volume.unlock(str(mounted.backing), passphrase=PASSWORD.encode())
    for i in range(count):  # created offline (faster), listed through the mount
        vol.write_file(f"/big/entry-{i:06d}", b"")
    start = time.monotonic()
    listed = os.listdir(big)
    print(f"listed {len(listed)} entries in {time.monotonic() - start:.2f} s")
    assert len(listed) == count


@pytest.mark.timeout(120)
def test_sparse_5gib_and_long_names_and_depth(mounted: Mount) -> None:
    mnt = mounted.mnt
    with open(mnt / "sparse", "wb") as fh:
        fh.seek(5 << 30)
        fh.write(b"end")
    assert (mnt / "sparse").stat().st_size == (5 << 30) + 3
    vol = Volume.unlock(str(mounted.backing), passphrase=PASSWORD.encode(), read_only=True)
    assert (mounted.backing / vol.backing_path_of("/sparse")).stat().st_blocks * 512 < 1 << 20
    with open(mnt / "sparse", "rb") as fh:
        fh.seek((5 << 30) - 5)
        assert fh.read() == b"\0\0\0\0\0end"
    name = "ж" * 127  # 254 bytes of multibyte UTF-8
    (mnt / name).mkdir()
    (mnt / name / name).write_text("deep")
    assert (mnt / name / name).read_text() == "deep"
    # Depth: storage by directory identity keeps every backing path short, so a tree far
    # deeper than PATH_MAX works (walked with directory descriptors, as programs do).
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(120):  # 120 x 51 bytes: a 6 KiB plaintext path
            os.mkdir("d" * 50, dir_fd=fd)
            nxt = os.open("d" * 50, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(leaf, b"at the bottom")
        os.close(leaf)
    finally:
        os.close(fd)
    longest = max(len(os.path.relpath(os.path.join(root, n), mounted.backing))
                  for root, dirs, files in os.walk(mounted.backing) for n in dirs + files)
    assert longest <= 250, longest
    assert is_mounted(mnt) and mounted.proc.poll() is None


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_full_backing_disk(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        backing = small / "vault"
        cryptfs_cmd("init", "--quiet", str(backing), check=True)
        m = Mount(backing, mnt).start()
        try:
            keep = os.urandom(500_000)
            (mnt / "keep").write_bytes(keep)
            fd = os.open(mnt / "fill", os.O_CREAT | os.O_WRONLY, 0o644)
            written = 0
            with pytest.raises(OSError) as info:
                while True:
                    written += os.write(fd, os.urandom(65536))
            assert info.value.errno in (errno.ENOSPC, errno.EDQUOT)
            os.close(fd)
            assert (mnt / "keep").read_bytes() == keep
            fill = (mnt / "fill").read_bytes()
            assert len(fill) >= written - 65536
            (mnt / "fill").unlink()
            (mnt / "after").write_bytes(b"space is back")
            assert (mnt / "after").read_bytes() == b"space is back"
        finally:
            m.stop()
        proc = cryptfs_cmd("fsck", str(backing))
        assert proc.returncode == 0, proc.stdout
    finally:
        force_unmount(mnt)
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.timeout(60)
def test_clear_failure_without_fusermount(vault_dir: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {"PATH": str(tmp_path / "empty-bin")}
    proc = cryptfs_cmd("mount", str(vault_dir), str(mnt), env=env)
    assert proc.returncode == 13
    assert b"fuse3" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not is_mounted(mnt)


@pytest.mark.timeout(60)
def test_daemon_has_no_core_dumps_and_no_password_in_children(vault_dir: Path,
                                                               tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = cryptfs_cmd("mount", str(vault_dir), str(mnt))
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split(b"daemon pid ")[1].split(b";")[0])
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core"))
        assert core.split()[4] == "0"
        status = Path(f"/proc/{pid}/status").read_text()
        assert PASSWORD not in status
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline
    finally:
        assert cryptfs_cmd("unmount", str(mnt)).returncode == 0
