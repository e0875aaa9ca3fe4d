"""What a sync costs with engine 2 (docs/SYNC.md), by vault size.

A vault of N files (2 KB each, 500 per directory, built through ``Volume`` with the
mount's journal wired in, as the mount writes it) is synced to rclone's local backend,
cloned as a second device, then:

- first upload (full reconciliation and engine-2 start), and the clone;
- nothing changed: the mount's poll (journal-driven, as autosync runs it) and
  ``cryptfs sync`` from the command line (which compares every folder: no mount);
- one file changed: published by A, pulled by B;
- a 500-file directory renamed: published by A, pulled by B.

Each row gives seconds and remote (rclone) calls. ``--latency`` also mounts both devices
with the default settings and measures close on A -> readable on B.

    python bench/syncbench.py                  # 10,000 and 50,000 files
    python bench/syncbench.py --sizes 200000   # the large vault (several minutes)
    python bench/syncbench.py --latency        # close -> readable, two mounts
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CRYPTFS_TESTONLY_WEAK_KDF", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptfs.settings import VaultSettings
from cryptfs.sync import Syncer, VaultKeys, rclone
from cryptfs.sync.engine import Engine
from cryptfs.sync.journal import Journal
from cryptfs.volume import Volume

PASS = "bench passphrase"
PER_DIR = 500


class Device:
    def __init__(self, base: Path, name: str, remote: str) -> None:
        self.backing = base / name
        self.config = base / f"{name}-config"
        self.remote = remote
        self.env = dict(os.environ, CRYPTFS_PASSWORD=PASS, XDG_CONFIG_HOME=str(self.config))

    def cli(self, *args: str) -> tuple[float, str]:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cryptfs", *args], env=self.env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"cryptfs {args[0]} failed: {proc.stderr}")
        return time.perf_counter() - t, proc.stdout

    def engine(self) -> tuple[Engine, Volume]:
        os.environ["XDG_CONFIG_HOME"] = str(self.config)
        vol = Volume.unlock(str(self.backing), passphrase=PASS.encode())
        syncer = Syncer(str(self.backing), VaultSettings.load(str(self.backing)),
                        vault=VaultKeys(vol.master_key, vol.config, vol))
        engine = Engine(syncer)
        # the mount's hook: every folder an operation changes goes to the journal
        vol.on_backing_change = Journal(syncer.state.dir).record
        return engine, vol


def timed(engine: Engine, **kw) -> tuple[float, int, object]:
    before = rclone.calls()
    t = time.perf_counter()
    result = engine.run(**kw)
    return time.perf_counter() - t, rclone.calls() - before, result


def calls_of(out: str) -> int:
    for word in out.split():
        if word.startswith("remote_calls="):
            return int(word.split("=")[1])
    return -1


def build(vol: Volume, files: int) -> None:
    payload = os.urandom(2000)
    for d in range((files + PER_DIR - 1) // PER_DIR):
        vol.mkdir_path(f"/d{d:04d}")
    for i in range(files):
        vol.write_file(f"/d{i // PER_DIR:04d}/file-{i:06d}.txt", payload[: 1000 + i % 1000])


def run_size(files: int, base: Path) -> dict[str, tuple[float, int]]:
    remote = str(base / "cloud")
    a, b = Device(base, "a", remote), Device(base, "b", remote)
    out: dict[str, tuple[float, int]] = {}
    a.cli("init", "--quiet", str(a.backing), "--remote", remote)
    t = time.perf_counter()
    engine, vol = a.engine()
    build(vol, files)
    out["build (Volume)"] = (time.perf_counter() - t, 0)
    secs, calls, _ = timed(engine, scan_all=True)
    out["first upload (full reconciliation)"] = (secs, calls)
    secs, _o = b.cli("clone", remote, str(b.backing))
    out["clone on B"] = (secs, -1)
    engine.run()  # the mount's first poll after start (not measured)
    polls = [timed(engine) for _ in range(5)]
    out["nothing changed: mount poll"] = (statistics.median(p[0] for p in polls),
                                          max(p[1] for p in polls))
    secs, o = a.cli("sync", str(a.backing))
    out["nothing changed: cryptfs sync (CLI)"] = (secs, calls_of(o))
    engine_b, _vol_b = b.engine()
    engine_b.run(scan_all=True)
    vol.write_file("/d0000/file-000007.txt", b"changed " * 200)
    out["one file changed: A publishes"] = timed(engine)[:2]
    out["one file changed: B pulls"] = timed(engine_b)[:2]
    vol.rename_path("/d0001", "/renamed-dir")
    secs, calls, result = timed(engine)
    out["500-file dir renamed: A publishes"] = (secs, calls)
    out["  objects uploaded"] = (float(result.uploads), -1)
    secs, calls, result = timed(engine_b)
    out["500-file dir renamed: B pulls"] = (secs, calls)
    out["  objects downloaded"] = (float(result.downloads), -1)
    engine.close()
    engine_b.close()
    return out


def latency(base: Path, rounds: int) -> list[float]:
    """Two mounts with the default sync settings: write+close on A, read on B."""
    remote = str(base / "cloud")
    a, b = Device(base, "a", remote), Device(base, "b", remote)
    a.cli("init", "--quiet", str(a.backing), "--remote", remote)
    a.cli("sync", str(a.backing))
    b.cli("clone", remote, str(b.backing))
    ma, mb = base / "ma", base / "mb"
    ma.mkdir()
    mb.mkdir()
    a.cli("mount", str(a.backing), str(ma), "--log", str(base / "a.log"))
    b.cli("mount", str(b.backing), str(mb), "--log", str(base / "b.log"))
    out = []
    try:
        time.sleep(3)
        for i in range(rounds):
            text = f"round {i} {time.time()}"
            t = time.perf_counter()
            (ma / f"f{i}.txt").write_text(text)
            while True:
                try:
                    if (mb / f"f{i}.txt").read_text() == text:
                        break
                except OSError:
                    pass
                if time.perf_counter() - t > 120:
                    raise SystemExit("a change did not arrive within 120 s")
                time.sleep(0.05)
            out.append(time.perf_counter() - t)
            time.sleep(random.uniform(0.5, 6))  # meet B's poll in every phase
    finally:
        for d, m in ((a, ma), (b, mb)):
            subprocess.run([sys.executable, "-m", "cryptfs", "unmount", str(m)], env=d.env,
                           capture_output=True, check=False, timeout=300)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,50000",
                    help="comma-separated vault sizes (files); 200000 takes several minutes")
    ap.add_argument("--latency", action="store_true",
                    help="also measure close on A -> readable on B with two mounts")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = {}
    for n in sizes:
        base = Path(tempfile.mkdtemp(prefix=f"syncbench-{n}-"))
        try:
            results[n] = run_size(n, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"done: {n} files", file=sys.stderr)
    if results:
        rows = list(next(iter(results.values())))
        print("| step | " + " | ".join(f"{n:,} files" for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for row in rows:
            cells = []
            for n in sizes:
                secs, calls = results[n][row]
                if row.startswith("  "):
                    cells.append(f"{secs:.0f}")
                elif calls >= 0:
                    cells.append(f"{secs:.2f} s, {calls} calls")
                else:
                    cells.append(f"{secs:.2f} s")
            print(f"| {row.strip()} | " + " | ".join(cells) + " |")
    if args.latency:
        base = Path(tempfile.mkdtemp(prefix="syncbench-latency-"))
        try:
            got = latency(base, args.rounds)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"\nclose on A -> readable on B (default settings, local remote, {len(got)} "
              f"rounds): median {statistics.median(got):.1f} s, min {min(got):.1f} s, "
              f"max {max(got):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
