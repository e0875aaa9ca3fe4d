"""Keeps the remote up to date while mounted: debounced, retried with backoff, and
flushed at unmount. Runs in the mount daemon as one background thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import CryptfsError
from .settings import VaultSettings

log = logging.getLogger("cryptfs")

MAX_BACKOFF = 60.0
STATUS_EVERY = 600.0  # an idle mount records a successful poll this often


class AutoSync:
    """Sync after changes settle; pull periodically; retry failures with backoff."""

    def __init__(self, run_sync: Callable[[], object], settings: VaultSettings, *,
                 interval: float = 5.0, poll_interval: float = 60.0,
                 busy: Callable[[], bool] = lambda: False,
                 after_sync: Callable[[], None] = lambda: None,
                 describe: Callable[[str], str | None] = lambda path: None,
                 remote: str | None = None,
                 scrub: Callable[[str], str] = lambda text: text) -> None:
        """``describe`` turns a plaintext path into what may be kept outside the mount
        (its backing path; None to keep only the count); ``scrub`` removes credentials
        from error messages before they are logged or saved."""
        self._run_sync = run_sync
        self._describe = describe
        self._remote = remote
        self._scrub = scrub
        self.settings = settings
        self.interval = interval
        self.poll_interval = poll_interval
        self._busy = busy
        self._after_sync = after_sync
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._dirty = True  # first run pulls what others changed while we were away
        self._first_change = self._last_change = time.monotonic() - interval
        self._last_sync = 0.0
        self._next_try = 0.0
        self._backoff = interval
        self._stopping = False
        self._syncing = False
        self._thread: threading.Thread | None = None
        self._saved_at = -STATUS_EVERY

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="autosync", daemon=True)
        self._thread.start()

    def notify(self, path: str) -> None:
        """A change that should reach the remote (a closed/fsynced file, a rename...)."""
        with self._cond:
            now = time.monotonic()
            if not self._dirty:
                self._first_change = now
            self._dirty = True
            self._last_change = now
            if len(self._pending) < 1000:
                self._pending.add(self._describe(path) or "")
            self._cond.notify()

    def _due(self, now: float) -> bool:
        if now < self._next_try:
            return False
        if not self._dirty:
            return now - self._last_sync >= self.poll_interval
        settled = now - self._last_change >= self.interval
        overdue = now - self._first_change >= 4 * self.interval
        return (settled and not self._busy()) or overdue

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._due(time.monotonic()):
                    self._cond.wait(0.5)
                if self._stopping:
                    return
            self.sync_now()

    def sync_now(self) -> bool:
        with self._cond:
            if self._syncing:
                return False
            self._syncing = True
            pending, self._pending = self._pending, set()
            self._dirty = False
        started = time.time()
        try:
            result = self._run_sync()
        except (CryptfsError, OSError) as exc:
            with self._cond:
                self._pending |= pending
                self._dirty = True
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                self._next_try = time.monotonic() + self._backoff
                self._syncing = False
            message = self._scrub(str(exc))
            log.warning("sync failed (retry in %.0f s): %s", self._backoff, message)
            self._save(lambda s: s.record_failure(message, sorted(pending)))
            return False
        _log_result(result)
        with self._cond:
            self._backoff = self.interval
            self._next_try = 0.0
            self._last_sync = time.monotonic()
            self._syncing = False
        idle = getattr(result, "idle", False)
        # An idle poll (every few seconds) rewrites neither the status file nor the
        # mount's caches; the status still shows a success at least every 10 minutes.
        if not idle or pending or self.settings.last_error is not None or \
                time.monotonic() - self._saved_at > STATUS_EVERY:
            self._save(lambda s: s.record_success(started, self._remote))
            self._saved_at = time.monotonic()
        if getattr(result, "changed_local", True):
            self._after_sync()
        return True

    def _save(self, update: Callable[[VaultSettings], None]) -> None:
        fresh = VaultSettings.load(self.settings.backing)
        update(fresh)
        fresh.save()
        self.settings = fresh

    def stop(self, final_sync: bool = True) -> bool:
        """Stop the thread; with ``final_sync``, upload what is pending first."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(600)
        with self._cond:
            dirty = self._dirty or bool(self._pending)
            self._next_try = 0.0
        if final_sync and dirty:
            return self.sync_now()
        return True


def _log_result(result: object) -> None:
    """Tell the user (in the daemon log, by backing path: no plaintext) what a sync did
    beyond copying: what it detected, and what a merge without sync state did."""
    for kind, path, text in getattr(result, "problems", []):
        log.error("sync detected %s on the remote: %s (%s)", kind, path, text)
    if getattr(result, "pending", 0):
        log.warning("sync: %d file(s) wait for their newest version (not fetched yet)",
                    result.pending)
    if not getattr(result, "merged_without_state", False):
        return
    paths = getattr(result, "conflict_paths", [])
    if paths:
        log.warning("sync state was lost: %d file(s) differed from the remote; this "
                    "device's versions were kept as conflict copies: %s", len(paths),
                    ", ".join(paths[:20]))
    only = getattr(result, "only_remote", [])
    if only:
        log.warning("sync state was lost: %d file(s) came from the remote that this device "
                    "did not have (new elsewhere, or deleted here meanwhile): %s",
                    len(only), ", ".join(only[:20]))
