"""Offline consistency check of a format-2 vault, and its repair.

Walks the tree from the root's storage folder through every directory entry, checking
every name, long-name sidecar, directory entry, back-reference, symlink, special node,
file header and block, and every xattr object. Then it lists all storage folders and
reports those that no entry reached (an entry lost in a sync, a crash in a move): their
back-references say where they belong. Read-only unless asked to ``quarantine`` what
cannot be read or to ``repair`` the structure (docs/FORMAT.md §5.4, §11):

- orphaned storage folders are reattached under the name and parent their
  back-reference gives, or under ``/lost+found`` when that place is gone or taken;
- stale back-references are rewritten to match the entry that reaches the folder;
- a directory entry whose storage folder is missing gets an empty one;
- leftover temporary files, sidecars without an entry and xattr objects of no inode
  are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import conflicts, layout
from .config import BACKUP_NAME, CONFIG_NAME
from .content import HEADER_LEN
from .errors import IntegrityError
from .files import OpenFile
from .layout import Kind
from .volume import ROOT_INO, Volume
from .xattrs import xattr_object_names

LOST_FOUND = b"lost+found"

# Debris of an interrupted operation, not damage: reported, but the vault is still "ok"
# (fsck exits 0; --quarantine moves them aside).
NOTICE_KINDS = frozenset({"leftover-temp", "config-backup"})


@dataclass
class Problem:
    """One thing that is wrong, with where it is in both views."""

    kind: str  # short machine-readable tag
    backing_path: str
    plain_path: str | None
    detail: str
    quarantined_to: str | None = None
    repaired: str | None = None


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    dirs: int = 0
    files: int = 0
    symlinks: int = 0
    other: int = 0
    bytes_checked: int = 0

    @property
    def failures(self) -> list[Problem]:
        """Problems that are damage or tampering (everything but ``NOTICE_KINDS``)."""
        return [p for p in self.problems if p.kind not in NOTICE_KINDS]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def unrepaired(self) -> list[Problem]:
        """Damage that is still there (not repaired, not moved aside)."""
        return [p for p in self.failures if not p.repaired and not p.quarantined_to]

    def as_dict(self) -> dict:
        return {"ok": self.ok, "dirs": self.dirs, "files": self.files,
                "symlinks": self.symlinks, "other": self.other,
                "bytes_checked": self.bytes_checked,
                "problems": [asdict(p) for p in self.problems]}


class Checker:
    """Walks the backing tree of an unlocked volume and records every problem."""

    def __init__(self, volume: Volume, quarantine: str | None = None, repair: bool = False,
                 progress: Callable[[Report], None] | None = None,
                 structure_only: bool = False) -> None:
        """``structure_only``: names, directory entries and back-references only (no file
        contents, no leftovers removed, orphaned folders only if they hold entries): what
        a sync checks while the vault may be mounted."""
        self.vol = volume
        self.store = volume.store
        self.quarantine = os.path.abspath(quarantine) if quarantine else None
        if self.quarantine:
            real_q, real_b = os.path.realpath(self.quarantine), os.path.realpath(volume.backing)
            if real_q == real_b or real_q.startswith(real_b + os.sep):
                raise ValueError("the quarantine directory must be outside the vault")
        self.repair = repair
        self.structure_only = structure_only
        self.report = Report()
        self._progress = progress
        self._last_progress = 0.0
        self._visited: dict[str, bytes] = {}  # storage folder -> dir id
        self._xattr_ids: set[tuple[bytes, bytes]] = set()

    def run(self) -> Report:
        if not self.structure_only:
            self._check_root_files()
        self._walk(self.vol.root_storage, self.vol.names.root_id, None, b"", "/")
        self._orphans()
        if not self.structure_only:
            self._xattr_objects()
        if self._progress:
            self._progress(self.report)
        return self.report

    # -- recording ---------------------------------------------------------------------
    def _problem(self, kind: str, rel: str, plain: str | None, detail: str, *,
                 move: bool = False, fix: Callable[[], str] | None = None) -> None:
        problem = Problem(kind, self.store.abspath(rel), plain, detail)
        if fix is not None and self.repair:
            try:
                problem.repaired = fix()
            except (OSError, IntegrityError) as exc:
                problem.detail += f" (repair failed: {exc})"
        elif move and self.quarantine:
            problem.quarantined_to = self._move_aside(rel)
        self.report.problems.append(problem)

    def _move_aside(self, rel: str) -> str | None:
        dest = os.path.join(self.quarantine, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            shutil.move(self.store.abspath(rel), dest)
        except OSError:
            return None
        parsed = layout.parse(rel.rpartition("/")[2])
        if parsed is not None and parsed.is_long:
            sidecar = f"{rel.rpartition('/')[0]}/{parsed.sidecar}"
            if self.store.exists(sidecar):
                shutil.move(self.store.abspath(sidecar), dest.rpartition("/")[0] + "/"
                            + parsed.sidecar)
        return dest

    def _tick(self) -> None:
        now = time.monotonic()
        if self._progress and now - self._last_progress > 0.2:
            self._last_progress = now
            self._progress(self.report)

    # -- the root folder ---------------------------------------------------------------------
    def _check_root_files(self) -> None:
        for name in sorted(self.store.listdir(".")):
            if name in (CONFIG_NAME, layout.STORAGE_ROOT, layout.XATTR_ROOT):
                continue
            if name == BACKUP_NAME:
                self._problem("config-backup", name, None,
                              "a 'cryptfs passwd' was interrupted: this backup still opens "
                              "the vault with the old passphrase; delete it once the new "
                              "one works")
            elif layout.is_temp(name):
                self._problem("leftover-temp", name, None, "temporary file of an "
                              "interrupted operation", move=True,
                              fix=lambda n=name: self._remove(n))
            elif not name.startswith("cryptfs"):
                self._problem("foreign", name, None, "not part of a cryptfs vault")

    def _remove(self, rel: str) -> str:
        self.store.unlink_quietly(rel)
        return "removed"

    # -- walking -----------------------------------------------------------------------------
    def _walk(self, storage: str, dir_id: bytes, parent_id: bytes | None, name: bytes,
              plain_dir: str) -> None:
        stack = [(storage, dir_id, parent_id, name, plain_dir)]
        while stack:
            storage, dir_id, parent_id, name, plain_dir = stack.pop()
            self._visited[storage] = dir_id
            self._xattr_ids.add((b"d", dir_id))
            self.report.dirs += 1
            self._check_backref(storage, dir_id, parent_id, name, plain_dir)
            try:
                names = sorted(self.store.listdir(storage))
            except OSError as exc:
                self._problem("unreadable-dir", storage, plain_dir, str(exc))
                continue
            present = set(names)
            for bname in names:
                sub = self._check_name(storage, dir_id, bname, present, plain_dir)
                if sub is not None:
                    stack.append(sub)
                self._tick()

    def _check_backref(self, storage: str, dir_id: bytes, parent_id: bytes | None,
                       name: bytes, plain_dir: str) -> None:
        rel = f"{storage}/{layout.BACKREF_NAME}"

        def rewrite() -> str:
            self.store.replace(rel, self.vol.objects.seal_backref(
                self.vol.names.storage_name(dir_id), dir_id, parent_id, name))
            return "back-reference rewritten"

        try:
            got_id, got_parent, got_name = self.vol.read_backref(storage)
        except FileNotFoundError:
            self._problem("backref", rel, plain_dir, "back-reference missing", fix=rewrite)
            return
        except (IntegrityError, OSError) as exc:
            self._problem("backref", rel, plain_dir, f"back-reference unusable: {exc}",
                          fix=rewrite)
            return
        if (got_id, got_parent, got_name) != (dir_id, parent_id, name):
            self._problem("backref", rel, plain_dir,
                          "back-reference names another place (an interrupted move, or "
                          "two entries for one directory)", fix=rewrite)

    def _check_name(self, storage: str, dir_id: bytes, bname: str, present: set[str],
                    plain_dir: str):
        rel = f"{storage}/{bname}"
        if bname == layout.BACKREF_NAME:
            return None
        if layout.is_temp(bname):
            if not self.structure_only:
                self._problem("leftover-temp", rel, None, "temporary file of an "
                              "interrupted operation", move=True,
                              fix=lambda: self._remove(rel))
            return None
        parsed = layout.parse(bname)
        if parsed is None:
            copy = conflicts.parse(bname)
            parsed = layout.parse(copy.base) if copy is not None else None
            if parsed is None or parsed.kind is None:
                self._problem("foreign", rel, None, "not an entry of this vault", move=True)
                return None
        if parsed.kind is None:  # a long name's sidecar
            if not self.structure_only and \
                    not any(k.suffixed(parsed.stem) in present for k in layout.KINDS):
                self._problem("orphan-sidecar", rel, None, "long-name sidecar without its "
                              "entry", move=True, fix=lambda: self._remove(rel))
            return None
        try:
            plain = os.fsdecode(self.vol.decrypt_name(storage, dir_id, parsed))
        except IntegrityError as exc:
            self._problem("name", rel, None, f"name does not decrypt here: {exc}", move=True)
            return None
        plain_path = plain_dir.rstrip("/") + "/" + plain
        if parsed.kind is not Kind.DIR and self.structure_only:
            self.report.files += parsed.kind is Kind.FILE
        elif parsed.kind is Kind.FILE:
            self.report.files += 1
            self._check_file(rel, plain_path)
        elif parsed.kind is Kind.SYMLINK:
            self.report.symlinks += 1
            self._check_object(rel, plain_path, "symlink", self.vol.objects.open_symlink)
        elif parsed.kind is Kind.NODE:
            self.report.other += 1
            self._check_object(rel, plain_path, "node", self.vol.objects.open_node)
        else:
            return self._check_dir_entry(storage, dir_id, rel, plain_path)
        return None

    def _check_object(self, rel: str, plain_path: str, what: str, opener) -> None:
        try:
            opener(self.store.read_small(rel, 8192))
        except (IntegrityError, OSError) as exc:
            self._problem(what, rel, plain_path, str(exc), move=True)

    def _check_dir_entry(self, storage: str, parent_id: bytes, rel: str, plain_path: str):
        try:
            child_id = self.vol.objects.open_dirref(self.store.read_small(rel, 4096))
        except (IntegrityError, OSError) as exc:
            self._problem("dir-entry", rel, plain_path, f"directory entry unusable: {exc}; "
                          "its folder shows up as orphaned below", move=True)
            return None
        child = self.vol.storage_of(child_id)
        name = os.fsencode(plain_path.rpartition("/")[2])
        if child in self._visited or self._other_entry_is_named(child, child_id, parent_id,
                                                                name):
            self._problem("duplicate-entry", rel, plain_path,
                          f"a second entry for the directory stored in {child} (its "
                          "back-reference names the other one)")
            return None
        if not self.store.exists(child):
            def recreate() -> str:
                self.vol._make_storage(child, child_id, parent_id, name, 0o755)
                return "empty storage folder recreated"

            self._problem("missing-storage", rel, plain_path,
                          f"storage folder {child} is missing: the directory's contents "
                          "are gone", fix=recreate)
            if not (self.repair and self.store.exists(child)):
                return None
        return child, child_id, parent_id, name, plain_path

    def _other_entry_is_named(self, child: str, child_id: bytes, parent_id: bytes,
                              name: bytes) -> bool:
        """True if the child's back-reference names another place and an entry there
        leads to the same directory (FORMAT.md §5.4: that one is kept)."""
        try:
            _, ref_parent, ref_name = self.vol.read_backref(child)
        except (IntegrityError, OSError):
            return False
        if ref_parent is None or (ref_parent, ref_name) == (parent_id, name):
            return False
        try:
            found = self.vol._probe(self.vol.storage_of(ref_parent),
                                    self.vol._stem(ref_parent, ref_name))
            return found is not None and found.kind is Kind.DIR and \
                self.vol.objects.open_dirref(self.store.read_small(found.rel, 4096)) == \
                child_id
        except (IntegrityError, OSError):
            return False

    def _check_file(self, rel: str, plain_path: str) -> None:
        try:
            fd = self.store.owner_access(rel, lambda: self.store.open(rel, os.O_RDONLY),
                                         os.R_OK)
        except OSError as exc:
            self._problem("open", rel, plain_path, str(exc))
            return
        of = OpenFile(fd, self.vol.content, rel, writable=False)
        bad: list[str] = []
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_LEN:
                bad.append(f"file of {size} bytes has no complete header")
            else:
                with contextlib.suppress(IntegrityError):
                    self._xattr_ids.add(
                        (b"f", self.vol.content.parse_header(os.pread(fd, HEADER_LEN, 0))))
                try:
                    for index, length, problem in of.check_blocks():
                        if problem:
                            bad.append(problem)
                        self.report.bytes_checked += length
                        if index % 64 == 0:
                            self._tick()
                except IntegrityError as exc:
                    bad.append(str(exc))
        finally:
            os.close(fd)
        if bad:
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            self._problem("content", rel, plain_path, "; ".join(bad[:5]) + more, move=True)

    # -- storage folders no entry reaches --------------------------------------------------
    def _all_storage(self) -> list[str]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for bucket in sorted(self.store.listdir(layout.STORAGE_ROOT)):
                rel = f"{layout.STORAGE_ROOT}/{bucket}"
                with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                    out.extend(f"{rel}/{n}" for n in sorted(self.store.listdir(rel)))
        return out

    def _orphans(self) -> None:
        pending: dict[str, tuple[bytes, bytes | None, bytes] | None] = {}
        for storage in self._all_storage():
            if storage not in self._visited:
                if self.structure_only and not self._holds_entries(storage):
                    continue  # being made right now (mkdir), or empty: nothing to lose
                try:
                    pending[storage] = self.vol.read_backref(storage)
                except (IntegrityError, OSError):
                    pending[storage] = None

        def top_level(ref: tuple[bytes, bytes | None, bytes] | None) -> bool:
            return ref is None or ref[1] is None or \
                self.vol.storage_of(ref[1]) not in pending

        while True:  # the top of each orphaned subtree first; walking it visits the rest
            todo = [s for s, ref in sorted(pending.items()) if top_level(ref)]
            if not todo:
                break
            for storage in todo:
                if storage in self._visited:
                    continue
                ref = pending[storage]
                if ref is None or ref[1] is None:
                    self._visited[storage] = b""
                    self._problem("orphan-storage", storage, None,
                                  "storage folder with no entry and no usable back-reference:"
                                  " its names cannot be decrypted (file contents still can)",
                                  move=True)
                else:
                    self._orphan(storage, ref)
            pending = {s: r for s, r in pending.items() if s not in self._visited}
        for storage in sorted(pending):  # back-references that form a loop
            self._problem("orphan-storage", storage, None,
                          "storage folders whose back-references point at each other")

    def _holds_entries(self, storage: str) -> bool:
        try:
            return any(layout.parse(n) is not None for n in self.store.listdir(storage))
        except OSError:
            return False

    def _orphan(self, storage: str, ref: tuple[bytes, bytes | None, bytes]) -> None:
        dir_id, parent_id, name = ref
        where = None
        with contextlib.suppress(IntegrityError, OSError):
            where = self.vol.path_of_storage(storage)
        self._problem("orphan-storage", storage, where,
                      "directory storage that no entry references (its entry was lost)",
                      fix=lambda: self._reattach(storage, dir_id, parent_id, name))
        if storage not in self._visited:  # not repaired: still check what is inside
            self._walk(storage, dir_id, parent_id, name,
                       f"(orphaned) {where or os.fsdecode(name)}")

    def _reattach(self, storage: str, dir_id: bytes, parent_id: bytes | None,
                  name: bytes) -> str:
        """Give an orphaned storage folder an entry again: where its back-reference says,
        else under /lost+found."""
        if parent_id is None:
            raise IntegrityError("a second root cannot be reattached")
        parent_storage = self.vol.storage_of(parent_id)
        target_id, target_storage = parent_id, parent_storage
        if parent_storage not in self._visited or \
                self.vol._probe(parent_storage, self.vol._stem(parent_id, name)) is not None:
            target_id, target_storage = self._lost_found()
            name = self._free_name(target_id, target_storage, name)
        stem = self.vol._stem(target_id, name)
        with self.vol._sidecar(target_storage, stem):
            self.store.create_new(f"{target_storage}/{stem.name(Kind.DIR)}",
                                  self.vol.objects.seal_dirref(dir_id))
        self.store.replace(f"{storage}/{layout.BACKREF_NAME}", self.vol.objects.seal_backref(
            self.vol.names.storage_name(dir_id), dir_id, target_id, name))
        self._walk(storage, dir_id, target_id, name, self.vol.path_of_storage(storage))
        return f"reattached as {self.vol.path_of_storage(storage)}"

    def _lost_found(self) -> tuple[bytes, str]:
        try:
            ino = self.vol.lookup(ROOT_INO, LOST_FOUND, count=False).ino
        except FileNotFoundError:
            ino = self.vol.mkdir(ROOT_INO, LOST_FOUND, 0o700).ino
            self._visited[self.vol.storage_path_of("/lost+found")] = b""
        node = self.vol._dir(ino)
        self._visited[node.storage] = node.dir_id
        return node.dir_id, node.storage

    def _free_name(self, dir_id: bytes, storage: str, name: bytes) -> bytes:
        base = name or b"unnamed"
        candidate, n = base, 2
        while self.vol._probe(storage, self.vol._stem(dir_id, candidate)) is not None:
            candidate = base[:240] + b" (" + str(n).encode() + b")"
            n += 1
        return candidate

    # -- xattr objects -----------------------------------------------------------------------
    def _xattr_objects(self) -> None:
        wanted = {self.vol.objects.xattr_storage_name(kind, inode_id): (kind, inode_id)
                  for kind, inode_id in self._xattr_ids}
        for rel in xattr_object_names(self.store):
            name = rel.replace(f"{layout.XATTR_ROOT}/", "", 1).replace("/", "")
            owner = wanted.get(name)
            if layout.is_temp(rel.rpartition("/")[2]):
                self._problem("leftover-temp", rel, None, "temporary file", move=True,
                              fix=lambda r=rel: self._remove(r))
            elif owner is None:
                self._problem("orphan-xattr", rel, None, "extended attributes of no file "
                              "or directory of this vault", move=True,
                              fix=lambda r=rel: self._remove(r))
            else:
                try:
                    self.vol.objects.open_xattrs(owner[0], owner[1],
                                                 self.store.read_small(rel, 1 << 20))
                except (IntegrityError, OSError) as exc:
                    self._problem("xattr", rel, None, f"extended attributes unusable: {exc}",
                                  move=True)


def terminal_progress(report: Report) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\rchecked {report.dirs} dirs, {report.files} files, "
                         f"{report.bytes_checked / 2**20:.1f} MiB, "
                         f"{len(report.problems)} problems   ")
        sys.stderr.flush()

