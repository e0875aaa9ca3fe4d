"""Rebuild a lost or replaced ``cryptfs.conf``.

Sources, best first: a config that opens with what the user has (the passphrase, or the
recovery key = master key) and belongs to the data in the backing directory (its key
derives the root IV stored there): this device's saved copy (kept outside the synced
tree, sync/state.py), then the remote's. With the recovery key and no such copy, a new
config is written around the same master key with a new passphrase; its block size is
found by trying every allowed size on the vault's files (only the right one
authenticates a full first block; with only small files any size reads them all the
same), names keep the defaults (the only ones ``cryptfs init`` makes).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import keys
from .config import (
    CONFIG_NAME,
    DEFAULT_BLOCK_SIZE,
    MAX_CONFIG_BYTES,
    VaultConfig,
    write_atomic,
)
from .content import HEADER_LEN, ContentCipher
from .errors import ConfigError, CryptfsError, WrongPassphraseError
from .names import DIRIV_NAME, NameCipher

log = logging.getLogger("cryptfs")
BLOCK_SIZES = [1 << n for n in range(12, 21)]


def root_iv_of(master_key: bytes) -> bytes:
    return NameCipher(*(keys.derive_subkey(master_key, c) for c in
                        ("name-siv", "name", "dir-iv", "symlink"))).root_iv()


def stored_root_iv(backing: str) -> bytes | None:
    try:
        with open(os.path.join(backing, DIRIV_NAME), "rb") as fh:
            return fh.read(17)
    except OSError:
        return None


def belongs_to_data(backing: str, master_key: bytes) -> bool:
    """True if the data in ``backing`` was written under ``master_key`` (or there is no
    root IV to tell)."""
    stored = stored_root_iv(backing)
    return stored is None or keys.mac_equal(stored, root_iv_of(master_key))


def candidates(backing: str, remote_config: Callable[[], bytes | None] | None
               ) -> list[tuple[str, bytes]]:
    """(where, raw config) to try, best first."""
    from .sync.state import local_config_copy

    found = []
    copy = local_config_copy(backing)
    try:
        found.append((f"this device's saved copy ({copy})", copy.read_bytes()))
    except OSError:
        pass
    if remote_config is not None:
        try:
            raw = remote_config()
        except CryptfsError as exc:
            log.warning("could not read the remote's config: %s", exc)
            raw = None
        if raw:
            found.append(("the remote", raw))
    return found


def find_config(backing: str, sources: list[tuple[str, bytes]], *,
                master_key: bytes | None = None, passphrase: bytes | None = None
                ) -> tuple[str, VaultConfig, bytes] | None:
    """The first source that opens with the key or passphrase and belongs to the data:
    (where, config, master key)."""
    for where, raw in sources:
        try:
            cfg = VaultConfig.parse(raw[:MAX_CONFIG_BYTES + 1])
            if master_key is not None:
                cfg.verify_master_key(master_key)
                key = master_key
            else:
                assert passphrase is not None
                key = cfg.unlock(passphrase)
        except CryptfsError:
            continue
        if belongs_to_data(backing, key):
            return where, cfg, key
    return None


def infer_block_size(backing: str, master_key: bytes) -> int:
    """The block size the vault's files were written with (see the module docstring)."""
    content_key = keys.derive_subkey(master_key, "content")
    sized = []
    for root, _dirs, files in os.walk(backing):
        for f in files:
            path = os.path.join(root, f)
            if ("." in f and not f.startswith("cryptfs.L.")) or f.endswith(".name") \
                    or os.path.islink(path):
                continue
            try:
                sized.append((os.lstat(path).st_size, path))
            except OSError:
                continue
    sized.sort(reverse=True)
    at_least = 0  # a file read whole as one last block: the block size is larger
    for size, path in sized[:20]:
        if size <= HEADER_LEN + 40 + BLOCK_SIZES[0]:
            break  # small files read the same under every block size
        with open(path, "rb") as fh:
            head = fh.read(HEADER_LEN + 40 + BLOCK_SIZES[-1])
        if not any(head[HEADER_LEN:HEADER_LEN + 40]):
            continue  # a hole: tells nothing
        cipher = None
        for block in BLOCK_SIZES:
            stored = head[HEADER_LEN:HEADER_LEN + 40 + block]
            cipher = ContentCipher(content_key, block).file_cipher(head[:HEADER_LEN])
            try:
                cipher.decrypt_block(0, stored)
            except CryptfsError:
                continue
            if len(stored) == 40 + block:
                return block
            at_least = max(at_least, len(stored) - 40)
            break
        else:
            raise ConfigError("no block size opens the vault's files with this key: is it "
                              "the recovery key of this vault?")
    for block in BLOCK_SIZES:
        if block >= DEFAULT_BLOCK_SIZE and block > at_least:
            return block
    return BLOCK_SIZES[-1]


def rebuild(backing: str, master_key: bytes, new_passphrase: bytes,
            vault_id: bytes | None = None) -> VaultConfig:
    """A new config for the same master key (a new passphrase; no data re-encrypted)."""
    if not belongs_to_data(backing, master_key):
        raise WrongPassphraseError("this recovery key does not belong to the data in "
                                   f"{backing} (its root directory IV differs)")
    return VaultConfig.create(master_key, new_passphrase,
                              block_size=infer_block_size(backing, master_key),
                              vault_id=vault_id)


def install(backing: str, raw: bytes) -> None:
    """Write ``raw`` as the vault's config; a different config already there is moved
    to this device's local state first (never deleted)."""
    from .sync.state import local_config_copy, save_local_config_copy

    path = Path(backing) / CONFIG_NAME
    try:
        old = path.read_bytes()
    except OSError:
        old = None
    if old is not None and old != raw:
        keep = local_config_copy(backing).with_suffix(f".replaced-{int(time.time())}")
        keep.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(keep, old)
        log.warning("kept the replaced config in %s", keep)
    write_atomic(path, raw)
    save_local_config_copy(backing, raw)
