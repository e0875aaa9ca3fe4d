"""Name cipher: encrypted entry names, directory ids and storage folder names.

Pure: no filesystem access. Layout in docs/FORMAT.md §5.1 and §6.1: a name is sealed with
the SIV of ``siv.py`` under its directory's id, so it is deterministic (two devices agree),
authenticated, bound to its directory, padded to 16-byte buckets and written in lowercase
base32 (52 characters for names of up to 16 bytes).
"""

from __future__ import annotations

import errno
import hashlib
import struct

from . import siv
from .errors import BadNameError, IntegrityError
from .keys import Subkeys

DIR_ID_LEN = 16
NAME_PADDING = 16
MAX_NAME_BYTES = 255
STORAGE_NAME_LEN = 32


def check_plain_name(name: bytes) -> None:
    """OSError with the errno Linux would give for an unusable name."""
    if len(name) > MAX_NAME_BYTES:
        raise OSError(errno.ENAMETOOLONG, "name too long")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise OSError(errno.EINVAL, "invalid name")


def encrypted_length(name_len: int) -> int:
    """Characters of the encrypted form of a ``name_len``-byte name (FORMAT.md §6.1)."""
    raw = siv.TAG_LEN + name_len + (-name_len % NAME_PADDING)
    return (raw * 8 + 4) // 5


class NameCipher:
    """Encrypts names within a directory; derives directory ids and storage names."""

    def __init__(self, keys: Subkeys) -> None:
        self._mac = keys.name_mac
        self._enc = keys.name_enc
        self._dir_id_key = keys.dir_id
        self._storage_key = keys.storage
        self.root_id = hashlib.blake2b(b"root", key=self._dir_id_key,
                                       digest_size=DIR_ID_LEN).digest()

    # -- directories -----------------------------------------------------------------
    def child_id(self, parent_id: bytes, generation: int, name: bytes) -> bytes:
        """Id of directory ``name`` made in ``parent_id`` at ``generation`` (FORMAT.md §5.1)."""
        return hashlib.blake2b(parent_id + struct.pack("<I", generation) + name,
                               key=self._dir_id_key, digest_size=DIR_ID_LEN).digest()

    def storage_name(self, dir_id: bytes) -> str:
        """The 32-character name of a directory's storage folder."""
        return siv.b32encode(hashlib.blake2b(dir_id, key=self._storage_key,
                                             digest_size=20).digest())

    # -- entry names -------------------------------------------------------------------
    def encrypt(self, dir_id: bytes, name: bytes) -> str:
        """``E(dir, name)``: the full encrypted form of ``name`` in directory ``dir_id``."""
        check_plain_name(name)
        padded = name + b"\0" * (-len(name) % NAME_PADDING)
        return siv.b32encode(siv.seal(self._mac, self._enc, dir_id, padded))

    def decrypt(self, dir_id: bytes, encrypted: str) -> bytes:
        """Plain name of ``encrypted``; BadNameError unless it was made for this directory."""
        try:
            raw = siv.b32decode(encrypted)
        except ValueError:
            raise BadNameError("not a cryptfs name (bad base32)") from None
        body = len(raw) - siv.TAG_LEN
        if body <= 0 or body % NAME_PADDING:
            raise BadNameError("not a cryptfs name (bad length)")
        try:
            padded = siv.open_(self._mac, self._enc, dir_id, raw)
        except IntegrityError:
            raise BadNameError("name does not authenticate in this directory") from None
        name = padded.rstrip(b"\0")
        if len(padded) - len(name) >= NAME_PADDING:
            raise BadNameError("name has invalid padding")
        try:
            check_plain_name(name)
        except OSError:
            raise BadNameError("decrypted name is not a valid file name") from None
        return name
