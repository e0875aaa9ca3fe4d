"""The Volume API without FUSE: random write/truncate sequences against a model,
directory operations, long names, tampering, hostile backing entries."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cryptfs.errors import IntegrityError
from cryptfs.volume import Volume
from tests.conftest import PASSWORD

BS = 4096


class FileModel(RuleBasedStateMachine):
    """Random writes, truncates and reopens of files compared with a bytearray."""

    @initialize(tmp=st.just(None))
    def setup(self, tmp) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.vol, _ = Volume.initialize(os.path.join(self.dir, "v"), PASSWORD.encode(),
                                        block_size=BS)
        self.model = {"/a": bytearray(), "/b": bytearray()}
        self.fh = {p: self.vol.create(p, 0o644, os.O_RDWR) for p in self.model}

    def teardown(self) -> None:
        if hasattr(self, "vol"):
            self.vol.close()
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    paths = st.sampled_from(["/a", "/b"])
    offsets = st.one_of(st.integers(0, 5 * BS), st.sampled_from([BS - 1, BS, BS + 1, 2 * BS]))

    @rule(p=paths, off=offsets, data=st.binary(min_size=1, max_size=3 * BS))
    def write(self, p: str, off: int, data: bytes) -> None:
        self.vol.write(self.fh[p], data, off)
        m = self.model[p]
        if off > len(m):
            m.extend(bytes(off - len(m)))
        m[off:off + len(data)] = data

    @rule(p=paths, length=offsets)
    def truncate(self, p: str, length: int) -> None:
        self.vol.truncate(p, length, self.fh[p])
        m = self.model[p]
        if length < len(m):
            del m[length:]
        else:
            m.extend(bytes(length - len(m)))

    @rule(p=paths, off=offsets, size=st.integers(1, 3 * BS))
    def read(self, p: str, off: int, size: int) -> None:
        assert self.vol.read(self.fh[p], size, off) == bytes(self.model[p][off:off + size])

    @rule(p=paths)
    def reopen(self, p: str) -> None:
        self.vol.release(self.fh[p])
        self.fh[p] = self.vol.open(p, os.O_RDWR)

    @invariant()
    def sizes_match(self) -> None:
        if hasattr(self, "vol"):
            for p, m in self.model.items():
                assert self.vol.getattr(p)["st_size"] == len(m)
                backing = os.path.getsize(self.vol.mapper.path(p))
                assert backing == self.vol.content.backing_size(len(m))


FileModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
TestFileModel = FileModel.TestCase


def test_sparse_file_costs_little_disk(volume: Volume) -> None:
    fh = volume.create("/sparse", 0o644, os.O_RDWR)
    five_gib = 5 << 30
    volume.write(fh, b"end", five_gib)
    volume.release(fh)
    st = os.stat(volume.mapper.path("/sparse"))
    assert volume.getattr("/sparse")["st_size"] == five_gib + 3
    assert st.st_blocks * 512 < 1 << 20
    fh = volume.open("/sparse", os.O_RDONLY)
    assert volume.read(fh, 10, 12345678) == bytes(10)
    assert volume.read(fh, 10, five_gib - 2) == b"\0\0end"
    volume.release(fh)


def test_directories_and_renames(volume: Volume) -> None:
    volume.mkdir("/d")
    volume.mkdir("/d/e")
    volume.write_file("/d/e/f", b"data")
    with pytest.raises(OSError) as info:
        volume.rmdir("/d")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        volume.mkdir("/d")
    volume.rename("/d", "/moved")
    assert volume.read_file("/moved/e/f") == b"data"
    with pytest.raises(FileNotFoundError):
        volume.getattr("/d/e/f")
    volume.write_file("/target", b"old")
    volume.rename("/moved/e/f", "/target")
    assert volume.read_file("/target") == b"data"
    volume.rmdir("/moved/e")
    assert volume.listdir("/moved") == []


def test_long_names_everywhere(volume: Volume) -> None:
    long_a, long_b = "a" * 255, "ü" * 127
    volume.mkdir("/" + long_a)
    volume.write_file(f"/{long_a}/{long_b}", b"x")
    assert volume.listdir("/") == [long_a]
    assert volume.listdir("/" + long_a) == [long_b]
    volume.rename(f"/{long_a}/{long_b}", f"/{long_a}/short")
    volume.link(f"/{long_a}/{long_b}", f"/{long_a}/short")
    assert sorted(volume.listdir("/" + long_a)) == sorted([long_b, "short"])
    volume.unlink(f"/{long_a}/{long_b}")
    volume.unlink(f"/{long_a}/short")
    volume.rmdir("/" + long_a)
    assert sorted(os.listdir(volume.backing)) == ["cryptfs.conf", "cryptfs.diriv"]


def test_exchange_and_noreplace(volume: Volume) -> None:
    volume.write_file("/x", b"X")
    volume.write_file("/y", b"Y")
    with pytest.raises(FileExistsError):
        volume.rename("/x", "/y", 1)
    volume.rename("/x", "/y", 2)
    assert volume.read_file("/x") == b"Y" and volume.read_file("/y") == b"X"
    with pytest.raises(OSError) as info:
        volume.rename("/x", "/y", 4)
    assert info.value.errno == errno.EINVAL


def test_foreign_entries_are_skipped(volume: Volume, caplog) -> None:
    volume.write_file("/real", b"1")
    for junk in ("notes.txt", "QUJD", "A" * 80, "cryptfs.L.garbage"):
        Path(volume.backing, junk).write_text("junk")
    assert volume.listdir("/") == ["real"]
    assert "skipping undecodable entry" in caplog.text


def test_name_moved_to_another_directory_is_refused(volume: Volume) -> None:
    volume.mkdir("/d1")
    volume.mkdir("/d2")
    volume.write_file("/d1/secret", b"s")
    src = volume.mapper.path("/d1/secret")
    os.rename(src, os.path.join(volume.mapper.path("/d2"), os.path.basename(src)))
    assert volume.listdir("/d2") == []


def test_tampered_block_gives_integrity_error_only_there(volume: Volume) -> None:
    data = os.urandom(3 * volume.content.block_size + 100)
    volume.write_file("/f", data)
    path = volume.mapper.path("/f")
    with open(path, "r+b") as fh:
        fh.seek(volume.content.block_offset(1) + 50)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 1]))
    fh = volume.open("/f", os.O_RDONLY)
    bs = volume.content.block_size
    assert volume.read(fh, bs, 0) == data[:bs]
    assert volume.read(fh, bs, 2 * bs) == data[2 * bs:3 * bs]
    with pytest.raises(IntegrityError):
        volume.read(fh, 10, bs + 5)
    volume.release(fh)


def test_swapped_blocks_and_copied_bodies_fail(volume: Volume) -> None:
    bs, sb = volume.content.block_size, volume.content.stored_block
    volume.write_file("/f", os.urandom(3 * bs))
    volume.write_file("/g", os.urandom(3 * bs))
    pf, pg = volume.mapper.path("/f"), volume.mapper.path("/g")
    raw = bytearray(Path(pf).read_bytes())
    b0, b1 = raw[18:18 + sb], raw[18 + sb:18 + 2 * sb]
    raw[18:18 + sb], raw[18 + sb:18 + 2 * sb] = b1, b0
    Path(pf).write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        volume.read_file("/f")
    body = Path(pg).read_bytes()[18:]
    header_f = Path(pf).read_bytes()[:18]
    Path(pf).write_bytes(header_f + body)
    with pytest.raises(IntegrityError):
        volume.read_file("/f")


def test_truncation_detected_at_every_cut(volume: Volume) -> None:
    bs = volume.content.block_size
    data = os.urandom(2 * bs + 7)
    volume.write_file("/f", data)
    path = volume.mapper.path("/f")
    full = Path(path).read_bytes()
    step = 13
    for cut in list(range(0, len(full), step)) + [18 + i * volume.content.stored_block
                                                   for i in range(3)]:
        Path(path).write_bytes(full[:cut])
        with pytest.raises(IntegrityError):
            volume.read_file("/f")
    Path(path).write_bytes(full)
    assert volume.read_file("/f") == data


def test_read_only_volume_refuses_writes(tmp_path: Path, volume: Volume) -> None:
    volume.write_file("/f", b"x")
    ro = Volume.unlock(volume.backing, passphrase=PASSWORD.encode(), read_only=True)
    assert ro.read_file("/f") == b"x"
    for call in (lambda: ro.write_file("/g", b"y"), lambda: ro.mkdir("/d"),
                 lambda: ro.unlink("/f"), lambda: ro.truncate("/f", 0)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EROFS


def test_zero_length_backing_file_is_invalid_until_truncated(volume: Volume) -> None:
    volume.write_file("/f", b"content")
    Path(volume.mapper.path("/f")).write_bytes(b"")
    assert volume.getattr("/f")["st_size"] == 0
    with pytest.raises(IntegrityError):
        volume.read_file("/f")
    volume.write_file("/f", b"again")  # O_TRUNC rewrites a valid file
    assert volume.read_file("/f") == b"again"


def test_symlink_escape_in_backing_is_not_followed(volume: Volume, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cryptfs.diriv").write_bytes(b"x" * 16)
    volume.mkdir("/d")
    real = volume.mapper.path("/d")
    os.rename(real, real + ".bak")
    os.symlink(outside, real)
    volume.mapper.clear_caches()
    with pytest.raises(OSError) as info:
        volume.write_file("/d/file", b"escape")
    assert info.value.errno == errno.ENOTDIR
    assert os.listdir(outside) == ["cryptfs.diriv"]


def test_two_devices_create_the_same_directory_identically(tmp_path: Path) -> None:
    """Offline mkdir of the same path on two clones yields the same backing tree, so a
    sync tool merging them keeps every name decodable (FORMAT.md §5.2)."""
    import shutil

    vol_a, key = Volume.initialize(str(tmp_path / "a"), PASSWORD.encode())
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    vol_b = Volume.unlock(str(tmp_path / "b"), master_key=key)
    for vol, fname in ((vol_a, "from-a"), (vol_b, "from-b")):
        vol.mkdir("/Shared")
        vol.mkdir("/Shared/Photos")
        vol.write_file(f"/Shared/Photos/{fname}", fname.encode())
    a_dir, b_dir = vol_a.mapper.path("/Shared/Photos"), vol_b.mapper.path("/Shared/Photos")
    assert os.path.relpath(a_dir, vol_a.backing) == os.path.relpath(b_dir, vol_b.backing)
    # merge b into a the way a sync tool would
    for name in os.listdir(b_dir):
        if not os.path.exists(os.path.join(a_dir, name)):
            shutil.copy2(os.path.join(b_dir, name), a_dir)
    vol_a.mapper.clear_caches()
    assert vol_a.listdir("/Shared/Photos") == ["from-a", "from-b"]
    assert vol_a.read_file("/Shared/Photos/from-b") == b"from-b"


def test_appends_near_the_end_match_a_model(tmp_path: Path) -> None:
    """The last block's plaintext is kept between writes (no re-decrypt on append): it
    must never disagree with what is on disk, whatever mix of appends, overwrites near
    the end, truncates and O_TRUNC reopens happens."""
    import random

    rng = random.Random(5)
    vol, _ = Volume.initialize(str(tmp_path / "v"), PASSWORD.encode(), block_size=BS)
    fh = vol.create("/log", 0o644, os.O_RDWR)
    model = bytearray()
    for step in range(1500):
        kind = rng.random()
        if kind < 0.6:
            data = rng.randbytes(rng.choice([1, 7, 100, 2048, BS - 1, BS, BS + 3]))
            vol.write(fh, data, len(model))
            model += data
        elif kind < 0.8:
            off = max(0, len(model) - rng.randrange(0, 2 * BS + 1))
            data = rng.randbytes(rng.randrange(1, 3 * BS))
            vol.write(fh, data, off)
            model[off:off + len(data)] = data
        elif kind < 0.95:
            length = max(0, len(model) + rng.randrange(-2 * BS, BS))
            vol.truncate("/log", length, fh)
            del model[length:]
            model.extend(bytes(length - len(model)))
        else:
            vol.release(fh)
            fh = vol.open("/log", os.O_RDWR | (os.O_TRUNC if rng.random() < 0.3 else 0))
            if vol._handles[fh].flags & os.O_TRUNC:
                model.clear()
        if step % 25 == 0 or kind >= 0.95:
            fresh = Volume.unlock(str(tmp_path / "v"), passphrase=PASSWORD.encode())
            assert fresh.read_file("/log") == bytes(model), f"step {step}"
            fresh.close()
    vol.release(fh)
    assert vol.read_file("/log") == bytes(model)
