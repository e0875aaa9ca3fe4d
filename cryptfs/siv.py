"""Deterministic authenticated encryption (SIV) and the lowercase base32 codec.

Pure. ``seal``/``open_`` implement docs/FORMAT.md §1.1: a 16-byte keyed-BLAKE2b tag over
``LE32(len ad) || ad || m`` is both the authenticator and the XSalsa20 nonce of the
stream that encrypts ``m`` (the SIV composition of Rogaway and Shrimpton). The keystream
is libsodium's: ``crypto_secretbox_easy`` of zeros yields exactly the XSalsa20 bytes
32.. that it XORs into a message, which is what FORMAT.md calls ``XS``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from nacl._sodium import ffi, lib

from .errors import IntegrityError

TAG_LEN = 16
_B32_ALPHABET = frozenset(b"abcdefghijklmnopqrstuvwxyz234567")


def keystream(key: bytes, nonce24: bytes, length: int) -> bytes:
    """``XS(key, nonce, length)``: XSalsa20 keystream bytes 32..32+length (FORMAT.md §1)."""
    out = ffi.new("unsigned char[]", length + 16)
    lib.crypto_secretbox_easy(out, bytes(length), length, nonce24, key)
    return bytes(ffi.buffer(out))[16:]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(data), "big")


def _tag(mac_key: bytes, ad: bytes, msg: bytes) -> bytes:
    h = hashlib.blake2b(key=mac_key, digest_size=TAG_LEN)
    h.update(struct.pack("<I", len(ad)))
    h.update(ad)
    h.update(msg)
    return h.digest()


def seal(mac_key: bytes, enc_key: bytes, ad: bytes, msg: bytes) -> bytes:
    """``tag(16) || ciphertext``; equal ``(ad, msg)`` always give equal output."""
    tag = _tag(mac_key, ad, msg)
    if not msg:
        return tag
    return tag + _xor(msg, keystream(enc_key, tag + bytes(8), len(msg)))


def open_(mac_key: bytes, enc_key: bytes, ad: bytes, sealed: bytes) -> bytes:
    """The message of ``sealed``; IntegrityError unless it was sealed with this ``ad``."""
    if len(sealed) < TAG_LEN:
        raise IntegrityError("sealed object is truncated")
    tag, body = sealed[:TAG_LEN], sealed[TAG_LEN:]
    msg = _xor(body, keystream(enc_key, tag + bytes(8), len(body))) if body else b""
    if not hmac.compare_digest(_tag(mac_key, ad, msg), tag):
        raise IntegrityError("sealed object failed authentication")
    return msg


def b32encode(data: bytes) -> str:
    """Lowercase RFC 4648 base32 without padding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    """Inverse of ``b32encode``; ValueError for anything that is not its canonical output."""
    if not text or not text.isascii() or not _B32_ALPHABET.issuperset(text.encode()):
        raise ValueError("not lowercase base32")
    if len(text) % 8 in (1, 3, 6):
        raise ValueError("impossible base32 length")
    data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    if b32encode(data) != text:
        raise ValueError("non-canonical base32")
    return data
