"""Blocks of one large request decrypted/encrypted on several threads: same bytes, same
nonce order, errors from any part reach the caller."""

from __future__ import annotations

import itertools
import os
import random
import threading
from pathlib import Path

import pytest

from cryptfs import parallel
from cryptfs.errors import IntegrityError
from cryptfs.volume import ROOT_INO, Volume
from tests.conftest import PASSWORD


@pytest.fixture(params=[0, 1, 3])
def helpers(request):
    parallel.set_helpers(request.param)
    yield request.param
    parallel.set_helpers(max(0, min(3, (os.cpu_count() or 1) - 1)))


@pytest.mark.parametrize("count", [0, 1, 7, 8, 16, 17, 64, 65, 1000])
def test_run_split_covers_each_index_once(helpers: int, count: int) -> None:
    seen: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def work(a: int, b: int) -> None:
        with lock:
            seen.extend(range(a, b))
            threads.add(threading.current_thread().name)

    parallel.run_split(5, 5 + count, work)
    assert sorted(seen) == list(range(5, 5 + count))
    if helpers and count >= 2 * parallel.MIN_BLOCKS_PER_PART:
        assert len(threads) > 1


def test_error_in_a_helper_part_reaches_the_caller(helpers: int) -> None:
    finished: list[tuple[int, int]] = []

    def work(a: int, b: int) -> None:
        if a <= 60 < b:
            raise IntegrityError("block 60 failed authentication")
        finished.append((a, b))

    with pytest.raises(IntegrityError, match="block 60"):
        parallel.run_split(0, 64, work)
    # every other part still ran to the end before the error was raised
    assert sorted(finished) == [p for p in _parts(64, helpers) if not p[0] <= 60 < p[1]]


def _parts(count: int, helpers: int) -> list[tuple[int, int]]:
    parts = max(1, min(helpers + 1, count // parallel.MIN_BLOCKS_PER_PART))
    bounds = [count * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def _stream(seed: int):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def _write_big(base: Path, helpers_count: int) -> tuple[bytes, bytes]:
    parallel.set_helpers(helpers_count)
    vol, _ = Volume.initialize(str(base), PASSWORD.encode(), master_key=bytes(32),
                               rng=_stream(7))
    data = random.Random(3).randbytes(3 << 20 | 12345)
    vol.write_file("/big", data)
    stored = (base / vol.backing_path_of("/big")).read_bytes()
    assert vol.read_file("/big") == data
    vol.close()
    return data, stored


def test_threads_write_the_same_bytes_as_one_thread(tmp_path: Path) -> None:
    try:
        _, one = _write_big(tmp_path / "one", 0)
        _, many = _write_big(tmp_path / "many", 3)
    finally:
        parallel.set_helpers(max(0, min(3, (os.cpu_count() or 1) - 1)))
    assert one == many  # same nonces drawn in block order, same ciphertext


def test_tampered_block_in_any_part_of_a_large_read_fails(tmp_path: Path,
                                                          helpers: int) -> None:
    vol, _ = Volume.initialize(str(tmp_path / "v"), PASSWORD.encode())
    data = os.urandom(1 << 20)
    vol.write_file("/f", data)
    backing = tmp_path / "v" / vol.backing_path_of("/f")
    bs, sb = vol.content.block_size, vol.content.stored_block
    for index in (0, 31, 32, 63):
        raw = bytearray(backing.read_bytes())
        original = raw[vol.content.block_offset(index) + 30]
        raw[vol.content.block_offset(index) + 30] ^= 0x01
        backing.write_bytes(bytes(raw))
        fh = vol.open(vol.resolve("/f"), os.O_RDONLY)
        try:
            with pytest.raises(IntegrityError, match=f"block {index} "):
                vol.read(fh, 0, 1 << 20)
            other = 0 if index >= 32 else 48
            assert vol.read(fh, other * bs, 8 * bs) == data[other * bs:(other + 8) * bs]
        finally:
            vol.release(fh)
        raw[vol.content.block_offset(index) + 30] = original
        backing.write_bytes(bytes(raw))
    assert sb == bs + 40
    assert vol.read_file("/f") == data


def test_unaligned_reads_with_holes_into_a_buffer(tmp_path: Path, helpers: int) -> None:
    from nacl._sodium import ffi

    vol, _ = Volume.initialize(str(tmp_path / "v"), PASSWORD.encode())
    bs = vol.content.block_size
    model = bytearray(random.Random(1).randbytes(40 * bs + 123))
    fh, _ = vol.create(ROOT_INO, b"f", 0o644, os.O_RDWR)
    vol.write(fh, 0, bytes(model))
    vol.write(fh, 100 * bs, b"tail")  # blocks 41..99 become holes
    model.extend(bytes(100 * bs - len(model)))
    model += b"tail"
    rng = random.Random(2)
    for _ in range(200):
        offset = rng.randrange(0, len(model) + bs)
        size = rng.choice([1, 4096, bs - 1, bs, bs + 1, 1 << 20, 3 << 20])
        dest = ffi.new("unsigned char[]", size)
        count = vol._handles[fh].node.of.read_into(offset, size, dest)
        assert bytes(ffi.buffer(dest, count)) == bytes(model[offset:offset + size])
        assert vol.read(fh, offset, size) == bytes(model[offset:offset + size])
    vol.release(fh)
