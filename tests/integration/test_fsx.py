"""Random operations on the mount vs a plain directory (tests/fsx.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Mount, wait_for
from tests.fsx import Fsx

pytestmark = [pytest.mark.mount]


@pytest.mark.timeout(300)
def test_fsx(mounted: Mount, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTFS_FSX_SEED", "20261127"))
    ref = tmp_path / "ref"
    ref.mkdir()
    Fsx(mounted.mnt, ref, seed).run(int(os.environ.get("CRYPTFS_FSX_OPS", "3000")))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fsx_heavy(mounted: Mount, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    for seed in range(5):
        Fsx(mounted.mnt, ref, 1000 + seed).run(10000)


@pytest.mark.timeout(300)
def test_fsx_with_writeback_cache(vault_dir: Path, tmp_path: Path) -> None:
    """The opt-in kernel writeback cache (mount --writeback) keeps the same semantics."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt, ("--writeback",)).start()
    try:
        ref = tmp_path / "ref"
        ref.mkdir()
        Fsx(mnt, ref, 777).run(2000)
        log = mnt / "appends"
        log.write_bytes(b"")
        fds = [os.open(log, os.O_WRONLY | os.O_APPEND) for _ in range(3)]
        for i in range(300):
            os.write(fds[i % 3], f"{i:04d}\n".encode())
        for fd in fds:
            os.close(fd)
        assert log.read_bytes() == b"".join(f"{i:04d}\n".encode() for i in range(300))
        # Hard links: each name is its own kernel inode, and with the writeback cache the
        # kernel never re-reads a size it holds; the other name must be made to leave
        # the cache (top-level and nested, both growing and shrinking).
        for sub in (mnt, mnt / "d1" / "d2"):
            sub.mkdir(parents=True, exist_ok=True)
            f, g = sub / "f", sub / "g"
            f.write_text("shared")
            os.link(f, g)
            assert f.read_text() == "shared" and f.stat().st_size == 6
            with open(g, "a") as fh:
                fh.write("!")
            assert wait_for(lambda f=f: f.read_text() == "shared!", 5, 0.05)
            assert f.stat().st_size == 7
            with open(g, "r+") as fh:
                fh.truncate(3)
            assert wait_for(lambda f=f: f.stat().st_size == 3 and f.read_text() == "sha",
                            5, 0.05)
    finally:
        m.stop()

