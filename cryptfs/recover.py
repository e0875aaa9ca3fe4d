"""Rebuild a lost or replaced ``cryptfs.conf``.

Sources, best first: a config that opens with what the user has (the passphrase, or the
recovery key = master key) and belongs to the data in the backing directory (its key
derives the root IV stored there): this device's saved copy (kept outside the synced
tree, sync/state.py), then the remote's. With the recovery key and no such copy, a new
config is written around the same master key with a new passphrase; its block size is
found by trying every allowed size on the vault's files (only the right one
authenticates a full first block; with only small files any size reads them all the
same), and its path budget from the names (FORMAT.md §6.3).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import keys, layout
from .config import (
    CONFIG_NAME,
    DEFAULT_BLOCK_SIZE,
    MAX_CONFIG_BYTES,
    VaultConfig,
    write_atomic,
)
from .content import HEADER_LEN, ContentCipher
from .errors import ConfigError, CryptfsError, WrongPassphraseError
from .names import NameCipher
from .objects import ObjectCipher

log = logging.getLogger("cryptfs")
BLOCK_SIZES = [1 << n for n in range(12, 21)]


def _root_marker(master_key: bytes) -> tuple[str, bytes]:
    """(path, content) of the root back-reference this master key derives."""
    subkeys = keys.Subkeys.derive(master_key)
    names, objects = NameCipher(subkeys), ObjectCipher(subkeys)
    storage_name = names.storage_name(names.root_id)
    return (f"{layout.storage_path(storage_name)}/{layout.BACKREF_NAME}",
            objects.seal_backref(storage_name, names.root_id, None, b""))


def belongs_to_data(backing: str, master_key: bytes) -> bool:
    """True if the data in ``backing`` was written under ``master_key`` (its root
    directory's storage is where this key puts it, with the back-reference only this key
    writes), or there is no data to tell."""
    if not os.path.isdir(os.path.join(backing, layout.STORAGE_ROOT)):
        return True
    path, content = _root_marker(master_key)
    try:
        with open(os.path.join(backing, path), "rb") as fh:
            return keys.mac_equal(fh.read(4097), content)
    except OSError:
        return False


def _entries(backing: str):
    """(backing path, parsed name) of every entry and sidecar in the storage folders."""
    root = os.path.join(backing, layout.STORAGE_ROOT)
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            parsed = layout.parse(f)
            if parsed is not None:
                yield os.path.join(dirpath, f), parsed


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
    for path, parsed in _entries(backing):
        if parsed.kind is not layout.Kind.FILE:
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


def infer_max_path(backing: str) -> int:
    """A path budget that stores every existing name under the stem it has (short names
    up to ``name_max``, longer ones hashed: FORMAT.md §6.3); the default if it fits."""
    longest_short, shortest_long = 0, None
    for path, parsed in _entries(backing):
        if parsed.kind is None:
            try:
                with open(path, "rb") as fh:
                    length = len(fh.read(4096).strip())
            except OSError:
                continue
            shortest_long = length if shortest_long is None else min(shortest_long, length)
        elif not parsed.is_long:
            longest_short = max(longest_short, len(parsed.stem))
    low = longest_short + 2  # name_max must hold the longest short name and a suffix
    high = shortest_long + 1 if shortest_long is not None else None  # and not a long one
    default = layout.name_max(layout.DEFAULT_MAX_PATH)
    if default >= low and (high is None or default <= high):
        return layout.DEFAULT_MAX_PATH
    return max(layout.MIN_MAX_PATH, low + layout.STORAGE_PATH_LEN + 1)


def rebuild(backing: str, master_key: bytes, new_passphrase: bytes,
            vault_id: bytes | None = None) -> VaultConfig:
    """A new config for the same master key (a new passphrase; no data re-encrypted)."""
    if not belongs_to_data(backing, master_key):
        raise WrongPassphraseError("this recovery key does not belong to the data in "
                                   f"{backing} (its root directory is not where this key "
                                   "puts it)")
    return VaultConfig.create(master_key, new_passphrase,
                              block_size=infer_block_size(backing, master_key),
                              max_path=infer_max_path(backing), vault_id=vault_id)


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
