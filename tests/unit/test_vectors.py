"""Known-answer tests: frozen bytes of format version 1. These must never change:
changing them changes the on-disk format (bump the version in docs/FORMAT.md instead)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from nacl.bindings import crypto_secretbox_easy

from cryptfs import keys
from cryptfs.content import ContentCipher
from cryptfs.names import NameCipher
from cryptfs.volume import Volume
from tests.vectors import make_vault
from tests.vectors.make_vault import DeterministicRandom

VAULT = Path(__file__).resolve().parent.parent / "vectors" / "vault_v1"
MK = bytes(range(32))

SUBKEYS = {
    "content": "51e436c806ade92493792a9d49b48f35e81f5df92917b9d373e348f640e07e0e",
    "name-siv": "e08cac413fd73339bb52738191673fa11cb5ad90100b5bd50753702606afc645",
    "name": "cfcf9c8360e789a6fd84d4d289d2c5e7770658bb3f2f9289b4973c97958a425f",
    "dir-iv": "85aafcd7ef042c1461456e4f9e48fc6e06850febd260c6bda0af1c60bc1763a3",
    "symlink": "3b4458bd4f7254538d6ccde708b44e13398521332e9534685d2087695619ad0e",
    "config-mac": "464bed31e95a7d6dfc1a870b78aaacd5a4c29d0bd531013472b4b10efc74a132",
}


def test_subkeys() -> None:
    for context, hexkey in SUBKEYS.items():
        assert keys.derive_subkey(MK, context).hex() == hexkey
        # FORMAT.md §2, recomputed independently
        assert hashlib.blake2b(b"cryptfs/v1/" + context.encode(), key=MK,
                               digest_size=32).hexdigest() == hexkey


def _ciphers():
    rng = DeterministicRandom(b"kat")
    cc = ContentCipher(keys.derive_subkey(MK, "content"), 4096, rng)
    nc = NameCipher(*(keys.derive_subkey(MK, c) for c in ("name-siv", "name", "dir-iv",
                                                          "symlink")), rng=rng)
    return rng, cc, nc


def test_header_and_block() -> None:
    _, cc, _ = _ciphers()
    header = cc.new_header()
    assert header.hex() == "000135c9b3d4b07de1b8fb2cb47914f13abd"
    stored = cc.file_cipher(header).encrypt_block(2, b"cryptfs")
    assert stored.hex() == ("2d20062c41181a9c1dd1ea6a16b6b396711cec9e41ff51ab693fdc79ea7fd2cc"
                            "fae822fd3552ff19d5c9186e0d26c1")
    # FORMAT.md §4 recomputed from the spec with libsodium directly.
    fk = hashlib.blake2b(header[2:], key=bytes.fromhex(SUBKEYS["content"]),
                         digest_size=32).digest()
    r = stored[:24]
    nonce = r[:16] + (int.from_bytes(r[16:], "little") ^ 2).to_bytes(8, "little")
    assert stored[24:] == crypto_secretbox_easy(b"cryptfs", nonce, fk)


def test_names_and_dir_ivs() -> None:
    _, _, nc = _ciphers()
    root = nc.root_iv()
    assert root.hex() == "18834e161d8bd11b2f97a20fdd501944"
    assert nc.child_iv(root, b"docs").hex() == "ecc392094d7f8b20fe916480627adc56"
    enc = nc.encrypt(root, b"hello.txt")
    assert enc == ("QT55BcPSwKORTtGFN1dkGOSp8mBLTjMCjOEPIK6XNGSqmtjM4e4RKzU0D89TAhI1S9C0u4N2"
                   "Pt-3mqahOwMOGOjouR36MPf6")
    # FORMAT.md §5.1 recomputed.
    padded = b"hello.txt" + bytes(32 - 9)
    siv = hashlib.blake2b(root + padded, key=bytes.fromhex(SUBKEYS["name-siv"]),
                          digest_size=24).digest()
    import base64

    raw = siv + crypto_secretbox_easy(padded, siv, bytes.fromhex(SUBKEYS["name"]))
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == enc


def test_checked_in_vault_reads() -> None:
    vol = Volume.unlock(str(VAULT), passphrase=make_vault.PASSPHRASE, read_only=True)
    for path, data in make_vault.expected_files().items():
        assert vol.read_file(path) == data, path
    for path, target in make_vault.SYMLINKS.items():
        assert vol.readlink(path) == target
    found = {top.rstrip("/") + "/" + name for top, dirs, files in vol.walk("/")
             for name in dirs + files}
    expected = set(make_vault.DIRS) | set(make_vault.expected_files()) | set(make_vault.SYMLINKS)
    assert {p.replace("//", "/") for p in found} == expected


def test_writer_reproduces_the_vault(tmp_path: Path) -> None:
    make_vault.build(str(tmp_path / "v"))

    def tree(root: Path) -> dict[str, bytes]:
        out = {}
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath, f)
                rel = str(p.relative_to(root))
                out[rel] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        return out

    assert tree(tmp_path / "v") == tree(VAULT)


def test_wrong_passphrase_on_vector_vault() -> None:
    from cryptfs.errors import WrongPassphraseError

    with pytest.raises(WrongPassphraseError):
        Volume.unlock(str(VAULT), passphrase=b"not the vector passphrase")
