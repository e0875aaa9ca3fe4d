"""Through a real mount: tampering is EIO for the damaged block only, and the backing
directory never holds plaintext (content, names, symlink targets, extended attributes)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cryptfs.volume import Volume
from tests.conftest import PASSWORD, Mount

pytestmark = [pytest.mark.mount, pytest.mark.timeout(120)]

CANARY = "Zx9CanaryPlaintextQ7"


def test_backing_directory_holds_no_plaintext(mounted: Mount) -> None:
    mnt = mounted.mnt
    d = mnt / f"dir-{CANARY}"
    d.mkdir()
    (d / f"file-{CANARY}.txt").write_text((CANARY + "\n") * 1000)
    (mnt / (f"long-{CANARY}-" + "x" * 200)).write_text(CANARY)
    os.symlink(f"/target/{CANARY}/path", mnt / f"link-{CANARY}")
    (mnt / "small").write_text(CANARY)
    os.setxattr(mnt / "small", f"user.{CANARY}", (CANARY * 4).encode())
    os.setxattr(d, "user.note", CANARY.encode())
    os.sync()
    needles = [CANARY.encode(), CANARY.encode()[:12], CANARY.encode("utf-16-le")]
    seen = 0
    for root, dirs, files in os.walk(mounted.backing):
        for name in dirs + files:
            seen += 1
            assert CANARY not in name and CANARY[:12] not in name
            path = Path(root, name)
            if path.is_symlink():
                assert CANARY not in os.readlink(path)
            elif path.is_file():
                blob = path.read_bytes()
                assert not any(n in blob for n in needles), path
    assert seen >= 8


def test_tampered_block_is_eio_only_there(mounted: Mount) -> None:
    f = mounted.mnt / "victim"
    data = os.urandom(4 * 16384)
    f.write_bytes(data)
    vol = Volume.unlock(str(mounted.backing), passphrase=PASSWORD.encode(), read_only=True)
    backing = mounted.backing / vol.backing_path_of("/victim")
    raw = bytearray(backing.read_bytes())
    raw[vol.content.block_offset(2) + 100] ^= 0x01
    backing.write_bytes(bytes(raw))
    fd = os.open(f, os.O_RDONLY)
    try:
        assert os.pread(fd, 16384, 0) == data[:16384]
        assert os.pread(fd, 16384, 3 * 16384) == data[3 * 16384:]
        with pytest.raises(OSError) as info:
            os.pread(fd, 100, 2 * 16384 + 10)
        assert info.value.errno == errno.EIO
    finally:
        os.close(fd)
    log = mounted.log_text()
    assert "block 2 failed authentication" in log


def test_undecodable_entries_are_skipped_not_fatal(mounted: Mount) -> None:
    (mounted.mnt / "good").write_text("good")
    vol = Volume.unlock(str(mounted.backing), passphrase=PASSWORD.encode(), read_only=True)
    root = mounted.backing / vol.root_storage
    (root / "garbage.txt").write_text("foreign")
    (root / ("a" * 64)).write_text("looks like a name")
    (root / ("b" * 32)).write_text("a long name without its sidecar")
    (root / ("c" * 32 + ".s")).write_text("a sidecar without its entry")
    names = os.listdir(mounted.mnt)
    assert "good" in names and len(names) == 1
    assert (mounted.mnt / "good").read_text() == "good"


def test_moved_name_is_refused(mounted: Mount) -> None:
    (mounted.mnt / "a").mkdir()
    (mounted.mnt / "b").mkdir()
    (mounted.mnt / "a" / "secret").write_text("s")
    vol = Volume.unlock(str(mounted.backing), passphrase=PASSWORD.encode(), read_only=True)
    src = mounted.backing / vol.backing_path_of("/a/secret")
    os.rename(src, mounted.backing / vol.storage_path_of("/b") / src.name)
    assert os.listdir(mounted.mnt / "b") == []
    assert os.listdir(mounted.mnt / "a") == []
