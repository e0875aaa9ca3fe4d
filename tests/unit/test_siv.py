"""SIV (docs/FORMAT.md §1.1) and the lowercase base32 codec (§1): round trips, the
composition recomputed from the spec, every bit flip and every truncation rejected,
canonical base32 only."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_secretbox_easy

from cryptfs import siv
from cryptfs.errors import IntegrityError

KM = bytes(range(32))
KE = bytes(range(32, 64))
B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def spec_seal(km: bytes, ke: bytes, ad: bytes, m: bytes) -> bytes:
    """FORMAT.md §1.1, written from the text: T || (m XOR XS(Ke, T || 0^8, len m))."""
    t = hashlib.blake2b(struct.pack("<I", len(ad)) + ad + m, key=km, digest_size=16).digest()
    xs = crypto_secretbox_easy(bytes(len(m)), t + bytes(8), ke)[16:]
    return t + bytes(a ^ b for a, b in zip(m, xs))


# -- SIV -----------------------------------------------------------------------------------
@given(st.binary(max_size=64), st.binary(max_size=300))
def test_roundtrip_and_spec_composition(ad: bytes, m: bytes) -> None:
    sealed = siv.seal(KM, KE, ad, m)
    assert sealed == spec_seal(KM, KE, ad, m)
    assert len(sealed) == siv.TAG_LEN + len(m)
    assert siv.open_(KM, KE, ad, sealed) == m


def test_deterministic_and_distinct() -> None:
    assert siv.seal(KM, KE, b"ad", b"msg") == siv.seal(KM, KE, b"ad", b"msg")
    outs = {siv.seal(KM, KE, ad, m) for ad in (b"", b"a", b"b") for m in (b"", b"x", b"y")}
    assert len(outs) == 9


def test_empty_message_is_the_tag_alone() -> None:
    sealed = siv.seal(KM, KE, b"ad", b"")
    assert len(sealed) == siv.TAG_LEN
    assert siv.open_(KM, KE, b"ad", sealed) == b""
    with pytest.raises(IntegrityError):
        siv.open_(KM, KE, b"other", sealed)


def test_ad_length_prefix_separates_ad_from_message() -> None:
    """Without LE32(len ad) the tags of (ad="ab", m="c") and (ad="a", m="bc") collide."""
    a = siv.seal(KM, KE, b"ab", b"c")
    b = siv.seal(KM, KE, b"a", b"bc")
    assert a[:16] != b[:16]
    with pytest.raises(IntegrityError):
        siv.open_(KM, KE, b"a", a)


def test_wrong_ad_or_keys_rejected() -> None:
    sealed = siv.seal(KM, KE, b"dir-1", b"payload")
    for km, ke, ad in ((KM, KE, b"dir-2"), (KM, KE, b""), (KE, KM, b"dir-1"),
                       (bytes(32), KE, b"dir-1"), (KM, bytes(32), b"dir-1")):
        with pytest.raises(IntegrityError):
            siv.open_(km, ke, ad, sealed)


@pytest.mark.parametrize("m", [b"", b"x", b"sixteen bytes!!!", bytes(range(100))])
def test_every_bit_flip_rejected(m: bytes) -> None:
    sealed = siv.seal(KM, KE, b"ad", m)
    for pos in range(len(sealed)):
        for bit in range(8):
            bad = bytearray(sealed)
            bad[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                siv.open_(KM, KE, b"ad", bytes(bad))


@pytest.mark.parametrize("m", [b"", b"x", bytes(range(50))])
def test_every_truncation_and_extension_rejected(m: bytes) -> None:
    sealed = siv.seal(KM, KE, b"ad", m)
    for cut in range(len(sealed)):
        with pytest.raises(IntegrityError):
            siv.open_(KM, KE, b"ad", sealed[:cut])
    for extra in (b"\0", b"\x01", bytes(16)):
        with pytest.raises(IntegrityError):
            siv.open_(KM, KE, b"ad", sealed + extra)


def test_keystream_is_secretbox_of_zeros() -> None:
    for n in (0, 1, 31, 32, 33, 1000):
        nonce = bytes(range(24))
        assert siv.keystream(KE, nonce, n) == crypto_secretbox_easy(bytes(n), nonce, KE)[16:]


_SODIUM = ctypes.util.find_library("sodium")


@pytest.mark.skipif(_SODIUM is None, reason="no system libsodium to cross-check XSalsa20")
def test_keystream_is_xsalsa20_bytes_32_on() -> None:
    """FORMAT.md §1: XS(key, nonce, n) = XSalsa20 keystream bytes 32..32+n (checked with
    the raw stream function of the system libsodium, not through secretbox)."""
    lib = ctypes.CDLL(_SODIUM)
    n, nonce = 200, bytes(range(7, 31))
    buf = ctypes.create_string_buffer(n + 32)
    assert lib.crypto_stream_xsalsa20(buf, ctypes.c_ulonglong(n + 32), nonce, KE) == 0
    assert siv.keystream(KE, nonce, n) == buf.raw[32:]


# -- base32 --------------------------------------------------------------------------------
@given(st.binary(max_size=300))
def test_b32_roundtrip_is_lowercase_rfc4648(data: bytes) -> None:
    text = siv.b32encode(data)
    assert text == base64.b32encode(data).decode().rstrip("=").lower()
    assert set(text) <= set(B32_ALPHABET)
    if data:
        assert siv.b32decode(text) == data


def test_b32_lengths() -> None:
    for n in range(0, 40):
        assert len(siv.b32encode(bytes(n))) == (n * 8 + 4) // 5


@pytest.mark.parametrize("bad", [
    "", "A", "MZXW6", "mzxw6=", "mzxw6===", "mzxw6 ", " mzxw6", "mzx w6", "mzxw1", "mzxw8",
    "mzxw0", "mzxw_", "mzxw.", "mzxw-", "mzxwé", "a", "abc", "abcdef", "abcdefghi",
])
def test_b32_rejects_non_canonical_or_foreign(bad: str) -> None:
    with pytest.raises(ValueError):
        siv.b32decode(bad)


def test_b32_rejects_nonzero_trailing_bits_exhaustively() -> None:
    """For every data length 1..12, every last character other than the canonical one is
    refused, even when it decodes to the same bytes (non-canonical encodings)."""
    for n in range(1, 13):
        data = bytes(range(1, n + 1))
        text = siv.b32encode(data)
        accepted = []
        for c in B32_ALPHABET:
            candidate = text[:-1] + c
            try:
                siv.b32decode(candidate)
            except ValueError:
                continue
            accepted.append(candidate)
        unused = (len(text) * 5) - n * 8  # trailing bits that must be zero
        assert text in accepted
        assert len(accepted) == 32 >> unused, (n, accepted)
        for candidate in accepted:
            assert siv.b32encode(siv.b32decode(candidate)) == candidate


def test_b32_case_folding_never_aliases() -> None:
    text = siv.b32encode(b"hello world")
    with pytest.raises(ValueError):
        siv.b32decode(text.upper())
    with pytest.raises(ValueError):
        siv.b32decode(text[:-1] + text[-1].upper())
