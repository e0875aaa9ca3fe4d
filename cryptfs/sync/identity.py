"""Which vault a remote holds, and the only way a config ever travels.

Before anything is transferred, a sync lists the top of the remote: it must be empty (a
first upload) or hold *this* vault — a ``cryptfs.conf`` whose MAC verifies under this
vault's master key and whose ``vault_id`` is this vault's, and/or the root marker this
master key derives (sync/layout.py). Anything else is refused: a second vault never
overwrites the first.

The config is not synced by bisync (layout.BISYNC_EXCLUDES). ``reconcile_config`` merges
it three ways against the config this device and the remote last agreed on: a config
changed on one side only (``cryptfs passwd``) goes to the other; when both changed, the
remote's wins (like a file: the version that reached the remote first) and this device's
is kept in its local state. A remote config is adopted only after its MAC verified.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import MAX_CONFIG_BYTES, VaultConfig, write_atomic
from ..errors import CryptfsError
from . import layout
from .rclone import SyncError, finish, join_remote, last_error, redact, run, start
from .state import SyncState, save_local_config_copy

log = logging.getLogger("cryptfs")

NOT_FOUND = 3  # rclone's exit code for "directory not found"


class ForeignRemoteError(SyncError):
    """The remote holds another vault, or something that is not a vault."""


@dataclass
class RemoteVault:
    """What the top of a remote shows: empty, or its config and root marker (raw bytes)."""

    empty: bool
    config: bytes | None = None
    root_marker: bytes | None = None


def inspect_remote(binary: str, remote: str, marker_path: str | None = None) -> RemoteVault:
    """List the top of ``remote`` and read its config and (if ``marker_path`` is given)
    the root marker; the three rclone calls run at once: a sync pays for one round of
    rclone start-up, not three."""
    cap = str(MAX_CONFIG_BYTES + 1)
    procs = [start(binary, "lsf", "--max-depth", "1", remote),
             start(binary, "cat", "--count", cap, join_remote(remote, layout.CONFIG_PATH))]
    if marker_path is not None:
        procs.append(start(binary, "cat", "--count", "4096",
                           join_remote(remote, marker_path)))
    (code, out, err), config, *rest = (finish(p) for p in procs)
    if code == NOT_FOUND:
        return RemoteVault(empty=True)
    if code != 0:
        raise SyncError(redact(last_error(err) or f"cannot list {remote}"))
    entries = set(out.decode(errors="replace").split("\n")) - {""}
    if not entries:
        return RemoteVault(empty=True)
    found = RemoteVault(empty=False)
    if layout.CONFIG_PATH in entries:
        rc, data, error = config
        if rc != 0:
            raise SyncError(redact(last_error(error) or f"cannot read cryptfs.conf on "
                                   f"{remote}"))
        found.config = data
    if rest:
        rc, data, _error = rest[0]
        if rc == 0:
            found.root_marker = data  # absent (or unreadable): None, judged by the caller
    return found


def foreign(remote: str, backing: str, why: str) -> ForeignRemoteError:
    return ForeignRemoteError(
        f"{redact(remote)} holds another vault or other files, not the vault in {backing} "
        f"({why}). cryptfs refuses to sync, so that neither is overwritten. To use the vault "
        f"it holds on this device, run 'cryptfs clone {redact(remote)} NEW_DIRECTORY'; to "
        f"sync {backing}, give it an empty remote with 'cryptfs remote set {backing} "
        "REMOTE:PATH'")


def check_identity(found: RemoteVault, remote: str, backing: str, config: VaultConfig,
                   master_key: bytes, root_marker: bytes, synced_before: bool) -> None:
    """ForeignRemoteError unless ``found`` is empty (and never synced) or this vault."""
    if found.empty:
        if synced_before:
            raise SyncError(
                f"{redact(remote)} no longer holds this vault (it is empty or missing); "
                "refusing to sync because that would delete local files. Check the remote; "
                f"to upload everything to it again, run 'cryptfs remote set {backing} "
                f"{redact(remote)}'")
        return
    if found.config is not None:
        try:
            theirs = VaultConfig.parse(found.config)
            theirs.verify_master_key(master_key)
        except CryptfsError:
            raise foreign(remote, backing, "its cryptfs.conf does not open with this "
                          "vault's key") from None
        if theirs.vault_id != config.vault_id:
            raise foreign(remote, backing, "its vault id differs")
    if found.root_marker is not None and found.root_marker != root_marker:
        raise foreign(remote, backing, "its root directory is another vault's")
    if found.config is None and found.root_marker is None:
        raise foreign(remote, backing, "it is not empty and holds no cryptfs vault")


def reconcile_config(binary: str, remote: str, backing: str, state: SyncState,
                     found: RemoteVault, upload: bool) -> str | None:
    """Bring this device's and the remote's config in step (after check_identity);
    returns a message for the user when something changed, else None."""
    path = Path(backing) / layout.CONFIG_PATH
    local = path.read_bytes()
    remote_raw = found.config
    base = state.config_base()
    note = None
    if remote_raw is None or remote_raw == local:
        if remote_raw is None and upload:
            _upload(binary, path, remote)
        state.set_config_base(local)
        save_local_config_copy(backing, local)
        return None
    if base is not None and base == remote_raw:
        # Only this device changed it (passwd here): the remote gets it.
        if upload:
            _upload(binary, path, remote)
            note = "uploaded this device's new cryptfs.conf (passphrase change)"
        state.set_config_base(local)
        save_local_config_copy(backing, local)
        return note
    # The remote's changed (passwd on another device), or both did: the remote's wins,
    # verified already by check_identity; this device's is kept in its local state.
    if base is not None and local != base:
        write_atomic(state.dir / "config.superseded", local)
        note = ("the passphrase was changed on this device and on another one; the other "
                "device's cryptfs.conf applies now (this device's is kept in "
                f"{state.dir / 'config.superseded'})")
    else:
        note = "adopted the remote's cryptfs.conf (passphrase changed on another device)"
    write_atomic(path, remote_raw)
    state.set_config_base(remote_raw)
    save_local_config_copy(backing, remote_raw)
    log.warning("%s", note)
    return note


def _upload(binary: str, path: Path, remote: str) -> None:
    proc = run(binary, "copyto", os.fspath(path), join_remote(remote, layout.CONFIG_PATH))
    if proc.returncode != 0:
        raise SyncError(redact(last_error(proc.stderr) or "cannot upload cryptfs.conf"))
