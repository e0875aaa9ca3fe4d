"""File content cipher: header, per-file keys, block encryption and size arithmetic.

Pure: bytes in, bytes out, randomness injectable. Layout in docs/FORMAT.md §4:
``header(18) || block_0 || ... || block_n``, each block ``R(24) || tag(16) || ct``,
the last block always shorter than the block size.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable

from nacl._sodium import ffi, lib

from .errors import IntegrityError

FORMAT_VERSION = 2
HEADER_LEN = 18
NONCE_LEN = 24
TAG_LEN = 16
BLOCK_OVERHEAD = NONCE_LEN + TAG_LEN
_VERSION_BYTES = struct.pack(">H", FORMAT_VERSION)
_ZERO_ID = bytes(16)

Random = Callable[[int], bytes]


class FileCipher:
    """Encrypts and decrypts the blocks of one file (one file id, one key)."""

    __slots__ = ("_rng", "_zero_block", "block_size", "key")

    def __init__(self, key: bytes, block_size: int, rng: Random, zero_block: bytes) -> None:
        self.key = key
        self.block_size = block_size
        self._rng = rng
        self._zero_block = zero_block

    def encrypt_block(self, index: int, plain: bytes) -> bytes:
        """``R || SecretBox(FK, R xor index, plain)`` with fresh random R."""
        out = bytearray(len(plain) + BLOCK_OVERHEAD)
        self.encrypt_into(out, ffi.from_buffer("unsigned char[]", out), 0, index, plain)
        return bytes(out)

    def new_nonce(self) -> bytes:
        """A fresh random nonce R for one block write (never reused: FORMAT.md §4)."""
        return self._rng(NONCE_LEN)

    def encrypt_into(self, out: bytearray, out_c, pos: int, index: int, plain,
                     rand: bytes | None = None) -> int:
        """Encrypt ``plain`` as block ``index`` into ``out[pos:]`` (``out_c`` is its cffi
        view) under the fresh nonce ``rand`` (drawn here if not given); returns the
        position after it. Writes straight into the caller's buffer: no per-block
        allocation or copy (libsodium releases the GIL meanwhile)."""
        size = len(plain)
        if rand is None:
            rand = self._rng(NONCE_LEN)
        if len(rand) != NONCE_LEN:
            raise ValueError("nonce must be 24 bytes")
        out[pos:pos + NONCE_LEN] = rand
        src = plain if isinstance(plain, bytes) else ffi.from_buffer(plain)
        lib.crypto_secretbox_easy(out_c + pos + NONCE_LEN, src, size, _bind(rand, index),
                                  self.key)
        return pos + NONCE_LEN + TAG_LEN + size

    def decrypt_block(self, index: int, stored: bytes) -> bytes:
        """Plaintext of block ``index``; IntegrityError if it does not authenticate.

        A full-size all-zero block is a hole and reads as zeros (FORMAT.md §4).
        """
        if len(stored) < BLOCK_OVERHEAD:
            raise IntegrityError(f"block {index} is truncated ({len(stored)} bytes)")
        out = ffi.new("unsigned char[]", len(stored) - BLOCK_OVERHEAD)
        self.decrypt_into(out, 0, index, stored, ffi.from_buffer(stored), 0, len(stored))
        return bytes(ffi.buffer(out))

    def decrypt_into(self, out_c, pos: int, index: int, raw: bytes, raw_c,
                     start: int, length: int) -> int:
        """Decrypt the stored block ``raw[start:start+length]`` into the cffi buffer
        ``out_c`` at ``pos``; returns the plaintext length. IntegrityError if it does not
        authenticate (``out_c`` may then hold garbage: never hand it out)."""
        if length < BLOCK_OVERHEAD:
            raise IntegrityError(f"block {index} is truncated ({length} bytes)")
        size = length - BLOCK_OVERHEAD
        nonce = raw[start:start + NONCE_LEN]
        if lib.crypto_secretbox_open_easy(out_c + pos, raw_c + start + NONCE_LEN,
                                          length - NONCE_LEN, _bind(nonce, index),
                                          self.key) != 0:
            if length == len(self._zero_block) and \
                    raw[start:start + length] == self._zero_block:
                ffi.memmove(out_c + pos, bytes(size), size)  # a hole (FORMAT.md §4)
                return self.block_size
            raise IntegrityError(f"block {index} failed authentication")
        return size


def _bind(rand: bytes, index: int) -> bytes:
    """Effective nonce: the random nonce with the block index XORed into its last 8 bytes."""
    tail = int.from_bytes(rand[16:24], "little") ^ index
    return rand[:16] + tail.to_bytes(8, "little")


class ContentCipher:
    """Knows the content key and block size; hands out per-file ciphers."""

    def __init__(self, content_key: bytes, block_size: int, rng: Random = os.urandom) -> None:
        self.content_key = content_key
        self.block_size = block_size
        self.stored_block = block_size + BLOCK_OVERHEAD
        self.rng = rng
        self._zero_block = bytes(self.stored_block)

    # -- headers and keys --------------------------------------------------------------
    def new_header(self) -> bytes:
        file_id = self.rng(16)
        while file_id == _ZERO_ID:
            file_id = self.rng(16)
        return _VERSION_BYTES + file_id

    @staticmethod
    def parse_header(header: bytes) -> bytes:
        """The file id in ``header``; IntegrityError if the header is not valid."""
        if len(header) != HEADER_LEN:
            raise IntegrityError("file header is truncated")
        if header[:2] != _VERSION_BYTES:
            raise IntegrityError(f"file header version {header[:2].hex()} is not supported")
        file_id = header[2:]
        if file_id == _ZERO_ID:
            raise IntegrityError("file header has an all-zero file id")
        return file_id

    def file_cipher(self, header: bytes) -> FileCipher:
        file_id = self.parse_header(header)
        key = hashlib.blake2b(file_id, key=self.content_key, digest_size=32).digest()
        return FileCipher(key, self.block_size, self.rng, self._zero_block)

    # -- size arithmetic -----------------------------------------------------------------
    def plain_size(self, backing_size: int) -> int:
        """Plaintext size from the backing size alone; IntegrityError if impossible."""
        if backing_size < HEADER_LEN + BLOCK_OVERHEAD:
            raise IntegrityError(f"backing file of {backing_size} bytes is truncated")
        full, rest = divmod(backing_size - HEADER_LEN, self.stored_block)
        if rest < BLOCK_OVERHEAD:
            raise IntegrityError(
                f"backing file of {backing_size} bytes ends at a block boundary (truncated)"
            )
        return full * self.block_size + rest - BLOCK_OVERHEAD

    def plain_size_or_zero(self, backing_size: int) -> int:
        """For getattr: an invalid file shows as its best-guess size, never an error."""
        try:
            return self.plain_size(backing_size)
        except IntegrityError:
            if backing_size <= HEADER_LEN:
                return 0
            full, rest = divmod(backing_size - HEADER_LEN, self.stored_block)
            return full * self.block_size + max(rest - BLOCK_OVERHEAD, 0)

    def backing_size(self, plain_size: int) -> int:
        full, rest = divmod(plain_size, self.block_size)
        return HEADER_LEN + full * self.stored_block + rest + BLOCK_OVERHEAD

    def block_offset(self, index: int) -> int:
        return HEADER_LEN + index * self.stored_block
