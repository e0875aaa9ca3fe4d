"""Exception tree and exit codes shared by every module.

Errors that reach a FUSE caller become an errno (see ``errno_of``); errors that reach
the CLI become an exit code (see ``ExitCode``). Keeping both tables here means one
place decides how a failure looks to the user.
"""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    """Documented exit codes of the ``cryptfs`` command."""

    OK = 0
    ERROR = 1  # anything not listed below
    USAGE = 2  # bad command line (argparse)
    WRONG_PASSPHRASE = 10  # passphrase or recovery key does not open the vault
    BAD_VAULT = 11  # backing dir missing, not a vault, config corrupt or unsupported
    BAD_MOUNTPOINT = 12  # mount point missing, not a directory, not empty or in use (busy)
    MOUNT_FAILED = 13  # FUSE unavailable or the mount did not come up
    INTEGRITY = 14  # data failed authentication (tampered or corrupt)
    NOT_FOUND = 15  # plaintext path does not exist in the vault
    SYNC_FAILED = 16  # the remote could not be reached or rclone failed (nothing lost)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class CryptfsError(Exception):
    """Base of every error cryptfs raises on purpose."""

    exit_code = ExitCode.ERROR


class ConfigError(CryptfsError):
    """The config file is missing, malformed, tampered with or unsupported."""

    exit_code = ExitCode.BAD_VAULT


class WrongPassphraseError(CryptfsError):
    """The passphrase (or recovery key) does not unlock the vault."""

    exit_code = ExitCode.WRONG_PASSPHRASE


class IntegrityError(CryptfsError):
    """Ciphertext failed authentication or has an impossible shape."""

    exit_code = ExitCode.INTEGRITY


class BadNameError(IntegrityError):
    """An encrypted name does not decrypt in its directory."""


class UsageError(CryptfsError):
    """The command line asks for something that would be a mistake (exit 2)."""

    exit_code = ExitCode.USAGE


class NotFoundError(CryptfsError):
    """A plaintext path does not exist in the vault."""

    exit_code = ExitCode.NOT_FOUND


class MountError(CryptfsError):
    """The mount could not be set up."""

    exit_code = ExitCode.MOUNT_FAILED


class MountpointError(MountError):
    """The mount point cannot be used."""

    exit_code = ExitCode.BAD_MOUNTPOINT


def errno_of(exc: BaseException) -> int:
    """The errno a FUSE caller should see for ``exc``."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    return errno.EIO
