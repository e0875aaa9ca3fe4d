"""Key derivation: passphrase -> KEK (Argon2id), master key -> subkeys (keyed BLAKE2b).

Every subkey has its own context string so that no key serves two purposes; the
contexts are part of the on-disk format (docs/FORMAT.md §2) and must never change.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from nacl.bindings import crypto_pwhash_alg, crypto_pwhash_ALG_ARGON2ID13

from .errors import ConfigError

KEY_BYTES = 32
SUBKEY_PREFIX = b"cryptfs/v2/"
SUBKEY_CONTEXTS = (
    "content", "name-mac", "name-enc", "dir-id", "storage", "dirref-mac", "dirref-enc",
    "backref-mac", "backref-enc", "node-mac", "node-enc", "symlink", "xattr", "xattr-loc",
    "config-mac", "sync-record",
)

# Bounds checked before the KDF runs, so a hostile config cannot make us allocate
# terabytes or spin for hours.
OPSLIMIT_RANGE = (1, 16)
MEMLIMIT_RANGE = (8192, 4 << 30)

# libsodium's MODERATE level: ~0.5 s on a 2-core VM.
DEFAULT_OPSLIMIT = 3
DEFAULT_MEMLIMIT = 256 << 20
# Only for tests and the demo, selected by CRYPTFS_TESTONLY_WEAK_KDF=1 at init time.
WEAK_OPSLIMIT = 1
WEAK_MEMLIMIT = 8192


def derive_subkey(master_key: bytes, context: str) -> bytes:
    """One 32-byte subkey of the master key for one purpose."""
    if context not in SUBKEY_CONTEXTS:
        raise ValueError(f"unknown subkey context {context!r}")
    return hashlib.blake2b(
        SUBKEY_PREFIX + context.encode(), key=master_key, digest_size=KEY_BYTES
    ).digest()


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters as stored in the config file."""

    opslimit: int
    memlimit: int
    salt: bytes

    def check(self) -> None:
        lo, hi = OPSLIMIT_RANGE
        if not (isinstance(self.opslimit, int) and lo <= self.opslimit <= hi):
            raise ConfigError(f"KDF opslimit {self.opslimit!r} outside {lo}..{hi}")
        lo, hi = MEMLIMIT_RANGE
        if not (isinstance(self.memlimit, int) and lo <= self.memlimit <= hi):
            raise ConfigError(f"KDF memlimit {self.memlimit!r} outside {lo}..{hi}")
        if len(self.salt) != 16:
            raise ConfigError("KDF salt must be 16 bytes")

    @classmethod
    def fresh(cls, weak: bool | None = None) -> KdfParams:
        if weak is None:
            weak = os.environ.get("CRYPTFS_TESTONLY_WEAK_KDF") == "1"
        if weak:
            return cls(WEAK_OPSLIMIT, WEAK_MEMLIMIT, os.urandom(16))
        return cls(DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT, os.urandom(16))


def passphrase_kek(passphrase: bytes, params: KdfParams) -> bytes:
    """The key-encryption key for ``passphrase``; refuses out-of-range parameters first."""
    params.check()
    return crypto_pwhash_alg(
        KEY_BYTES, passphrase, params.salt, params.opslimit, params.memlimit,
        crypto_pwhash_ALG_ARGON2ID13,
    )


def mac_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison for MACs and synthetic IVs."""
    return hmac.compare_digest(a, b)


def format_recovery_key(master_key: bytes) -> str:
    """Master key as 8 groups of 8 hex digits, for writing on paper."""
    hx = master_key.hex()
    return "-".join(hx[i : i + 8] for i in range(0, len(hx), 8))


def parse_recovery_key(text: str) -> bytes:
    """Inverse of ``format_recovery_key``; tolerant of spaces, dashes and case."""
    cleaned = "".join(ch for ch in text if ch not in " -\t\n:").lower()
    try:
        key = bytes.fromhex(cleaned)
    except ValueError as exc:
        raise ConfigError("recovery key must be 64 hexadecimal digits") from exc
    if len(key) != KEY_BYTES:
        raise ConfigError("recovery key must be 64 hexadecimal digits")
    return key


@dataclass(frozen=True)
class Subkeys:
    """Every subkey of one master key, derived once (docs/FORMAT.md §2)."""

    content: bytes
    name_mac: bytes
    name_enc: bytes
    dir_id: bytes
    storage: bytes
    dirref_mac: bytes
    dirref_enc: bytes
    backref_mac: bytes
    backref_enc: bytes
    node_mac: bytes
    node_enc: bytes
    symlink: bytes
    xattr: bytes
    xattr_loc: bytes

    @classmethod
    def derive(cls, master_key: bytes) -> Subkeys:
        return cls(*(derive_subkey(master_key, ctx) for ctx in SUBKEY_CONTEXTS
                     if ctx not in ("config-mac", "sync-record")))
