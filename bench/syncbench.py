"""Incremental sync cost: a vault of N files synced to rclone's local backend; then one
file changes and we count what the next sync transfers and how long it takes. Then the
cost of the ignore rules: the walk that evaluates them (done before every sync), and a
sync with an ignored tree (a node_modules of 100 folders, 1000 files) beside the vault.

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

from cryptfs.sync import ignore
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
        walks = []
        for _ in range(3):
            fresh = Volume.unlock(str(vault), passphrase=PASS.encode())
            t = time.perf_counter()
            ignore.plan(fresh, base / "plan", [])
            walks.append(time.perf_counter() - t)
        vol.mkdir_path("/node_modules")
        for d in range(100):
            vol.mkdir_path(f"/node_modules/p{d:03d}")
            for i in range(10):
                vol.write_file(f"/node_modules/p{d:03d}/m{i}.js", os.urandom(2000))
        vol.write_file("/.cryptfsignore", b"node_modules/\n")
        ign, line4 = run_sync(vault, env)
        ign_noop, line5 = run_sync(vault, env)
        fresh = Volume.unlock(str(vault), passphrase=PASS.encode())
        t = time.perf_counter()
        plan = ignore.plan(fresh, base / "plan", [])
        walk_ign = time.perf_counter() - t
        lines = ignore.filter_lines(plan)
        uploaded = sum(len(files) for _, _, files in os.walk(cloud))
        print(f"| vault of {args.files} files + 100 dirs | seconds | rclone summary |")
        print("|---|---|---|")
        print(f"| initial upload | {first:.1f} | `{line1}` |")
        print(f"| nothing changed | {noop:.1f} | `{line2}` |")
        print(f"| one file changed | {one:.1f} | `{line3}` |")
        print(f"| ignore rules: the walk alone (defaults, nothing ignored; best of 3, "
              f"cold Volume) | {min(walks):.2f} | - |")
        print(f"| + node_modules (100 dirs, 1000 files) ignored: first sync | {ign:.1f} | "
              f"`{line4}` |")
        print(f"| + node_modules ignored: nothing changed | {ign_noop:.1f} | `{line5}` |")
        print(f"| + node_modules ignored: the walk alone | {walk_ign:.2f} | "
              f"{len(plan.folders)} folders, {len(plan.files)} files hidden in "
              f"{len(lines)} filter lines; remote holds {uploaded} objects |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
