"""This device's sync state for one (vault, remote) pair, kept outside the synced tree.

Layout under ``$XDG_CONFIG_HOME/cryptfs/sync/<vault key>/<remote key>/``:

- ``bisync/``      rclone bisync's workdir (its listings and lock);
- ``good/``        our copy of the listings of the last successful sync, with
                   ``manifest.json`` (sha256 of each), written atomically;
- ``config.synced`` the cryptfs.conf this device and the remote last agreed on (the base
                   of the three-way config merge, identity.reconcile_config);
- ``backrefs.json`` every storage folder's back-reference as of the last sync
                   (ciphertext; repair.restore_backrefs puts back one a sync deleted);
- ``sync.lock``    flock held by whoever syncs this pair, so at most one bisync runs and
                   any bisync lock file found meanwhile is stale.

Per remote, so that pointing a vault at another remote starts from a clean state instead
of reusing listings of the old one. Losing all of this is safe: the next sync merges
without state (resync.merge_without_state).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import write_atomic
from ..settings import VaultSettings, settings_root, vault_key
from .rclone import SyncError

log = logging.getLogger("cryptfs")

LOCK_WAIT = 600.0  # seconds another sync of the same vault may hold us up
_LINE = re.compile(rb'^\S+ +-?\d+ \S+ \S+ \S+ ".*"$')


def remote_key(remote: str) -> str:
    return hashlib.sha256(remote.encode()).hexdigest()[:16]


def valid_listing(path: Path) -> bool:
    """True if ``path`` is a complete bisync listing (header, well-formed lines, final
    newline, at least one entry: a vault always holds its root IV)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data.endswith(b"\n"):
        return False
    lines = data[:-1].split(b"\n")
    if len(lines) < 2 or not lines[0].startswith(b"# bisync listing v1"):
        return False
    return all(_LINE.match(line) for line in lines[1:])


class SyncState:
    def __init__(self, settings: VaultSettings, remote: str) -> None:
        self.dir = settings_root() / "sync" / vault_key(settings.backing) / remote_key(remote)
        self.workdir = self.dir / "bisync"
        self.good = self.dir / "good"
        self.config_base_path = self.dir / "config.synced"
        self.backrefs_path = self.dir / "backrefs.json"

    # -- one sync at a time ---------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, wait: float = LOCK_WAIT) -> Iterator[None]:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "sync.lock", "a+") as fh:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SyncError("another sync of this vault is still running; try "
                                        "again when it has finished") from None
                    time.sleep(0.2)
            try:
                self.clear_bisync_locks()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def clear_bisync_locks(self) -> None:
        """We hold sync.lock, so no bisync of ours runs: every lock file is left over
        from a crash (rclone treats even an empty one as valid for ever)."""
        for lock in self.workdir.glob("*.lck"):
            log.info("removing stale bisync lock %s", lock.name)
            lock.unlink(missing_ok=True)

    # -- listings -----------------------------------------------------------------------
    def listings(self) -> list[Path]:
        return sorted(self.workdir.glob("*.lst"))

    def prepare_listings(self) -> bool:
        """True if bisync has valid listings of the last common state (restored from our
        copy if bisync dropped them or a crash left them empty or cut); False if the
        state is lost and the next run must merge without it."""
        current = self.listings()
        if len(current) == 2 and all(valid_listing(p) for p in current):
            return True
        good = self._good_listings()
        for p in current:
            p.unlink(missing_ok=True)
        if good is None:
            if current:
                log.warning("sync state is damaged and no good copy exists: merging "
                            "without it (nothing is deleted; differing files are kept "
                            "twice)")
            return False
        for name, data in good.items():
            write_atomic(self.workdir / name, data)
        log.warning("restored the sync state of the last successful sync")
        return True

    def _good_listings(self) -> dict[str, bytes] | None:
        try:
            manifest = json.loads((self.good / "manifest.json").read_text())
            out = {}
            for name, digest in manifest.items():
                data = (self.good / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != digest:
                    return None
                out[name] = data
        except (OSError, ValueError, AttributeError, TypeError):
            return None
        if len(out) != 2 or not all(valid_listing(self.good / n) for n in out):
            return None
        return out

    def save_good(self) -> None:
        current = self.listings()
        if len(current) != 2 or not all(valid_listing(p) for p in current):
            return
        self.good.mkdir(parents=True, exist_ok=True, mode=0o700)
        manifest = {}
        for p in current:
            data = p.read_bytes()
            write_atomic(self.good / p.name, data)
            manifest[p.name] = hashlib.sha256(data).hexdigest()
        for old in self.good.glob("*.lst"):
            if old.name not in manifest:
                old.unlink(missing_ok=True)
        write_atomic(self.good / "manifest.json", json.dumps(manifest).encode())

    def drop_listings(self) -> None:
        """Forget bisync's listings and our copy quietly (engine 2's full
        reconciliation always merges without them: they would be stale)."""
        for p in [*self.workdir.glob("*.lst*"), *self.good.glob("*")]:
            p.unlink(missing_ok=True)

    def forget_listings(self) -> None:
        """Drop bisync's listings and our copy: the next run merges without state."""
        for p in [*self.workdir.glob("*.lst*"), *self.good.glob("*")]:
            p.unlink(missing_ok=True)
        log.warning("sync state dropped after a critical bisync error; the next sync "
                    "merges both sides keeping every differing file twice")

    def reset(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- config base and back-references --------------------------------------------------
    def config_base(self) -> bytes | None:
        try:
            return self.config_base_path.read_bytes()
        except OSError:
            return None

    def set_config_base(self, raw: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.config_base() != raw:
            write_atomic(self.config_base_path, raw)


    def backrefs(self) -> dict[str, bytes]:
        """Every storage folder's back-reference as of the last sync (repair.py)."""
        try:
            data = json.loads(self.backrefs_path.read_text())
            return {str(k): bytes.fromhex(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def save_backrefs(self, refs: dict[str, bytes]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.backrefs_path,
                     json.dumps({k: v.hex() for k, v in sorted(refs.items())}).encode())


def local_config_copy(backing: str) -> Path:
    """This device's copy of the vault's config, outside the synced tree."""
    return settings_root() / "vaults" / f"{vault_key(backing)}.conf"


def save_local_config_copy(backing: str, raw: bytes) -> None:
    path = local_config_copy(backing)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.read_bytes() == raw:
            return
    except OSError:
        pass
    write_atomic(path, raw)
