"""Side-by-side filesystem benchmark: cryptfs (with and without the kernel writeback cache)
vs gocryptfs vs securefs vs rclone mount (crypt) vs a plain Python passthrough vs the raw
directory, in one run on one machine.

    python bench/fsbench.py [--reps 3] [--where tmpfs,disk] [--size-mib 512] [--out FILE]

Workloads (as in ../shared/notes/anchor-numbers.md): sequential write of SIZE MiB in 1 MiB
writes + fsync; sequential read cold (after drop_caches) and warm; 2000 random 4 KiB writes
+ fsync and 2000 random 4 KiB reads in a 64 MiB file; untar of the Python standard library
+ sync; find + ls -lR cold and warm; read every file cold; rm -rf + sync. Medians of the
repetitions, ratios to gocryptfs, daemon CPU seconds and peak RSS. Needs root (drop_caches).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(sys.executable).parent
PASS = "bench passphrase"

# Everything after this line in the results file is kept when the tables are regenerated
# (the analysis against the targets, the extra runs).
KEEP_MARK = "<!-- regenerated above by bench/fsbench.py; kept below -->"

WORKLOADS = [
    ("seq_write", "MiB/s", True), ("seq_read_cold", "MiB/s", True),
    ("seq_read_warm", "MiB/s", True), ("rand_write", "4K ops/s", True),
    ("rand_read", "4K ops/s", True), ("untar", "files/s", True), ("stat_all", "s", False),
    ("stat_all_warm", "s", False), ("read_all", "MiB/s", True), ("rm_all", "s", False),
]


def is_mounted(path: Path) -> bool:
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mountinfo", "rb") as fh:
        return any(line.split()[4] == target for line in fh)


def wait_mounted(path: Path, proc: subprocess.Popen | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mount of {path} exited: {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not mount")


def unmount(path: Path) -> None:
    for args in (["fusermount3", "-u", str(path)], ["fusermount3", "-u", "-z", str(path)]):
        if not is_mounted(path):
            return
        subprocess.run(args, capture_output=True, check=False)
        time.sleep(0.2)


@dataclass
class Target:
    name: str
    mnt: Path
    pid: int | None = None
    proc: subprocess.Popen | None = None
    cleanup: list = field(default_factory=list)

    def stop(self) -> None:
        if self.mnt != Path("/") and is_mounted(self.mnt):
            unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def daemon_usage(self) -> tuple[float | None, float | None]:
        if not self.pid:
            return None, None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            status = Path(f"/proc/{self.pid}/status").read_text()
            hwm = next(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmHWM"))
            return cpu, hwm / 1024
        except (OSError, StopIteration, IndexError):
            return None, None


def start_raw(base: Path) -> Target:
    d = base / "raw"
    d.mkdir()
    return Target("raw", d)


def start_cryptfs(base: Path, extra: tuple[str, ...] = (), init_extra: tuple[str, ...] = (),
                  name: str = "cryptfs", python: str = PY) -> Target:
    vault, mnt = base / "vault", base / "mnt"
    mnt.mkdir()
    env = dict(os.environ, CRYPTFS_PASSWORD=PASS, CRYPTFS_TESTONLY_WEAK_KDF="1",
               XDG_CONFIG_HOME=str(base / "xdg"))
    # cwd "/": "-m cryptfs" must import the build installed in that Python's venv, not a
    # cryptfs/ folder in the current directory.
    subprocess.run([python, "-m", "cryptfs", "init", "--quiet", *init_extra, str(vault)],
                   env=env, check=True, capture_output=True, cwd="/")
    sync = [] if "--sync-interval" in extra else ["--no-sync"]
    proc = subprocess.Popen([python, "-m", "cryptfs", "mount", "-f", *sync, *extra,
                             str(vault), str(mnt)], env=env, stderr=subprocess.DEVNULL,
                            cwd="/")
    wait_mounted(mnt, proc)
    return Target(name, mnt, proc.pid, proc)


def start_cryptfs_writeback(base: Path) -> Target:
    return start_cryptfs(base, ("--writeback",), name="cryptfs-writeback")


def start_cryptfs_sync(base: Path) -> Target:
    """Mounted with a remote (a local folder): the daemon syncs while the workloads run."""
    return start_cryptfs(base, ("--sync-interval", "2", "--poll-interval", "30"),
                         init_extra=("--remote", str(base / "cloud")), name="cryptfs-sync")


def start_cryptfs_4k(base: Path) -> Target:
    return start_cryptfs(base, init_extra=("--block-size", "4096"), name="cryptfs-4k")


def start_passthrough(base: Path) -> Target:
    root, mnt = base / "ptroot", base / "mnt"
    root.mkdir()
    mnt.mkdir()
    proc = subprocess.Popen([PY, str(ROOT / "bench" / "passthrough.py"), str(root), str(mnt)],
                            stderr=subprocess.DEVNULL)
    wait_mounted(mnt, proc)
    return Target("py-passthrough", mnt, proc.pid, proc)


def start_gocryptfs(base: Path) -> Target:
    cipher, mnt = base / "gocipher", base / "mnt"
    cipher.mkdir()
    mnt.mkdir()
    extpass = ["-extpass", f"echo {PASS}"]
    subprocess.run(["gocryptfs", "-init", "-q", "-scryptn", "10", *extpass, str(cipher)],
                   check=True, capture_output=True)
    proc = subprocess.Popen(["gocryptfs", "-fg", "-q", *extpass, str(cipher), str(mnt)],
                            stderr=subprocess.DEVNULL)
    wait_mounted(mnt, proc)
    return Target("gocryptfs", mnt, proc.pid, proc)


def start_securefs(base: Path) -> Target:
    data, mnt = base / "securefs-data", base / "mnt"
    data.mkdir()
    mnt.mkdir()
    subprocess.run(["securefs", "create", "--pass", PASS, str(data)], check=True,
                   capture_output=True)
    proc = subprocess.Popen(["securefs", "mount", "--pass", PASS, str(data), str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_mounted(mnt, proc)
    return Target("securefs", mnt, proc.pid, proc)


def rclone_bin() -> str:
    found = shutil.which("rclone") or str(BIN / "rclone")
    return found if Path(found).exists() else str(Path(sysconfig.get_path("scripts")) / "rclone")


def start_rclone(base: Path) -> Target:
    store, mnt = base / "rstore", base / "mnt"
    store.mkdir()
    mnt.mkdir()
    rc = rclone_bin()
    obscured = subprocess.run([rc, "obscure", PASS], capture_output=True, text=True,
                              check=True).stdout.strip()
    remote = f":crypt,remote='{store}',password={obscured}:"
    (base / "rclone.conf").write_text("")
    env = dict(os.environ, RCLONE_CONFIG=str(base / "rclone.conf"))
    proc = subprocess.Popen([rc, "mount", remote, str(mnt), "--vfs-cache-mode", "writes",
                             "--cache-dir", str(base / "rcache")], env=env,
                            stderr=subprocess.DEVNULL)
    wait_mounted(mnt, proc)
    return Target("rclone-crypt", mnt, proc.pid, proc)


STARTERS = {"raw": start_raw, "cryptfs": start_cryptfs,
            "cryptfs-writeback": start_cryptfs_writeback, "cryptfs-4k": start_cryptfs_4k,
            "cryptfs-sync": start_cryptfs_sync,
            "py-passthrough": start_passthrough,
            "gocryptfs": start_gocryptfs, "securefs": start_securefs,
            "rclone-crypt": start_rclone}


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def seq_write(path: Path, mib: int) -> float:
    chunk = os.urandom(1 << 20)
    t = time.perf_counter()
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for _ in range(mib):
        os.write(fd, chunk)
    os.fsync(fd)
    os.close(fd)
    return mib / (time.perf_counter() - t)


def seq_read(path: Path) -> float:
    t = time.perf_counter()
    total = 0
    fd = os.open(path, os.O_RDONLY)
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
    os.close(fd)
    return total / 2**20 / (time.perf_counter() - t)


def rand_io(path: Path, rng: random.Random) -> tuple[float, float]:
    size = 64 << 20
    with open(path, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    ops, small = 2000, os.urandom(4096)
    fd = os.open(path, os.O_RDWR)
    t = time.perf_counter()
    for _ in range(ops):
        os.pwrite(fd, small, rng.randrange(size // 4096) * 4096)
    os.fsync(fd)
    write_rate = ops / (time.perf_counter() - t)
    os.close(fd)
    drop_caches()
    fd = os.open(path, os.O_RDONLY)
    t = time.perf_counter()
    for _ in range(ops):
        os.pread(fd, 4096, rng.randrange(size // 4096) * 4096)
    read_rate = ops / (time.perf_counter() - t)
    os.close(fd)
    return write_rate, read_rate


def tree_run(mnt: Path, tarball: Path, nfiles: int) -> dict[str, float]:
    dest = mnt / "untar"
    dest.mkdir()
    t = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(dest)], check=True)
    os.sync()
    out = {"untar": nfiles / (time.perf_counter() - t)}
    for key in ("stat_all", "stat_all_warm"):
        if key == "stat_all":
            drop_caches()
        t = time.perf_counter()
        subprocess.run(["find", str(dest)], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["ls", "-lR", str(dest)], stdout=subprocess.DEVNULL, check=True)
        out[key] = time.perf_counter() - t
    drop_caches()
    total = 0
    t = time.perf_counter()
    for dirpath, _dirs, files in os.walk(dest):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                with open(p, "rb") as fh:
                    total += len(fh.read())
    out["read_all"] = total / 2**20 / (time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    os.sync()
    out["rm_all"] = time.perf_counter() - t
    return out


def run_one(name: str, base: Path, tarball: Path, nfiles: int, mib: int,
            seed: int) -> dict[str, float]:
    target = STARTERS[name](base)
    results: dict[str, float] = {}
    try:
        big = target.mnt / "big.bin"
        results["seq_write"] = seq_write(big, mib)
        drop_caches()
        results["seq_read_cold"] = seq_read(big)
        results["seq_read_warm"] = seq_read(big)
        big.unlink()
        results["rand_write"], results["rand_read"] = rand_io(target.mnt / "rand.bin",
                                                              random.Random(seed))
        (target.mnt / "rand.bin").unlink()
        results.update(tree_run(target.mnt, tarball, nfiles))
        cpu, rss = target.daemon_usage()
        if cpu is not None:
            results["daemon_cpu_s"], results["daemon_rss_mib"] = cpu, rss
    finally:
        target.stop()
    return results


def make_tarball(work: Path) -> tuple[Path, int]:
    src = Path(sysconfig.get_paths()["stdlib"])
    tarball = work / "stdlib.tar"
    count = 0
    with tarfile.open(tarball, "w") as tar:
        for dirpath, dirs, files in os.walk(src):
            dirs[:] = [d for d in dirs if d != "site-packages"]
            for f in files:
                p = os.path.join(dirpath, f)
                tar.add(p, arcname=os.path.relpath(p, src.parent), recursive=False)
                count += 1
    return tarball, count


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def machine_notes() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    versions = []
    for cmd in (["gocryptfs", "--version"],
                ["dpkg-query", "-W", "-f", "securefs ${Version}", "securefs"],
                [rclone_bin(), "version"], ["fusermount3", "-V"]):
        try:
            versions.append(subprocess.run(cmd, capture_output=True, text=True,
                                           check=False).stdout.splitlines()[0])
        except (OSError, IndexError):
            versions.append(f"{cmd[0]}: not found")
    return [f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {int(mem) // 1024} MiB; "
            f"kernel {platform.release()}",
            f"- Python {platform.python_version()}; " + "; ".join(versions)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--where", default="tmpfs,disk")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--fs", default="raw,py-passthrough,cryptfs,cryptfs-writeback,gocryptfs,"
                                    "securefs,rclone-crypt")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=PYTHON",
                    help="another cryptfs build to run side by side, as NAME, with the "
                         "Python of its own checkout's venv (e.g. an older commit); add "
                         "NAME to --fs")
    args = ap.parse_args()
    for spec in args.also:
        label, _, python = spec.partition("=")
        STARTERS[label] = lambda base, py=python, n=label: start_cryptfs(base, name=n,
                                                                            python=py)
    if os.geteuid() != 0:
        print("note: not root, so caches cannot be dropped: 'cold' numbers are warm")
    names = args.fs.split(",")
    for peer in ("gocryptfs", "securefs"):
        if peer in names and not shutil.which(peer):
            print(f"{peer} not installed (apt-get install {peer}); skipping it")
            names.remove(peer)
    lines = ["# Benchmark results", "",
             f"`python bench/fsbench.py --reps {args.reps} --where {args.where} "
             f"--size-mib {args.size_mib}`, run {time.strftime('%Y-%m-%d %H:%M')} UTC.", "",
             *machine_notes(), "",
             "Medians of the repetitions. `s` columns: lower is better; everything else: "
             "higher is better. Ratios are to gocryptfs in the same run (>1 = better than "
             "gocryptfs, for `s` columns gocryptfs_s / fs_s).", ""]
    work = Path(tempfile.mkdtemp(prefix="fsbench-"))
    try:
        tarball, nfiles = make_tarball(work)
        lines.append(f"Tree workloads: {nfiles} files of the Python {platform.python_version()}"
                     f" standard library ({tarball.stat().st_size / 2**20:.0f} MiB tar).")
        for where in args.where.split(","):
            parent = "/dev/shm" if where == "tmpfs" else "/var/tmp"
            medians: dict[str, dict[str, float]] = {}
            for name in names:
                runs = []
                for rep in range(args.reps):
                    base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
                    try:
                        print(f"[{where}] {name} rep {rep + 1}/{args.reps}", flush=True)
                        runs.append(run_one(name, base, tarball, nfiles, args.size_mib, rep))
                    except Exception as exc:  # report, keep going with the other peers
                        print(f"  failed: {exc}", flush=True)
                    finally:
                        shutil.rmtree(base, ignore_errors=True)
                if runs:
                    keys = runs[0].keys()
                    medians[name] = {k: statistics.median(r[k] for r in runs if k in r)
                                     for k in keys}
            lines += table(where, medians, args.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    kept = out.read_text().split(KEEP_MARK, 1)[1] if out.exists() and \
        KEEP_MARK in out.read_text() else "\n"
    out.write_text("\n".join(lines) + "\n\n" + KEEP_MARK + kept)
    print("\n".join(lines))
    return 0


def table(where: str, medians: dict[str, dict[str, float]], reps: int) -> list[str]:
    cols = [w for w, _, _ in WORKLOADS]
    head = "| filesystem | " + " | ".join(f"{w} {u}" for w, u, _ in WORKLOADS) + \
        " | daemon CPU s | peak RSS MiB |"
    sep = "|" + "---|" * (len(cols) + 3)
    out = ["", f"## Backing directory on {where} ({reps} repetitions)", "", head, sep]
    for name, res in medians.items():
        out.append(f"| {name} | " + " | ".join(fmt(res.get(c)) for c in cols) +
                   f" | {fmt(res.get('daemon_cpu_s'))} | {fmt(res.get('daemon_rss_mib'))} |")
    for ref in ("gocryptfs", "securefs", "rclone-crypt", "py-passthrough"):
        if ref not in medians:
            continue
        out += ["", f"Ratio to {ref}:", "", "| filesystem | " + " | ".join(cols) + " |",
                "|" + "---|" * (len(cols) + 1)]
        for name, res in medians.items():
            if name == ref:
                continue
            cells = []
            for w, _, higher in WORKLOADS:
                a, b = res.get(w), medians[ref].get(w)
                if not a or not b:
                    cells.append("-")
                else:
                    cells.append(f"{(a / b) if higher else (b / a):.2f}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
