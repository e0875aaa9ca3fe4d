"""Per-vault local settings and sync status, kept on this machine only.

They live under $XDG_CONFIG_HOME/cryptfs (default ~/.config/cryptfs), never in the backing
directory, so they are never uploaded: the remote, whether the config file goes to the
remote, and the state of the last sync. Nothing plaintext: pending changes are kept as
backing (encrypted) paths. The sync state itself is in cryptfs/sync/state.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import write_atomic


def settings_root() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cryptfs"


def vault_key(backing: str) -> str:
    return hashlib.sha256(os.path.realpath(backing).encode()).hexdigest()[:20]


@dataclass
class VaultSettings:
    backing: str
    remote: str | None = None
    upload_config: bool = True
    last_sync: float | None = None  # start time of the last successful sync
    last_error: str | None = None
    last_error_time: float | None = None
    failing_since: float | None = None
    # Changes not uploaded yet, as backing paths relative to the vault (encrypted names:
    # nothing plaintext is kept outside the mount); 'cryptfs decrypt-name' shows them.
    pending_backing: list[str] = field(default_factory=list)
    pending_count: int = 0
    syncs: int = 0
    last_sync_remote: str | None = None  # the remote the last successful sync went to

    @property
    def path(self) -> Path:
        return settings_root() / "vaults" / f"{vault_key(self.backing)}.json"

    @classmethod
    def load(cls, backing: str) -> VaultSettings:
        probe = cls(os.path.realpath(backing))
        try:
            data: dict[str, Any] = json.loads(probe.path.read_text())
        except (OSError, ValueError):
            return probe
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["backing"] = probe.backing
        return cls(**known)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, json.dumps(asdict(self), indent=2).encode(), mode=0o600)

    def synced_to_current_remote(self) -> bool:
        return self.last_sync is not None and self.last_sync_remote == self.remote

    def record_success(self, started: float, remote: str | None = None) -> None:
        self.last_sync = started
        self.last_sync_remote = remote or self.remote
        self.last_error = None
        self.last_error_time = None
        self.failing_since = None
        self.pending_backing = []
        self.pending_count = 0
        self.syncs += 1

    def record_failure(self, message: str, pending: list[str] | None = None) -> None:
        """``message`` must already be free of credentials (sync.redact); ``pending``
        are backing-relative paths."""
        now = time.time()
        self.last_error = message
        self.last_error_time = now
        if self.failing_since is None:
            self.failing_since = now
        if pending is not None:
            merged = set(self.pending_backing) | set(pending)
            self.pending_count = max(self.pending_count, len(merged))
            self.pending_backing = sorted(p for p in merged if p)[:1000]
