"""Config file: unlock, MAC, strict parsing, bounded KDF costs, atomic writes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cryptfs import keys
from cryptfs.config import CONFIG_NAME, VaultConfig
from cryptfs.errors import ConfigError, WrongPassphraseError

MK = bytes(range(32))
WEAK = keys.KdfParams(1, 8192, b"s" * 16)


def make() -> VaultConfig:
    return VaultConfig.create(MK, b"pw", kdf=WEAK)


def test_unlock_roundtrip(tmp_path: Path) -> None:
    make().save(tmp_path)
    cfg = VaultConfig.load(tmp_path)
    assert cfg.unlock(b"pw") == MK
    assert (tmp_path / CONFIG_NAME).stat().st_mode & 0o777 == 0o600


def test_wrong_passphrase() -> None:
    with pytest.raises(WrongPassphraseError):
        make().unlock(b"nope")


def test_recovery_key_checks_mac() -> None:
    cfg = make()
    cfg.verify_master_key(MK)
    with pytest.raises(WrongPassphraseError):
        cfg.verify_master_key(bytes(32))


def test_rewrap_keeps_master_key() -> None:
    new = make().rewrap(MK, b"new", kdf=keys.KdfParams(1, 8192, b"t" * 16))
    assert new.unlock(b"new") == MK
    with pytest.raises(WrongPassphraseError):
        new.unlock(b"pw")


def _edit(field: str, value) -> bytes:
    obj = json.loads(make().to_json())
    obj[field] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize("field, value", [("block_size", 8192), ("name_padding", 16),
                                          ("long_name_max", 200),
                                          ("vault_id", "AAAAAAAAAAAAAAAAAAAAAA")])
def test_tampered_layout_fields_fail_the_mac(field: str, value) -> None:
    cfg = VaultConfig.parse(_edit(field, value))
    with pytest.raises(ConfigError):
        cfg.unlock(b"pw")


def test_tampered_kdf_parameters_do_not_unlock() -> None:
    obj = json.loads(make().to_json())
    obj["kdf"]["opslimit"] = 2
    with pytest.raises(WrongPassphraseError):
        VaultConfig.parse(json.dumps(obj).encode()).unlock(b"pw")


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b"{}",
                                 b"x" * 70000])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        VaultConfig.parse(raw)


@pytest.mark.parametrize("field, value", [
    ("cryptfs", 2), ("format_version", 9), ("cipher", "aes"), ("block_size", 1000),
    ("block_size", "16384"), ("features", ["future-thing"]), ("mac", "zz"),
    ("wrapped_master_key", "!!"), ("name_padding", 7), ("kdf", {}),
    ("vault_id", "AAAA"), ("vault_id", 5), ("vault_id", "!!"),
])
def test_wrong_values_are_refused(field: str, value) -> None:
    with pytest.raises(ConfigError):
        VaultConfig.parse(_edit(field, value))


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ConfigError):
        VaultConfig.parse(_edit("extra", 1))


@pytest.mark.parametrize("ops, mem", [(10**9, 8192), (1, 1 << 50), (0, 8192), (1, 10)])
def test_absurd_kdf_costs_are_refused_before_running(ops: int, mem: int) -> None:
    obj = json.loads(make().to_json())
    obj["kdf"]["opslimit"], obj["kdf"]["memlimit"] = ops, mem
    start = time.monotonic()
    with pytest.raises(ConfigError):
        VaultConfig.parse(json.dumps(obj).encode()).unlock(b"pw")
    assert time.monotonic() - start < 5  # refused, not attempted


def test_missing_vault_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        VaultConfig.load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a cryptfs vault"):
        VaultConfig.load(tmp_path)


def test_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    make().save(tmp_path)
    make().rewrap(MK, b"x", kdf=WEAK).save(tmp_path)
    assert os.listdir(tmp_path) == [CONFIG_NAME]


def test_recovery_key_format() -> None:
    text = keys.format_recovery_key(MK)
    assert len(text.split("-")) == 8
    assert keys.parse_recovery_key(text) == MK
    assert keys.parse_recovery_key(text.upper().replace("-", " ")) == MK
    with pytest.raises(ConfigError):
        keys.parse_recovery_key("abc")


def test_subkeys_are_distinct() -> None:
    subs = {keys.derive_subkey(MK, c) for c in keys.SUBKEY_CONTEXTS}
    assert len(subs) == len(keys.SUBKEY_CONTEXTS)
    with pytest.raises(ValueError):
        keys.derive_subkey(MK, "other")


def test_vault_id_is_random_16_bytes_and_survives_rewrap_and_save(tmp_path: Path) -> None:
    a, b = make(), make()
    assert len(a.vault_id) == 16 and a.vault_id != b.vault_id
    new = a.rewrap(MK, b"new", kdf=keys.KdfParams(1, 8192, b"t" * 16))
    assert new.vault_id == a.vault_id
    new.save(tmp_path)
    assert VaultConfig.load(tmp_path).vault_id == a.vault_id


def test_config_without_vault_id_is_refused() -> None:
    obj = json.loads(make().to_json())
    del obj["vault_id"]
    with pytest.raises(ConfigError, match="vault_id"):
        VaultConfig.parse(json.dumps(obj).encode())


def test_missing_config_in_a_used_directory_points_to_recover(tmp_path: Path) -> None:
    (tmp_path / "cryptfs.diriv").write_bytes(bytes(16))
    with pytest.raises(ConfigError, match="cryptfs recover"):
        VaultConfig.load(tmp_path)
