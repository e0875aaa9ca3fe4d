"""Config file v2 (docs/FORMAT.md §3): fields, vault_id, max_path and block-size bounds,
format-1 configs refused by name, a MAC over every field, strict parsing, and every bound
checked before the KDF runs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from cryptfs import keys
from cryptfs.config import CONFIG_NAME, VaultConfig
from cryptfs.errors import ConfigError, WrongPassphraseError
from cryptfs.volume import Volume

MK = bytes(range(32))
WEAK = keys.KdfParams(1, 8192, b"s" * 16)
FIELDS = {"cryptfs", "format_version", "cipher", "vault_id", "block_size", "max_path",
          "features", "kdf", "wrapped_master_key", "mac"}

# The config of the format-1 test vault that cryptfs 0.1 wrote (tests/vectors/vault_v1).
FORMAT1_CONFIG = json.dumps({
    "block_size": 4096, "cipher": "xsalsa20-poly1305", "cryptfs": 1, "features": [],
    "format_version": 1,
    "kdf": {"algorithm": "argon2id13", "memlimit": 8192, "opslimit": 1,
            "salt": "Xdp6Be7d-zLBZcrvr_VxBg"},
    "long_name_max": 255,
    "mac": "e7b31778233a968a8841835e5989745e5dc5ee3b451049b9bb6b2cc50c32a565",
    "name_padding": 32,
    "wrapped_master_key": "rq47UuDV01HJlP4cjWPg_byiFGTdrjrLkF9GWD3Djd-3T23tP0twKW_21TtF79Rh"
                          "L7gOMmoi4nb98uONnjmrr-CCXLmIrpEe",
}, indent=2).encode()


def make(**kw) -> VaultConfig:
    return VaultConfig.create(MK, b"pw", kdf=WEAK, **kw)


def _obj(cfg: VaultConfig | None = None) -> dict:
    return json.loads((cfg or make()).to_json())


def _edit(field: str, value, cfg: VaultConfig | None = None) -> bytes:
    obj = _obj(cfg)
    obj[field] = value
    return json.dumps(obj).encode()


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the v2 fields -------------------------------------------------------------------------
def test_fields_and_defaults() -> None:
    obj = _obj()
    assert set(obj) == FIELDS
    assert obj["cryptfs"] == 2 and obj["format_version"] == 2
    assert obj["cipher"] == "xsalsa20-poly1305"
    assert obj["block_size"] == 16384 and obj["max_path"] == 250 and obj["features"] == []
    assert set(obj["kdf"]) == {"algorithm", "opslimit", "memlimit", "salt"}
    assert obj["kdf"]["algorithm"] == "argon2id13"
    vid = base64.urlsafe_b64decode(obj["vault_id"] + "==")
    assert len(vid) == 16 and _b64u(vid) == obj["vault_id"]
    assert len(base64.urlsafe_b64decode(obj["wrapped_master_key"] + "==")) == 24 + 16 + 32


def test_default_kdf_is_moderate(monkeypatch) -> None:
    monkeypatch.delenv("CRYPTFS_TESTONLY_WEAK_KDF", raising=False)
    params = keys.KdfParams.fresh()
    assert (params.opslimit, params.memlimit) == (3, 256 << 20)


def test_vault_id_random_or_given() -> None:
    a, b = make(), make()
    assert a.vault_id != b.vault_id and len(a.vault_id) == 16
    assert make(vault_id=b"v" * 16).vault_id == b"v" * 16
    parsed = VaultConfig.parse(make(vault_id=b"v" * 16).to_json())
    assert parsed.vault_id == b"v" * 16


def test_mac_is_blake2b_over_the_canonical_body() -> None:
    """§3, recomputed from the text: H(K_config-mac, canonical(config without mac), 32)."""
    obj = _obj(make(max_path=300, block_size=4096))
    mac = obj.pop("mac")
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True).encode()
    key = hashlib.blake2b(b"cryptfs/v2/config-mac", key=MK, digest_size=32).digest()
    assert hashlib.blake2b(canonical, key=key, digest_size=32).hexdigest() == mac


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


def test_rewrap_keeps_master_key_and_vault() -> None:
    old = make(max_path=300)
    new = old.rewrap(MK, b"new", kdf=keys.KdfParams(1, 8192, b"t" * 16))
    assert new.unlock(b"new") == MK
    assert (new.vault_id, new.max_path, new.block_size) == (old.vault_id, 300, old.block_size)
    with pytest.raises(WrongPassphraseError):
        new.unlock(b"pw")


# -- the MAC covers every field ---------------------------------------------------------------
OTHER_VALID = [
    ("block_size", 8192), ("block_size", 4096), ("max_path", 251), ("max_path", 80),
    ("max_path", 4096), ("vault_id", _b64u(b"w" * 16)),
]


@pytest.mark.parametrize("field, value", OTHER_VALID)
def test_tampered_fields_fail_the_mac(field: str, value) -> None:
    cfg = VaultConfig.parse(_edit(field, value))
    with pytest.raises(ConfigError, match="altered"):
        cfg.unlock(b"pw")
    with pytest.raises(WrongPassphraseError):
        cfg.verify_master_key(MK)


@pytest.mark.parametrize("sub, value", [("opslimit", 2), ("memlimit", 16384),
                                        ("salt", _b64u(b"u" * 16))])
def test_tampered_kdf_parameters(sub: str, value) -> None:
    """A changed KDF parameter gives another KEK (wrong passphrase) and, for a recovery
    key that skips the KDF, a MAC mismatch."""
    obj = _obj()
    obj["kdf"][sub] = value
    cfg = VaultConfig.parse(json.dumps(obj).encode())
    with pytest.raises(WrongPassphraseError):
        cfg.unlock(b"pw")
    with pytest.raises(WrongPassphraseError):
        cfg.verify_master_key(MK)


def test_tampered_wrapped_key_and_mac() -> None:
    obj = _obj()
    raw = bytearray(base64.urlsafe_b64decode(obj["wrapped_master_key"] + "=="))
    for pos in (0, 23, 24, 39, 40, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 1
        with pytest.raises(WrongPassphraseError):
            VaultConfig.parse(_edit("wrapped_master_key", _b64u(bytes(bad)))).unlock(b"pw")
    mac = bytearray(bytes.fromhex(obj["mac"]))
    for pos in range(32):
        bad = bytearray(mac)
        bad[pos] ^= 0x80
        cfg = VaultConfig.parse(_edit("mac", bad.hex()))
        with pytest.raises(ConfigError):
            cfg.unlock(b"pw")
        with pytest.raises(WrongPassphraseError):
            cfg.verify_master_key(MK)


# -- strict parsing -----------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"2", b'"x"', b"\xff\xfe", b"{}",
                                 b"x" * 70000, b" " * 65536 + b"{}"])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        VaultConfig.parse(raw)


def test_a_large_but_valid_file_is_read() -> None:
    raw = make().to_json()
    assert VaultConfig.parse(raw + b" " * (65536 - len(raw))).unlock(b"pw") == MK


@pytest.mark.parametrize("field, value", [
    ("cryptfs", 3), ("cryptfs", "2"), ("cryptfs", True), ("cryptfs", 2.0),
    ("format_version", 9), ("format_version", 3), ("cipher", "aes"), ("cipher", None),
    ("block_size", 1000), ("block_size", 2048), ("block_size", 12288),
    ("block_size", 2 << 20), ("block_size", "16384"), ("block_size", 16384.0),
    ("max_path", 79), ("max_path", 4097), ("max_path", 0), ("max_path", -250),
    ("max_path", "250"), ("max_path", None), ("max_path", True),
    ("vault_id", _b64u(b"v" * 15)), ("vault_id", _b64u(b"v" * 17)), ("vault_id", ""),
    ("vault_id", 5), ("vault_id", _b64u(b"v" * 16) + "="), ("vault_id", "dnZ2dnZ2dnZ2dnZ2dnZ2dx"),
    ("features", ["future-thing"]), ("features", "x"), ("features", [1]),
    ("mac", "zz"), ("mac", "00" * 31), ("mac", "00" * 33), ("mac", 0),
    ("wrapped_master_key", "!!"), ("wrapped_master_key", _b64u(bytes(71))),
    ("wrapped_master_key", _b64u(bytes(73))), ("kdf", {}), ("kdf", []),
])
def test_wrong_values_are_refused(field: str, value) -> None:
    with pytest.raises(ConfigError):
        VaultConfig.parse(_edit(field, value))


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_each_missing_field_is_refused(field: str) -> None:
    obj = _obj()
    del obj[field]
    with pytest.raises(ConfigError):
        VaultConfig.parse(json.dumps(obj).encode())


@pytest.mark.parametrize("field", ["extra", "name_padding", "long_name_max", "MAC"])
def test_unknown_field_is_refused(field: str) -> None:
    with pytest.raises(ConfigError):
        VaultConfig.parse(_edit(field, 1))


@pytest.mark.parametrize("edit", [
    {"algorithm": "argon2i13"}, {"algorithm": 1}, {"opslimit": "3"}, {"memlimit": 8192.0},
    {"salt": _b64u(b"s" * 15)}, {"salt": _b64u(b"s" * 17)}, {"salt": 16}, {"extra": 1},
])
def test_bad_kdf_objects_are_refused(edit: dict) -> None:
    obj = _obj()
    obj["kdf"].update(edit)
    with pytest.raises(ConfigError):
        VaultConfig.parse(json.dumps(obj).encode())


@pytest.mark.parametrize("sub", ["algorithm", "opslimit", "memlimit", "salt"])
def test_missing_kdf_field_is_refused(sub: str) -> None:
    obj = _obj()
    del obj["kdf"][sub]
    with pytest.raises(ConfigError):
        VaultConfig.parse(json.dumps(obj).encode())


@pytest.mark.parametrize("mp", [80, 81, 250, 1000, 4096])
def test_max_path_bounds_accepted(mp: int) -> None:
    cfg = VaultConfig.parse(make(max_path=mp).to_json())
    assert cfg.max_path == mp and cfg.unlock(b"pw") == MK


@pytest.mark.parametrize("mp", [0, 79, 4097, 1 << 20])
def test_max_path_out_of_bounds_refused_at_create(mp: int) -> None:
    with pytest.raises(ConfigError):
        make(max_path=mp)


@pytest.mark.parametrize("bs", [4096, 8192, 16384, 1 << 20])
def test_block_size_bounds_accepted(bs: int) -> None:
    assert VaultConfig.parse(make(block_size=bs).to_json()).block_size == bs


# -- format 1 -------------------------------------------------------------------------------
def test_format1_config_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="format 1"):
        VaultConfig.parse(FORMAT1_CONFIG)


@pytest.mark.parametrize("field", ["cryptfs", "format_version"])
def test_either_version_field_at_1_means_format_1(field: str) -> None:
    with pytest.raises(ConfigError, match="format 1"):
        VaultConfig.parse(_edit(field, 1))


def test_format1_vault_is_refused_by_unlock(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_bytes(FORMAT1_CONFIG)
    (tmp_path / "cryptfs.diriv").write_bytes(bytes(16))
    with pytest.raises(ConfigError, match="format 1"):
        Volume.unlock(str(tmp_path), passphrase=b"vector")
    with pytest.raises(ConfigError, match="format 1"):
        Volume.unlock(str(tmp_path), master_key=MK)


# -- bounds before the KDF --------------------------------------------------------------------
@pytest.fixture
def kdf_calls(monkeypatch) -> list[tuple]:
    """Records every Argon2id run instead of silently paying for it."""
    calls: list[tuple] = []
    real = keys.crypto_pwhash_alg

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(keys, "crypto_pwhash_alg", spy)
    return calls


def test_kdf_spy_sees_a_normal_unlock(kdf_calls: list) -> None:
    cfg = VaultConfig.parse(make().to_json())
    kdf_calls.clear()
    assert cfg.unlock(b"pw") == MK
    assert len(kdf_calls) == 1


@pytest.mark.parametrize("ops, mem", [(10**9, 8192), (17, 8192), (0, 8192), (-1, 8192),
                                      (1, 1 << 50), (1, (4 << 30) + 1), (1, 8191), (1, 10),
                                      (1, -8192)])
def test_absurd_kdf_costs_are_refused_before_running(kdf_calls: list, ops: int,
                                                     mem: int) -> None:
    obj = _obj()
    obj["kdf"]["opslimit"], obj["kdf"]["memlimit"] = ops, mem
    raw = json.dumps(obj).encode()
    kdf_calls.clear()
    with pytest.raises(ConfigError):
        VaultConfig.parse(raw)
    with pytest.raises(ConfigError):
        keys.passphrase_kek(b"pw", keys.KdfParams(ops, mem, b"s" * 16))
    assert kdf_calls == []


@pytest.mark.parametrize("field, value", [("max_path", 5000), ("vault_id", _b64u(b"v" * 3)),
                                          ("block_size", 3), ("features", ["x"])])
def test_layout_bounds_refused_before_the_kdf(kdf_calls: list, field: str, value) -> None:
    raw = _edit(field, value)
    kdf_calls.clear()
    with pytest.raises(ConfigError):
        VaultConfig.parse(raw)
    assert kdf_calls == []


@pytest.mark.parametrize("ops, mem", [(1, 8192), (16, 8192), (1, 4 << 30)])
def test_kdf_bounds_are_inclusive(ops: int, mem: int) -> None:
    keys.KdfParams(ops, mem, b"s" * 16).check()


# -- files --------------------------------------------------------------------------------------
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
    assert len(text.split("-")) == 8 and all(len(g) == 8 for g in text.split("-"))
    assert keys.parse_recovery_key(text) == MK
    assert keys.parse_recovery_key(text.upper().replace("-", " ")) == MK
    for bad in ("abc", "zz" * 32, "00" * 31, "00" * 33):
        with pytest.raises(ConfigError):
            keys.parse_recovery_key(bad)


def test_subkeys_are_distinct_and_follow_the_spec() -> None:
    assert len(keys.SUBKEY_CONTEXTS) == 16
    subs = {keys.derive_subkey(MK, c) for c in keys.SUBKEY_CONTEXTS}
    assert len(subs) == len(keys.SUBKEY_CONTEXTS)
    for c in keys.SUBKEY_CONTEXTS:
        assert keys.derive_subkey(MK, c) == hashlib.blake2b(
            b"cryptfs/v2/" + c.encode(), key=MK, digest_size=32).digest()
    with pytest.raises(ValueError):
        keys.derive_subkey(MK, "other")
    sk = keys.Subkeys.derive(MK)
    assert sk.name_mac == keys.derive_subkey(MK, "name-mac")
    assert sk.xattr_loc == keys.derive_subkey(MK, "xattr-loc")
    assert keys.derive_subkey(MK, "config-mac") not in set(vars(sk).values())
    assert keys.derive_subkey(MK, "sync-record") not in set(vars(sk).values())


def test_wrap_nonce_is_fresh() -> None:
    assert make().wrapped_master_key[:24] != make().wrapped_master_key[:24]
