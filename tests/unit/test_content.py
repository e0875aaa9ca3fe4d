"""The content cipher: size arithmetic, block binding, nonces, holes, headers."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptfs.content import BLOCK_OVERHEAD, HEADER_LEN, ContentCipher
from cryptfs.errors import IntegrityError

KEY = bytes(range(32))


@pytest.fixture(params=[4096, 16384])
def cc(request) -> ContentCipher:
    return ContentCipher(KEY, request.param)


@given(st.integers(min_value=0, max_value=1 << 40), st.sampled_from([4096, 16384, 65536]))
def test_size_roundtrip(size: int, bs: int) -> None:
    c = ContentCipher(KEY, bs)
    assert c.plain_size(c.backing_size(size)) == size


def test_size_worked_examples() -> None:
    c = ContentCipher(KEY, 16384)
    assert c.backing_size(0) == 58
    assert c.backing_size(1) == 59
    assert c.backing_size(16383) == 16441
    assert c.backing_size(16384) == 16482
    assert c.backing_size(16385) == 16483


def test_every_block_boundary_cut_is_refused(cc: ContentCipher) -> None:
    for blocks in range(0, 5):
        cut = HEADER_LEN + blocks * cc.stored_block
        with pytest.raises(IntegrityError):
            cc.plain_size(cut)
    for bad in range(0, HEADER_LEN + BLOCK_OVERHEAD):
        with pytest.raises(IntegrityError):
            cc.plain_size(bad)


def test_plain_size_is_monotonic_over_valid_sizes(cc: ContentCipher) -> None:
    last = -1
    for size in range(0, 3 * cc.block_size + 50, 97):
        b = cc.backing_size(size)
        assert b > last
        last = b


def test_block_roundtrip_and_fresh_nonces(cc: ContentCipher) -> None:
    fc = cc.file_cipher(cc.new_header())
    plain = os.urandom(cc.block_size)
    a, b = fc.encrypt_block(3, plain), fc.encrypt_block(3, plain)
    assert a[:24] != b[:24] and a != b, "a rewrite must use a fresh nonce"
    assert fc.decrypt_block(3, a) == plain == fc.decrypt_block(3, b)
    assert len(a) == cc.stored_block


def test_block_moved_to_another_index_fails(cc: ContentCipher) -> None:
    fc = cc.file_cipher(cc.new_header())
    stored = fc.encrypt_block(0, b"x" * cc.block_size)
    for other in (1, 2, 1 << 32, (1 << 64) - 1):
        with pytest.raises(IntegrityError):
            fc.decrypt_block(other, stored)


def test_block_copied_into_another_file_fails(cc: ContentCipher) -> None:
    f1 = cc.file_cipher(cc.new_header())
    f2 = cc.file_cipher(cc.new_header())
    stored = f1.encrypt_block(0, b"secret")
    with pytest.raises(IntegrityError):
        f2.decrypt_block(0, stored)


def test_every_bit_flip_is_detected() -> None:
    cc = ContentCipher(KEY, 4096)
    fc = cc.file_cipher(cc.new_header())
    stored = bytearray(fc.encrypt_block(5, b"hello world"))
    for pos in range(len(stored)):
        for bit in (0, 7):
            bad = bytearray(stored)
            bad[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                fc.decrypt_block(5, bytes(bad))


def test_hole_reads_zero_but_only_full_blocks(cc: ContentCipher) -> None:
    fc = cc.file_cipher(cc.new_header())
    assert fc.decrypt_block(7, bytes(cc.stored_block)) == bytes(cc.block_size)
    for short in (BLOCK_OVERHEAD, BLOCK_OVERHEAD + 10, cc.stored_block - 1):
        with pytest.raises(IntegrityError):
            fc.decrypt_block(7, bytes(short))


def test_header_validation(cc: ContentCipher) -> None:
    header = cc.new_header()
    assert header[:2] == b"\x00\x01" and len(header) == HEADER_LEN
    with pytest.raises(IntegrityError):
        cc.parse_header(b"\x00\x02" + header[2:])
    with pytest.raises(IntegrityError):
        cc.parse_header(b"\x00\x01" + bytes(16))
    with pytest.raises(IntegrityError):
        cc.parse_header(header[:10])


def test_file_ids_are_random(cc: ContentCipher) -> None:
    assert len({cc.new_header() for _ in range(100)}) == 100
