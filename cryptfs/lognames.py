"""How plaintext paths appear in logs: never in plaintext by default.

A path is logged as its backing path (encrypted names, the same the remote shows; turn
it back with ``cryptfs decrypt-name``), or, when it has none (a failed lookup), as a
short keyed hash under a key made for this process, so that log lines about one path
can be matched without revealing it. ``mount --log-plaintext-names`` logs plaintext.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

_RUN_KEY = os.urandom(32)
_plaintext = False
_volume: Any = None  # the mounted Volume


def configure(plaintext: bool, volume: Any = None) -> None:
    global _plaintext, _volume
    _plaintext = plaintext
    _volume = volume


def shown(path: object) -> str:
    """What to log for the plaintext path ``path`` (other values are shown as they are
    only if they are not strings)."""
    if not isinstance(path, (str, bytes)):
        return repr(path)
    text = os.fsdecode(path)
    if _plaintext:
        return repr(text)
    if _volume is not None and text.startswith("/"):
        with contextlib.suppress(Exception):  # any lookup failure: the hash below
            return "backing:" + _volume.backing_path_of(text)
    return "#" + hashlib.blake2b(os.fsencode(text), key=_RUN_KEY, digest_size=6).hexdigest()
