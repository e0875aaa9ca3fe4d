"""Conflict copies: recognise the ones sync tools leave in the backing directory, and
name them for people as ``NAME (conflict YYYY-MM-DD HOST).EXT``.

A sync tool renames the *backing* entry (an encrypted name) by appending its own
marker; the encrypted part still decrypts, so the copy can be shown decrypted.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from dataclasses import dataclass

# rclone bisync (ours: "cryptfsconflict", its default: "conflict", "..path1"),
# Syncthing, Dropbox and Nextcloud/ownCloud.
_BASE = r"^(?P<base>[a-z2-7]+(?:\.[dln])?)"
_PATTERNS = [
    re.compile(_BASE + r"\.(?:cryptfsconflict|conflict)\d+$"),
    re.compile(_BASE + r"\.\.path[12]$"),
    re.compile(_BASE + r"\.sync-conflict-(?P<date>\d{8})-\d{6}(?:-(?P<host>[A-Z0-9]{7}))?$"),
    re.compile(_BASE + r" \((?:(?P<host>[^()]+?)'s )?conflicted copy"
               r"(?: (?P<date>\d{4}-\d{2}-\d{2}))?(?: \d+)?\)$"),
    re.compile(_BASE + r" \(conflicted copy (?P<date>\d{4}-\d{2}-\d{2}) \d{6}\)$"),
]
BISYNC_SUFFIX = "cryptfsconflict"
MARKER = b" (conflict "


@dataclass(frozen=True)
class ConflictCopy:
    base: str  # the encrypted name the copy was made from
    date: str | None  # YYYY-MM-DD if the tool recorded it
    host: str | None


def parse(backing_name: str) -> ConflictCopy | None:
    for pattern in _PATTERNS:
        m = pattern.match(backing_name)
        if m:
            groups = m.groupdict()
            date = groups.get("date")
            if date and len(date) == 8:
                date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
            return ConflictCopy(m.group("base"), date, groups.get("host"))
    return None


def display_name(plain: bytes, date: str, host: str) -> bytes:
    """``report.pdf`` -> ``report (conflict 2026-11-27 laptop).pdf``."""
    host_b = host.replace("/", "_").encode("utf-8", "replace")[:40]
    tag = MARKER + date.encode() + b" " + host_b + b")"
    dot = plain.rfind(b".")
    if dot > 0 and len(plain) - dot <= 10:
        candidate = plain[:dot] + tag + plain[dot:]
    else:
        candidate = plain + tag
    if len(candidate) > 255:  # keep it a valid name: shorten the original part
        keep = 255 - (len(candidate) - len(plain))
        candidate = plain[:keep] + tag
    return candidate


def today() -> str:
    return dt.date.today().isoformat()


def date_of(mtime: float) -> str:
    return dt.date.fromtimestamp(mtime).isoformat()


def this_host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"
