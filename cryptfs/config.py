"""The vault config file ``cryptfs.conf``: parse, validate, unlock, write atomically.

Validation happens before the KDF runs (absurd costs are refused without allocating),
and the whole file is authenticated with a MAC under a subkey of the master key once the
key is known (docs/FORMAT.md §3).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open_easy
from nacl.exceptions import CryptoError

from . import keys, layout
from .errors import ConfigError, WrongPassphraseError

CONFIG_NAME = "cryptfs.conf"
BACKUP_NAME = "cryptfs.conf.bak"  # exists only while cryptfs passwd runs
CONFIG_VERSION = 2
FORMAT_VERSION = 2
CIPHER = "xsalsa20-poly1305"
KDF_ALGORITHM = "argon2id13"
MAX_CONFIG_BYTES = 64 * 1024
DEFAULT_BLOCK_SIZE = 16384
DEFAULT_MAX_PATH = layout.DEFAULT_MAX_PATH
VAULT_ID_LEN = 16
VAULT_ID_BYTES = VAULT_ID_LEN
KNOWN_FEATURES: frozenset[str] = frozenset()

_FIELDS = {
    # vault_id: the vault's identity (16 random bytes chosen at init, covered by the MAC):
    # a sync only ever talks to a remote that holds this same vault (sync/identity.py).
    "cryptfs": int, "format_version": int, "cipher": str, "vault_id": str,
    "block_size": int, "max_path": int, "features": list, "kdf": dict,
    "wrapped_master_key": str, "mac": str,
}


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Strict, canonical URL-safe base64 without padding; ValueError otherwise."""
    if not isinstance(text, str) or not text.isascii() or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class VaultConfig:
    """The parsed, validated config. Holds no secrets: the master key stays wrapped."""

    vault_id: bytes
    block_size: int
    max_path: int
    kdf: keys.KdfParams
    wrapped_master_key: bytes
    mac: bytes = b""
    features: tuple[str, ...] = field(default_factory=tuple)

    # -- serialisation -------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        return {
            "cryptfs": CONFIG_VERSION,
            "format_version": FORMAT_VERSION,
            "cipher": CIPHER,
            "vault_id": b64u_encode(self.vault_id),
            "block_size": self.block_size,
            "max_path": self.max_path,
            "features": list(self.features),
            "kdf": {
                "algorithm": KDF_ALGORITHM,
                "opslimit": self.kdf.opslimit,
                "memlimit": self.kdf.memlimit,
                "salt": b64u_encode(self.kdf.salt),
            },
            "wrapped_master_key": b64u_encode(self.wrapped_master_key),
        }

    def to_json(self) -> bytes:
        body = self._body()
        body["mac"] = self.mac.hex()
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    def compute_mac(self, master_key: bytes) -> bytes:
        mac_key = keys.derive_subkey(master_key, "config-mac")
        return hashlib.blake2b(_canonical(self._body()), key=mac_key, digest_size=32).digest()

    def sealed(self, master_key: bytes) -> VaultConfig:
        return replace(self, mac=self.compute_mac(master_key))

    # -- unlocking -----------------------------------------------------------------
    def verify_master_key(self, master_key: bytes) -> None:
        if not keys.mac_equal(self.compute_mac(master_key), self.mac):
            raise WrongPassphraseError(
                "the key does not match this vault's config (wrong recovery key, or the "
                "config file was altered)"
            )

    def unlock(self, passphrase: bytes) -> bytes:
        """Master key for ``passphrase``; WrongPassphraseError if it does not open."""
        kek = keys.passphrase_kek(passphrase, self.kdf)
        nonce, box = self.wrapped_master_key[:24], self.wrapped_master_key[24:]
        try:
            master_key = crypto_secretbox_open_easy(box, nonce, kek)
        except CryptoError:
            raise WrongPassphraseError("wrong passphrase") from None
        if len(master_key) != keys.KEY_BYTES:
            raise ConfigError("wrapped master key has the wrong length")
        try:
            self.verify_master_key(master_key)
        except WrongPassphraseError:
            raise ConfigError(
                "config file failed authentication: it was altered or corrupted"
            ) from None
        return master_key

    def rewrap(self, master_key: bytes, passphrase: bytes,
               kdf: keys.KdfParams | None = None) -> VaultConfig:
        """A new config wrapping the same master key under a new passphrase."""
        kdf = kdf or keys.KdfParams.fresh()
        wrapped = _wrap(master_key, passphrase, kdf)
        return replace(self, kdf=kdf, wrapped_master_key=wrapped).sealed(master_key)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def create(cls, master_key: bytes, passphrase: bytes, *,
               block_size: int = DEFAULT_BLOCK_SIZE,
               max_path: int = DEFAULT_MAX_PATH,
               kdf: keys.KdfParams | None = None,
               wrap_nonce: bytes | None = None,
               vault_id: bytes | None = None) -> VaultConfig:
        kdf = kdf or keys.KdfParams.fresh()
        vault_id = vault_id or os.urandom(VAULT_ID_LEN)
        cfg = cls(vault_id, block_size, max_path, kdf,
                  _wrap(master_key, passphrase, kdf, wrap_nonce))
        cfg.check_layout()
        return cfg.sealed(master_key)

    def check_layout(self) -> None:
        b = self.block_size
        if not (4096 <= b <= 1 << 20 and b & (b - 1) == 0):
            raise ConfigError(f"block_size {b} must be a power of two in 4096..1048576")
        lo, hi = layout.MIN_MAX_PATH, layout.MAX_MAX_PATH
        if not lo <= self.max_path <= hi:
            raise ConfigError(f"max_path {self.max_path} must be in {lo}..{hi}")
        if len(self.vault_id) != VAULT_ID_LEN:
            raise ConfigError("vault_id must be 16 bytes")
        unknown = set(self.features) - KNOWN_FEATURES
        if unknown:
            raise ConfigError(
                f"vault uses features this cryptfs does not know: {sorted(unknown)}; "
                "upgrade cryptfs"
            )
        if len(self.wrapped_master_key) != 24 + 16 + keys.KEY_BYTES:
            raise ConfigError("wrapped_master_key has the wrong length")

    @classmethod
    def parse(cls, raw: bytes) -> VaultConfig:
        """Validate everything that can be validated without the passphrase."""
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError("config file is too large")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"config file is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ConfigError("config file is not a JSON object")
        if obj.get("cryptfs") == 1 or obj.get("format_version") == 1:
            raise ConfigError(
                "this vault uses format 1 (cryptfs 0.1), which this version no longer "
                "reads; mount it with cryptfs 0.1 and copy its files into a new vault "
                "made with 'cryptfs init'"
            )
        if set(obj) != set(_FIELDS):
            missing = sorted(set(_FIELDS) - set(obj))
            extra = sorted(set(obj) - set(_FIELDS))
            raise ConfigError(f"config fields wrong (missing {missing}, unknown {extra})")
        for name, typ in _FIELDS.items():
            if type(obj[name]) is not typ:
                raise ConfigError(f"config field {name!r} must be {typ.__name__}")
        if obj["cryptfs"] != CONFIG_VERSION:
            raise ConfigError(f"config version {obj['cryptfs']} is not supported")
        if obj["format_version"] != FORMAT_VERSION:
            raise ConfigError(f"format version {obj['format_version']} is not supported")
        if obj["cipher"] != CIPHER:
            raise ConfigError(f"cipher {obj['cipher']!r} is not supported")
        kdf = obj["kdf"]
        if set(kdf) != {"algorithm", "opslimit", "memlimit", "salt"}:
            raise ConfigError("config 'kdf' must have algorithm, opslimit, memlimit, salt")
        if kdf["algorithm"] != KDF_ALGORITHM:
            raise ConfigError(f"KDF {kdf['algorithm']!r} is not supported")
        if not all(type(kdf[k]) is int for k in ("opslimit", "memlimit")):
            raise ConfigError("KDF limits must be integers")
        if not all(isinstance(f, str) for f in obj["features"]):
            raise ConfigError("features must be strings")
        try:
            salt = b64u_decode(kdf["salt"])
            vault_id = b64u_decode(obj["vault_id"])
            wrapped = b64u_decode(obj["wrapped_master_key"])
            mac = bytes.fromhex(obj["mac"])
        except (ValueError, TypeError):
            raise ConfigError("config has a malformed salt, key or mac") from None
        params = keys.KdfParams(kdf["opslimit"], kdf["memlimit"], salt)
        params.check()
        cfg = cls(vault_id, obj["block_size"], obj["max_path"], params,
                  wrapped, mac, tuple(obj["features"]))
        cfg.check_layout()
        if len(mac) != 32:
            raise ConfigError("config mac must be 32 bytes")
        return cfg

    @classmethod
    def load(cls, backing: str | os.PathLike[str]) -> VaultConfig:
        path = Path(backing) / CONFIG_NAME
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            if not Path(backing).is_dir():
                raise ConfigError(f"{backing}: no such directory") from None
            if any(True for _ in os.scandir(backing)):
                raise ConfigError(
                    f"{backing} has no {CONFIG_NAME}: if it is a vault whose config was "
                    f"lost, rebuild it with 'cryptfs recover {backing}' (from this "
                    "device's saved copy, the remote, or the recovery key); otherwise "
                    "it is not a cryptfs vault"
                ) from None
            raise ConfigError(
                f"{backing} is not a cryptfs vault (no {CONFIG_NAME}); "
                "create one with 'cryptfs init'"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        return cls.parse(raw)

    def save(self, backing: str | os.PathLike[str]) -> None:
        write_atomic(Path(backing) / CONFIG_NAME, self.to_json(), mode=0o600)


def _wrap(master_key: bytes, passphrase: bytes, kdf: keys.KdfParams,
          nonce: bytes | None = None) -> bytes:
    kek = keys.passphrase_kek(passphrase, kdf)
    nonce = nonce or os.urandom(24)
    return nonce + crypto_secretbox_easy(master_key, nonce, kek)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temp file, fsync, rename, fsync dir: a crash leaves the old or the new file."""
    tmp = path.with_name(f"cryptfs.{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
