"""The name cipher: determinism, directory binding, padding, long names, symlinks."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptfs.errors import BadNameError
from cryptfs.names import LONG_PREFIX, NameCipher, is_reserved, long_entry_name

NC = NameCipher(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32)
IV_A = NC.root_iv()
IV_B = NC.child_iv(IV_A, b"sub")

names = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@given(names)
def test_roundtrip_any_name(name: bytes) -> None:
    enc = NC.encrypt(IV_A, name)
    assert NC.decrypt(IV_A, enc) == name
    assert not is_reserved(enc)


def test_deterministic_and_directory_bound() -> None:
    assert NC.encrypt(IV_A, b"report.pdf") == NC.encrypt(IV_A, b"report.pdf")
    assert NC.encrypt(IV_A, b"report.pdf") != NC.encrypt(IV_B, b"report.pdf")
    moved = NC.encrypt(IV_A, b"report.pdf")
    with pytest.raises(BadNameError):
        NC.decrypt(IV_B, moved)


def test_padding_hides_exact_length() -> None:
    lengths = {len(NC.encrypt(IV_A, b"a" * n)) for n in range(1, 33)}
    assert len(lengths) == 1
    assert len(NC.encrypt(IV_A, b"a" * 33)) > lengths.pop()


def test_long_names_use_a_sidecar() -> None:
    short_entry, long_name = NC.backing_name(IV_A, b"s" * 128)
    assert long_name is None and len(short_entry) <= 255
    entry, full = NC.backing_name(IV_A, b"l" * 129)
    assert entry.startswith(LONG_PREFIX) and full is not None
    assert entry == long_entry_name(full) and len(entry) < 100
    assert NC.decrypt(IV_A, full) == b"l" * 129


def test_unicode_255_bytes() -> None:
    name = ("é" * 127 + "x").encode()
    assert len(name) == 255
    _entry, full = NC.backing_name(IV_A, name)
    assert NC.decrypt(IV_A, full) == name


@pytest.mark.parametrize("bad, code", [(b"", errno.EINVAL), (b".", errno.EINVAL),
                                       (b"..", errno.EINVAL), (b"a/b", errno.EINVAL),
                                       (b"a\0b", errno.EINVAL), (b"x" * 256, errno.ENAMETOOLONG)])
def test_invalid_plain_names(bad: bytes, code: int) -> None:
    with pytest.raises(OSError) as info:
        NC.encrypt(IV_A, bad)
    assert info.value.errno == code


@given(st.text(max_size=400))
def test_garbage_never_decrypts_and_never_crashes(text: str) -> None:
    with pytest.raises(BadNameError):
        NC.decrypt(IV_A, text)


def test_other_vault_names_are_refused() -> None:
    other = NameCipher(b"\x09" * 32, b"\x08" * 32, b"\x03" * 32, b"\x04" * 32)
    with pytest.raises(BadNameError):
        NC.decrypt(IV_A, other.encrypt(IV_A, b"hello"))


def test_non_canonical_base64_is_refused() -> None:
    enc = NC.encrypt(IV_A, b"hello")
    with pytest.raises(BadNameError):
        NC.decrypt(IV_A, enc + "=")


def test_symlink_targets() -> None:
    for target in (b"a", b"../x/y", b"/abs/path with space", os.urandom(1).replace(b"\0", b"1"),
                   b"t" * 3000):
        stored = NC.encrypt_symlink(target)
        assert NC.decrypt_symlink(stored) == target
        if len(target) >= 6:
            assert target not in stored.encode()
    assert NC.encrypt_symlink(b"x") != NC.encrypt_symlink(b"x"), "random nonce per link"
    with pytest.raises(OSError):
        NC.encrypt_symlink(b"t" * 3001)
    stored = bytearray(NC.encrypt_symlink(b"target").encode())
    stored[30] = ord("A") if stored[30] != ord("A") else ord("B")
    with pytest.raises(BadNameError):
        NC.decrypt_symlink(stored.decode())


def test_dir_ivs_are_deterministic_per_parent_and_name() -> None:
    assert NC.child_iv(IV_A, b"x") == NC.child_iv(IV_A, b"x")
    assert NC.child_iv(IV_A, b"x") != NC.child_iv(IV_A, b"y")
    assert NC.child_iv(IV_A, b"x") != NC.child_iv(IV_B, b"x")
