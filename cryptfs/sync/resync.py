"""The first sync of a (vault, remote) pair, or one after the sync state was lost.

Without the listings of a last common state, bisync can only ``--resync``: merge both
sides, where a file that differs keeps one version ("newer wins") and the other is
overwritten. Before that merge, cryptfs compares both sides itself (sizes, then bytes
of same-size files) and moves this device's version of every differing file aside as a
conflict copy, ``NAME (conflict DATE HOST).EXT``, so both versions survive; a directory
whose IV differs on the two sides is moved aside whole. Files only on the remote come
down (they may be new elsewhere, or deleted here while the state was lost: the caller
tells the user which); files only here go up.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

from ..backing import PathMapper
from ..errors import CryptfsError
from ..names import NameCipher
from . import layout
from .rclone import SyncError, last_error, redact, run
from .repair import name_conflict_copy

log = logging.getLogger("cryptfs")
LINK_SUFFIX = ".rclonelink"


@dataclass
class MergeReport:
    conflicts: list[str] = field(default_factory=list)  # shown names of our moved copies
    conflict_paths: list[str] = field(default_factory=list)  # their backing paths
    only_remote: list[str] = field(default_factory=list)  # backing-relative paths


def listing(binary: str, where: str, filters: list[str]) -> dict[str, int]:
    """{relative path: size} of every file (symlinks as NAME.rclonelink)."""
    proc = run(binary, "lsjson", "-R", "--files-only", "--links", "--no-mimetype",
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
        proc = run(binary, "check", backing, remote, "--download", "--links",
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


def merge_without_state(binary: str, backing: str, remote: str, names: NameCipher,
                        filters: list[str]) -> MergeReport:
    report = MergeReport()
    local = listing(binary, backing, filters)
    theirs = listing(binary, remote, filters)
    common = local.keys() & theirs.keys()
    differ = {p for p in common if local[p] != theirs[p]}
    differ |= differing(binary, backing, remote, sorted(common - differ))
    moved_dirs: list[str] = []

    def under_moved(rel: str) -> bool:
        return any(rel.startswith(d + "/") for d in moved_dirs)

    for rel in sorted(differ, key=lambda p: (p.count("/"), p)):
        if layout.is_config(rel) or under_moved(rel):
            continue
        if layout.is_dir_iv(rel):
            target = layout.dir_of_iv(rel)
            if not target:
                raise SyncError("the remote's root directory IV differs from this vault's")
            moved_dirs.append(target)
        else:
            target = rel[: -len(LINK_SUFFIX)] if rel.endswith(LINK_SUFFIX) else rel
            if target.endswith(".name"):
                continue  # a long name's sidecar is the same for the same name
        done = name_conflict_copy(backing, names, os.path.join(backing, target))
        if done is None:
            log.warning("sync: %s differs on the remote and could not be kept aside", target)
            continue
        report.conflicts.append(done[0])
        report.conflict_paths.append(os.path.relpath(done[1], backing))
    report.only_remote = sorted(
        p for p in theirs.keys() - local.keys()
        if not layout.is_structural(p) and not p.endswith(".name"))
    return report


def plain_path(backing: str, names: NameCipher, rel: str) -> str | None:
    """The plaintext path of a backing-relative path, or None if it does not decrypt."""
    if rel.endswith(LINK_SUFFIX):
        rel = rel[: -len(LINK_SUFFIX)]
    mapper = PathMapper(backing, names)
    current, parts = backing, []
    try:
        for part in rel.split("/"):
            iv = mapper.dir_iv(current)
            parts.append(os.fsdecode(mapper.decrypt_entry_name(current, iv, part)))
            current = os.path.join(current, part)
    except (CryptfsError, OSError):
        return None
    return "/" + "/".join(parts)
