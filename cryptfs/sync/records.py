"""Change records (docs/SYNC.md §3): sealed, named, hash-chained.

A record is ``BE16(1) || R (24 B) || SecretBox(K_sync-record, R, body)`` where ``body`` is
the canonical JSON of what one device published in one batch. Nothing here touches the
network or the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

from .. import keys

VERSION = 1
NONCE = 24
MAX_RECORD = 64 << 20  # a batch of 20,000 changes is ~4 MiB
SEQ_DIGITS = 12
DEVICE_RE = re.compile(r"^[a-z2-7]{26}$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
LOG_NAME_RE = re.compile(r"^([a-z2-7]{26})/(\d{12})$")


class RecordError(Exception):
    """A record that does not open, or whose contents break the rules of §3."""


def object_hash(data: bytes) -> str:
    """Hex BLAKE2b-256 of an object's whole ciphertext."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def new_device_id() -> str:
    import base64

    return base64.b32encode(os.urandom(16)).decode().rstrip("=").lower()


def log_name(device: str, seq: int) -> str:
    """``<device>/<seq>`` below ``cryptfs-sync/log/``."""
    return f"{device}/{seq:0{SEQ_DIGITS}d}"


def parse_log_name(name: str) -> tuple[str, int] | None:
    m = LOG_NAME_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


@dataclass
class Change:
    op: str  # "put" | "del"
    path: str
    base: str | None
    hash: str | None = None  # None for a del
    size: int = 0
    source: str | None = None  # a rename's old path ("from")

    def as_json(self) -> dict[str, Any]:
        if self.op == "del":
            return {"op": "del", "path": self.path, "base": self.base}
        out = {"op": "put", "path": self.path, "base": self.base, "hash": self.hash,
               "size": self.size}
        if self.source is not None:
            out["from"] = self.source
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Change:
        if not isinstance(obj, dict) or obj.get("op") not in ("put", "del"):
            raise RecordError("malformed change")
        path = obj.get("path")
        base = obj.get("base")
        if not _valid_path(path) or not (base is None or _valid_hash(base)):
            raise RecordError("malformed change path or base")
        if obj["op"] == "del":
            if base is None or set(obj) != {"op", "path", "base"}:
                raise RecordError("malformed del")
            return cls("del", path, base)
        h, size, source = obj.get("hash"), obj.get("size"), obj.get("from")
        if not _valid_hash(h) or not isinstance(size, int) or size < 0 or \
                not (source is None or _valid_path(source)) or \
                not set(obj) <= {"op", "path", "base", "hash", "size", "from"}:
            raise RecordError("malformed put")
        return cls("put", path, base, h, size, source)


@dataclass
class Record:
    device: str
    seq: int
    prev: str
    lamport: int
    seen: dict[str, int]
    host: str
    batch: str
    time: int
    changes: list[Change] = field(default_factory=list)

    def body(self) -> bytes:
        return canonical({"device": self.device, "seq": self.seq, "prev": self.prev,
                          "lamport": self.lamport, "seen": self.seen, "host": self.host,
                          "batch": self.batch, "time": self.time,
                          "changes": [c.as_json() for c in self.changes]})

    def seal(self, key: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return VERSION.to_bytes(2, "big") + nonce + crypto_secretbox(self.body(), nonce, key)

    @property
    def name(self) -> str:
        return log_name(self.device, self.seq)


def body_hash(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=32).hexdigest()


def open_record(key: bytes, blob: bytes, name: str) -> tuple[Record, str]:
    """The record stored as ``log/<name>`` and the hash of its body; RecordError if it
    does not authenticate, is malformed, or carries another name than ``name``."""
    if len(blob) < 2 + NONCE + 16 or len(blob) > MAX_RECORD:
        raise RecordError("not a record (size)")
    if int.from_bytes(blob[:2], "big") != VERSION:
        raise RecordError("unknown record version")
    try:
        body = crypto_secretbox_open(blob[2 + NONCE:], blob[2:2 + NONCE], key)
    except CryptoError:
        raise RecordError("does not authenticate (altered, or another vault's)") from None
    try:
        obj = json.loads(body)
    except ValueError:
        raise RecordError("malformed body") from None
    if not isinstance(obj, dict) or set(obj) != {"device", "seq", "prev", "lamport", "seen",
                                                 "host", "batch", "time", "changes"}:
        raise RecordError("malformed body")
    try:
        rec = Record(obj["device"], obj["seq"], obj["prev"], obj["lamport"], obj["seen"],
                     obj["host"], obj["batch"], obj["time"],
                     [Change.from_json(c) for c in obj["changes"]])
    except TypeError:
        raise RecordError("malformed body") from None
    if not (isinstance(rec.device, str) and DEVICE_RE.match(rec.device)
            and isinstance(rec.seq, int) and rec.seq >= 1
            and isinstance(rec.lamport, int) and rec.lamport >= 1
            and isinstance(rec.prev, str) and (rec.prev == "" or _valid_hash(rec.prev))
            and isinstance(rec.seen, dict) and isinstance(rec.host, str)
            and isinstance(rec.batch, str) and isinstance(rec.time, int)
            and all(isinstance(k, str) and isinstance(v, int) for k, v in rec.seen.items())):
        raise RecordError("malformed body")
    if rec.name != name:
        raise RecordError(f"holds record {rec.name} under the name {name} (replayed or "
                          "renamed)")
    if canonical(obj) != body:
        raise RecordError("body is not canonical")
    return rec, body_hash(body)


def record_key(master_key: bytes) -> bytes:
    return keys.derive_subkey(master_key, "sync-record")


def _valid_hash(value: object) -> bool:
    return isinstance(value, str) and bool(HASH_RE.match(value))


def _valid_path(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > 4096:
        return False
    parts = value.split("/")
    return parts[0] in ("d", "x") and all(p not in ("", ".", "..") for p in parts) and \
        "\n" not in value and "\0" not in value
