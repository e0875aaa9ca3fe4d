"""Where passphrases come from: --passfile, --extpass, CRYPTFS_PASSWORD, or a prompt.

The passphrase is handled as bytes and never passed on: not in argv, not in the
environment of child processes (``--extpass`` runs with CRYPTFS_PASSWORD removed).
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

from .errors import CryptfsError

ENV_VAR = "CRYPTFS_PASSWORD"
NEW_ENV_VAR = "CRYPTFS_NEW_PASSWORD"
MIN_LENGTH = 8  # characters; shorter new passphrases need --force


class PassphraseError(CryptfsError):
    """No usable passphrase could be obtained."""


def check_new(passphrase: bytes, force: bool = False) -> str | None:
    """Judge a new passphrase: raise PassphraseError if it has fewer than MIN_LENGTH
    characters (unless ``force``); return a warning to print when it was forced."""
    length = len(passphrase.decode("utf-8", errors="replace"))
    if length >= MIN_LENGTH:
        return None
    text = (f"the passphrase has only {length} character{'s' if length != 1 else ''}: "
            "cryptfs.conf (uploaded to the remote by default) lets anyone who has it try "
            "guesses offline, and short passphrases fall fast")
    if not force:
        raise PassphraseError(f"{text}. Use at least {MIN_LENGTH} characters (several "
                              "random words are best), or --force to accept it anyway")
    return f"warning: {text} (accepted because of --force)"


@dataclass
class PassphraseSource:
    passfile: str | None = None
    extpass: str | None = None
    env_var: str = ENV_VAR

    def get(self, prompt: str = "Passphrase: ", confirm: bool = False) -> bytes:
        if self.passfile:
            return _first_line_of_file(self.passfile)
        if self.extpass:
            return _first_line_of_command(self.extpass)
        # Taken out of the environment once read, so no child process inherits it.
        value = os.environ.pop(self.env_var, None)
        if value is not None:
            return _nonempty(os.fsencode(value), f"${self.env_var}")
        return _prompt(prompt, confirm)


def _nonempty(value: bytes, where: str) -> bytes:
    if not value:
        raise PassphraseError(f"empty passphrase from {where}")
    return value


def _first_line_of_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            line = fh.readline(65536)
    except OSError as exc:
        raise PassphraseError(f"cannot read passfile {path}: {exc.strerror}") from None
    return _nonempty(line.rstrip(b"\r\n"), f"passfile {path}")


def _first_line_of_command(command: str) -> bytes:
    argv = shlex.split(command)
    if not argv:
        raise PassphraseError("--extpass is empty")
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, NEW_ENV_VAR)}
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=env, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PassphraseError(f"--extpass program failed: {exc}") from None
    if proc.returncode != 0:
        raise PassphraseError(f"--extpass program exited with status {proc.returncode}")
    line = proc.stdout.split(b"\n", 1)[0].rstrip(b"\r")
    return _nonempty(line, "--extpass")


def _prompt(prompt: str, confirm: bool) -> bytes:
    if not sys.stdin.isatty():
        raise PassphraseError(
            f"no passphrase: use --passfile, --extpass or ${ENV_VAR} when not on a terminal"
        )
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != first:
        raise PassphraseError("passphrases do not match")
    return _nonempty(os.fsencode(first), "the prompt")
