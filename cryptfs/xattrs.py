"""Extended attributes inside the vault (docs/FORMAT.md §9).

All ``user.`` attributes of one inode are one encrypted object under ``x/``, keyed by the
file id (regular files: hard links share it, renames keep it) or the directory id. Cloud
backends keep no xattrs, so this is the only way they survive sync and ``cryptfs clone``.
Errnos follow Linux: ENODATA for a missing attribute, EEXIST/ENODATA for XATTR_CREATE/
XATTR_REPLACE, ERANGE for a name over 255 bytes, E2BIG for a value over 64 KiB, ENOSPC
when one inode's attributes would pass 256 KiB.
"""

from __future__ import annotations

import errno

from . import layout
from .objects import XATTR_NAME_MAX, XATTR_TOTAL_MAX, XATTR_VALUE_MAX, ObjectCipher
from .store import BackingStore

XATTR_CREATE = 1
XATTR_REPLACE = 2
_CACHE_LIMIT = 4096


class XattrStore:
    """Reads and writes the xattr objects of one vault."""

    def __init__(self, store: BackingStore, objects: ObjectCipher) -> None:
        self._store = store
        self._objects = objects
        self._cache: dict[str, tuple[int, int, dict[bytes, bytes]]] = {}
        self._in_use: bool | None = None

    def in_use(self) -> bool:
        """Whether this vault has ever stored an attribute (else nothing to look up)."""
        if self._in_use is None:
            self._in_use = self._store.exists(layout.XATTR_ROOT)
        return self._in_use

    def clear_cache(self) -> None:
        self._cache = {}
        self._in_use = None

    def _path(self, kind: bytes, inode_id: bytes) -> str:
        return layout.xattr_path(self._objects.xattr_storage_name(kind, inode_id))

    def load(self, kind: bytes, inode_id: bytes) -> dict[bytes, bytes]:
        """The attributes of one inode (empty if it has none); IntegrityError if forged."""
        rel = self._path(kind, inode_id)
        try:
            self._store.check_folder(rel.rpartition("/")[0])
            st = self._store.lstat(rel)
        except FileNotFoundError:
            return {}
        cached = self._cache.get(rel)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_ino:
            return dict(cached[2])
        attrs = self._objects.open_xattrs(kind, inode_id,
                                          self._store.read_small(rel, XATTR_TOTAL_MAX * 2))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[rel] = (st.st_mtime_ns, st.st_ino, attrs)
        return dict(attrs)

    def _save(self, kind: bytes, inode_id: bytes, attrs: dict[bytes, bytes]) -> None:
        rel = self._path(kind, inode_id)
        self._cache.pop(rel, None)
        if not attrs:
            self._store.unlink_quietly(rel)
            return
        self._store.makedirs(rel.rpartition("/")[0])
        self._store.replace(rel, self._objects.seal_xattrs(kind, inode_id, attrs))
        self._in_use = True

    def set(self, kind: bytes, inode_id: bytes, name: bytes, value: bytes,
            flags: int = 0) -> None:
        if len(name) > XATTR_NAME_MAX:
            raise OSError(errno.ERANGE, "attribute name too long")
        if len(name) <= len(b"user."):
            raise OSError(errno.EINVAL, "empty attribute name")
        if len(value) > XATTR_VALUE_MAX:
            raise OSError(errno.E2BIG, "attribute value too large")
        attrs = self.load(kind, inode_id) if self.in_use() else {}
        if flags & XATTR_CREATE and name in attrs:
            raise OSError(errno.EEXIST, "attribute exists")
        if flags & XATTR_REPLACE and name not in attrs:
            raise OSError(errno.ENODATA, "no such attribute")
        attrs[name] = value
        if sum(len(k) + len(v) + 6 for k, v in attrs.items()) > XATTR_TOTAL_MAX:
            raise OSError(errno.ENOSPC, "no room for more attributes on this inode")
        self._save(kind, inode_id, attrs)

    def remove(self, kind: bytes, inode_id: bytes, name: bytes) -> None:
        attrs = self.load(kind, inode_id) if self.in_use() else {}
        if attrs.pop(name, None) is None:
            raise OSError(errno.ENODATA, "no such attribute")
        self._save(kind, inode_id, attrs)

    def drop(self, kind: bytes, inode_id: bytes) -> None:
        """The inode is gone: remove its attributes (if any)."""
        rel = self._path(kind, inode_id)
        self._cache.pop(rel, None)
        try:
            self._store.unlink(rel)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise


def xattr_object_names(store: BackingStore) -> list[str]:
    """Every xattr object path in the vault (for fsck)."""
    out = []
    if not store.exists(layout.XATTR_ROOT):
        return out
    for bucket in sorted(store.listdir(layout.XATTR_ROOT)):
        rel = f"{layout.XATTR_ROOT}/{bucket}"
        try:
            out.extend(f"{rel}/{n}" for n in sorted(store.listdir(rel)))
        except OSError:
            continue
    return out

