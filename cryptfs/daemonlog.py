"""Where the background mount daemon logs.

``--log FILE`` if given; else syslog through ``/dev/log`` when that socket exists (on a
systemd machine it is the journal's: ``journalctl -t cryptfs``); else, so that nothing is
lost where there is no syslog (containers, minimal systems), the file
``$XDG_STATE_HOME/cryptfs/cryptfs.log`` (default ``~/.local/state/cryptfs/cryptfs.log``).
A foreground mount (``mount -f``) logs to stderr instead, which a systemd unit sends to
the journal.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

SYSLOG_SOCKET = "/dev/log"
LOG_NAME = "cryptfs.log"


@dataclass(frozen=True)
class LogTarget:
    """``kind`` is "file" (``path`` is the log file) or "syslog" (``path`` is its socket)."""

    kind: str
    path: str

    def describe(self) -> str:
        """Where to look, for a message to the user."""
        if self.kind == "syslog":
            return "syslog/journal (journalctl -t cryptfs)"
        return self.path


def state_dir() -> Path:
    """``$XDG_STATE_HOME/cryptfs`` (default ``~/.local/state/cryptfs``); not created."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "cryptfs"


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def choose(log_file: str | None, syslog_socket: str = SYSLOG_SOCKET) -> LogTarget:
    """The daemon's log target for ``mount --log`` value ``log_file`` (None: the default).

    Creates the state directory (mode 0700) when the default file is chosen.
    """
    if log_file:
        return LogTarget("file", os.path.abspath(log_file))
    if _is_socket(syslog_socket):
        return LogTarget("syslog", syslog_socket)
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return LogTarget("file", str(directory / LOG_NAME))


def install(target: LogTarget) -> int | None:
    """Make ``target`` the only handler of the root logger (in the daemon).

    Returns a file descriptor that stderr should point at (the log file, so libfuse's own
    messages land there too), or None when stderr should go to /dev/null (syslog).
    Raises OSError if the file cannot be opened.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fd = None
    if target.kind == "syslog":
        try:
            handler: logging.Handler = logging.handlers.SysLogHandler(
                address=target.path, socktype=socket.SOCK_DGRAM)
        except OSError:
            handler = logging.NullHandler()
        # "<pri>cryptfs[PID]: message": journald and syslog daemons take the tag from it.
        fmt = "cryptfs[%(process)d]: %(levelname)s %(message)s"
    else:
        fd = os.open(target.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        handler = logging.StreamHandler(os.fdopen(os.dup(fd), "a", buffering=1))
        fmt = "%(asctime)s cryptfs[%(process)d] %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    return fd
