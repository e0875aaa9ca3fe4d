"""Run pjdfstest against a fresh cryptfs mount (and other filesystems to compare with).

Usage (as root; pjdfstest switches users itself)::

    python -m tests.posix.run_pjdfstest --pjdfstest DIR [--target SPEC]... [--compare SPEC]...

DIR is a built pjdfstest checkout (``autoreconf -ifs && ./configure && make pjdfstest``).
SPEC is ``cryptfs`` (default; a fresh vault, ``cryptfs mount -f -o allow_other``),
``gocryptfs`` (a fresh volume, ``-allow_other``), ``tmpfs`` (a fresh tmpfs) or a directory
(tests run in a fresh subdirectory of it: ext4, NFS, any mount point).

Every test file runs in its own fresh directory (mode 0755) with a per-file timeout, in its
own process group that is killed when the time is up. The table gives, per file, the
number of assertions, the ``not ok`` count per filesystem and the failed assertion numbers.
``# TODO`` failures (expected failures documented by pjdfstest itself) are counted apart,
as ``prove`` does.

Exit status: 0 when no ``--target`` has a ``not ok`` (``--compare`` filesystems never count),
1 when one has, 2 on a usage or set-up error.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests.posix`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.posix.probes import PROBES, run_probes
from tests.posix.tap import Failure, FileResult, parse_tap, ranges
from tests.posix.targets import Target, TargetError, make_target

DEFAULT_TIMEOUT = 300.0  # seconds per test file; the slowest take ~20 s on a FUSE mount
# mkdir the file's directory and run the test in it, both inside the timeout.
_SHELL = 'mkdir -m 0755 "$1" && cd "$1" && exec /bin/sh "$2"'


class Run:
    """One filesystem's results: label, description, per-file results, wall time."""

    def __init__(self, label: str, description: str, counts: bool) -> None:
        self.label = label
        self.description = description
        self.counts = counts  # a --target (decides the exit status), not a --compare
        self.results: list[FileResult] = []
        self.probes: dict[str, list[str]] = {}
        self.seconds = 0.0
        self.error: str | None = None

    @property
    def assertions(self) -> int:
        return sum(r.assertions for r in self.results)

    @property
    def not_ok(self) -> int:
        return sum(r.not_ok for r in self.results)

    @property
    def todo(self) -> int:
        return sum(len(r.todo) for r in self.results)

    @property
    def failing_files(self) -> int:
        return sum(1 for r in self.results if r.not_ok)

    def failed(self) -> bool:
        return self.error is not None or self.not_ok > 0 or any(self.probes.values())


class FileRunner:
    """Runs test files in fresh directories under ``root``, never longer than ``timeout``."""

    def __init__(self, tests_dir: Path, root: Path, timeout: float,
                 out_dir: Path | None) -> None:
        self.tests_dir = tests_dir
        self.root = root
        self.timeout = timeout
        self.out_dir = out_dir
        self.hung = threading.Event()  # a test could not be killed: the mount is stuck
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTFS_")}
        self.env["LC_ALL"] = "C"

    def run(self, index: int, name: str) -> FileResult:
        if self.hung.is_set():
            return FileResult(name, error="not run: an earlier test hung the mount")
        work = self.root / f"{index:03d}-{name.replace('/', '-')}"
        started = time.monotonic()
        with self._lock:
            if self._stopped:
                return FileResult(name, error="not run: interrupted")
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _SHELL, "sh", str(work), str(self.tests_dir / name)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True, umask=0o022)
            self._live.add(proc)
        error = None
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            error = f"timeout after {self.timeout:.0f} s"
            self._kill(proc)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                error += "; could not be killed (stuck in the filesystem)"
                self.hung.set()
                out = b""
        finally:
            with self._lock:
                self._live.discard(proc)
        text = out.decode(errors="replace")
        result = parse_tap(name, text)
        result.seconds = time.monotonic() - started
        if error:
            result.error = error
        if self.out_dir is not None:
            dest = self.out_dir / (name.replace("/", "-") + ".tap")
            dest.write_text(text)
        if not self.hung.is_set():
            self._remove(work, result)
        return result

    def _remove(self, work: Path, result: FileResult) -> None:
        """Remove the file's directory in a child process (it cannot hang the runner)."""
        try:
            proc = subprocess.run(["rm", "-rf", "--one-file-system", str(work)],
                                  capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            self.hung.set()
            result.error = "; ".join(filter(None, [result.error, "cleanup hung"]))
            return
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            result.cleanup = msg[0] if msg else f"rm exit {proc.returncode}"

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_all(self) -> None:
        """Start nothing more and kill the process groups of the running files."""
        with self._lock:
            self._stopped = True
            for proc in list(self._live):
                self._kill(proc)


def discover(tests_dir: Path, only: list[str]) -> list[str]:
    """Test files relative to ``tests_dir`` (``chmod/00.t``...), sorted, filtered by globs."""
    names = sorted(str(p.relative_to(tests_dir)) for p in tests_dir.rglob("*.t"))
    if only:
        names = [n for n in names
                 if any(fnmatch.fnmatch(n, pat) or n.startswith(pat.rstrip("/") + "/")
                        for pat in only)]
    return names


def run_target(target: Target, run: Run, tests_dir: Path, names: list[str], timeout: float,
               jobs: int, out_dir: Path | None, verbose: bool, probes: bool) -> None:
    """Mount ``target``, run every file (and the probes) on it, unmount; fill ``run``."""
    started = time.monotonic()
    target_out = None
    if out_dir is not None:
        target_out = out_dir / run.label
        target_out.mkdir(parents=True, exist_ok=True)
    try:
        with target as root:
            runner = FileRunner(tests_dir, root, timeout, target_out)
            results: dict[int, FileResult] = {}
            pool = ThreadPoolExecutor(max_workers=jobs)
            try:
                futures = {pool.submit(runner.run, i, n): i for i, n in enumerate(names)}
                for done, fut in enumerate(as_completed(futures), 1):
                    res = fut.result()
                    results[futures[fut]] = res
                    _progress(run.label, done, len(names), res, verbose)
            except BaseException:
                runner.kill_all()  # before the pool waits for its threads
                if runner.hung.is_set():
                    target.abort()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            run.results = [results[i] for i in range(len(names))]
            run.error = target.died()
            if runner.hung.is_set():
                target.abort()  # frees the stuck processes; then unmount as usual
            if probes and not runner.hung.is_set():
                run.probes = run_probes(root, timeout)
                bad = sum(1 for v in run.probes.values() if v)
                print(f"[{run.label}] probes: {bad} of {len(run.probes)} show a problem",
                      file=sys.stderr, flush=True)
            run.error = run.error or target.died()
            if target_out is not None and getattr(target, "log", None):
                shutil.copyfile(target.log, target_out / "daemon.log")
    except TargetError as exc:
        run.error = str(exc)
        print(f"{run.label}: {exc}", file=sys.stderr)
    run.seconds = time.monotonic() - started


def _progress(label: str, done: int, total: int, res: FileResult, verbose: bool) -> None:
    status = f"{res.not_ok} not ok" if res.not_ok else "ok"
    if res.error:
        status += f" ({res.error})"
    if res.cleanup:
        status += f" [cleanup: {res.cleanup}]"
    print(f"[{label} {done}/{total}] {res.name}: {status} ({res.seconds:.1f} s)",
          file=sys.stderr, flush=True)
    if verbose:
        for f in res.failures:
            print(f"    not ok {f.number} {f.message}", file=sys.stderr)


def table_rows(runs: list[Run], failed_only: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows: file, assertions, not ok per run, failed numbers per run."""
    header = ["test file", "assertions", *[r.label for r in runs], "failed assertions"]
    rows: list[list[str]] = []
    names = [res.name for res in max(runs, key=lambda r: len(r.results)).results]
    by_run = [{res.name: res for res in r.results} for r in runs]
    for name in names:
        cells, failed = [], []
        judged = [m[name] for m in by_run if name in m and not m[name].error]
        base = (judged or [FileResult(name)])[0].assertions
        for run, results in zip(runs, by_run):
            res = results.get(name)
            if res is None:
                cells.append("-")
                continue
            cell = str(res.not_ok)
            if res.assertions != base:
                cell += f"/{res.assertions}"
            if res.error:
                cell += "!"
            cells.append(cell)
            if res.not_ok or res.error:
                what = ranges(res.failed_numbers)
                if res.error:
                    what = f"{what} ({res.error})".strip()
                failed.append(f"{run.label}: {what}" if len(runs) > 1 else what)
        if failed_only and not failed:
            continue
        rows.append([name, str(base), *cells, "; ".join(failed)])
    ran = [r for r in runs if r.results]
    files = len(names)
    base_total = ran[0].assertions if ran else 0
    rows.append([f"TOTAL ({files} files)", str(base_total),
                 *[str(r.not_ok) if r.results else "error" for r in runs], ""])
    rows.append(["files with not ok", "", *[str(r.failing_files) for r in runs], ""])
    rows.append(["assertions run", "", *[str(r.assertions) for r in runs], ""])
    rows.append(["TODO (expected by pjdfstest)", "", *[str(r.todo) for r in runs], ""])
    rows.append(["wall time (s)", "", *[f"{r.seconds:.0f}" for r in runs], ""])
    return header, rows


def probe_rows(runs: list[Run]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, one row per probe (ok / FAIL per run), and the detail lines of the failures."""
    header = ["class", "probe", *[r.label for r in runs], "issue 11 class"]
    rows, details = [], []
    for name, (klass, fn) in PROBES.items():
        cells = []
        for run in runs:
            problems = run.probes.get(name)
            cells.append("-" if problems is None else ("FAIL" if problems else "ok"))
            if problems:
                details.append(f"{run.label} {name}: {'; '.join(problems)}")
        rows.append([klass, name, *cells, (fn.__doc__ or "").split(":", 1)[-1].strip()])
    return header, rows, details


def format_text(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned columns: the first ``left`` flush left, the others right, the last free."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:left], widths[:left])]
        cells += [c.rjust(w) for c, w in zip(row[left:-1], widths[left:])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def format_markdown(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    align = ["---"] * left + ["---:"] * (len(header) - 1 - left) + ["---"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _git_rev(path: Path) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return proc.stdout.decode().strip() or "?"


def to_json(runs: list[Run], meta: dict) -> dict:
    return {"meta": meta, "runs": [{
        "label": r.label, "description": r.description, "counts": r.counts,
        "seconds": round(r.seconds, 1), "error": r.error, "assertions": r.assertions,
        "not_ok": r.not_ok, "todo": r.todo, "probes": r.probes,
        "files": [{"name": f.name, "assertions": f.assertions, "not_ok": f.not_ok,
                   "failures": [{"number": x.number, "message": x.message}
                                for x in f.failures],
                   "todo": f.todo, "error": f.error, "cleanup": f.cleanup,
                   "seconds": round(f.seconds, 2)} for f in r.results],
    } for r in runs]}


def find_pjdfstest(path: str) -> tuple[Path, Path]:
    """``(binary, tests dir)`` of a built checkout given as its root or its tests dir."""
    root = Path(path).resolve()
    if root.name == "tests" and (root.parent / "pjdfstest").is_file():
        root = root.parent
    binary, tests = root / "pjdfstest", root / "tests"
    if not tests.is_dir():
        raise TargetError(f"{root}: no tests/ directory; is it a pjdfstest checkout?")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise TargetError(f"{binary} is not built: cd {root} && autoreconf -ifs && "
                          "./configure && make pjdfstest")
    return binary, tests


def default_cryptfs() -> list[str]:
    venv = Path(sys.executable).parent / "cryptfs"
    if venv.exists():
        return [str(venv)]
    return [sys.executable, "-m", "cryptfs"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_pjdfstest", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="SPEC: cryptfs | gocryptfs | tmpfs | DIR (a directory or mount point; "
               "write ./cryptfs for a directory named so)")
    p.add_argument("--pjdfstest", default=os.environ.get("PJDFSTEST"),
                   help="built pjdfstest checkout (default: $PJDFSTEST)")
    p.add_argument("--target", action="append", metavar="SPEC",
                   help="filesystem under test; decides the exit status (default: cryptfs)")
    p.add_argument("--compare", action="append", default=[], metavar="SPEC",
                   help="filesystem to compare with; its failures do not change the exit status")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only these files (e.g. 'link/*', rename/00.t, chmod)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per test file before its processes are killed (default 300)")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="test files run at once on a filesystem (default 1)")
    p.add_argument("--cryptfs", default=None,
                   help="cryptfs command (default: the cryptfs next to this Python)")
    p.add_argument("--cryptfs-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for cryptfs mount (e.g. --cryptfs-arg=--writeback)")
    p.add_argument("--tmp", default=None, help="where to make vaults and mount points "
                   "(default: the system temp dir)")
    p.add_argument("--backing", default=None, metavar="DIR",
                   help="make the cryptfs/gocryptfs backing directory in DIR (e.g. on sshfs, "
                   "NFS, exFAT; default: the temp dir)")
    p.add_argument("--probes", action="store_true",
                   help="also run the probes of tests/posix/probes.py (issue 11 classes that "
                   "pjdfstest does not see)")
    p.add_argument("--probes-only", action="store_true",
                   help="run the probes and no pjdfstest file (needs no pjdfstest)")
    p.add_argument("--failed-only", action="store_true", help="table rows with failures only")
    p.add_argument("--out", type=Path, help="keep raw TAP output and daemon logs here")
    p.add_argument("--json", type=Path, help="write all results (with messages) as JSON")
    p.add_argument("--markdown", type=Path, help="write the table as Markdown")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="run nothing: print the tables of a file written by --json")
    p.add_argument("-v", "--verbose", action="store_true", help="print every not ok line")
    return p.parse_args(argv)


def _unique_label(label: str, taken: set[str]) -> str:
    out, n = label, 2
    while out in taken:
        out, n = f"{label}#{n}", n + 1
    taken.add(out)
    return out


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind: every target unmounts and cleans up


def from_json(data: dict) -> list[Run]:
    """The runs of a file written by ``--json`` (to re-render its tables)."""
    runs = []
    for r in data["runs"]:
        run = Run(r["label"], r["description"], r["counts"])
        run.seconds, run.error, run.probes = r["seconds"], r["error"], r.get("probes") or {}
        for f in r["files"]:
            res = FileResult(f["name"], f["assertions"], todo=f["todo"], error=f["error"],
                             cleanup=f.get("cleanup"), seconds=f["seconds"])
            res.failures = [Failure(x["number"], x["message"]) for x in f["failures"]]
            run.results.append(res)
        runs.append(run)
    return runs


def report(runs: list[Run], meta: dict, args: argparse.Namespace) -> int:
    """Print the tables, write --markdown/--json; the exit status."""
    header, rows = table_rows(runs, args.failed_only)
    print(f"pjdfstest {meta['pjdfstest']} ({meta['files']} files), kernel {meta['kernel']}, "
          f"{meta['date']}")
    for run in runs:
        role = "target" if run.counts else "compare"
        extra = f" - ERROR: {run.error}" if run.error else ""
        print(f"  {run.label} ({role}): {run.description}{extra}")
    markdown = ""
    if meta["files"]:
        print(format_text(header, rows))
        markdown = format_markdown(header, rows)
    if any(run.probes for run in runs):
        pheader, prows, details = probe_rows(runs)
        print()
        print(format_text(pheader, prows, left=2))
        print("\n".join(details))
        markdown += "\n\n" + format_markdown(pheader, prows, left=2)
        markdown += "\n\n" + "\n".join(f"- {line}" for line in details)
    if args.markdown:
        args.markdown.write_text(markdown.strip() + "\n")
    if args.json and not args.render:
        args.json.write_text(json.dumps(to_json(runs, meta), indent=1) + "\n")
    return 1 if any(r.failed() for r in runs if r.counts) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        return report(from_json(data), data["meta"], args)
    args.probes = args.probes or args.probes_only
    if args.pjdfstest is None and not args.probes_only:
        print("error: give --pjdfstest DIR (or set PJDFSTEST)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: pjdfstest must run as root (it switches to other users itself)",
              file=sys.stderr)
        return 2
    try:
        if args.probes_only:
            tests_dir, names = Path("."), []
        else:
            _binary, tests_dir = find_pjdfstest(args.pjdfstest)
            names = discover(tests_dir, args.only)
            if not names:
                raise TargetError(f"no test file matches {args.only}")
        cryptfs = [args.cryptfs] if args.cryptfs else default_cryptfs()
        specs = [(s, True) for s in (args.target or ["cryptfs"])]
        specs += [(s, False) for s in args.compare]
        targets = [(make_target(s, cryptfs, args.cryptfs_arg, args.tmp, args.backing), counts)
                   for s, counts in specs]
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    taken: set[str] = set()
    runs = []
    try:
        for target, counts in targets:
            run = Run(_unique_label(target.label, taken), target.describe(), counts)
            runs.append(run)
            run_target(target, run, tests_dir, names, args.timeout, max(1, args.jobs),
                       args.out, args.verbose, args.probes)
    except KeyboardInterrupt:
        print("interrupted (mounts undone, temp dirs removed)", file=sys.stderr)
        return 130
    meta = {"pjdfstest": _git_rev(tests_dir) if names else "-", "files": len(names),
            "cryptfs_commit": _git_rev(Path(__file__).resolve().parent),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "jobs": args.jobs, "timeout": args.timeout}
    return report(runs, meta, args)


if __name__ == "__main__":
    sys.exit(main())
