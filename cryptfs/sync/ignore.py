"""Keep ignored plaintext paths off the remote: the backing paths rclone must not see.

The rules (``cryptfs/ignore.py``) speak of plaintext paths; rclone sees only ciphertext
names. Before each bisync pass the vault is walked through the sync's own Volume and every
ignored path is turned into the backing objects that hold it (FORMAT.md §5-§9):

- an ignored file, symlink or node: its entry, its long-name sidecar, its xattr object;
- an ignored directory: its ``.d`` entry (and sidecar), its storage folder and every
  storage folder below it, and the xattr objects of every inode in there.

These become an rclone ``--filter-from`` file in the sync state directory (backing paths
only, never plaintext). Hiding a path from both sides is safe with bisync: a path that
disappears from both listings is "deleted on both sides", so nothing is transferred or
deleted for it, and no ``--resync`` is needed (that check exists only for bisync's own
``--filters-file``). A path that stops being ignored is new to bisync and is copied.

Two refinements keep the remote and the other devices consistent:

- A storage folder whose back-reference the remote already has (a synced directory that
  became ignored, or was renamed to an ignored name) keeps its back-reference in the sync,
  so the other devices learn where the directory went instead of reattaching it under
  its old name (sync/repair.py); nothing new is uploaded for it.
- What the remote held before it was ignored stays there, frozen. If it is deleted here
  while still ignored, it stays hidden (remembered in ``ignored.json``, backing paths
  only) instead of coming back from the remote with the next sync.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import conflicts
from .. import layout as vault_layout
from ..config import write_atomic
from ..content import HEADER_LEN
from ..errors import CryptfsError, IntegrityError
from ..ignore import IGNORE_FILE, MAX_RULES_BYTES, Rules
from ..layout import Kind
from ..objects import DIRREF_LEN
from ..xattrs import xattr_object_names
from . import layout
from .rclone import SyncError

log = logging.getLogger("cryptfs")

FILTER_NAME = "ignore.filter"
MEMORY_NAME = "ignored.json"
_LINE_BUDGET = 24000  # characters of paths per filter line (rclone reads lines < 64 KiB)
_GLOB_SPECIAL = set("\\*?[]{},")
_QUOTED = re.compile(r'"(.*)"$')


@dataclass
class Ignored:
    """One ignored path (the top of an ignored subtree) and what holds it."""

    path: str  # plaintext, "/a/b"
    is_dir: bool
    rule: str  # the deciding rule, described
    entry: str  # backing path of its entry
    files: set[str] = field(default_factory=set)  # entry, sidecar, xattr objects
    folders: set[str] = field(default_factory=set)  # whole storage folders


@dataclass
class Walk:
    rules: Rules
    ignored: list[Ignored] = field(default_factory=list)
    synced_entries: set[str] = field(default_factory=set)
    synced_folders: set[str] = field(default_factory=set)


def read_rules(volume) -> Rules:
    """The rules in force in this vault. A .cryptfsignore that cannot be read (too large,
    damaged, being rewritten) is an error: syncing without it could upload what the user
    meant to keep local."""
    path = "/" + IGNORE_FILE
    try:
        attr = volume.stat(path)
        if attr.size > MAX_RULES_BYTES:
            raise SyncError(f"{path} is larger than {MAX_RULES_BYTES} bytes; not syncing "
                            "until it is smaller")
        data = volume.read_file(path)
    except FileNotFoundError:
        return Rules(None)
    except IsADirectoryError:
        rules = Rules(None)
        rules.problems.append(f"{path} is a directory, not a rules file: defaults only")
        return rules
    except (CryptfsError, OSError) as exc:
        if isinstance(exc, SyncError):
            raise
        raise SyncError(f"cannot read {path} ({exc}); not syncing until it can be read, "
                        "so that nothing it excludes is uploaded") from None
    return Rules(data.decode("utf-8", "surrogateescape").removeprefix("\ufeff"))


def walk(volume, rules: Rules) -> Walk:
    """Every ignored path of the vault and its backing objects; what is synced."""
    result = Walk(rules)
    x_objects = set(xattr_object_names(volume.store))
    seen: set[str] = set()
    stack = [(volume.root_storage, volume.names.root_id, "")]
    while stack:
        storage, dir_id, prefix = stack.pop()
        if storage in seen:
            continue
        seen.add(storage)
        result.synced_folders.add(storage)
        try:
            entries = list(volume.list_storage(storage, dir_id))
        except OSError as exc:
            log.warning("ignore rules: cannot list %s: %s", storage, exc)
            continue
        ignored: list[tuple[str, str, Kind]] = []
        synced_stems: set[str] = set()
        for plain, bname, kind in entries:
            path = prefix + os.fsdecode(plain)
            rel = f"{storage}/{bname}"
            if rules.ignores(path, kind is Kind.DIR):
                ignored.append((path, bname, kind))
                continue
            result.synced_entries.add(rel)
            synced_stems.add(_stem_of(bname))
            if kind is Kind.DIR:
                child = _child(volume, rel)
                if child is not None:
                    stack.append((volume.storage_of(child), child, path + "/"))
        for path, bname, kind in ignored:
            rel = f"{storage}/{bname}"
            verdict = rules.match(path, kind is Kind.DIR)
            item = Ignored("/" + path, kind is Kind.DIR,
                           verdict.describe() if verdict else "?", rel, {rel})
            parsed = vault_layout.parse(bname)
            if parsed is not None and parsed.is_long and parsed.stem not in synced_stems:
                item.files.add(f"{storage}/{parsed.sidecar}")
            if kind is Kind.DIR:
                child = _child(volume, rel)
                if child is not None:
                    _subtree(volume, volume.storage_of(child), child, x_objects, item, seen)
            elif kind is Kind.FILE and x_objects:
                _file_xattrs(volume, rel, x_objects, item)
            result.ignored.append(item)
    result.ignored.sort(key=lambda i: i.path)
    return result


def _stem_of(bname: str) -> str:
    parsed = vault_layout.parse(bname)
    if parsed is None:
        copy = conflicts.parse(bname)
        parsed = vault_layout.parse(copy.base) if copy is not None else None
    return parsed.stem if parsed is not None else bname


def _child(volume, rel: str) -> bytes | None:
    """The directory id a directory entry (or a conflict copy of one) leads to."""
    try:
        return volume.objects.open_dirref(volume.store.read_small(rel, DIRREF_LEN + 1))
    except (IntegrityError, OSError) as exc:
        log.warning("ignore rules: directory entry %s is unusable: %s", rel, exc)
        return None


def _file_xattrs(volume, rel: str, x_objects: set[str], item: Ignored) -> None:
    """Add the xattr object of the file ``rel`` unless another (synced) name may share
    it: a hard-linked file keeps its attributes in the sync."""
    try:
        fd = volume.store.open(rel, os.O_RDONLY)
        try:
            if os.fstat(fd).st_nlink != 1:
                return
            file_id = volume.content.parse_header(os.pread(fd, HEADER_LEN, 0))
        finally:
            os.close(fd)
    except (IntegrityError, OSError):
        return
    path = vault_layout.xattr_path(volume.objects.xattr_storage_name(b"f", file_id))
    if path in x_objects:
        item.files.add(path)


def _subtree(volume, storage: str, dir_id: bytes, x_objects: set[str], item: Ignored,
             seen: set[str]) -> None:
    """Every storage folder (and xattr object) below an ignored directory."""
    stack = [(storage, dir_id)]
    while stack:
        storage, dir_id = stack.pop()
        if storage in seen:
            continue
        seen.add(storage)
        item.folders.add(storage)
        if x_objects:
            path = vault_layout.xattr_path(volume.objects.xattr_storage_name(b"d", dir_id))
            if path in x_objects:
                item.files.add(path)
        try:
            names = volume.store.listdir(storage)
        except OSError:
            continue
        for bname in names:
            parsed = vault_layout.parse(bname)
            if parsed is None:
                copy = conflicts.parse(bname)
                parsed = vault_layout.parse(copy.base) if copy is not None else None
            if parsed is None or parsed.kind is None:
                continue
            rel = f"{storage}/{bname}"
            if parsed.kind is Kind.DIR:
                child = _child(volume, rel)
                if child is not None:
                    stack.append((volume.storage_of(child), child))
            elif parsed.kind is Kind.FILE and x_objects:
                _file_xattrs(volume, rel, x_objects, item)


# -- what the remote holds, what was hidden before ------------------------------------------
def remote_paths(listings: Iterable[Path]) -> set[str]:
    """Every path in the remote's listing of the last sync (bisync's ``*.path2.lst``)."""
    out: set[str] = set()
    for listing in listings:
        if not listing.name.endswith(".path2.lst"):
            continue
        try:
            lines = listing.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        except OSError:
            continue
        for line in lines[1:]:
            m = _QUOTED.search(line)
            if m:
                out.add(m.group(1))
    return out


def _load_memory(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    try:
        data = json.loads(path.read_text())
        return {str(e): (set(map(str, g["files"])), set(map(str, g["folders"])))
                for e, g in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _still_ignored(volume, rules: Rules, entry: str) -> bool:
    """An entry that was hidden and is gone here: is its plaintext path still ignored?
    (False when that can no longer be told: its folder is gone too.)"""
    if not volume.store.exists(entry.rpartition("/")[0]):
        return False
    try:
        plain = volume.plain_path_of(entry)
    except (CryptfsError, OSError):
        return False
    return rules.check(plain.lstrip("/"), entry.endswith(".d")).ignored


@dataclass
class Plan:
    """What one bisync pass keeps off the remote (backing paths)."""

    files: set[str]
    folders: set[str]
    keep_backrefs: set[str]
    walk: Walk

    @property
    def empty(self) -> bool:
        return not (self.files or self.folders)


def plan(volume, state_dir: Path, listings: Iterable[Path]) -> Plan:
    """Walk the vault under its rules, merge what was hidden before, and remember what
    the remote holds of it (``state_dir/ignored.json``)."""
    rules = read_rules(volume)
    for problem in rules.problems:
        log.warning("ignore rules: %s", problem)
    found = walk(volume, rules)
    on_remote = remote_paths(listings)
    memory_path = state_dir / MEMORY_NAME
    remembered = _load_memory(memory_path)
    groups = {i.entry: (set(i.files), set(i.folders)) for i in found.ignored}
    for entry, (files, folders) in remembered.items():
        if entry in groups:
            groups[entry][0].update(files)
            groups[entry][1].update(folders)
        elif entry not in found.synced_entries and not volume.store.exists(entry) and \
                _still_ignored(volume, found.rules, entry):
            groups[entry] = (files, folders)
    memory = {e: g for e, g in groups.items() if e in remembered or e in on_remote}
    if memory or remembered:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(memory_path, json.dumps(
            {e: {"files": sorted(f), "folders": sorted(d)} for e, (f, d) in
             sorted(memory.items())}).encode())
    files = set().union(*(g[0] for g in groups.values())) - found.synced_entries
    folders = set().union(*(g[1] for g in groups.values())) - found.synced_folders
    # A folder still here whose back-reference the remote has keeps it in the sync (a
    # move reaches the other devices); one deleted here stays hidden like the rest.
    keep = {f"{s}/{vault_layout.BACKREF_NAME}" for s in folders
            if volume.store.exists(s)} & on_remote
    return Plan(files, folders, keep, found)


# -- the filter file ------------------------------------------------------------------------
def _escape(part: str) -> str:
    """A backing name as a literal in an rclone glob (control characters, which cannot be
    written in a filter line, match any one character)."""
    out = []
    for c in part:
        if c in _GLOB_SPECIAL:
            out.append("\\" + c)
        elif ord(c) < 32 or ord(c) == 127:
            out.append("?")
        else:
            out.append(c)
    return "".join(out)


def _alternation(paths: list[str]) -> str:
    """One rclone glob matching exactly ``paths``: nested ``{a,b}`` groups along the
    path components (rclone turns them into one regexp with shared prefixes, far faster
    than one rule per path)."""
    tree: dict = {}
    for p in paths:
        node = tree
        for part in p.split("/"):
            node = node.setdefault(part, {})
        node[None] = {}

    def emit(node: dict) -> str:
        items = []
        for part, child in sorted(node.items(), key=lambda kv: kv[0] or ""):
            if part is None:
                continue
            if None in child:
                items.append(_escape(part))
            rest = {k: v for k, v in child.items() if k is not None}
            if rest:
                items.append(_escape(part) + "/" + emit(rest))
        return items[0] if len(items) == 1 else "{" + ",".join(items) + "}"
    return emit(tree)


def _chunks(paths: Iterable[str]) -> Iterable[list[str]]:
    chunk: list[str] = []
    size = 0
    for p in sorted(paths):
        if chunk and size + len(p) > _LINE_BUDGET:
            yield chunk
            chunk, size = [], 0
        chunk.append(p)
        size += len(p) + 1
    if chunk:
        yield chunk


def filter_lines(plan_: Plan) -> list[str]:
    """rclone filter rules: the format's own excludes, then the plan."""
    lines = ["# written by cryptfs before each sync: backing paths kept off the remote by",
             "# the vault's ignore rules (no plaintext: see 'cryptfs ignore BACKING')"]
    lines += [f"- {pattern}" for pattern in layout.BISYNC_EXCLUDES]
    lines += [f"+ /{_braced(_alternation(c))}" for c in _chunks(plan_.keep_backrefs)]
    lines += [f"- /{_alternation(c)}/**" for c in _chunks(plan_.folders)]
    lines += [f"- /{_braced(_alternation(c))}" for c in _chunks(plan_.files)]
    return lines


def _braced(glob: str) -> str:
    """``glob`` ending in ``}`` (rclone trims a line's trailing blanks, which a name may
    end with); never ``{{``, which would open a regexp."""
    return glob if glob.startswith("{") else "{" + glob + "}"


def write_filter(plan_: Plan, state_dir: Path) -> Path | None:
    """Write the filter file for this plan; None (and no file) when nothing is hidden."""
    path = state_dir / FILTER_NAME
    if plan_.empty:
        path.unlink(missing_ok=True)
        return None
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, ("\n".join(filter_lines(plan_)) + "\n").encode("utf-8",
                                                                       "surrogateescape"))
    return path


def path_filter(volume, rules: Rules) -> Callable[[str], bool]:
    """For engine 2 (scan.compare): whether a changed backing path belongs to an ignored
    plaintext path, with the same answer as :func:`walk`. An entry costs the depth of its
    folder on first sight (back-references and names are cached), never a walk of the
    vault; an extended-attribute object or a long-name sidecar cannot be traced back to
    its path, so the first one asked about costs one :func:`walk` (cached for the life of
    the filter)."""
    folders: dict[str, bool] = {}  # storage folder -> it or an ancestor is ignored
    walked: list[set[str]] = []

    def held_by_ignored(rel: str) -> bool:
        if not walked:
            result = walk(volume, rules)
            walked.append(set().union(*(item.files for item in result.ignored)))
        return rel in walked[0]

    def folder_ignored(storage: str) -> bool:
        chain: list[str] = []  # from ``storage`` up to the first folder already judged
        parent: str | None = storage
        while parent is not None and parent not in folders and parent not in chain:
            chain.append(parent)
            if parent == volume.root_storage:
                break
            try:
                _dir_id, parent_id, _name = volume.read_backref(parent)
                parent = volume.storage_of(parent_id) if parent_id is not None else None
            except (CryptfsError, OSError):
                parent = None  # not one of this vault's folders: scan decides
        verdict = folders.get(parent, False) if parent is not None else False
        if parent in chain:
            verdict = False  # back-references in a loop (a repair is due): not ignored
        for folder in reversed(chain):
            if not verdict and folder != volume.root_storage:
                try:
                    verdict = rules.ignores(volume.path_of_storage(folder).lstrip("/"), True)
                except (CryptfsError, OSError):
                    verdict = False
            folders[folder] = verdict
        return folders[storage]

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        if parts[0] == vault_layout.XATTR_ROOT:
            return held_by_ignored(rel)
        if len(parts) < 3 or parts[0] != vault_layout.STORAGE_ROOT:
            return False
        storage = "/".join(parts[:3])
        if folder_ignored(storage):
            return True
        if len(parts) != 4:
            return False
        parsed = vault_layout.parse(parts[3])
        if parsed is None:  # a conflict copy (named in plaintext terms by the walk)
            return conflicts.parse(parts[3]) is not None and held_by_ignored(rel)
        if parsed.kind is None:
            return held_by_ignored(rel)  # a long name's sidecar
        try:
            path = volume.plain_path_of(rel).lstrip("/")
        except (CryptfsError, OSError):
            return False
        return rules.ignores(path, parsed.kind is Kind.DIR)

    return ignored
