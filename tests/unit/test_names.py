"""The name cipher (docs/FORMAT.md §5.1, §6.1): round trips, directory binding, the
padding/length table, lowercase base32 only, every flip/substitution/truncation of an
encrypted name rejected, post-decryption checks, directory ids and storage names."""

from __future__ import annotations

import base64
import errno
import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptfs import keys, siv
from cryptfs.errors import BadNameError
from cryptfs.names import MAX_NAME_BYTES, NameCipher, check_plain_name, encrypted_length

MK = bytes(range(32))
SK = keys.Subkeys.derive(MK)
NC = NameCipher(SK)
ROOT = NC.root_id
SUB = NC.child_id(ROOT, 0, b"sub")
B32 = set("abcdefghijklmnopqrstuvwxyz234567")

names = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


def _forge(dir_id: bytes, padded: bytes) -> str:
    """An authentic encrypted name of arbitrary bytes (what only a key holder can make)."""
    return siv.b32encode(siv.seal(SK.name_mac, SK.name_enc, dir_id, padded))


# -- round trips and binding ---------------------------------------------------------------
@given(names)
@settings(max_examples=300)
def test_roundtrip_any_name(name: bytes) -> None:
    enc = NC.encrypt(ROOT, name)
    assert NC.decrypt(ROOT, enc) == name
    assert set(enc) <= B32, "only lowercase base32: no '_', '.', '-', '=' or capitals"
    assert len(enc) == encrypted_length(len(name))


def test_deterministic_and_directory_bound() -> None:
    assert NC.encrypt(ROOT, b"report.pdf") == NC.encrypt(ROOT, b"report.pdf")
    assert NC.encrypt(ROOT, b"report.pdf") != NC.encrypt(SUB, b"report.pdf")
    for other in (SUB, NC.child_id(ROOT, 1, b"sub"), bytes(16), ROOT[:15], ROOT + b"\0"):
        with pytest.raises(BadNameError):
            NC.decrypt(other, NC.encrypt(ROOT, b"report.pdf"))


def test_other_vault_names_are_refused() -> None:
    other = NameCipher(keys.Subkeys.derive(bytes(32)))
    with pytest.raises(BadNameError):
        NC.decrypt(ROOT, other.encrypt(ROOT, b"hello"))


def test_unicode_255_bytes() -> None:
    name = ("é" * 127 + "x").encode()
    assert len(name) == 255
    enc = NC.encrypt(ROOT, name)
    assert len(enc) == 436
    assert NC.decrypt(ROOT, enc) == name


def test_distinct_under_case_folding() -> None:
    """Case-insensitive clouds (Windows, macOS, OneDrive) must never merge two names."""
    encs = [NC.encrypt(ROOT, f"file-{i}".encode()) for i in range(3000)]
    encs += [NC.encrypt(ROOT, f"FILE-{i}".encode()) for i in range(3000)]
    assert all(e == e.lower() for e in encs)
    assert len({e.casefold() for e in encs}) == len(encs)


# -- lengths -----------------------------------------------------------------------------------
SPEC_TABLE = {(1, 16): 52, (17, 32): 77, (33, 48): 103, (241, 255): 436}


def test_length_table_of_the_spec() -> None:
    for (lo, hi), chars in SPEC_TABLE.items():
        for n in range(lo, hi + 1):
            assert len(NC.encrypt(ROOT, b"a" * n)) == chars, n


def test_every_length_follows_the_bucket_formula() -> None:
    for n in range(1, MAX_NAME_BYTES + 1):
        raw = 16 + 16 * ((n + 15) // 16)
        chars = -(-raw * 8 // 5)
        assert encrypted_length(n) == chars
        assert len(NC.encrypt(ROOT, bytes([0x41 + n % 26]) * n)) == chars, n
    assert len({encrypted_length(n) for n in range(1, 256)}) == 16


# -- rejection ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [b"x", b"sixteen-bytes!!!", b"seventeen bytes!!", b"n" * 255])
def test_every_bit_flip_of_the_sealed_name_rejected(name: bytes) -> None:
    raw = siv.b32decode(NC.encrypt(ROOT, name))
    for pos in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[pos] ^= 1 << bit
            with pytest.raises(BadNameError):
                NC.decrypt(ROOT, siv.b32encode(bytes(bad)))


@pytest.mark.parametrize("name", [b"x", b"n" * 255])
def test_every_character_substitution_rejected(name: bytes) -> None:
    enc = NC.encrypt(ROOT, name)
    for pos in range(len(enc)):
        for c in "abcdefghijklmnopqrstuvwxyz234567ABZ_.-=0189 ":
            if c == enc[pos]:
                continue
            with pytest.raises(BadNameError):
                NC.decrypt(ROOT, enc[:pos] + c + enc[pos + 1:])


@pytest.mark.parametrize("name", [b"x", b"y" * 40, b"n" * 255])
def test_every_truncation_and_deletion_rejected(name: bytes) -> None:
    enc = NC.encrypt(ROOT, name)
    for cut in range(len(enc)):
        with pytest.raises(BadNameError):
            NC.decrypt(ROOT, enc[:cut])
        with pytest.raises(BadNameError):
            NC.decrypt(ROOT, enc[:cut] + enc[cut + 1:])
    for extra in ("a", "aa", "q" * 8, "=", ".d"):
        with pytest.raises(BadNameError):
            NC.decrypt(ROOT, enc + extra)


def test_non_canonical_base32_rejected() -> None:
    """A 52-character name carries 4 unused bits: the 15 other spellings that decode to
    the same bytes must not be accepted (one file, one name)."""
    enc = NC.encrypt(ROOT, b"hello")
    assert len(enc) == 52
    raw = siv.b32decode(enc)

    def lenient(text: str) -> bytes:  # the stdlib ignores trailing bits
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))

    aliases = [enc[:-1] + c for c in sorted(B32)
               if c != enc[-1] and lenient(enc[:-1] + c) == raw]
    assert len(aliases) == 15
    for cand in aliases:
        with pytest.raises(BadNameError):
            NC.decrypt(ROOT, cand)
    with pytest.raises(BadNameError):
        NC.decrypt(ROOT, enc.upper())


@pytest.mark.parametrize("padded, why", [
    (b"a" + bytes(31), "16 or more NUL bytes of padding"),
    (bytes(16), "empty name"),
    (b"a\0b" + bytes(13), "NUL inside the name"),
    (b"a/b" + bytes(13), "slash inside the name"),
    (b"." + bytes(15), "dot"),
    (b".." + bytes(14), "dot-dot"),
    (b"x" * 256, "256 bytes"),
    (b"abc", "not a multiple of 16"),
    (b"a" * 17, "not a multiple of 16"),
    (b"", "no body at all"),
])
def test_authentic_but_invalid_plaintext_rejected(padded: bytes, why: str) -> None:
    with pytest.raises(BadNameError):
        NC.decrypt(ROOT, _forge(ROOT, padded))


@given(st.text(max_size=500))
def test_garbage_never_decrypts_and_never_crashes(text: str) -> None:
    with pytest.raises(BadNameError):
        NC.decrypt(ROOT, text)


@pytest.mark.parametrize("bad, code", [
    (b"", errno.EINVAL), (b".", errno.EINVAL), (b"..", errno.EINVAL), (b"a/b", errno.EINVAL),
    (b"/", errno.EINVAL), (b"a\0b", errno.EINVAL), (b"x" * 256, errno.ENAMETOOLONG),
])
def test_invalid_plain_names(bad: bytes, code: int) -> None:
    with pytest.raises(OSError) as info:
        NC.encrypt(ROOT, bad)
    assert info.value.errno == code
    with pytest.raises(OSError):
        check_plain_name(bad)


@pytest.mark.parametrize("ok", [b"...", b". ", b" .", b"-", b"\xff\xfe", b"a" * 255, b"\n"])
def test_unusual_but_valid_names(ok: bytes) -> None:
    check_plain_name(ok)
    assert NC.decrypt(ROOT, NC.encrypt(ROOT, ok)) == ok


# -- directory ids and storage names ---------------------------------------------------------------
def test_root_and_child_ids_follow_the_spec() -> None:
    assert ROOT == hashlib.blake2b(b"root", key=SK.dir_id, digest_size=16).digest()
    assert SUB == hashlib.blake2b(ROOT + struct.pack("<I", 0) + b"sub", key=SK.dir_id,
                                  digest_size=16).digest()


def test_child_ids_depend_on_parent_generation_and_name() -> None:
    ids = {NC.child_id(p, g, n) for p in (ROOT, SUB) for g in (0, 1, 2, 1 << 31)
           for n in (b"a", b"b", b"ab")}
    assert len(ids) == 24
    assert NC.child_id(ROOT, 0, b"x") == NC.child_id(ROOT, 0, b"x")
    assert all(len(i) == 16 for i in ids)


def test_storage_names() -> None:
    seen = set()
    for i in range(2000):
        s = NC.storage_name(NC.child_id(ROOT, 0, str(i).encode()))
        assert len(s) == 32 and set(s) <= B32
        seen.add(s)
    assert len(seen) == 2000
    assert NC.storage_name(ROOT) == siv.b32encode(
        hashlib.blake2b(ROOT, key=SK.storage, digest_size=20).digest())
    assert NC.storage_name(ROOT) != NameCipher(keys.Subkeys.derive(bytes(32))).storage_name(ROOT)
