"""Build the known-answer vault ``tests/vectors/vault_v2`` (docs/FORMAT.md §12).

A fixed master key, a fixed byte stream standing in for ``os.urandom`` and the passphrase
``vector``. Rebuild with ``python -m tests.vectors.make_vault OUTDIR`` (OUTDIR must not
exist or be empty). The checked-in copy must never change: every future cryptfs must read
it, and this writer must reproduce it byte for byte (tests/unit/test_vectors.py).

The tree holds every kind of object of format 2: files (a multi-block one, one of exactly
two blocks, an empty one, a sparse one), a nested directory, long names (a directory and
a file), a symlink, a FIFO and a character device, a hard link, and user xattrs on a file
and on a directory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

from cryptfs import keys
from cryptfs.volume import Volume

PASSPHRASE = b"vector"
MASTER_KEY = bytes(range(32))
BLOCK_SIZE = 4096
SEED = b"cryptfs test vector v2"


class DeterministicRandom:
    """A reproducible byte stream standing in for os.urandom:
    ``blake2b(LE64(counter), key=seed)`` blocks of 64 bytes, cut to each request."""

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


LONG_DIR = "/" + "D" * 200
DIRS = ["/docs", "/docs/nested dir", LONG_DIR]
FILES = {
    "/docs/hello.txt": b"Hello, cryptfs!\n",
    "/empty": b"",
    "/docs/nested dir/three-blocks.bin": _pattern(3 * BLOCK_SIZE + 123),
    "/exact-two-blocks.bin": _pattern(2 * BLOCK_SIZE),
    LONG_DIR + "/" + "ü" * 100: b"long names on both levels\n",
}
SPARSE = ("/sparse.bin", 5 * BLOCK_SIZE + 10, b"tail")  # blocks 0..4 are holes
SYMLINKS = {"/link-to-hello": b"docs/hello.txt"}
NODES = {"/fifo": (stat.S_IFIFO | 0o644, 0),
         "/chardev": (stat.S_IFCHR | 0o600, os.makedev(1, 3))}
HARDLINKS = {"/docs/hello-link.txt": "/docs/hello.txt"}
XATTRS = {"/docs/hello.txt": {b"user.mime_type": b"text/plain"},
          "/docs": {b"user.color": b"blue", b"user.empty": b""}}


def build(outdir: str) -> Volume:
    rng = DeterministicRandom(SEED)
    kdf = keys.KdfParams(1, 8192, rng(16))
    wrap_nonce, vault_id = rng(24), rng(16)
    vol, _ = Volume.initialize(outdir, PASSPHRASE, master_key=MASTER_KEY, rng=rng,
                               block_size=BLOCK_SIZE, kdf=kdf, wrap_nonce=wrap_nonce,
                               vault_id=vault_id)
    for d in DIRS:
        vol.mkdir_path(d, 0o755)
    for path, data in FILES.items():
        vol.write_file(path, data)
    path, offset, data = SPARSE
    parent, name = vol.resolve_parent(path)
    fh, _ = vol.create(parent, name, 0o644, os.O_WRONLY)
    vol.write(fh, offset, data)
    vol.release(fh)
    for path, target in SYMLINKS.items():
        vol.symlink(*vol.resolve_parent(path), target)
    for path, (mode, rdev) in NODES.items():
        vol.mknod(*vol.resolve_parent(path), mode, rdev)
    for path, existing in HARDLINKS.items():
        vol.link(vol.resolve(existing), *vol.resolve_parent(path))
    for path, attrs in XATTRS.items():
        for attr, value in attrs.items():
            vol.setxattr(vol.resolve(path), attr, value)
    return vol


def expected_files() -> dict[str, bytes]:
    """Every regular file's path and content (hard links under each name)."""
    out = dict(FILES)
    path, offset, data = SPARSE
    out[path] = bytes(offset) + data
    for link, existing in HARDLINKS.items():
        out[link] = out[existing]
    return out


if __name__ == "__main__":
    build(sys.argv[1]).close()
