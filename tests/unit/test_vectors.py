"""Known answers for format 2 (docs/FORMAT.md §12). These bytes must never change:
changing them changes the on-disk format (bump the version in docs/FORMAT.md instead).

Every expected value below is pinned as hex AND recomputed here from the text of
FORMAT.md with raw primitives only (``hashlib.blake2b``, libsodium through
``nacl.bindings``, ``base64``); no cryptfs function computes an expected value. The
checked-in vault ``tests/vectors/vault_v2`` is read twice: by ``Volume`` and by the small
from-the-spec reader ``SpecReader`` below, and the writer must rebuild it byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import struct
from pathlib import Path

import pytest
from nacl.bindings import (
    crypto_pwhash_alg,
    crypto_pwhash_ALG_ARGON2ID13,
    crypto_secretbox_easy,
    crypto_secretbox_open_easy,
)

from cryptfs import keys, layout, siv
from cryptfs.content import ContentCipher
from cryptfs.errors import WrongPassphraseError
from cryptfs.fsck import Checker
from cryptfs.names import NameCipher
from cryptfs.objects import ObjectCipher
from cryptfs.volume import Volume
from tests.vectors import make_vault

VAULT = Path(__file__).resolve().parent.parent / "vectors" / "vault_v2"
MK = bytes(range(32))
assert make_vault.MASTER_KEY == MK


# -- FORMAT.md, transcribed with raw primitives ------------------------------------------------
def H(key: bytes | None, msg: bytes, n: int) -> bytes:
    """§1: keyed (or unkeyed) BLAKE2b with an n-byte digest."""
    return hashlib.blake2b(msg, key=key or b"", digest_size=n).digest()


def subkey(mk: bytes, context: str) -> bytes:
    """§2: H(MK, "cryptfs/v2/" || context, 32)."""
    return H(mk, b"cryptfs/v2/" + context.encode(), 32)


def XS(key: bytes, nonce: bytes, n: int) -> bytes:
    """§1: SecretBox(key, nonce, 0^n)[16:]."""
    return crypto_secretbox_easy(bytes(n), nonce, key)[16:]


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def siv_seal(km: bytes, ke: bytes, ad: bytes, m: bytes) -> bytes:
    """§1.1."""
    t = H(km, struct.pack("<I", len(ad)) + ad + m, 16)
    return t + xor(m, XS(ke, t + bytes(8), len(m)))


def siv_open(km: bytes, ke: bytes, ad: bytes, sealed: bytes) -> bytes:
    """§1.1; AssertionError instead of an authentication failure."""
    t, c = sealed[:16], sealed[16:]
    m = xor(c, XS(ke, t + bytes(8), len(c)))
    assert len(t) == 16 and hmac.compare_digest(H(km, struct.pack("<I", len(ad)) + ad + m,
                                                   16), t)
    return m


def b32(x: bytes) -> str:
    """§1: lowercase RFC 4648 base32 without padding."""
    return base64.b32encode(x).decode().rstrip("=").lower()


def unb32(s: str) -> bytes:
    data = base64.b32decode(s.upper() + "=" * (-len(s) % 8))
    assert b32(data) == s, "non-canonical"
    return data


def b64u(s: str) -> bytes:
    data = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    assert base64.urlsafe_b64encode(data).rstrip(b"=").decode() == s
    return data


def root_id(mk: bytes) -> bytes:
    return H(subkey(mk, "dir-id"), b"root", 16)


def child_id(mk: bytes, parent: bytes, g: int, name: bytes) -> bytes:
    return H(subkey(mk, "dir-id"), parent + struct.pack("<I", g) + name, 16)


def storage_name(mk: bytes, dir_id: bytes) -> str:
    return b32(H(subkey(mk, "storage"), dir_id, 20))


def storage_folder(s: str) -> str:
    return "d/" + s[0:2] + "/" + s[2:32]


def enc_name(mk: bytes, dir_id: bytes, name: bytes) -> str:
    """§6.1: E(dir, name)."""
    p = name + bytes(-len(name) % 16)
    return b32(siv_seal(subkey(mk, "name-mac"), subkey(mk, "name-enc"), dir_id, p))


def dec_name(mk: bytes, dir_id: bytes, e: str) -> bytes:
    p = siv_open(subkey(mk, "name-mac"), subkey(mk, "name-enc"), dir_id, unb32(e))
    name = p.rstrip(b"\0")
    assert len(p) % 16 == 0 and len(p) - len(name) < 16
    return name


def block_nonce(r: bytes, i: int) -> bytes:
    """§4: N_i = R[0:16] || LE64(LE64^-1(R[16:24]) XOR i)."""
    return r[:16] + struct.pack("<Q", struct.unpack("<Q", r[16:24])[0] ^ i)


def file_key(mk: bytes, file_id: bytes) -> bytes:
    return H(subkey(mk, "content"), file_id, 32)


V2 = struct.pack(">H", 2)  # BE16(2)


# -- pinned values (computed once from the functions above, never from cryptfs) ---------------
SUBKEYS = {
    "content": "90ddbebcd9696ce55ea0d222dd863034c80f21e0c3b3f16c4ebd791bb6f42150",
    "name-mac": "72910447aecfc3136b3e9afea2a9b95469cffc7f9dde9fc9b8ec366e33b7605f",
    "name-enc": "18c8b76d9a59612322b1e483abea0b5f19b0795fd19095a20662c937932ef09e",
    "dir-id": "ee4e5d76b70dc448a4ddea3614831ce9222ef57dfbf00e796e62631c97a514a6",
    "storage": "36b61a3c6a1e1d13dcb91c5152cc864f5df401b2c36543c17d784e490c3be01d",
    "dirref-mac": "82f01614223b218697ba1e97a97cfada54fd874ca7555555889ad734b55e9ea2",
    "dirref-enc": "caac1434fc6368841587bb7918478e8216900be019bebaf2fa505c2d8500de51",
    "backref-mac": "6a796d77414d074fa48128febbff4aebde97dc382c6f91096568cb70d7f1e223",
    "backref-enc": "653d5781f7965594d032d6351ef642a6032f3d1772cdbdfb2d824c0362b58fbf",
    "node-mac": "df55c7f311ba080835051a1dfd6170ab32ff382dd8bb1d41b5b83035bd50167e",
    "node-enc": "990fd1d828683c012d8e449f680a1c014788f6e373937f44d565369e79b433a1",
    "symlink": "9ebb955d556197a3028e0c4b51b2a88cdcd2e4e5d7f2a2b5bbf8c1b380a5f542",
    "xattr": "e768f89f11828c55bbd3ffbb72bb77177b45df334505ff4c580d65cef7061044",
    "xattr-loc": "91f22c9d45586c209f5f3d3adc94f18b60f67f88c9ce0cedf942046b24e048af",
    "config-mac": "80459fd4b3ad05a5d4fa81556878f9e6e3bd40d5b28714935b09620c785a2b38",
    "sync-record": "26f1874940e4ea4973a9d23c1d794ef27eaee48903cccc18f6477ab26b2e9eff",
}
SIV_KM, SIV_KE = bytes(range(32)), bytes(range(32, 64))
SIV_AD, SIV_M = b"associated data", b"SIV known-answer plaintext"
SIV_SEALED = (
    "e0500921e6a8ffd8eea90a3208888ee22b8d01d77068e38fdf4dc4b843d40ed3"
    "7e9864ae3aa2adfcede1"
)
NAME = b"hello.txt"
NAME_ENC = "sz5jljvkuztttbbg7yaqocy3s7ggaq4v3mmo52osgyaunriz55ja"
LONG_NAME = "ü".encode() * 100
LONG_STEM = "ag3pphr7bcbzgijiimshagpmrlkzay3t"
ROOT_ID = "7e51dc9e40e16f3fcef51773303c4767"
ROOT_STORAGE = "d/rg/ln25vsk3xs534c3gsb4avain7escfn"
DOCS_ID_G0 = "135ec2632a2d654f4898744ba0c91365"
DOCS_ID_G1 = "2e52ea24f7a9a6fa16da034d1f98bb0d"
DOCS_STORAGE = "5vfzjslgn5zhio6qh6iwhbpmq4tfj7b6"
DIRREF = (
    "0002c87fc5ea5dae2931a775bedf370b93b4fd403364c58c0f665e5b95ab78c5"
    "8d1a"
)
BACKREF_DOCS = (
    "00026bbf7812765f61bc48257f1d71485cd2b4aac965837382e47c0d780d8c6a"
    "17c7c2a70cec0cc4c5a1d36e9b863dc253accf4fa248"
)
BACKREF_ROOT = (
    "0002746c7753bb1e966f37e7d2db3a9cf1db7800726146ba6689d67f7ae302eb"
    "4f59"
)
FILE_ID = bytes(range(0x10, 0x20))
BLOCK_R = bytes(range(0x40, 0x58))
BLOCK = (
    "404142434445464748494a4b4c4d4e4f50515253545556570090939bb11ed565"
    "1c90b4ac2cd0019e3880558f369935"
)
NODE = "00027a0f0e8a48e18a9d2be6419ed10b1469ff98c8b29708ea5aa330f451"
SYMLINK_R = bytes(range(0x60, 0x78))
SYMLINK = (
    "0002606162636465666768696a6b6c6d6e6f707172737475767718631b2e74d1"
    "e70dec445dd84af6484fb6ee7a4a64a730816e77b202ca79f80bf7e01cac91c8"
    "9b25ac2ce88eb360b4d7"
)
XATTR_R = bytes(range(0x80, 0x98))
XATTR_PATH = "x/ys/h35gi3yoka54r73mpnv6jlfu7dny4w"
XATTR = (
    "0002808182838485868788898a8b8c8d8e8f9091929394959697f8ecd15fe7c1"
    "49850945bb64ed8ffabf71f6fe62a4bc176431e16b05d84e345089a3d2b46dd7"
    "d5202c1cc875c3dc5c97dcc151745cebc79e74686af0244eb8d184c307e09827"
    "7742857c8674b6ff32a4d027f3c46a299f1779d74de115d88b5e719714ae66f3"
    "1bec6d9feb286506a5c0dcc14615ba106f527b2909fe845254463ccf24414467"
    "112f3ab8a43cab423856ba588787ab4b31265f06eee4f7dc31fd3e8395c9d536"
    "dc48c484b7b68f747ddbc1e45f79525526b49e6b33e861f09568480f782b820c"
    "3e8b019bcf146cf5dd187ca0d01872ce1550a8b5af43508c4444492d055dae89"
    "1d6260fa73c9a97528527f6d06a1ca5484ef8a5783c72cc2352a65ff2633a50f"
    "26559e20fdc95066c3d4"
)


def fixed(data: bytes):
    return lambda n: data[:n]


# -- the KATs ------------------------------------------------------------------------------
def test_subkeys() -> None:
    assert set(SUBKEYS) == set(keys.SUBKEY_CONTEXTS)
    for context, hexkey in SUBKEYS.items():
        assert subkey(MK, context).hex() == hexkey, context
        assert keys.derive_subkey(MK, context).hex() == hexkey, context


def test_siv() -> None:
    assert siv_seal(SIV_KM, SIV_KE, SIV_AD, SIV_M).hex() == SIV_SEALED
    assert siv.seal(SIV_KM, SIV_KE, SIV_AD, SIV_M).hex() == SIV_SEALED
    assert siv.open_(SIV_KM, SIV_KE, SIV_AD, bytes.fromhex(SIV_SEALED)) == SIV_M


def test_directory_ids_and_storage() -> None:
    nc = NameCipher(keys.Subkeys.derive(MK))
    root = root_id(MK)
    assert root.hex() == ROOT_ID == nc.root_id.hex()
    assert storage_folder(storage_name(MK, root)) == ROOT_STORAGE
    assert storage_folder(nc.storage_name(nc.root_id)) == ROOT_STORAGE
    assert child_id(MK, root, 0, b"docs").hex() == DOCS_ID_G0
    assert child_id(MK, root, 1, b"docs").hex() == DOCS_ID_G1
    assert nc.child_id(nc.root_id, 0, b"docs").hex() == DOCS_ID_G0
    assert nc.child_id(nc.root_id, 1, b"docs").hex() == DOCS_ID_G1
    docs = bytes.fromhex(DOCS_ID_G0)
    assert storage_name(MK, docs) == DOCS_STORAGE == nc.storage_name(docs)


def test_names() -> None:
    nc = NameCipher(keys.Subkeys.derive(MK))
    root = bytes.fromhex(ROOT_ID)
    assert enc_name(MK, root, NAME) == NAME_ENC == nc.encrypt(root, NAME)
    assert nc.decrypt(root, NAME_ENC) == NAME
    e = enc_name(MK, root, LONG_NAME)
    assert b32(H(None, e.encode("ascii"), 20)) == LONG_STEM
    assert layout.stem_for(nc.encrypt(root, LONG_NAME), 250).stem == LONG_STEM


def test_block() -> None:
    header = V2 + FILE_ID
    expected = BLOCK_R + crypto_secretbox_easy(b"cryptfs", block_nonce(BLOCK_R, 2),
                                               file_key(MK, FILE_ID))
    assert expected.hex() == BLOCK
    cc = ContentCipher(keys.derive_subkey(MK, "content"), 4096, fixed(BLOCK_R))
    assert cc.file_cipher(header).encrypt_block(2, b"cryptfs").hex() == BLOCK
    assert cc.file_cipher(header).decrypt_block(2, bytes.fromhex(BLOCK)) == b"cryptfs"


def test_directory_entry_and_back_references() -> None:
    oc = ObjectCipher(keys.Subkeys.derive(MK))
    root, docs = bytes.fromhex(ROOT_ID), bytes.fromhex(DOCS_ID_G0)
    dirref = V2 + siv_seal(subkey(MK, "dirref-mac"), subkey(MK, "dirref-enc"), b"", docs)
    assert dirref.hex() == DIRREF == oc.seal_dirref(docs).hex()
    br = V2 + siv_seal(subkey(MK, "backref-mac"), subkey(MK, "backref-enc"),
                       DOCS_STORAGE.encode(), docs + root + b"docs")
    assert br.hex() == BACKREF_DOCS == oc.seal_backref(DOCS_STORAGE, docs, root, b"docs").hex()
    rs = ROOT_STORAGE.replace("d/", "", 1).replace("/", "")
    br_root = V2 + siv_seal(subkey(MK, "backref-mac"), subkey(MK, "backref-enc"),
                            rs.encode(), root)
    assert br_root.hex() == BACKREF_ROOT == oc.seal_backref(rs, root, None, b"").hex()


def test_node_and_symlink() -> None:
    mode, rdev = stat.S_IFCHR | 0o600, os.makedev(1, 3)
    node = V2 + siv_seal(subkey(MK, "node-mac"), subkey(MK, "node-enc"), b"",
                         struct.pack(">IQ", mode, rdev))
    assert node.hex() == NODE
    assert ObjectCipher(keys.Subkeys.derive(MK)).seal_node(mode, rdev).hex() == NODE
    target = b"docs/hello.txt"
    link = V2 + SYMLINK_R + crypto_secretbox_easy(target + bytes(32 - len(target)),
                                                  SYMLINK_R, subkey(MK, "symlink"))
    assert link.hex() == SYMLINK
    oc = ObjectCipher(keys.Subkeys.derive(MK), fixed(SYMLINK_R))
    assert oc.seal_symlink(target).hex() == SYMLINK


def test_xattr_object() -> None:
    attrs = {b"user.mime_type": b"text/plain", b"user.a": b""}
    path = "x/" + b32(H(subkey(MK, "xattr-loc"), b"f" + FILE_ID, 20))
    path = path[:4] + "/" + path[4:]
    assert path == XATTR_PATH
    payload = struct.pack(">H", 2)
    for name in sorted(attrs):
        payload += struct.pack(">H", len(name)) + name + struct.pack(">I", len(attrs[name]))
        payload += attrs[name]
    payload += bytes(-len(payload) % 256)
    blob = V2 + XATTR_R + crypto_secretbox_easy(payload, XATTR_R,
                                                H(subkey(MK, "xattr"), b"f" + FILE_ID, 32))
    assert blob.hex() == XATTR
    oc = ObjectCipher(keys.Subkeys.derive(MK), fixed(XATTR_R))
    assert layout.xattr_path(oc.xattr_storage_name(b"f", FILE_ID)) == XATTR_PATH
    assert oc.seal_xattrs(b"f", FILE_ID, attrs).hex() == XATTR
    assert oc.open_xattrs(b"f", FILE_ID, bytes.fromhex(XATTR)) == attrs


# -- the vector vault, read by a from-the-spec reader -------------------------------------------
class SpecReader:
    """Reads a format-2 vault following FORMAT.md alone (no cryptfs code)."""

    def __init__(self, root: Path, passphrase: bytes) -> None:
        self.root = root
        cfg = json.loads((root / "cryptfs.conf").read_bytes())
        assert cfg["cryptfs"] == 2 and cfg["format_version"] == 2
        kdf = cfg["kdf"]
        kek = crypto_pwhash_alg(32, passphrase, b64u(kdf["salt"]), kdf["opslimit"],
                                kdf["memlimit"], crypto_pwhash_ALG_ARGON2ID13)
        wrapped = b64u(cfg["wrapped_master_key"])
        self.mk = crypto_secretbox_open_easy(wrapped[24:], wrapped[:24], kek)
        body = {k: v for k, v in cfg.items() if k != "mac"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True).encode()
        assert H(subkey(self.mk, "config-mac"), canonical, 32).hex() == cfg["mac"]
        self.block_size = cfg["block_size"]
        self.max_path = cfg["max_path"]

    def sub(self, context: str) -> bytes:
        return subkey(self.mk, context)

    def read_tree(self) -> dict[str, tuple]:
        """plain path -> ("dir", xattrs) | ("file", data, xattrs, backing inode) |
        ("symlink", target) | ("node", mode, rdev)."""
        out: dict[str, tuple] = {}
        stack = [("", root_id(self.mk), None, b"")]
        while stack:
            plain, dir_id, parent_id, name = stack.pop()
            s = storage_name(self.mk, dir_id)
            folder = self.root / storage_folder(s)
            back = (folder / "cryptfs.back").read_bytes()
            assert back[:2] == V2
            m = siv_open(self.sub("backref-mac"), self.sub("backref-enc"), s.encode(),
                         back[2:])
            assert m == (dir_id if parent_id is None else dir_id + parent_id + name)
            out[plain or "/"] = ("dir", self.xattrs(b"d", dir_id))
            for bname in sorted(os.listdir(folder)):
                rel = f"{storage_folder(s)}/{bname}"
                assert len(rel) <= self.max_path, rel
                stem, _, suffix = bname.partition(".")
                if bname == "cryptfs.back" or suffix == "s":
                    continue
                if len(stem) == 32:
                    e = (folder / (stem + ".s")).read_text("ascii")
                    assert b32(H(None, e.encode(), 20)) == stem
                else:
                    e = stem
                child = dec_name(self.mk, dir_id, e)
                path = f"{plain}/{os.fsdecode(child)}"
                blob = (folder / bname).read_bytes()
                if suffix == "d":
                    assert blob[:2] == V2
                    cid = siv_open(self.sub("dirref-mac"), self.sub("dirref-enc"), b"",
                                   blob[2:])
                    stack.append((path, cid, dir_id, child))
                elif suffix == "l":
                    assert blob[:2] == V2 and (len(blob) - 42) % 32 == 0
                    padded = crypto_secretbox_open_easy(blob[26:], blob[2:26],
                                                        self.sub("symlink"))
                    out[path] = ("symlink", padded.rstrip(b"\0"))
                elif suffix == "n":
                    assert blob[:2] == V2
                    mode, rdev = struct.unpack(">IQ", siv_open(
                        self.sub("node-mac"), self.sub("node-enc"), b"", blob[2:]))
                    out[path] = ("node", mode, rdev)
                else:
                    assert suffix == ""
                    data, file_id = self.file(blob)
                    out[path] = ("file", data, self.xattrs(b"f", file_id),
                                 (folder / bname).stat().st_ino)
        return out

    def file(self, blob: bytes) -> tuple[bytes, bytes]:
        assert blob[:2] == V2 and len(blob) >= 58
        file_id = blob[2:18]
        fk = file_key(self.mk, file_id)
        q, r = divmod(len(blob) - 18, self.block_size + 40)
        assert r >= 40
        out = b""
        for i in range(q + 1):
            stored = blob[18 + i * (self.block_size + 40):18 + (i + 1) * (self.block_size + 40)]
            if i < q and stored == bytes(len(stored)):
                out += bytes(self.block_size)  # a hole
                continue
            out += crypto_secretbox_open_easy(stored[24:], block_nonce(stored[:24], i), fk)
        assert len(out) == q * self.block_size + r - 40
        return out, file_id

    def xattrs(self, kind: bytes, inode_id: bytes) -> dict[bytes, bytes]:
        s = b32(H(self.sub("xattr-loc"), kind + inode_id, 20))
        path = self.root / "x" / s[:2] / s[2:]
        if not path.exists():
            return {}
        blob = path.read_bytes()
        assert blob[:2] == V2
        payload = crypto_secretbox_open_easy(blob[26:], blob[2:26],
                                             H(self.sub("xattr"), kind + inode_id, 32))
        assert len(payload) % 256 == 0
        (count,) = struct.unpack_from(">H", payload)
        pos, attrs = 2, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">H", payload, pos)
            name = payload[pos + 2:pos + 2 + n]
            (v,) = struct.unpack_from(">I", payload, pos + 2 + n)
            attrs[name] = payload[pos + 6 + n:pos + 6 + n + v]
            pos += 6 + n + v
        assert list(attrs) == sorted(attrs) and not payload[pos:].strip(b"\0")
        return attrs


def _expected_tree() -> dict[str, tuple]:
    files = make_vault.expected_files()
    out: dict[str, tuple] = {"/": ("dir", {})}
    for d in make_vault.DIRS:
        out[d] = ("dir", make_vault.XATTRS.get(d, {}))
    for path, data in files.items():
        out[path] = ("file", data, make_vault.XATTRS.get(
            make_vault.HARDLINKS.get(path, path), {}))
    for path, target in make_vault.SYMLINKS.items():
        out[path] = ("symlink", target)
    for path, (mode, rdev) in make_vault.NODES.items():
        out[path] = ("node", mode, rdev)
    return out


def test_spec_reader_reads_the_vector_vault() -> None:
    reader = SpecReader(VAULT, make_vault.PASSPHRASE)
    assert reader.mk == MK
    got = reader.read_tree()
    assert {p: v[:3] for p, v in got.items()} == _expected_tree()
    assert storage_folder(storage_name(MK, root_id(MK))) == ROOT_STORAGE
    assert (VAULT / ROOT_STORAGE / "cryptfs.back").read_bytes().hex() == BACKREF_ROOT
    assert (VAULT / ROOT_STORAGE / (enc_name(MK, root_id(MK), b"docs") + ".d")
            ).read_bytes().hex() == DIRREF


def test_volume_reads_the_vector_vault() -> None:
    for kwargs in ({"passphrase": make_vault.PASSPHRASE}, {"master_key": MK}):
        vol = Volume.unlock(str(VAULT), read_only=True, **kwargs)
        try:
            for path, entry in _expected_tree().items():
                ino = vol.resolve(path)
                attr = vol.getattr(ino)
                kind = entry[0]
                if kind == "dir":
                    assert stat.S_ISDIR(attr.mode), path
                elif kind == "file":
                    assert stat.S_ISREG(attr.mode) and attr.size == len(entry[1]), path
                    assert vol.read_file(path) == entry[1], path
                elif kind == "symlink":
                    assert stat.S_ISLNK(attr.mode) and vol.readlink(ino) == entry[1]
                else:
                    assert (attr.mode, attr.rdev) == (entry[1], entry[2]), path
                if kind in ("dir", "file"):
                    ino = vol.resolve(path)  # read_file released the offline reference
                    assert vol.listxattr(ino) == sorted(entry[-1]), path
                    for name, value in entry[-1].items():
                        assert vol.getxattr(ino, name) == value
            found = {"/"} | {top.rstrip("/") + "/" + name for top, dirs, files in vol.walk("/")
                             for name in dirs + files}
            assert found == set(_expected_tree())
            assert vol.getattr(vol.resolve("/docs")).nlink == 3
            report = Checker(vol).run()
            assert report.ok, report.problems
        finally:
            vol.close()


def test_wrong_passphrase_on_vector_vault() -> None:
    with pytest.raises(WrongPassphraseError):
        Volume.unlock(str(VAULT), passphrase=b"not the vector passphrase")


def _tree(root: Path) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    for dirpath, dnames, fnames in os.walk(root):
        for d in dnames:
            dirs.add(str(Path(dirpath, d).relative_to(root)))
        for f in fnames:
            p = Path(dirpath, f)
            assert not p.is_symlink(), "format 2 writes no symlinks"
            files[str(p.relative_to(root))] = p.read_bytes()
    return files, dirs


def test_writer_reproduces_the_vault(tmp_path: Path) -> None:
    make_vault.build(str(tmp_path / "v")).close()
    built_files, built_dirs = _tree(tmp_path / "v")
    want_files, want_dirs = _tree(VAULT)
    assert sorted(built_files) == sorted(want_files)
    for rel, data in want_files.items():
        assert built_files[rel] == data, rel
    assert built_dirs == want_dirs


def test_hard_link_is_one_backing_inode_in_a_fresh_build(tmp_path: Path) -> None:
    """Git cannot store hard links, so the checked-in copy holds two equal files; the
    writer's own output must share one inode (FORMAT.md §10)."""
    make_vault.build(str(tmp_path / "v")).close()
    got = SpecReader(tmp_path / "v", make_vault.PASSPHRASE).read_tree()
    for link, existing in make_vault.HARDLINKS.items():
        assert got[link][3] == got[existing][3]
        assert os.stat(tmp_path / "v" / "cryptfs.conf").st_ino != got[link][3]
