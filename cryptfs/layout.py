"""Backing layout: where things live in a format-2 vault and what a backing name means.

Pure string functions (docs/FORMAT.md §5.1, §6.2-6.4, §9). Paths are relative to the vault
root and use ``/``; nothing here touches the file system.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

from . import siv

STORAGE_ROOT = "d"
XATTR_ROOT = "x"
BACKREF_NAME = "cryptfs.back"
RESERVED_PREFIX = "cryptfs."
TMP_SUFFIX = ".tmp"
STORAGE_PATH_LEN = 35  # "d/" + 2 + "/" + 30
LONG_STEM_LEN = 32
SHORT_STEM_MIN = 52
SIDECAR_SUFFIX = "s"
DEFAULT_MAX_PATH = 250
MIN_MAX_PATH = 80
MAX_MAX_PATH = 4096

_STEM = re.compile(r"[a-z2-7]+")


class Kind(enum.Enum):
    """What a backing entry holds; the value is its name suffix (FORMAT.md §6.2)."""

    FILE = ""
    DIR = "d"
    SYMLINK = "l"
    NODE = "n"

    def suffixed(self, stem: str) -> str:
        return stem + "." + self.value if self.value else stem


KINDS = (Kind.FILE, Kind.DIR, Kind.SYMLINK, Kind.NODE)
_BY_SUFFIX = {k.value: k for k in KINDS if k.value}


def storage_path(storage_name: str) -> str:
    """``d/XX/YYYY…`` for a 32-character storage name."""
    return f"{STORAGE_ROOT}/{storage_name[:2]}/{storage_name[2:]}"


def xattr_path(storage_name: str) -> str:
    """``x/XX/YYYY…`` for a 32-character xattr object name."""
    return f"{XATTR_ROOT}/{storage_name[:2]}/{storage_name[2:]}"


BACKING_NAME_MAX = 255  # NAME_MAX of every common file system


def name_max(max_path: int) -> int:
    """Longest backing entry name (with suffix) that keeps paths within ``max_path`` and
    names within what file systems accept (FORMAT.md §6.3)."""
    return min(BACKING_NAME_MAX, max_path - STORAGE_PATH_LEN - 1)


@dataclass(frozen=True)
class Stem:
    """How one plaintext name is stored in its directory, whatever its kind."""

    stem: str  # E, or L for a long name
    encrypted: str  # E

    @property
    def is_long(self) -> bool:
        return self.stem != self.encrypted

    @property
    def sidecar(self) -> str | None:
        return f"{self.stem}.{SIDECAR_SUFFIX}" if self.is_long else None

    def name(self, kind: Kind) -> str:
        return kind.suffixed(self.stem)


def long_stem(encrypted: str) -> str:
    return siv.b32encode(hashlib.blake2b(encrypted.encode("ascii"), digest_size=20).digest())


def stem_for(encrypted: str, max_path: int) -> Stem:
    """The stem of ``encrypted`` under this vault's path budget (FORMAT.md §6.3)."""
    if len(encrypted) + 2 > name_max(max_path):
        return Stem(long_stem(encrypted), encrypted)
    return Stem(encrypted, encrypted)


@dataclass(frozen=True)
class Parsed:
    """A backing name that is an entry (or a long-name sidecar) of a storage folder."""

    stem: str
    kind: Kind | None  # None for a sidecar
    is_long: bool

    @property
    def sidecar(self) -> str | None:
        return f"{self.stem}.{SIDECAR_SUFFIX}" if self.is_long else None


def parse(backing_name: str) -> Parsed | None:
    """What ``backing_name`` is in a storage folder; None for reserved or foreign names."""
    stem, dot, suffix = backing_name.partition(".")
    if dot:
        if suffix == SIDECAR_SUFFIX:
            kind = None
        else:
            kind = _BY_SUFFIX.get(suffix)
            if kind is None:
                return None
    else:
        kind = Kind.FILE
    if not _STEM.fullmatch(stem):
        return None
    if len(stem) == LONG_STEM_LEN:
        return Parsed(stem, kind, True)
    if len(stem) >= SHORT_STEM_MIN and kind is not None:
        return Parsed(stem, kind, False)
    return None


def is_temp(backing_name: str) -> bool:
    return backing_name.startswith(RESERVED_PREFIX) and backing_name.endswith(TMP_SUFFIX)
