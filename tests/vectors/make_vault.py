"""Build the known-answer vault ``tests/vectors/vault_v1`` from fixed "randomness".

Run ``python -m tests.vectors.make_vault OUTDIR`` to rebuild. The checked-in copy must
never change: every future cryptfs must read it, and this writer must reproduce it byte
for byte (tests/unit/test_vectors.py).
"""

from __future__ import annotations

import hashlib
import sys

from cryptfs import keys
from cryptfs.volume import Volume

PASSPHRASE = b"vector"
BLOCK_SIZE = 4096


class DeterministicRandom:
    """A reproducible byte stream standing in for os.urandom."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.blake2b(self.counter.to_bytes(8, "little"), key=self.seed).digest()
            self.counter += 1
        return out[:n]


def _pattern(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


SYMLINKS = {"/link-to-hello": "docs/hello.txt"}
DIRS = ["/docs", "/docs/nested dir", "/" + "D" * 200]
FILES = {
    "/docs/hello.txt": b"Hello, cryptfs!\n",
    "/empty": b"",
    "/docs/nested dir/three-blocks.bin": _pattern(3 * BLOCK_SIZE + 123),
    "/exact-two-blocks.bin": _pattern(2 * BLOCK_SIZE),
    "/" + "D" * 200 + "/" + "ü" * 100: b"long names on both levels\n",
}
SPARSE = ("/sparse.bin", 5 * BLOCK_SIZE + 10, b"tail")  # hole in blocks 0..4


def build(outdir: str) -> Volume:
    rng = DeterministicRandom(b"cryptfs test vector v1")
    kdf = keys.KdfParams(1, 8192, rng(16))
    # The vault id comes from its own stream, so that adding it to the config left every
    # other byte of the vault as it was.
    vault_id = DeterministicRandom(b"cryptfs test vector vault id")(16)
    vol, _ = Volume.initialize(outdir, PASSPHRASE, rng=rng, block_size=BLOCK_SIZE, kdf=kdf,
                               wrap_nonce=rng(24), vault_id=vault_id)
    for d in DIRS:
        vol.mkdir(d, 0o755)
    for path, data in FILES.items():
        vol.write_file(path, data)
    for path, target in SYMLINKS.items():
        vol.symlink(path, target)
    path, offset, data = SPARSE
    fh = vol.create(path, 0o644, 1)
    vol.write(fh, data, offset)
    vol.release(fh)
    return vol


def expected_files() -> dict[str, bytes]:
    out = dict(FILES)
    path, offset, data = SPARSE
    out[path] = bytes(offset) + data
    return out


if __name__ == "__main__":
    build(sys.argv[1])
