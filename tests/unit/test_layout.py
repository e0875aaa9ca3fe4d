"""Backing layout (docs/FORMAT.md §5.1, §6.2-6.4, §9): storage and xattr paths, the
long-name threshold against ``max_path``, every backing path within ``max_path`` for every
allowed ``max_path``, and what a backing name means."""

from __future__ import annotations

import hashlib
import re

import pytest

from cryptfs import keys, layout, siv
from cryptfs.layout import Kind, parse
from cryptfs.names import NameCipher, encrypted_length

NC = NameCipher(keys.Subkeys.derive(bytes(range(32))))
ROOT = NC.root_id
SAFE = re.compile(r"[a-z2-7.]+")
TEMP = "cryptfs." + "f" * 16 + ".tmp"  # what store.replace writes (8 random bytes, hex)


def test_storage_and_xattr_paths() -> None:
    s = NC.storage_name(ROOT)
    assert layout.storage_path(s) == f"d/{s[:2]}/{s[2:]}"
    assert layout.xattr_path(s) == f"x/{s[:2]}/{s[2:]}"
    assert len(layout.storage_path(s)) == layout.STORAGE_PATH_LEN == 35
    assert len(layout.xattr_path(s)) == 35


def test_name_max() -> None:
    """§6.3: name_max = min(255, max_path - 36)."""
    assert layout.name_max(250) == 214
    assert layout.name_max(291) == 255 == layout.name_max(4096)
    for mp in range(layout.MIN_MAX_PATH, layout.MAX_MAX_PATH + 1):
        assert layout.name_max(mp) == min(255, mp - 36)


def test_default_threshold_is_112_bytes() -> None:
    """§6.3: with the default max_path of 250, names up to 112 bytes are short."""
    assert layout.DEFAULT_MAX_PATH == 250
    for n in range(1, 256):
        stem = layout.stem_for(NC.encrypt(ROOT, b"n" * n), 250)
        assert stem.is_long == (n > 112), n


def test_threshold_rule_exactly() -> None:
    """Short iff len(E) + 2 <= min(255, max_path - 36), the same stem for every kind."""
    for mp in (80, 87, 88, 89, 100, 250, 290, 291, 292, 300, 472, 473, 474, 4096):
        nm = min(255, mp - 36)
        for length in (52, 77, 103, nm - 3, nm - 2, nm - 1, nm, 436):
            if length < 52:
                continue
            enc = "a" * length
            stem = layout.stem_for(enc, mp)
            assert stem.is_long == (length + 2 > nm), (mp, length)
            assert stem.encrypted == enc
            names = {stem.name(k) for k in layout.KINDS}
            assert len({n.partition(".")[0] for n in names}) == 1


def test_long_stem_is_unkeyed_blake2b_of_the_encrypted_name() -> None:
    enc = NC.encrypt(ROOT, b"x" * 200)
    stem = layout.stem_for(enc, 250)
    assert stem.is_long
    assert stem.stem == layout.long_stem(enc) == siv.b32encode(
        hashlib.blake2b(enc.encode("ascii"), digest_size=20).digest())
    assert len(stem.stem) == 32
    assert stem.sidecar == stem.stem + ".s"
    assert [stem.name(k) for k in layout.KINDS] == [stem.stem + s for s in
                                                    ("", ".d", ".l", ".n")]
    short = layout.stem_for(NC.encrypt(ROOT, b"x"), 250)
    assert not short.is_long and short.sidecar is None


def _all_names(enc: str, mp: int) -> list[str]:
    stem = layout.stem_for(enc, mp)
    out = [stem.name(k) for k in layout.KINDS]
    if stem.sidecar:
        out.append(stem.sidecar)
    return out


def test_every_backing_path_within_max_path_for_every_max_path() -> None:
    """Entries of every kind, sidecars, temp files, back-references and xattr objects of
    names of every length bucket, for every allowed max_path (80..4096)."""
    encs = [NC.encrypt(ROOT, b"q" * n) for n in range(1, 256, 16)] + \
        [NC.encrypt(ROOT, b"q" * 255)]
    storage = layout.storage_path(NC.storage_name(ROOT))
    xattr = layout.xattr_path(NC.storage_name(ROOT))
    for mp in range(layout.MIN_MAX_PATH, layout.MAX_MAX_PATH + 1):
        longest = max(len(xattr), len(f"{storage}/{layout.BACKREF_NAME}"),
                      len(f"{storage}/{TEMP}"))
        for enc in encs:
            for name in _all_names(enc, mp):
                longest = max(longest, len(f"{storage}/{name}"))
        assert longest <= mp, mp


def test_every_backing_name_fits_the_backing_name_max() -> None:
    """Whatever max_path allows, one backing name cannot pass 255 bytes: no Linux file
    system (NAME_MAX), nor NTFS/APFS or most clouds, accepts a longer one (FORMAT.md
    §6.3 once bounded names by max_path - 36 alone: from max_path 294 on, a 129-byte
    name was stored short as a 256-character E plus suffix)."""
    encs = [NC.encrypt(ROOT, b"q" * n) for n in (128, 129, 144, 145, 255)]
    too_long = {}
    for mp in range(layout.MIN_MAX_PATH, layout.MAX_MAX_PATH + 1):
        longest = max(len(name) for enc in encs for name in _all_names(enc, mp))
        if longest > 255:
            too_long.setdefault("first max_path", mp)
            too_long["longest name"] = max(too_long.get("longest name", 0), longest)
    assert not too_long, f"backing names over 255 characters: {too_long}"


def test_all_names_long_at_the_smallest_max_path() -> None:
    for n in (1, 16, 255):
        assert layout.stem_for(NC.encrypt(ROOT, b"z" * n), 80).is_long


def test_names_up_to_128_bytes_short_from_max_path_291_on() -> None:
    """253 characters (E of a 113..128-byte name is 231, of 129..144 bytes 256) + suffix
    fit in 255: the longest short name is 128 bytes however large max_path is."""
    for mp in (291, 4096):
        assert not layout.stem_for(NC.encrypt(ROOT, b"z" * 128), mp).is_long
        assert layout.stem_for(NC.encrypt(ROOT, b"z" * 129), mp).is_long
        assert layout.stem_for(NC.encrypt(ROOT, b"z" * 255), mp).is_long


def test_written_names_are_cloud_safe() -> None:
    """§6.4: lowercase letters, digits 2-7 and '.' only; never '_' and never a capital."""
    for n in (1, 50, 112, 113, 255):
        enc = NC.encrypt(ROOT, bytes([0x80 + n % 100]) * n)
        for mp in (80, 250, 4096):
            for name in _all_names(enc, mp):
                assert SAFE.fullmatch(name), name
                assert not name.endswith(".") and name == name.lower()


# -- parsing ----------------------------------------------------------------------------------
SHORT = NC.encrypt(ROOT, b"hello")
LONG = layout.long_stem(NC.encrypt(ROOT, b"h" * 200))


@pytest.mark.parametrize("kind", list(layout.KINDS))
def test_parse_entries(kind: Kind) -> None:
    p = parse(kind.suffixed(SHORT))
    assert p is not None and p.kind is kind and not p.is_long and p.stem == SHORT
    assert p.sidecar is None
    q = parse(kind.suffixed(LONG))
    assert q is not None and q.kind is kind and q.is_long and q.stem == LONG
    assert q.sidecar == LONG + ".s"


def test_parse_sidecar() -> None:
    p = parse(LONG + ".s")
    assert p is not None and p.kind is None and p.is_long
    assert parse(SHORT + ".s") is None, "short names have no sidecar"


@pytest.mark.parametrize("name", [
    "", ".", "..", "cryptfs.back", "cryptfs.conf", "cryptfs.conf.bak", TEMP, "cryptfs",
    "d", "x", SHORT.upper(), SHORT + ".D", SHORT + ".x", SHORT + ".", SHORT + ".d.d",
    SHORT + ".d.conflict1", SHORT + " (conflicted copy 2026-01-01 101010)",
    "a" * 51, "a" * 33, "a" * 31, "a" * 32 + "1", "_" * 52, SHORT[:-1] + "_",
    SHORT[:-1] + "=", LONG + ".S", "." + SHORT, SHORT + "-",
])
def test_parse_refuses_reserved_and_foreign(name: str) -> None:
    assert parse(name) is None


def test_is_temp() -> None:
    assert layout.is_temp(TEMP)
    assert layout.is_temp("cryptfs.0.tmp")
    for name in ("cryptfs.back", SHORT, SHORT + ".tmp", "x.tmp", "cryptfs.tmp.x"):
        assert not layout.is_temp(name)


def test_encrypted_lengths_never_collide_with_long_stems() -> None:
    """A reader tells long from short by length alone: no E is 32 characters."""
    assert min(encrypted_length(n) for n in range(1, 256)) == layout.SHORT_STEM_MIN == 52
    assert layout.LONG_STEM_LEN == 32
