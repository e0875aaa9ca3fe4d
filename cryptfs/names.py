"""Name cipher: deterministic, authenticated, directory-bound names; symlink targets.

Pure: no filesystem access. Layout in docs/FORMAT.md §5-6.
"""

from __future__ import annotations

import errno
import hashlib
import os

from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open_easy
from nacl.exceptions import CryptoError

from .config import b64u_decode, b64u_encode
from .errors import BadNameError
from .keys import mac_equal

DIRIV_NAME = "cryptfs.diriv"
DIRIV_LEN = 16
LONG_PREFIX = "cryptfs.L."
LONG_SUFFIX = ".name"
HIDDEN_PREFIX = "cryptfs.hidden."
FUSE_HIDDEN_PREFIX = b".fuse_hidden"
MAX_NAME_BYTES = 255
MAX_SYMLINK_TARGET = 3000
SYMLINK_PADDING = 32
SIV_LEN = 24
TAG_LEN = 16


def is_reserved(backing_name: str) -> bool:
    """Backing names cryptfs uses for itself (never produced by name encryption)."""
    return "." in backing_name


def is_long_entry(backing_name: str) -> bool:
    return backing_name.startswith(LONG_PREFIX) and not backing_name.endswith(LONG_SUFFIX)


def sidecar_of(long_entry: str) -> str:
    return long_entry + LONG_SUFFIX


def check_plain_name(name: bytes) -> None:
    """OSError with the errno Linux would give for an unusable name."""
    if len(name) > MAX_NAME_BYTES:
        raise OSError(errno.ENAMETOOLONG, "name too long")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise OSError(errno.EINVAL, "invalid name")


class NameCipher:
    """Encrypts names within a directory, derives directory IVs, encrypts symlink targets."""

    def __init__(self, siv_key: bytes, name_key: bytes, dir_iv_key: bytes,
                 symlink_key: bytes, padding: int = 32, long_name_max: int = 255,
                 rng=os.urandom) -> None:
        self._siv_key = siv_key
        self._name_key = name_key
        self._dir_iv_key = dir_iv_key
        self._symlink_key = symlink_key
        self.padding = padding
        self.long_name_max = long_name_max
        self._rng = rng

    # -- directory IVs ---------------------------------------------------------------
    def root_iv(self) -> bytes:
        return hashlib.blake2b(b"root", key=self._dir_iv_key, digest_size=DIRIV_LEN).digest()

    def child_iv(self, parent_iv: bytes, name: bytes) -> bytes:
        """Deterministic, so two devices that mkdir the same path agree (FORMAT.md §5.2)."""
        return hashlib.blake2b(parent_iv + name, key=self._dir_iv_key,
                               digest_size=DIRIV_LEN).digest()

    # -- entry names -------------------------------------------------------------------
    def _pad(self, name: bytes) -> bytes:
        return name + b"\0" * (-len(name) % self.padding)

    def _siv(self, dir_iv: bytes, padded: bytes) -> bytes:
        return hashlib.blake2b(dir_iv + padded, key=self._siv_key, digest_size=SIV_LEN).digest()

    def encrypt(self, dir_iv: bytes, name: bytes) -> str:
        """The full encrypted form E of ``name`` in the directory with IV ``dir_iv``."""
        check_plain_name(name)
        padded = self._pad(name)
        siv = self._siv(dir_iv, padded)
        return b64u_encode(siv + crypto_secretbox_easy(padded, siv, self._name_key))

    def decrypt(self, dir_iv: bytes, encrypted: str) -> bytes:
        """Plain name of ``encrypted``; BadNameError unless it was made for this directory."""
        try:
            raw = b64u_decode(encrypted)
        except ValueError:
            raise BadNameError("not a cryptfs name (bad base64)") from None
        body = len(raw) - SIV_LEN - TAG_LEN
        if body <= 0 or body % self.padding:
            raise BadNameError("not a cryptfs name (bad length)")
        siv = raw[:SIV_LEN]
        try:
            padded = crypto_secretbox_open_easy(raw[SIV_LEN:], siv, self._name_key)
        except CryptoError:
            raise BadNameError("name failed authentication") from None
        if not mac_equal(self._siv(dir_iv, padded), siv):
            raise BadNameError("name belongs to another directory")
        name = padded.rstrip(b"\0")
        if b"\0" in name or len(padded) - len(name) >= self.padding:
            raise BadNameError("name has invalid padding")
        check_name_or_integrity(name)
        return name

    def backing_name(self, dir_iv: bytes, name: bytes) -> tuple[str, str | None]:
        """(entry name in the backing dir, full encrypted name if a sidecar is needed)."""
        encrypted = self.encrypt(dir_iv, name)
        if len(encrypted) <= self.long_name_max:
            return encrypted, None
        return long_entry_name(encrypted), encrypted

    # -- symlink targets ---------------------------------------------------------------
    def encrypt_symlink(self, target: bytes) -> str:
        if len(target) > MAX_SYMLINK_TARGET:
            raise OSError(errno.ENAMETOOLONG, "symlink target too long")
        if not target or b"\0" in target:
            raise OSError(errno.EINVAL, "invalid symlink target")
        padded = target + b"\0" * (-len(target) % SYMLINK_PADDING)
        nonce = self._rng(SIV_LEN)
        return b64u_encode(nonce + crypto_secretbox_easy(padded, nonce, self._symlink_key))

    def decrypt_symlink(self, stored: str) -> bytes:
        try:
            raw = b64u_decode(stored)
            target = crypto_secretbox_open_easy(raw[SIV_LEN:], raw[:SIV_LEN], self._symlink_key)
        except (ValueError, CryptoError):
            raise BadNameError("symlink target failed authentication") from None
        target = target.rstrip(b"\0")
        if not target or b"\0" in target:
            raise BadNameError("symlink target has invalid padding")
        return target


def hidden_entry_name(name: bytes) -> str:
    """Backing name for libfuse's ``.fuse_hidden*`` files (open files that were unlinked):
    reserved, so never listed, never synced, and cleaned up by fsck after a crash."""
    return HIDDEN_PREFIX + b64u_encode(hashlib.blake2b(name, digest_size=16).digest())


def long_entry_name(encrypted: str) -> str:
    digest = hashlib.blake2b(encrypted.encode("ascii"), digest_size=32).digest()
    return LONG_PREFIX + b64u_encode(digest)


def check_name_or_integrity(name: bytes) -> None:
    try:
        check_plain_name(name)
    except OSError:
        raise BadNameError("decrypted name is not a valid file name") from None
