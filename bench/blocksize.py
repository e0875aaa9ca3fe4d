"""Choose the block size by measurement: sequential throughput vs 4 KiB random writes.

Runs the real Volume code (no FUSE) on a tmpfs-like temp dir for each candidate block
size and prints a Markdown table. Usage: python bench/blocksize.py [--quick]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time

os.environ.setdefault("CRYPTFS_TESTONLY_WEAK_KDF", "1")

from cryptfs.volume import ROOT_INO, Volume

SIZES = [4096, 8192, 16384, 32768, 65536]


def measure(block_size: int, seq_mib: int, rand_ops: int) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        vol, _ = Volume.initialize(os.path.join(d, "v"), b"bench", block_size=block_size)
        chunk = os.urandom(1 << 20)
        fh, _ = vol.create(ROOT_INO, b"seq", 0o644, os.O_RDWR)
        t = time.perf_counter()
        for i in range(seq_mib):
            vol.write(fh, i << 20, chunk)
        seq_w = seq_mib / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(seq_mib):
            vol.read(fh, i << 20, 1 << 20)
        seq_r = seq_mib / (time.perf_counter() - t)
        rng = random.Random(1)
        blocks = (seq_mib << 20) // 4096
        small = os.urandom(4096)
        t = time.perf_counter()
        for _ in range(rand_ops):
            vol.write(fh, rng.randrange(blocks) * 4096, small)
        rand_w = rand_ops / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(rand_ops):
            vol.read(fh, rng.randrange(blocks) * 4096, 4096)
        rand_r = rand_ops / (time.perf_counter() - t)
        vol.release(fh)
        vol.close()
    return seq_w, seq_r, rand_w, rand_r


def main() -> None:
    quick = "--quick" in sys.argv
    seq_mib, rand_ops = (32, 2000) if quick else (256, 20000)
    print(f"Volume API, no FUSE, {seq_mib} MiB sequential in 1 MiB calls, "
          f"{rand_ops} random 4 KiB ops, median of 3\n")
    print("| block size | seq write MiB/s | seq read MiB/s | 4K rand write ops/s "
          "| 4K rand read ops/s |")
    print("|---|---|---|---|---|")
    for bs in SIZES:
        columns = zip(*[measure(bs, seq_mib, rand_ops) for _ in range(3)])
        med = [sorted(col)[1] for col in columns]
        print(f"| {bs // 1024} KiB | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {med[3]:.0f} |")


if __name__ == "__main__":
    main()
