"""Small reproductions of the POSIX gaps of issue 11 that pjdfstest does not see (or not alone).

Each probe works in a fresh directory on the filesystem under test and returns a list of
problems (empty = behaves like ext4). They run as root; probes that need another user
switch to uid/gid 65534 in a forked child. Class 4 (permission checks with the daemon's
rights) needs a daemon run by a normal user and class 7 (no renameat2 flags) a backing
directory on sshfs/NFS (``run_pjdfstest --backing DIR``), so they are not probes.

Run one probe in a child process (so a stuck filesystem cannot hang the caller)::

    python -m tests.posix.probes DIR [PROBE...]      # prints one JSON object per probe
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

NOBODY = 65534
OTHER_GID = 100  # the group a set-group-ID directory is given; need not exist


def _as_nobody(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked child as uid/gid 65534; its exit status (0 = no exception)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            fn()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def probe_hardlinks(d: Path) -> list[str]:
    """Class 1: every name of a hard-linked file shows the new attributes at once."""
    problems = []
    a, b, c, e = d / "a", d / "b", d / "c", d / "e"
    a.write_bytes(b"x")
    os.stat(a)  # the kernel now caches a's attributes
    os.link(a, b)
    if (n := os.stat(a).st_nlink) != 2:
        problems.append(f"ln a b; stat -c %h a -> {n}, want 2")
    os.chmod(b, 0o600)
    if (m := stat.S_IMODE(os.stat(a).st_mode)) != 0o600:
        problems.append(f"chmod 600 b; stat -c %a a -> {m:o}, want 600")
    os.link(a, c)
    os.rename(c, e)
    if (n := os.stat(a).st_nlink) != 3:
        problems.append(f"ln a c; mv c e; stat -c %h a -> {n}, want 3")
    os.unlink(e)
    if (n := os.stat(a).st_nlink) != 2:
        problems.append(f"rm e; stat -c %h a -> {n}, want 2")
    if os.stat(a).st_ino != os.stat(b).st_ino:
        problems.append("a and b have different inode numbers")
    return problems


def probe_umask(d: Path) -> list[str]:
    """Class 2: with umask 0 a new node gets exactly the mode asked for (0777)."""
    problems = []
    old = os.umask(0)
    try:
        os.close(os.open(d / "file", os.O_CREAT | os.O_WRONLY, 0o777))
        os.mkdir(d / "dir", 0o777)
        os.mkfifo(d / "fifo", 0o777)
        os.mknod(d / "node", 0o777 | stat.S_IFREG)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(d / "sock"))
    finally:
        os.umask(old)
    for name in ("file", "dir", "fifo", "node", "sock"):
        mode = stat.S_IMODE(os.lstat(d / name).st_mode)
        if mode != 0o777:
            problems.append(f"{name} created with 0777 under umask 0 is {mode:o}")
    return problems


def probe_setgid(d: Path) -> list[str]:
    """Class 3: entries of a set-group-ID directory get its group; subdirectories keep S_ISGID."""
    problems = []
    sg = d / "sg"
    sg.mkdir()
    os.chown(sg, 0, OTHER_GID)
    os.chmod(sg, 0o2777)
    (sg / "root-dir").mkdir()
    if not os.stat(sg / "root-dir").st_mode & stat.S_ISGID:
        problems.append("mkdir in a 2777 directory: no S_ISGID on the new directory")

    def create() -> None:
        (sg / "nobody-file").touch()
        (sg / "nobody-dir").mkdir()

    if _as_nobody(create) != 0:
        return [*problems, "uid 65534 could not create in a 2777 directory"]
    for name in ("nobody-file", "nobody-dir"):
        gid = os.stat(sg / name).st_gid
        if gid != OTHER_GID:
            problems.append(f"{name} made by uid 65534 has gid {gid}, want the directory's "
                            f"{OTHER_GID}")
    return problems


def probe_dots(d: Path) -> list[str]:
    """Class 5: readdir(3) of an empty directory returns . and .. (``ls -a``)."""
    (d / "e").mkdir()
    out = subprocess.run(["ls", "-a", str(d / "e")], capture_output=True, timeout=30,
                         check=False).stdout.decode().split()
    return [] if out == [".", ".."] else [f"ls -a of an empty directory -> {out}"]


def probe_deleted_open(d: Path) -> list[str]:
    """Class 6: a directory whose file was deleted while open can be removed at once."""
    sub = d / "sub"
    sub.mkdir()
    (sub / "f").write_bytes(b"x")
    fd = os.open(sub / "f", os.O_RDONLY)
    try:
        os.unlink(sub / "f")
        try:
            os.rmdir(sub)
        except OSError as exc:
            return [f"rmdir of a directory whose file is unlinked but open -> {exc.strerror}"]
    finally:
        os.close(fd)
    return []


def probe_fallocate(d: Path) -> list[str]:
    """Class 8a: fallocate(1) mode 0 and --keep-size."""
    problems = []
    (d / "fb").touch()  # fallocate -n does not create the file
    for args, name, want in ((["-l", "1M"], "fa", 1 << 20), (["-n", "-l", "1M"], "fb", 0)):
        proc = subprocess.run(["fallocate", *args, str(d / name)], capture_output=True,
                              timeout=30, check=False)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().rsplit(":", 1)[-1].strip()
            problems.append(f"fallocate {' '.join(args)} -> {msg}")
        elif (size := os.stat(d / name).st_size) != want:
            problems.append(f"fallocate {' '.join(args)} -> size {size}, want {want}")
    return problems


def probe_symlink_length(d: Path) -> list[str]:
    """Class 8b: a symlink target of PATH_MAX - 1 = 4095 bytes."""
    target = "t" * 4095
    try:
        os.symlink(target, d / "long")
    except OSError as exc:
        return [f"symlink with a 4095-byte target -> {exc.strerror}"]
    if os.readlink(d / "long") != target:
        return ["readlink of a 4095-byte target returns something else"]
    return []


def probe_deep_path(d: Path) -> list[str]:
    """Class 9: directories of 127-byte names down to a 3,900-byte plaintext path."""
    name, path, depth = "n" * 127, d, 0
    while len(str(path.relative_to(d))) + 128 < 3900:
        path = path / name
        depth += 1
        try:
            os.mkdir(path)
        except OSError as exc:
            rel = len(str(path.relative_to(d)))
            return [f"mkdir at depth {depth} ({rel}-byte path, 127-byte names) "
                    f"-> {exc.strerror}"]
    return []


PROBES: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "hardlinks": ("1", probe_hardlinks),
    "umask": ("2", probe_umask),
    "setgid": ("3", probe_setgid),
    "dots": ("5", probe_dots),
    "deleted-open": ("6", probe_deleted_open),
    "fallocate": ("8", probe_fallocate),
    "symlink-4095": ("8", probe_symlink_length),
    "deep-path": ("9", probe_deep_path),
}


def run_probes(root: Path, timeout: float = 60) -> dict[str, list[str]]:
    """Run every probe in a child process, in a fresh directory under ``root``.

    Returns ``{probe name: problems}``; a probe that crashes or times out reports that.
    """
    out: dict[str, list[str]] = {}
    for name in PROBES:
        work = root / f"probe-{name}"
        cmd = [sys.executable, "-m", "tests.posix.probes", "--one", name, str(work)]
        repo = str(Path(__file__).resolve().parents[2])
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=repo, start_new_session=True)
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate(timeout=10)
            out[name] = [f"timeout after {timeout:.0f} s"]
            continue
        try:
            out[name] = json.loads(stdout)
        except ValueError:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:]
            out[name] = [f"probe crashed: {last[0] if last else proc.returncode}"]
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], capture_output=True,
                       timeout=timeout, check=False)
    return out


def _one(name: str, work: Path) -> int:
    os.mkdir(work, 0o755)
    os.chmod(work, 0o755)
    try:
        problems = PROBES[name][1](work)
    except OSError as exc:
        problems = [f"{exc.strerror} ({exc.filename})"]
    print(json.dumps(problems))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--one":
        return _one(argv[1], Path(argv[2]))
    if not argv or os.geteuid() != 0:
        print(__doc__, file=sys.stderr)
        return 2
    for name, problems in run_probes(Path(argv[0])).items():
        print(f"class {PROBES[name][0]:>2} {name:13} {'; '.join(problems) or 'ok'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
