"""The small objects of a vault: directory entries, back-references, symlinks, special
nodes and extended-attribute sets.

Pure: bytes in, bytes out, randomness injectable. Layouts in docs/FORMAT.md §5.3, §5.4,
§7, §8 and §9. Every object starts with ``BE16(2)``; every failure to authenticate or
parse raises ``IntegrityError`` (EIO for a FUSE caller).
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Callable, Mapping

from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open_easy
from nacl.exceptions import CryptoError

from . import siv
from .errors import IntegrityError
from .keys import Subkeys
from .names import DIR_ID_LEN

VERSION = b"\x00\x02"
NONCE_LEN = 24
MAX_SYMLINK_TARGET = 4095  # PATH_MAX - 1
SYMLINK_PADDING = 32
XATTR_NAME_MAX = 255
XATTR_VALUE_MAX = 65536
XATTR_TOTAL_MAX = 256 * 1024
XATTR_PADDING = 256
DIRREF_LEN = 2 + siv.TAG_LEN + DIR_ID_LEN

Random = Callable[[int], bytes]


def _strip_version(blob: bytes, what: str) -> bytes:
    if blob[:2] != VERSION:
        raise IntegrityError(f"{what} has an unknown version or is truncated")
    return blob[2:]


class ObjectCipher:
    """Seals and opens the structural objects of one vault."""

    def __init__(self, keys: Subkeys, rng: Random = os.urandom) -> None:
        self._k = keys
        self._rng = rng

    # -- directory entries (FORMAT.md §5.3) --------------------------------------------
    def seal_dirref(self, dir_id: bytes) -> bytes:
        return VERSION + siv.seal(self._k.dirref_mac, self._k.dirref_enc, b"", dir_id)

    def open_dirref(self, blob: bytes) -> bytes:
        """The directory id an ``E.d`` entry points to."""
        dir_id = siv.open_(self._k.dirref_mac, self._k.dirref_enc, b"",
                           _strip_version(blob, "directory entry"))
        if len(dir_id) != DIR_ID_LEN:
            raise IntegrityError("directory entry holds an id of the wrong length")
        return dir_id

    # -- back-references (FORMAT.md §5.4) ----------------------------------------------
    def seal_backref(self, storage_name: str, dir_id: bytes, parent_id: bytes | None,
                     name: bytes) -> bytes:
        msg = dir_id if parent_id is None else dir_id + parent_id + name
        return VERSION + siv.seal(self._k.backref_mac, self._k.backref_enc,
                                  storage_name.encode("ascii"), msg)

    def open_backref(self, storage_name: str, blob: bytes
                     ) -> tuple[bytes, bytes | None, bytes]:
        """(dir id, parent id, name) from the back-reference of storage folder
        ``storage_name``; parent None (and name b"") for the root. The caller checks that
        ``storage_name`` is the storage name of the returned dir id."""
        msg = siv.open_(self._k.backref_mac, self._k.backref_enc,
                        storage_name.encode("ascii"), _strip_version(blob, "back-reference"))
        if len(msg) == DIR_ID_LEN:
            return msg, None, b""
        if len(msg) <= 2 * DIR_ID_LEN:
            raise IntegrityError("back-reference is truncated")
        return msg[:DIR_ID_LEN], msg[DIR_ID_LEN:2 * DIR_ID_LEN], msg[2 * DIR_ID_LEN:]

    # -- symlinks (FORMAT.md §7) ---------------------------------------------------------
    def seal_symlink(self, target: bytes) -> bytes:
        if len(target) > MAX_SYMLINK_TARGET:
            raise OSError(errno.ENAMETOOLONG, "symlink target too long")
        if not target or b"\0" in target:
            raise OSError(errno.ENOENT if not target else errno.EINVAL,
                          "invalid symlink target")
        padded = target + b"\0" * (-len(target) % SYMLINK_PADDING)
        nonce = self._rng(NONCE_LEN)
        return VERSION + nonce + crypto_secretbox_easy(padded, nonce, self._k.symlink)

    def open_symlink(self, blob: bytes) -> bytes:
        body = _strip_version(blob, "symlink")
        try:
            padded = crypto_secretbox_open_easy(body[NONCE_LEN:], body[:NONCE_LEN],
                                                self._k.symlink)
        except (CryptoError, ValueError):
            raise IntegrityError("symlink target failed authentication") from None
        target = padded.rstrip(b"\0")
        if not target or b"\0" in target or len(padded) - len(target) >= SYMLINK_PADDING:
            raise IntegrityError("symlink target has invalid padding")
        return target

    # -- special nodes (FORMAT.md §8) ----------------------------------------------------
    def seal_node(self, mode: int, rdev: int) -> bytes:
        return VERSION + siv.seal(self._k.node_mac, self._k.node_enc, b"",
                                  struct.pack(">IQ", mode, rdev))

    def open_node(self, blob: bytes) -> tuple[int, int]:
        """(st_mode with type and permission bits, st_rdev)."""
        msg = siv.open_(self._k.node_mac, self._k.node_enc, b"",
                        _strip_version(blob, "special node"))
        if len(msg) != 12:
            raise IntegrityError("special node has the wrong length")
        mode, rdev = struct.unpack(">IQ", msg)
        return mode, rdev

    # -- extended attributes (FORMAT.md §9) ----------------------------------------------
    def xattr_storage_name(self, kind: bytes, inode_id: bytes) -> str:
        """32-character name of the xattr object of a file (``b"f"``) or dir (``b"d"``)."""
        return siv.b32encode(hashlib.blake2b(kind + inode_id, key=self._k.xattr_loc,
                                             digest_size=20).digest())

    def _xattr_key(self, kind: bytes, inode_id: bytes) -> bytes:
        return hashlib.blake2b(kind + inode_id, key=self._k.xattr, digest_size=32).digest()

    def seal_xattrs(self, kind: bytes, inode_id: bytes, attrs: Mapping[bytes, bytes]) -> bytes:
        parts = [struct.pack(">H", len(attrs))]
        for name in sorted(attrs):
            value = attrs[name]
            parts.append(struct.pack(">H", len(name)) + name
                         + struct.pack(">I", len(value)) + value)
        payload = b"".join(parts)
        payload += b"\0" * (-len(payload) % XATTR_PADDING)
        nonce = self._rng(NONCE_LEN)
        return VERSION + nonce + crypto_secretbox_easy(payload, nonce,
                                                       self._xattr_key(kind, inode_id))

    def open_xattrs(self, kind: bytes, inode_id: bytes, blob: bytes) -> dict[bytes, bytes]:
        body = _strip_version(blob, "xattr set")
        try:
            payload = crypto_secretbox_open_easy(body[NONCE_LEN:], body[:NONCE_LEN],
                                                 self._xattr_key(kind, inode_id))
        except (CryptoError, ValueError):
            raise IntegrityError("xattr set failed authentication") from None
        return _parse_xattrs(payload)


def _parse_xattrs(payload: bytes) -> dict[bytes, bytes]:
    if len(payload) < 2:
        raise IntegrityError("xattr set is truncated")
    (count,) = struct.unpack_from(">H", payload)
    pos, attrs, last = 2, {}, b""
    for _ in range(count):
        if pos + 2 > len(payload):
            raise IntegrityError("xattr set overruns its payload")
        (nlen,) = struct.unpack_from(">H", payload, pos)
        name = payload[pos + 2:pos + 2 + nlen]
        pos += 2 + nlen
        if pos + 4 > len(payload) or len(name) != nlen or not name or name <= last:
            raise IntegrityError("xattr set has a bad or unsorted name")
        (vlen,) = struct.unpack_from(">I", payload, pos)
        value = payload[pos + 4:pos + 4 + vlen]
        pos += 4 + vlen
        if len(value) != vlen:
            raise IntegrityError("xattr set overruns its payload")
        attrs[name] = value
        last = name
    if payload[pos:].strip(b"\0"):
        raise IntegrityError("xattr set has non-zero padding")
    return attrs
