"""Cloud sync of the backing directory with rclone: the only package that runs rclone.

- ``rclone``   the binary, its environment and config password, argument checks,
               credentials redacted from what is shown;
- ``layout``   what sync must know of the on-disk format (structural files);
- ``state``    this device's sync state per (vault, remote), kept outside the synced tree;
- ``identity`` which vault a remote holds; the verified config merge;
- ``resync``   a merge without a last common state that keeps both versions;
- ``repair``   back-references put back, unreachable folders reattached, conflict
               copies named;
- ``ignore``   the backing paths the vault's ignore rules keep off the remote;
- ``bisync``   the two-way sync run (``Syncer``).
"""

from .bisync import Progress, Syncer, SyncResult, VaultKeys
from .identity import ForeignRemoteError
from .rclone import (
    SyncError,
    check_location,
    prepare_environment,
    process_alive,
    rclone_binary,
    redact,
)

__all__ = ["ForeignRemoteError", "Progress", "SyncError", "SyncResult", "Syncer", "VaultKeys",
           "check_location", "prepare_environment", "process_alive", "rclone_binary",
           "redact"]
