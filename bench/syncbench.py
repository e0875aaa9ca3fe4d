"""Incremental sync cost: a vault of N files synced to rclone's local backend; then one
file changes and we count what the next sync transfers and how long it takes.

    python bench/syncbench.py [--files 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CRYPTFS_TESTONLY_WEAK_KDF", "1")

from cryptfs.volume import Volume

PASS = "bench"


def run_sync(vault: Path, env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cryptfs", "sync", str(vault)], env=env,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - t, proc.stdout.strip().splitlines()[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncbench-") as tmp:
        base = Path(tmp)
        vault, cloud = base / "vault", base / "cloud"
        env = dict(os.environ, CRYPTFS_PASSWORD=PASS, XDG_CONFIG_HOME=str(base / "xdg"))
        vol, _ = Volume.initialize(str(vault), PASS.encode())
        for d in range(100):
            vol.mkdir_path(f"/d{d:03d}")
        for i in range(args.files):
            vol.write_file(f"/d{i % 100:03d}/file-{i:05d}.txt", os.urandom(2000))
        subprocess.run([sys.executable, "-m", "cryptfs", "remote", "set", str(vault),
                        str(cloud)], env=env, check=True, capture_output=True)
        first, line1 = run_sync(vault, env)
        noop, line2 = run_sync(vault, env)
        vol.write_file("/d007/file-00007.txt", b"changed")
        one, line3 = run_sync(vault, env)
        print(f"| vault of {args.files} files + 100 dirs | seconds | rclone summary |")
        print("|---|---|---|")
        print(f"| initial upload | {first:.1f} | `{line1}` |")
        print(f"| nothing changed | {noop:.1f} | `{line2}` |")
        print(f"| one file changed | {one:.1f} | `{line3}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
