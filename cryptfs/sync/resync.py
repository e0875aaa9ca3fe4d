"""The first sync of a (vault, remote) pair, or one after the sync state was lost.

Without the listings of a last common state, bisync can only ``--resync``: merge both
sides, where a file that differs keeps one version ("newer wins") and the other is
overwritten. Before that merge, cryptfs compares both sides itself (sizes, then bytes
of same-size files) and moves this device's version of every differing entry (a file, a
symlink, a directory entry) aside as a conflict copy, ``NAME (conflict DATE HOST).EXT``,
so both versions survive. Back-references are bookkeeping (repair.py puts them right
after the run); extended-attribute sets that differ keep the newer one. Files only on the
remote come down (they may be new elsewhere, or deleted here while the state was lost:
the caller tells the user which); files only here go up.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

from ..errors import CryptfsError
from . import layout
from .rclone import SyncError, last_error, redact, run
from .repair import name_conflict_copy

log = logging.getLogger("cryptfs")


@dataclass
class MergeReport:
    conflicts: list[str] = field(default_factory=list)  # shown names of our moved copies
    conflict_paths: list[str] = field(default_factory=list)  # their backing paths
    only_remote: list[str] = field(default_factory=list)  # backing-relative paths
    # With an authenticated state (engine 2, docs/SYNC.md §8): remote objects that differ
    # from this device's authentic version (uploaded again), objects that state has and
    # the remote lacks (uploaded again by the merge), and objects no record announced.
    wrong_remote: list[str] = field(default_factory=list)
    missing_remote: list[str] = field(default_factory=list)
    unannounced: list[str] = field(default_factory=list)
    remote_before: set[str] = field(default_factory=set)  # what the remote held first


def listing(binary: str, where: str, filters: list[str]) -> dict[str, int]:
    """{relative path: size} of every file."""
    proc = run(binary, "lsjson", "-R", "--files-only", "--no-mimetype",
               "--no-modtime", *filters, where)
    if proc.returncode == 3:
        return {}
    if proc.returncode != 0:
        raise SyncError(redact(last_error(proc.stderr) or f"cannot list {where}"))
    try:
        return {e["Path"]: int(e["Size"]) for e in json.loads(proc.stdout or b"[]")}
    except (ValueError, KeyError, TypeError):
        raise SyncError(f"unexpected listing of {redact(where)}") from None


def differing(binary: str, backing: str, remote: str, paths: list[str]) -> set[str]:
    """The paths among ``paths`` (same size on both sides) whose bytes differ."""
    if not paths:
        return set()
    with tempfile.TemporaryDirectory(prefix="cryptfs-check-") as tmp:
        files_from = os.path.join(tmp, "files")
        combined = os.path.join(tmp, "combined")
        with open(files_from, "w", encoding="utf-8") as fh:
            fh.write("".join(p + "\n" for p in paths))
        proc = run(binary, "check", backing, remote, "--download",
                   "--files-from-raw", files_from, "--combined", combined, timeout=3600)
        try:
            with open(combined, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError:
            raise SyncError(redact(last_error(proc.stderr) or "rclone check failed")) from None
    out = set()
    for line in lines:
        mark, _, path = line.partition(" ")
        if mark in ("*", "!") and path in paths:  # differ, or could not compare
            out.add(path)
    return out


def merge_without_state(binary: str, backing: str, remote: str, volume,
                        filters: list[str], authentic=None) -> MergeReport:
    """``authentic(rel)``: True if this device's file is the version engine 2's
    authenticated state vouches for, False if that state has another version, None if it
    does not know the path (or there is no such state: ``authentic`` is None)."""
    report = MergeReport()
    local = listing(binary, backing, filters)
    theirs = listing(binary, remote, filters)
    report.remote_before = set(theirs)
    common = local.keys() & theirs.keys()
    differ = {p for p in common if local[p] != theirs[p]}
    differ |= differing(binary, backing, remote, sorted(common - differ))
    if authentic is not None:
        report.wrong_remote = sorted(p for p in differ if authentic(p) is True)
        differ -= set(report.wrong_remote)
        _upload(binary, backing, remote, report.wrong_remote)
        report.missing_remote = sorted(p for p in local.keys() - theirs.keys()
                                       if authentic(p) is not None)
        report.unannounced = sorted(p for p in theirs.keys() - local.keys()
                                    if authentic(p) is None)
    for rel in sorted(differ, key=lambda p: (p.count("/"), p)):
        if not layout.is_entry(rel):
            continue  # config, back-references, sidecars, xattr sets: not user entries
        done = name_conflict_copy(volume, os.path.join(backing, rel))
        if done is None:
            log.warning("sync: %s differs on the remote and could not be kept aside", rel)
            continue
        report.conflicts.append(done[0])
        report.conflict_paths.append(done[1])
    report.only_remote = sorted(p for p in theirs.keys() - local.keys()
                                if layout.is_entry(p))
    return report


def _upload(binary: str, backing: str, remote: str, paths: list[str]) -> None:
    """This device's version of ``paths`` replaces the remote's (one call)."""
    if not paths:
        return
    with tempfile.TemporaryDirectory(prefix="cryptfs-up-") as tmp:
        files_from = os.path.join(tmp, "files")
        with open(files_from, "w", encoding="utf-8") as fh:
            fh.write("".join(p + "\n" for p in paths))
        proc = run(binary, "copy", backing, remote, "--files-from-raw", files_from,
                   "--ignore-times", "--no-traverse", timeout=3600)
    if proc.returncode != 0:
        raise SyncError(redact(last_error(proc.stderr) or "upload failed"))


def plain_path(volume, rel: str) -> str | None:
    """The plaintext path of a backing-relative path, or None if it does not decrypt."""
    try:
        return volume.plain_path_of(rel)
    except (CryptfsError, OSError):
        return None
