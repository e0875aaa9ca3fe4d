"""The content cipher (docs/FORMAT.md §4, header version 2): size arithmetic, block
binding, nonces, holes, headers."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_secretbox_easy

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
    assert header[:2] == b"\x00\x02" and len(header) == HEADER_LEN == 18
    assert cc.parse_header(header) == header[2:]
    for version in (b"\x00\x01", b"\x00\x03", b"\x02\x00", b"\xff\xff", b"\x00\x00"):
        with pytest.raises(IntegrityError):
            cc.parse_header(version + header[2:])
    with pytest.raises(IntegrityError):
        cc.parse_header(b"\x00\x02" + bytes(16))
    for cut in range(HEADER_LEN):
        with pytest.raises(IntegrityError):
            cc.parse_header(header[:cut])
    with pytest.raises(IntegrityError):
        cc.parse_header(header + b"\0")


def test_all_zero_file_id_is_never_drawn() -> None:
    stream = iter([bytes(16), bytes(16), b"\x01" * 16])
    cc = ContentCipher(KEY, 4096, lambda n: next(stream))
    assert cc.new_header() == b"\x00\x02" + b"\x01" * 16


@pytest.mark.parametrize("index", [0, 1, 255, 256, 1 << 40, (1 << 64) - 1])
def test_block_is_the_spec_recomputed(index: int) -> None:
    """FORMAT.md §4 from the text: FK = H(K_content, file_id, 32),
    N_i = R[0:16] || LE64(LE64^-1(R[16:24]) XOR i), block = R || SecretBox(FK, N_i, P)."""
    cc = ContentCipher(KEY, 4096)
    header = cc.new_header()
    stored = cc.file_cipher(header).encrypt_block(index, b"block plaintext")
    fk = hashlib.blake2b(header[2:], key=KEY, digest_size=32).digest()
    r = stored[:24]
    nonce = r[:16] + (int.from_bytes(r[16:], "little") ^ index).to_bytes(8, "little")
    assert stored[24:] == crypto_secretbox_easy(b"block plaintext", nonce, fk)


def test_empty_last_block_is_authenticated(cc: ContentCipher) -> None:
    fc = cc.file_cipher(cc.new_header())
    empty = fc.encrypt_block(0, b"")
    assert len(empty) == BLOCK_OVERHEAD and fc.decrypt_block(0, empty) == b""
    for pos in range(len(empty)):
        bad = bytearray(empty)
        bad[pos] ^= 0x10
        with pytest.raises(IntegrityError):
            fc.decrypt_block(0, bytes(bad))
    with pytest.raises(IntegrityError):
        fc.decrypt_block(0, bytes(BLOCK_OVERHEAD))


def test_file_ids_are_random(cc: ContentCipher) -> None:
    assert len({cc.new_header() for _ in range(100)}) == 100
