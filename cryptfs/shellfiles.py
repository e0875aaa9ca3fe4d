"""The man page, shell completions and systemd unit that ship inside the package.

They live in ``cryptfs/data/``; the man page and completions are generated from the
argparse parser by tools/gendocs.py (``make docs``). ``cryptfs completion SHELL`` prints
a completion script, and ``make install-user`` copies them where shells and man look.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MAN_PAGE = "cryptfs.1"
COMPLETION_FILES = {"bash": "cryptfs.bash", "zsh": "_cryptfs", "fish": "cryptfs.fish"}


def read(name: str) -> str:
    """The text of the packaged data file ``name`` (raises FileNotFoundError)."""
    return resources.files("cryptfs").joinpath("data", name).read_text()


def completion(shell: str) -> str:
    """The completion script for ``shell`` ("bash", "zsh" or "fish"); KeyError otherwise."""
    return read(COMPLETION_FILES[shell])
