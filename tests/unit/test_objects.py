"""Structural objects (docs/FORMAT.md §5.3, §5.4, §7, §8, §9): directory entries,
back-references, symlinks, special nodes and xattr sets. Round trips, exact sizes, every
bit flip and truncation rejected, and the parsers' checks on authentic-but-invalid input
(forged here with the raw keys, as only a key holder could)."""

from __future__ import annotations

import errno
import hashlib
import stat
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_secretbox_easy

from cryptfs import keys, siv
from cryptfs.errors import IntegrityError
from cryptfs.names import NameCipher
from cryptfs.objects import MAX_SYMLINK_TARGET, ObjectCipher

MK = bytes(range(32))
SK = keys.Subkeys.derive(MK)
NC = NameCipher(SK)
OC = ObjectCipher(SK)
ROOT = NC.root_id
CHILD = NC.child_id(ROOT, 0, b"docs")
S_ROOT = NC.storage_name(ROOT)
S_CHILD = NC.storage_name(CHILD)
V2 = b"\x00\x02"
FILE_ID = bytes(range(16, 32))


def every_flip(blob: bytes):
    for pos in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            yield bytes(bad)


def assert_all_rejected(opener, blob: bytes) -> None:
    for bad in every_flip(blob):
        with pytest.raises(IntegrityError):
            opener(bad)
    for cut in range(len(blob)):
        with pytest.raises(IntegrityError):
            opener(blob[:cut])
    for extra in (b"\0", b"\x01" * 17):
        with pytest.raises(IntegrityError):
            opener(blob + extra)


# -- directory entries (§5.3) ----------------------------------------------------------------
def test_dirref_roundtrip_and_shape() -> None:
    blob = OC.seal_dirref(CHILD)
    assert len(blob) == 34 and blob[:2] == V2
    assert blob == OC.seal_dirref(CHILD), "deterministic (offline merge, §5.2)"
    assert OC.open_dirref(blob) == CHILD
    assert OC.seal_dirref(ROOT) != blob


def test_dirref_every_flip_and_cut_rejected() -> None:
    assert_all_rejected(OC.open_dirref, OC.seal_dirref(CHILD))


@pytest.mark.parametrize("length", [0, 1, 15, 17, 32])
def test_dirref_with_wrong_id_length_rejected(length: int) -> None:
    forged = V2 + siv.seal(SK.dirref_mac, SK.dirref_enc, b"", bytes(length))
    with pytest.raises(IntegrityError):
        OC.open_dirref(forged)


@pytest.mark.parametrize("version", [b"\x00\x01", b"\x00\x03", b"\x02\x00", b"\xff\xff"])
def test_objects_with_another_version_rejected(version: bytes) -> None:
    for opener, blob in ((OC.open_dirref, OC.seal_dirref(CHILD)),
                         (lambda b: OC.open_backref(S_CHILD, b),
                          OC.seal_backref(S_CHILD, CHILD, ROOT, b"docs")),
                         (OC.open_symlink, OC.seal_symlink(b"t")),
                         (OC.open_node, OC.seal_node(stat.S_IFIFO | 0o644, 0)),
                         (lambda b: OC.open_xattrs(b"f", FILE_ID, b),
                          OC.seal_xattrs(b"f", FILE_ID, {b"user.a": b"1"}))):
        with pytest.raises(IntegrityError):
            opener(version + blob[2:])


def test_object_kinds_do_not_open_as_each_other() -> None:
    """One key pair per purpose (§2). A root back-reference and a directory entry are
    both ``V2 || SIV(16 bytes)``: only the keys tell them apart."""
    node = OC.seal_node(stat.S_IFIFO | 0o644, 0)
    dirref = OC.seal_dirref(ROOT)
    backref = OC.seal_backref(S_ROOT, ROOT, None, b"")
    assert len(dirref) == len(backref)
    for opener, blob in ((OC.open_dirref, node), (OC.open_dirref, backref),
                         (OC.open_node, dirref), (OC.open_node, backref),
                         (lambda b: OC.open_backref(S_ROOT, b), dirref),
                         (lambda b: OC.open_backref(S_ROOT, b), node),
                         (OC.open_symlink, dirref), (OC.open_symlink, node)):
        with pytest.raises(IntegrityError):
            opener(blob)


# -- back-references (§5.4) ----------------------------------------------------------------
def test_backref_roundtrip() -> None:
    blob = OC.seal_backref(S_CHILD, CHILD, ROOT, b"docs")
    assert blob[:2] == V2 and len(blob) == 2 + 16 + 16 + 16 + 4
    assert blob == OC.seal_backref(S_CHILD, CHILD, ROOT, b"docs")
    assert OC.open_backref(S_CHILD, blob) == (CHILD, ROOT, b"docs")
    root = OC.seal_backref(S_ROOT, ROOT, None, b"")
    assert len(root) == 2 + 16 + 16
    assert OC.open_backref(S_ROOT, root) == (ROOT, None, b"")
    name = bytes(range(1, 256)).replace(b"/", b"_")
    assert OC.open_backref(S_CHILD, OC.seal_backref(S_CHILD, CHILD, ROOT, name))[2] == name


def test_backref_bound_to_its_storage_folder() -> None:
    blob = OC.seal_backref(S_CHILD, CHILD, ROOT, b"docs")
    other = NC.storage_name(NC.child_id(ROOT, 0, b"other"))
    for wrong in (S_ROOT, other, S_CHILD.upper(), S_CHILD[:-1], ""):
        with pytest.raises(IntegrityError):
            OC.open_backref(wrong, blob)


def test_backref_every_flip_and_cut_rejected() -> None:
    assert_all_rejected(lambda b: OC.open_backref(S_CHILD, b),
                        OC.seal_backref(S_CHILD, CHILD, ROOT, b"docs"))
    assert_all_rejected(lambda b: OC.open_backref(S_ROOT, b),
                        OC.seal_backref(S_ROOT, ROOT, None, b""))


@pytest.mark.parametrize("length", [0, 1, 15, 17, 31, 32])
def test_backref_with_impossible_length_rejected(length: int) -> None:
    forged = V2 + siv.seal(SK.backref_mac, SK.backref_enc, S_CHILD.encode(), bytes(length))
    with pytest.raises(IntegrityError):
        OC.open_backref(S_CHILD, forged)


def test_volume_checks_the_id_inside_a_backref(volume) -> None:
    """§5.4: readers MUST check that S is the storage name of the dir_id inside."""
    volume.mkdir_path("/a")
    volume.mkdir_path("/b")
    sa, sb = volume.storage_path_of("/a"), volume.storage_path_of("/b")
    id_b, parent_b, _ = volume.read_backref(sb)
    sa_name = sa.replace("d/", "", 1).replace("/", "")
    forged = volume.objects.seal_backref(sa_name, id_b, parent_b, b"a")  # a's ad, b's id
    volume.store.replace(f"{sa}/cryptfs.back", forged)
    with pytest.raises(IntegrityError):
        volume.read_backref(sa)


# -- symlinks (§7) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 63, 64, 255, 256, 1000, 4064, 4065,
                                    4094, MAX_SYMLINK_TARGET])
def test_symlink_roundtrip_and_padding(length: int) -> None:
    target = bytes((i % 255) + 1 for i in range(length))
    blob = OC.seal_symlink(target)
    padded = -(-length // 32) * 32
    assert len(blob) == 2 + 24 + 16 + padded
    assert OC.open_symlink(blob) == target
    if length >= 8:
        assert target[:8] not in blob


def test_symlink_limits() -> None:
    assert MAX_SYMLINK_TARGET == 4095
    for bad, code in ((b"t" * 4096, errno.ENAMETOOLONG), (b"", errno.ENOENT),
                      (b"a\0b", errno.EINVAL)):
        with pytest.raises(OSError) as info:
            OC.seal_symlink(bad)
        assert info.value.errno == code


def test_symlink_fresh_nonce_per_write() -> None:
    a, b = OC.seal_symlink(b"same/target"), OC.seal_symlink(b"same/target")
    assert a != b and a[2:26] != b[2:26]
    assert OC.open_symlink(a) == OC.open_symlink(b) == b"same/target"


def test_symlink_every_flip_and_cut_rejected() -> None:
    assert_all_rejected(OC.open_symlink, OC.seal_symlink(b"../some/where"))


def test_symlink_longest_every_truncation_rejected() -> None:
    blob = OC.seal_symlink(b"t" * MAX_SYMLINK_TARGET)
    for cut in range(len(blob)):
        with pytest.raises(IntegrityError):
            OC.open_symlink(blob[:cut])


@pytest.mark.parametrize("padded", [bytes(32), b"a" + bytes(63), b"a\0b" + bytes(29),
                                    b"", bytes(1)])
def test_symlink_authentic_but_invalid_rejected(padded: bytes) -> None:
    nonce = bytes(24)
    forged = V2 + nonce + crypto_secretbox_easy(padded, nonce, SK.symlink)
    with pytest.raises(IntegrityError):
        OC.open_symlink(forged)


# -- special nodes (§8) ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode, rdev", [
    (stat.S_IFIFO | 0o644, 0), (stat.S_IFSOCK | 0o755, 0), (stat.S_IFCHR | 0o600, 0x0501),
    (stat.S_IFBLK | 0o660, (259 << 32) | 7), (stat.S_IFCHR | 0o7777, (1 << 64) - 1),
])
def test_node_roundtrip(mode: int, rdev: int) -> None:
    blob = OC.seal_node(mode, rdev)
    assert len(blob) == 2 + 16 + 12
    assert blob == OC.seal_node(mode, rdev), "deterministic (§8)"
    assert OC.open_node(blob) == (mode, rdev)


def test_node_every_flip_and_cut_rejected() -> None:
    assert_all_rejected(OC.open_node, OC.seal_node(stat.S_IFCHR | 0o600, 0x0501))


@pytest.mark.parametrize("length", [0, 8, 11, 13, 24])
def test_node_with_wrong_length_rejected(length: int) -> None:
    forged = V2 + siv.seal(SK.node_mac, SK.node_enc, b"", bytes(length))
    with pytest.raises(IntegrityError):
        OC.open_node(forged)


# -- extended attributes (§9) -------------------------------------------------------------------
def _xk(kind: bytes, inode_id: bytes) -> bytes:
    return hashlib.blake2b(kind + inode_id, key=SK.xattr, digest_size=32).digest()


def _seal_payload(payload: bytes, kind: bytes = b"f", inode_id: bytes = FILE_ID) -> bytes:
    nonce = bytes(range(24))
    return V2 + nonce + crypto_secretbox_easy(payload, nonce, _xk(kind, inode_id))


def _entry(name: bytes, value: bytes) -> bytes:
    return struct.pack(">H", len(name)) + name + struct.pack(">I", len(value)) + value


def _pad(payload: bytes) -> bytes:
    return payload + bytes(-len(payload) % 256)


attr_dicts = st.dictionaries(st.binary(min_size=1, max_size=40).map(lambda b: b"user." + b),
                             st.binary(max_size=600), max_size=8)


@given(attr_dicts)
@settings(max_examples=100)
def test_xattr_roundtrip(attrs: dict[bytes, bytes]) -> None:
    blob = OC.seal_xattrs(b"f", FILE_ID, attrs)
    assert (len(blob) - 2 - 24 - 16) % 256 == 0
    assert OC.open_xattrs(b"f", FILE_ID, blob) == attrs


def test_xattr_layout_is_the_spec() -> None:
    attrs = {b"user.b": b"2", b"user.a": b"one", b"user.c": b""}
    blob = OC.seal_xattrs(b"d", CHILD, attrs)
    payload = _pad(struct.pack(">H", 3) + _entry(b"user.a", b"one") + _entry(b"user.b", b"2")
                   + _entry(b"user.c", b""))
    nonce = blob[2:26]
    assert blob == V2 + nonce + crypto_secretbox_easy(payload, nonce, _xk(b"d", CHILD))


def test_xattr_bound_to_its_inode_and_fresh_nonce() -> None:
    blob = OC.seal_xattrs(b"f", FILE_ID, {b"user.a": b"1"})
    assert blob[2:26] != OC.seal_xattrs(b"f", FILE_ID, {b"user.a": b"1"})[2:26]
    for kind, inode_id in ((b"d", FILE_ID), (b"f", bytes(16)), (b"f", CHILD)):
        with pytest.raises(IntegrityError):
            OC.open_xattrs(kind, inode_id, blob)


def test_xattr_every_flip_and_cut_rejected() -> None:
    blob = OC.seal_xattrs(b"f", FILE_ID, {b"user.mime": b"text/plain", b"user.x": b""})
    assert_all_rejected(lambda b: OC.open_xattrs(b"f", FILE_ID, b), blob)


def test_xattr_storage_names() -> None:
    f = OC.xattr_storage_name(b"f", FILE_ID)
    d = OC.xattr_storage_name(b"d", FILE_ID)
    assert f != d and len(f) == len(d) == 32
    assert f == siv.b32encode(hashlib.blake2b(b"f" + FILE_ID, key=SK.xattr_loc,
                                              digest_size=20).digest())


def test_xattr_valid_forged_payloads_accepted() -> None:
    """The positive controls for the rejections below (same forging path)."""
    assert OC.open_xattrs(b"f", FILE_ID, _seal_payload(_pad(struct.pack(">H", 0)))) == {}
    two = struct.pack(">H", 2) + _entry(b"user.a", b"1") + _entry(b"user.b", b"22")
    assert OC.open_xattrs(b"f", FILE_ID, _seal_payload(_pad(two))) == \
        {b"user.a": b"1", b"user.b": b"22"}
    assert OC.open_xattrs(b"f", FILE_ID, _seal_payload(two)) == \
        {b"user.a": b"1", b"user.b": b"22"}


@pytest.mark.parametrize("payload, why", [
    (b"", "empty"),
    (b"\x00", "one byte"),
    (struct.pack(">H", 1), "count 1, no entry"),
    (_pad(struct.pack(">H", 3) + _entry(b"user.a", b"1")), "count overruns into padding"),
    (struct.pack(">H", 1) + struct.pack(">H", 200) + b"user.a", "name overruns"),
    (struct.pack(">H", 1) + struct.pack(">H", 6) + b"user.a" + b"\x00\x00",
     "value length overruns"),
    (struct.pack(">H", 1) + _entry(b"user.a", b"12345")[:-2], "value overruns"),
    (_pad(struct.pack(">H", 1) + _entry(b"user.a", b"1"))[:-1] + b"\x01",
     "nonzero padding at the end"),
    (_pad(struct.pack(">H", 1) + _entry(b"user.a", b"1") + b"\x80"), "nonzero padding"),
    (_pad(struct.pack(">H", 2) + _entry(b"user.b", b"1") + _entry(b"user.a", b"2")),
     "unsorted names"),
    (_pad(struct.pack(">H", 2) + _entry(b"user.a", b"1") + _entry(b"user.a", b"2")),
     "duplicate names"),
    (_pad(struct.pack(">H", 1) + _entry(b"", b"1")), "empty name"),
    (_pad(struct.pack(">H", 0xFFFF)), "huge count"),
    (_pad(struct.pack(">H", 1) + struct.pack(">H", 6) + b"user.a"
          + struct.pack(">I", 0xFFFFFFFF)), "huge value length"),
])
def test_xattr_parser_rejects(payload: bytes, why: str) -> None:
    with pytest.raises(IntegrityError):
        OC.open_xattrs(b"f", FILE_ID, _seal_payload(payload))
