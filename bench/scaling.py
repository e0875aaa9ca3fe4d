"""How costs grow with size, side by side with gocryptfs (issue 14's scaling targets).

    python bench/scaling.py [--fs cryptfs,gocryptfs] [--entries 100000] [--out FILE]

For each file system, on tmpfs, as root (caches are dropped for the cold numbers):

- a directory of ENTRIES empty files, made through the mount: `ls -f` cold and warm;
- untar of the Python standard library once (~7,700 files) and four times over (~31,000
  files, four top-level copies): files per second at both sizes;
- sequential write + fsync and cold read of 1 GiB and of 4 GiB: MiB/s at both sizes;
- (cryptfs only) mount time of an empty vault and of one holding ENTRIES files made
  offline through the Volume API: the mount must not read the vault.

Prints a Markdown table; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fsbench

os.environ.setdefault("CRYPTFS_TESTONLY_WEAK_KDF", "1")


def big_dir(mnt: Path, entries: int) -> dict[str, float]:
    d = mnt / "big"
    d.mkdir()
    t = time.perf_counter()
    for i in range(entries):
        os.close(os.open(d / f"entry-{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
    made = time.perf_counter() - t
    out = {"create_per_s": entries / made}
    for key in ("ls_cold_s", "ls_warm_s"):
        if key == "ls_cold_s":
            fsbench.drop_caches()
        t = time.perf_counter()
        proc = subprocess.run(["ls", "-f", str(d)], stdout=subprocess.PIPE, check=True)
        out[key] = time.perf_counter() - t
        assert proc.stdout.count(b"\n") == entries + 2, proc.stdout.count(b"\n")
    shutil.rmtree(d)
    return out


def tarballs(work: Path) -> dict[int, tuple[Path, int]]:
    one, count = fsbench.make_tarball(work)
    four = work / "stdlib4.tar"
    with tarfile.open(four, "w") as out, tarfile.open(one) as src:
        members = src.getmembers()
        for copy in range(4):
            for m in members:
                data = src.extractfile(m) if m.isfile() else None
                m2 = tarfile.TarInfo(f"copy{copy}/{m.name}")
                m2.size, m2.mode, m2.mtime, m2.type = m.size, m.mode, m.mtime, m.type
                out.addfile(m2, data)
    return {1: (one, count), 4: (four, 4 * count)}


def untar_rate(mnt: Path, tarball: Path, count: int) -> float:
    dest = mnt / "untar"
    dest.mkdir()
    t = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(dest)], check=True)
    os.sync()
    rate = count / (time.perf_counter() - t)
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    return rate


def seq(mnt: Path, mib: int) -> tuple[float, float]:
    big = mnt / "seq.bin"
    w = fsbench.seq_write(big, mib)
    fsbench.drop_caches()
    r = fsbench.seq_read(big)
    big.unlink()
    return w, r


def mount_time(base: Path, entries: int) -> float:
    from cryptfs.volume import ROOT_INO, Volume

    vault, mnt = base / f"vault{entries}", base / f"mnt{entries}"
    mnt.mkdir()
    vol, _ = Volume.initialize(str(vault), fsbench.PASS.encode())
    if entries:
        d = vol.mkdir(ROOT_INO, b"many").ino
        for i in range(entries):
            fh, _ = vol.create(d, b"f%07d" % i, 0o644, os.O_WRONLY)
            vol.release(fh)
    vol.close()
    env = dict(os.environ, CRYPTFS_PASSWORD=fsbench.PASS, XDG_CONFIG_HOME=str(base / "xdg"))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cryptfs", "mount", "--no-sync", str(vault),
                    str(mnt)], env=env, check=True, capture_output=True, cwd="/")
    took = time.perf_counter() - t
    subprocess.run([sys.executable, "-m", "cryptfs", "unmount", str(mnt)], env=env,
                   check=True, capture_output=True, cwd="/")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fs", default="cryptfs,gocryptfs")
    ap.add_argument("--entries", type=int, default=100000)
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scaling-", dir="/dev/shm"))
    rows: dict[str, dict[str, float]] = {}
    try:
        tars = tarballs(work)
        for name in args.fs.split(","):
            if name == "gocryptfs" and not shutil.which("gocryptfs"):
                print("gocryptfs not installed; skipping it")
                continue
            base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/dev/shm"))
            target = fsbench.STARTERS[name](base)
            row: dict[str, float] = {}
            try:
                print(f"{name}: big directory", flush=True)
                row.update(big_dir(target.mnt, args.entries))
                for times, (tarball, count) in tars.items():
                    print(f"{name}: untar x{times}", flush=True)
                    row[f"untar_{count}"] = untar_rate(target.mnt, tarball, count)
                for mib in (1024, 4096):
                    print(f"{name}: sequential {mib} MiB", flush=True)
                    row[f"write_{mib}"], row[f"read_{mib}"] = seq(target.mnt, mib)
                _cpu, rss = target.daemon_usage()
                if rss is not None:
                    row["peak_rss_mib"] = rss
            finally:
                target.stop()
                shutil.rmtree(base, ignore_errors=True)
            if name == "cryptfs":
                base = Path(tempfile.mkdtemp(prefix="mount-", dir="/dev/shm"))
                try:
                    row["mount_s_empty"] = mount_time(base, 0)
                    row[f"mount_s_{args.entries}"] = mount_time(base, args.entries)
                finally:
                    shutil.rmtree(base, ignore_errors=True)
            rows[name] = row
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = sorted({k for r in rows.values() for k in r})
    lines = [f"Scaling, tmpfs, one run, {time.strftime('%Y-%m-%d %H:%M')} UTC "
             f"({args.entries} entries in the big directory)", "",
             "| measure | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(fsbench.fmt(rows[n].get(k)) for n in rows) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
