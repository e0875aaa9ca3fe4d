"""Per-vault local settings and sync status, kept on this machine only.

They live under $XDG_CONFIG_HOME/cryptfs (default ~/.config/cryptfs), never in the backing
directory, so they are never uploaded: the remote, whether the config file goes to the
remote, and the state of the last sync.
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
    pending: list[str] = field(default_factory=list)  # plaintext paths not yet uploaded
    syncs: int = 0

    @property
    def path(self) -> Path:
        return settings_root() / "vaults" / f"{vault_key(self.backing)}.json"

    @property
    def workdir(self) -> Path:
        """rclone bisync's state for this vault (listings, lock)."""
        return settings_root() / "bisync" / vault_key(self.backing)

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

    def record_success(self, started: float) -> None:
        self.last_sync = started
        self.last_error = None
        self.last_error_time = None
        self.failing_since = None
        self.pending = []
        self.syncs += 1

    def record_failure(self, message: str, pending: list[str] | None = None) -> None:
        now = time.time()
        self.last_error = message
        self.last_error_time = now
        if self.failing_since is None:
            self.failing_since = now
        if pending is not None:
            self.pending = sorted(set(self.pending) | set(pending))[:1000]
