"""How many FUSE requests a workload costs, and what one request costs the daemon.

    python bench/requests.py [--files 2000]

Mounts a fresh vault in this process (the daemon's handlers wrapped to count calls and
time them), then: untars N small files (a slice of the Python standard library), stats
them with and without cached attributes, writes 2,000 random 4 KiB blocks into a 16 MiB
file. Prints requests per untarred file by kind, and the handler time per request (the
Python work of one request, without the kernel round trip) for getattr/lookup and for a
4 KiB write. Works with this checkout and, for comparison, with cryptfs 0.1 (format 1 on
mfusepy) run with that checkout's Python: it finds the adapter class of either.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import random
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("CRYPTFS_TESTONLY_WEAK_KDF", "1")

COUNTS: collections.Counter = collections.Counter()
TIMES: collections.Counter = collections.Counter()
OPS = ("lookup", "getattr", "setattr", "create", "open", "read", "write", "release", "flush",
       "mkdir", "readdir", "opendir", "releasedir", "getxattr", "forget", "chmod", "chown",
       "utimens", "truncate", "access", "unlink", "rmdir", "rename", "fsync", "statfs")


def _wrap(cls) -> None:
    import inspect

    for op in OPS:
        func = cls.__dict__.get(op)
        if func is None:
            continue

        if inspect.iscoroutinefunction(func):
            async def counted(self, *args, _f=func, _op=op):
                t = time.perf_counter_ns()
                try:
                    return await _f(self, *args)
                finally:
                    COUNTS[_op] += 1
                    TIMES[_op] += time.perf_counter_ns() - t
        else:
            def counted(self, *args, _f=func, _op=op):
                t = time.perf_counter_ns()
                try:
                    return _f(self, *args)
                finally:
                    COUNTS[_op] += 1
                    TIMES[_op] += time.perf_counter_ns() - t
        setattr(cls, op, functools.wraps(func)(counted))


def serve(backing: str, mnt: str) -> threading.Thread:
    from cryptfs.volume import Volume

    vol = Volume.unlock(backing, passphrase=b"bench passphrase")
    try:
        from cryptfs.fuse import adapter  # format 2, pyfuse3

        _wrap(adapter.Operations)

        def run() -> None:
            from cryptfs import fuse

            fuse.serve(vol, mnt, fsname="bench", subtype="cryptfs")
    except ImportError:  # cryptfs 0.1: mfusepy's high-level API
        from cryptfs import fs

        _wrap(fs.CryptFS)

        def run() -> None:
            fs.serve(vol, mnt, {"fsname": "bench", "subtype": "cryptfs",
                                "default_permissions": True, "use_ino": True,
                                "auto_cache": True})
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    target = os.fsencode(os.path.realpath(mnt))
    while time.monotonic() < deadline:
        with open("/proc/self/mountinfo", "rb") as fh:
            if any(line.split()[4] == target for line in fh):
                return thread
        time.sleep(0.05)
    raise SystemExit("mount did not come up")


def phase(name: str, results: dict, func) -> None:
    COUNTS.clear()
    TIMES.clear()
    func()
    results[name] = (collections.Counter(COUNTS), collections.Counter(TIMES))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="requests-", dir="/dev/shm") as tmp:
        base = Path(tmp)
        subprocess.run([sys.executable, "-m", "cryptfs", "init", "--quiet",
                        str(base / "v")], check=True, capture_output=True,
                       env=dict(os.environ, CRYPTFS_PASSWORD="bench passphrase"))
        (base / "m").mkdir()
        src = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in src.rglob("*.py") if "site-packages" not in p.parts)
        files = files[:args.files]
        tarball = base / "t.tar"
        with tarfile.open(tarball, "w") as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
        serve(str(base / "v"), str(base / "m"))
        mnt = base / "m"
        results: dict = {}
        phase("untar", results, lambda: subprocess.run(
            ["tar", "-xf", str(tarball), "-C", str(mnt)], check=True))
        time.sleep(1.1)  # let attributes expire
        phase("stat (attributes expired)", results, lambda: subprocess.run(
            ["find", str(mnt), "-type", "f", "-newer", str(tarball)], check=True,
            capture_output=True))
        phase("stat (cached)", results, lambda: subprocess.run(
            ["find", str(mnt), "-type", "f", "-newer", str(tarball)], check=True,
            capture_output=True))
        rng = random.Random(1)
        small = os.urandom(4096)

        def rand_write() -> None:
            fd = os.open(mnt / "r.bin", os.O_CREAT | os.O_RDWR, 0o644)
            os.ftruncate(fd, 16 << 20)
            COUNTS.clear()
            TIMES.clear()
            for _ in range(2000):
                os.pwrite(fd, small, rng.randrange(4096) * 4096)
            os.close(fd)

        phase("2000 random 4 KiB writes", results, rand_write)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        time.sleep(0.5)
    n = len(files)
    print(f"cryptfs at {sys.prefix}; {n} files untarred\n")
    for name, (counts, times) in results.items():
        total = sum(counts.values())
        per = f"{total / n:.1f} per file" if "untar" in name or "stat" in name else ""
        print(f"{name}: {total} requests {per}")
        for op, c in counts.most_common():
            extra = f" ({c / n:.2f}/file)" if per else ""
            print(f"  {op:10} {c:7}{extra}  {times[op] / c / 1000:7.1f} us in the handler")
    return 0


if __name__ == "__main__":
    sys.exit(main())
