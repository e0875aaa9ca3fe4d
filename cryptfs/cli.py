"""The ``cryptfs`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__, keys
from .config import BACKUP_NAME, CONFIG_NAME, VaultConfig, write_atomic
from .errors import ConfigError, CryptfsError, ExitCode, NotFoundError, UsageError
from .passphrase import NEW_ENV_VAR, PassphraseSource, check_new
from .volume import Volume

log = logging.getLogger("cryptfs")

EXIT_CODES = """\
exit codes:
  0   success
  1   other error (message on stderr)
  2   bad command line
  10  wrong passphrase or recovery key
  11  backing directory missing, not a vault, or config corrupt/unsupported
  12  mount point missing, not a directory, not empty, already mounted, or busy
  13  FUSE unavailable or the mount failed to come up
  14  data failed authentication (tampered or corrupt vault)
  15  path not found inside the vault
  16  sync failed: remote unreachable, rclone failed, or the remote holds another
      vault (nothing was lost; what was not uploaded goes up with the next sync)
  130 interrupted (Ctrl-C)
"""


def _add_pass_args(p: argparse.ArgumentParser, masterkey: bool = True) -> None:
    g = p.add_argument_group("passphrase (first that is given wins; else $CRYPTFS_PASSWORD, "
                             "else a prompt)")
    if masterkey:
        g.add_argument("--masterkey", metavar="HEX|-",
                       help="use the recovery key printed by init instead of the passphrase; "
                            "'-' reads it from stdin (as an argument it is visible to other "
                            "users in ps, so cryptfs warns and moves it out of its argv)")
        g.add_argument("--masterkey-fd", metavar="FD", type=int,
                       help="read the recovery key from file descriptor FD")
    g.add_argument("--passfile", metavar="FILE", help="read the passphrase from FILE's first line")
    g.add_argument("--extpass", metavar="CMD",
                   help="run CMD (split like a shell would, run without one) and use "
                        "its first output line")


def _source(args: argparse.Namespace) -> PassphraseSource:
    return PassphraseSource(args.passfile, args.extpass)


def _masterkey(args: argparse.Namespace) -> bytes | None:
    """The recovery key from --masterkey-fd, --masterkey - (stdin) or --masterkey HEX."""
    fd = getattr(args, "masterkey_fd", None)
    text = getattr(args, "masterkey", None)
    if fd is not None:
        try:
            with os.fdopen(fd, "rb", closefd=True) as fh:
                text = fh.readline(4096).decode("ascii", "replace")
        except OSError as exc:
            raise CryptfsError(f"cannot read the recovery key from fd {fd}: "
                               f"{exc.strerror}") from None
    elif text == "-":
        text = sys.stdin.readline(4096)
    if text is None:
        return None
    return keys.parse_recovery_key(text)


def _check_config_is_this_vaults(backing: str, cfg: VaultConfig) -> None:
    """Refuse a cryptfs.conf that is not the one this device knew for this vault (it was
    replaced, e.g. by another vault's), before any passphrase is asked."""
    from .sync.state import local_config_copy

    try:
        known = VaultConfig.parse(local_config_copy(backing).read_bytes())
    except (OSError, CryptfsError):
        return
    if known.vault_id != cfg.vault_id:
        raise ConfigError(
            f"{backing}/cryptfs.conf belongs to another vault than the one this device "
            f"used here (it was replaced); restore this vault's config with 'cryptfs "
            f"recover {backing}'")


def _after_unlock(vol: Volume) -> Volume:
    from .recover import belongs_to_data
    from .sync.state import save_local_config_copy

    if not belongs_to_data(vol.backing, vol.master_key):
        raise ConfigError(
            f"{vol.backing}/cryptfs.conf does not belong to the data beside it (its key "
            f"puts the root directory elsewhere): it was replaced; restore the vault's "
            f"config with 'cryptfs recover {vol.backing}'")
    try:
        save_local_config_copy(vol.backing, vol.config.to_json())
    except OSError as exc:  # a read-only home must not stop a read-only command
        log.warning("could not keep a copy of the config in %s: %s", exc.filename,
                    exc.strerror)
    return vol


def _unlock(args: argparse.Namespace, read_only: bool = False, **kw) -> Volume:
    key = _masterkey(args)
    if key is not None:
        if not os.path.exists(os.path.join(args.backing, CONFIG_NAME)):
            _restore_config_with_key(args, key)
        _check_config_is_this_vaults(args.backing, VaultConfig.load(args.backing))
        return _after_unlock(Volume.unlock(args.backing, master_key=key,
                                           read_only=read_only, **kw))
    cfg = VaultConfig.load(args.backing)  # fail on a bad vault before prompting
    _check_config_is_this_vaults(args.backing, cfg)
    passphrase = _source(args).get()
    return _after_unlock(Volume.unlock(args.backing, passphrase=passphrase,
                                       read_only=read_only, **kw))


def _remote_config_reader(args: argparse.Namespace):
    """A function that fetches the remote's cryptfs.conf (None if it has none), or None
    when the vault has no remote."""
    from .settings import VaultSettings

    remote = getattr(args, "remote", None) or VaultSettings.load(args.backing).remote
    if not remote:
        return None

    def read() -> bytes | None:
        from .sync import identity
        from .sync.rclone import ensure_config_password, prepare_environment

        binary = prepare_environment(getattr(args, "rclone_config", None))
        ensure_config_password(binary)
        return identity.inspect_remote(binary, remote).config
    return read


def _restore_config_with_key(args: argparse.Namespace, key: bytes) -> None:
    """mount/ls/... --masterkey on a vault whose config is lost: put back a saved copy
    (this device's, or the remote's) that this key opens."""
    from . import recover

    found = recover.find_config(args.backing,
                                recover.candidates(args.backing, _remote_config_reader(args)),
                                master_key=key)
    if found is None:
        raise ConfigError(
            f"{args.backing} has no cryptfs.conf and no saved copy opens with this key; "
            f"rebuild it with a new passphrase: 'cryptfs recover {args.backing} "
            "--masterkey -' (the key on stdin)")
    where, cfg, _ = found
    recover.install(args.backing, cfg.to_json())
    print(f"cryptfs: restored {args.backing}/cryptfs.conf from {where}", file=sys.stderr)


def _plain(path: str) -> str:
    path = posixpath.normpath("/" + path)
    return "/" if path == "//" else path


def _not_found(backing: str, path: str) -> NotFoundError:
    return NotFoundError(f"{path}: no such file or directory in the vault {backing} "
                         f"('cryptfs ls {backing} {posixpath.dirname(path)}' lists what is "
                         "there)")


def _check_remote_arg(backing: str, remembered: str | None, given: str) -> str:
    """A --remote that differs from the remembered one is refused (a typo would otherwise
    start a second copy of the vault there and become the remote from then on)."""
    from .sync import check_location

    remote = check_location(given, "remote")
    if remembered and remote != remembered:
        raise UsageError(f"{backing} syncs with {remembered}, not {remote}. To switch remotes, "
                         f"run 'cryptfs remote set {backing} {remote}' first")
    return remote


# -- commands ---------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    if os.path.isdir(args.backing) and os.listdir(args.backing):
        raise CryptfsError(f"{args.backing} is not empty; a vault needs an empty directory")
    if args.remote:
        _check_remote_is_empty(args)
    passphrase = _source(args).get("New passphrase: ", confirm=True)
    warning = check_new(passphrase, args.force)
    if warning:
        print(f"cryptfs: {warning}", file=sys.stderr)
    vol, master_key = Volume.initialize(args.backing, passphrase, block_size=args.block_size,
                                        max_path=args.max_path)
    from .settings import VaultSettings
    from .sync.state import save_local_config_copy

    save_local_config_copy(args.backing, vol.config.to_json())
    settings = VaultSettings.load(args.backing)
    settings.remote = args.remote  # a vault made anew here starts without sync history
    settings.last_sync = settings.last_sync_remote = None
    settings.save()
    recovery = keys.format_recovery_key(master_key)
    if args.quiet:
        print(recovery)
    else:
        print(f"Created an encrypted vault in {args.backing}.\n")
        print("Your recovery key (the master key) is printed below, once. Write it down and")
        print("keep it offline: with it you can mount the vault even if the passphrase is")
        print("lost (cryptfs mount --masterkey KEY ...), and so can anyone who finds it.\n")
        print(f"    {recovery}\n")
        print(f"Mount it with: cryptfs mount {args.backing} MOUNTPOINT")
    return 0


def _check_remote_is_empty(args: argparse.Namespace) -> None:
    """init --remote: a new vault must never go to a remote that already holds data."""
    from .sync import identity
    from .sync.rclone import (
        check_location,
        ensure_config_password,
        prepare_environment,
        redact,
    )

    check_location(args.remote, "remote")
    binary = prepare_environment(getattr(args, "rclone_config", None))
    ensure_config_password(binary)
    try:
        found = identity.inspect_remote(binary, args.remote)
    except CryptfsError as exc:
        print(f"cryptfs: warning: could not check {redact(args.remote)} ({exc}); the first "
              "sync checks it before uploading anything", file=sys.stderr)
        return
    if not found.empty:
        what = "a cryptfs vault" if found.config else "other files"
        raise identity.ForeignRemoteError(
            f"{redact(args.remote)} is not empty (it holds {what}); a new vault needs an "
            f"empty remote. To use the vault it holds on this device, run 'cryptfs clone "
            f"{redact(args.remote)} {args.backing}'")


def cmd_mount(args: argparse.Namespace) -> int:
    from . import daemonlog
    from . import mount as m

    m.check_fuse_available()
    m.check_mountpoint(args.mountpoint, args.backing)
    sync_setup = _prepare_autosync(args)
    volume = _unlock(args, read_only=args.read_only)
    from . import lognames

    lognames.configure(args.log_plaintext_names, volume)
    opts = m.fuse_options(args.backing, args.read_only, args.o or [])
    if args.writeback:
        opts["writeback"] = True
        opts["subtype"] = m.WRITEBACK_SUBTYPE  # so 'cryptfs sync' can tell (see _run_sync)
    setup = (lambda: sync_setup(volume)) if sync_setup else None
    if args.foreground:
        m.mount_foreground(volume, args.mountpoint, opts, setup, idle=args.idle)
        return 0
    target = daemonlog.choose(args.log)
    pid = m.mount_background(volume, args.mountpoint, opts, log_target=target,
                             sync_setup=setup, idle=args.idle)
    if not args.quiet:
        print(f"Mounted {args.backing} on {args.mountpoint} (daemon pid {pid}; "
              f"log: {target.describe()}).")
    return 0


def _vault_keys(volume: Volume):
    from .sync import VaultKeys

    # A Volume of its own: a sync may run in another thread than the mount's requests.
    return VaultKeys(volume.master_key, volume.config,
                     Volume(volume.backing, volume.master_key, volume.config))


def _prepare_autosync(args: argparse.Namespace):
    """Validate the remote before mounting; return a factory run inside the daemon."""
    from .settings import VaultSettings

    settings = VaultSettings.load(args.backing)
    if args.remote:
        settings.remote = _check_remote_arg(args.backing, settings.remote, args.remote)
        settings.save()
    if args.no_sync or not settings.remote or args.read_only:
        return None
    from .sync import Syncer

    # Fails early (bad remote, encrypted rclone config without a password, asked here
    # once on a terminal: the daemon inherits it).
    Syncer(args.backing, settings, rclone_config=args.rclone_config)

    def setup(volume: Volume):
        from .autosync import AutoSync
        from .sync.engine import Engine
        from .sync.journal import Journal

        syncer = Syncer(args.backing, VaultSettings.load(args.backing),
                        rclone_config=args.rclone_config, vault=_vault_keys(volume))
        engine = Engine(syncer)
        engine.busy = volume.open_entries
        # Every backing folder or object the mount changes goes to the journal before
        # the operation returns (kill -9 safe); the sync reads only those folders.
        volume.on_backing_change = Journal(syncer.state.dir).record
        first = [True]

        def run_sync():
            # The first sync of a mount compares every folder: changes made while the
            # vault was not mounted are in no journal.
            scan_all, first[0] = first[0], False
            try:
                return engine.run(scan_all=scan_all)
            except BaseException:
                first[0] = first[0] or scan_all
                raise

        def describe(plain: str) -> str | None:
            """A pending change as its backing path (encrypted names), never plaintext."""
            try:
                return volume.backing_path_of(plain)
            except (CryptfsError, OSError):
                return None

        # A pull replaces files by new backing inodes, so the kernel, which holds
        # entries and attributes for 1 s, never mixes old sizes with new contents.
        return AutoSync(run_sync, syncer.settings, interval=args.sync_interval,
                        poll_interval=args.poll_interval,
                        busy=volume.has_dirty_handles,
                        after_sync=volume.clear_caches, describe=describe,
                        remote=syncer.remote, scrub=syncer.scrub)
    return setup


def cmd_unmount(args: argparse.Namespace) -> int:
    from . import mount as m
    from .settings import VaultSettings

    def say(text: str) -> None:
        print(f"cryptfs: {text}", file=sys.stderr, flush=True)

    started = time.time()
    backing = m.unmount(args.mountpoint, lazy=args.lazy, say=say)
    if backing and os.path.isdir(backing):
        from .sync.rclone import redact

        settings = VaultSettings.load(backing)
        if settings.remote and settings.last_error_time and settings.last_error_time >= started:
            count = max(settings.pending_count, len(settings.pending_backing))
            what = f"{count} change(s)" if count else "recent changes"
            print(f"cryptfs: unmounted, but could not upload to {redact(settings.remote)}: "
                  f"{settings.last_error}\n  not uploaded yet: {what} (their names: "
                  f"'cryptfs status {backing} --names')\n"
                  f"  They are safe in {backing} and go up with the next sync "
                  f"('cryptfs sync {backing}').", file=sys.stderr)
            return int(ExitCode.SYNC_FAILED)
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    cfg = VaultConfig.load(args.backing)
    _check_config_is_this_vaults(args.backing, cfg)
    master_key = _masterkey(args)
    if master_key is not None:
        cfg.verify_master_key(master_key)
    else:
        master_key = cfg.unlock(_source(args).get("Current passphrase: "))
    new_source = PassphraseSource(args.new_passfile, None, env_var=NEW_ENV_VAR)
    new = new_source.get("New passphrase: ", confirm=True)
    warning = check_new(new, args.force)
    if warning:
        print(f"cryptfs: {warning}", file=sys.stderr)
    new_cfg = cfg.rewrap(master_key, new)
    backup = Path(args.backing) / BACKUP_NAME
    write_atomic(backup, cfg.to_json())  # until the new config is proven to work
    new_cfg.save(args.backing)
    VaultConfig.load(args.backing).unlock(new)
    backup.unlink()
    from .sync.state import save_local_config_copy

    save_local_config_copy(args.backing, new_cfg.to_json())
    print("Passphrase changed. No data was re-encrypted: the master key is the same.")
    print("Note: an old copy of cryptfs.conf (a backup, or a cloud's version history) still "
          "opens the vault with the old passphrase.")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    """Put back a lost or replaced cryptfs.conf (recover.py)."""
    from . import recover

    backing = args.backing
    if not os.path.isdir(backing):
        raise ConfigError(f"{backing}: no such directory")
    sources = recover.candidates(backing, _remote_config_reader(args))
    key = _masterkey(args)
    if key is not None:
        found = recover.find_config(backing, sources, master_key=key)
    else:
        if not sources:
            raise ConfigError(
                f"no saved copy of {backing}'s config on this device or its remote; "
                f"rebuild it with the recovery key: 'cryptfs recover {backing} "
                "--masterkey -' (the key on stdin)")
        found = recover.find_config(backing, sources, passphrase=_source(args).get())
        if found is None:
            raise ConfigError(
                "no saved copy of the config opens with this passphrase and belongs to the "
                f"data in {backing}; use the recovery key: 'cryptfs recover {backing} "
                "--masterkey -'")
    if found is not None:
        where, cfg, _ = found
        recover.install(backing, cfg.to_json())
        print(f"Restored {backing}/cryptfs.conf from {where}; it opens with that "
              "config's passphrase.")
        return 0
    assert key is not None
    new = PassphraseSource(args.new_passfile, None, env_var=NEW_ENV_VAR).get(
        "New passphrase: ", confirm=True)
    cfg = recover.rebuild(backing, key, new)
    recover.install(backing, cfg.to_json())
    print(f"Rebuilt {backing}/cryptfs.conf around the recovery key with the new passphrase "
          f"(block size {cfg.block_size}). No data was re-encrypted.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    cfg = VaultConfig.load(args.backing)
    print(f"vault:           {os.path.abspath(args.backing)}")
    print("format version:  2")
    print(f"vault id:        {cfg.vault_id.hex()}")
    print("cipher:          xsalsa20-poly1305 (libsodium secretbox), per-file keys")
    print(f"block size:      {cfg.block_size} bytes (+40 bytes per block on disk)")
    print("names:           SIV (BLAKE2b + XSalsa20), base32, padded to 16 bytes; "
          f"backing paths at most {cfg.max_path} characters")
    print(f"KDF:             argon2id, opslimit {cfg.kdf.opslimit}, "
          f"memlimit {cfg.kdf.memlimit // 1024} KiB")
    print(f"features:        {', '.join(cfg.features) or '(none)'}")
    return 0


def _mode_char(mode: int) -> str:
    return {stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFREG: "-", stat.S_IFIFO: "p",
            stat.S_IFSOCK: "s", stat.S_IFCHR: "c", stat.S_IFBLK: "b"}.get(stat.S_IFMT(mode), "?")


def cmd_ls(args: argparse.Namespace) -> int:
    vol = _unlock(args, read_only=True)
    top = _plain(args.path)
    try:
        attrs = vol.stat(top)
    except FileNotFoundError:
        raise _not_found(args.backing, top) from None
    if not stat.S_ISDIR(attrs.mode):
        print(top)
        return 0
    tops = [t for t, _, _ in vol.walk(top)] if args.recursive else [top]
    for index, directory in enumerate(tops):
        if args.recursive:
            print(("\n" if index else "") + f"{directory}:")
        for name, a in vol.scandir(directory):
            suffix = "/" if stat.S_ISDIR(a.mode) else ""
            if args.long:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.mtime_ns / 1e9))
                line = (f"{_mode_char(a.mode)}{stat.filemode(a.mode)[1:]} "
                        f"{a.size:>12} {when} {name}{suffix}")
                if stat.S_ISLNK(a.mode):
                    line += f" -> {os.fsdecode(vol.readlink(a.ino))}"
                print(line)
            else:
                print(name + suffix)
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    vol = _unlock(args, read_only=True)
    path = _plain(args.path)
    try:
        fh = vol.open(vol.resolve(path), os.O_RDONLY)
    except FileNotFoundError:
        raise _not_found(args.backing, path) from None
    except IsADirectoryError:
        raise CryptfsError(f"{path} is a directory in the vault; 'cryptfs ls {args.backing} "
                           f"{path}' lists it") from None
    out = sys.stdout.buffer
    try:
        offset = 0
        while True:
            chunk = vol.read(fh, offset, 1 << 20)
            if not chunk:
                break
            out.write(chunk)
            offset += len(chunk)
    finally:
        vol.release(fh)
        out.flush()
    return 0


def cmd_encrypt_name(args: argparse.Namespace) -> int:
    vol = _unlock(args, read_only=True)
    path = _plain(args.plain_path)
    print(vol.backing_path_of(path))
    if path != "/" and stat.S_ISDIR(vol.stat(path).mode):
        print(vol.storage_path_of(path))  # where its entries live
    return 0


def cmd_decrypt_name(args: argparse.Namespace) -> int:
    vol = _unlock(args, read_only=True)
    rel = args.backing_path
    if os.path.isabs(rel):
        rel = os.path.relpath(rel, vol.backing)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CryptfsError("backing path must stay inside the vault")
    try:
        print(vol.plain_path_of("/".join(parts)))
    except OSError as exc:
        raise CryptfsError(f"{rel}: {exc.strerror}") from None
    return 0


def cmd_ignore(args: argparse.Namespace) -> int:
    """What the sync keeps on this device: the ignore rules applied to the vault."""
    from .ignore import IGNORE_FILE
    from .sync import ignore as sync_ignore

    vol = _unlock(args, read_only=True)
    try:
        rules = sync_ignore.read_rules(vol)
    except CryptfsError as exc:
        raise CryptfsError(str(exc)) from None
    for problem in rules.problems:
        print(f"cryptfs: warning: {problem}", file=sys.stderr)
    if args.check is not None:
        path = _plain(args.check)
        try:
            is_dir, exists = stat.S_ISDIR(vol.stat(path).mode), True
        except FileNotFoundError:
            is_dir, exists = args.check.endswith("/"), False
        verdict = rules.check(path.lstrip("/"), is_dir)
        shown = path + ("/" if is_dir and path != "/" else "")
        if verdict.ignored and verdict.parent is not None:
            why = f"inside /{verdict.parent}/, ignored by {verdict.rule.describe()}"
        elif verdict.ignored:
            why = f"by {verdict.rule.describe()}"
        elif path == "/" + IGNORE_FILE:
            why = "always: it carries the rules to the other devices"
        elif verdict.rule is not None:
            why = f"re-included by {verdict.rule.describe()}"
        else:
            why = "no rule matches"
        print(f"{'ignored' if verdict.ignored else 'synced'}: {shown} ({why})"
              + ("" if exists else " [not in the vault]"))
        return 0
    found = sync_ignore.walk(vol, rules)
    for item in found.ignored:
        print(f"{item.path}{'/' if item.is_dir else ''}  ({item.rule})")
    dirs = sum(1 for i in found.ignored if i.is_dir)
    source = f"/{IGNORE_FILE} and the defaults" if rules.user_text is not None else \
        f"the defaults (the vault has no /{IGNORE_FILE})"
    print(f"ignore: {len(found.ignored)} path(s) kept on this device, never uploaded "
          f"({dirs} folder(s) with everything in them, {len(found.ignored) - dirs} "
          f"other); rules: {source}", file=sys.stderr)
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    import json

    from .fsck import Checker, terminal_progress

    vol = _unlock(args, read_only=not (args.quarantine or args.repair))
    progress = None if args.json else terminal_progress
    report = Checker(vol, quarantine=args.quarantine, repair=args.repair,
                     progress=progress).run()
    if progress and sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for p in report.problems:
            where = p.plain_path or "(unknown plaintext path)"
            moved = f"  -> moved to {p.quarantined_to}" if p.quarantined_to else ""
            fixed = f"  -> repaired: {p.repaired}" if p.repaired else ""
            print(f"{p.kind}: {where}\n    backing: {p.backing_path}\n    {p.detail}"
                  f"{moved}{fixed}")
        status = "OK" if report.ok else f"{len(report.failures)} problem(s)"
        if report.failures and not report.unrepaired:
            status += ", all repaired or moved aside"
        elif report.ok and report.problems:
            status += (f" ({len(report.problems)} leftover(s) of interrupted operations, "
                       "listed above: harmless; --quarantine or --repair removes them)")
        print(f"fsck: {report.dirs} dirs, {report.files} files, {report.symlinks} symlinks, "
              f"{report.bytes_checked / 2**20:.1f} MiB checked: {status}")
    return 0 if not report.unrepaired else int(ExitCode.INTEGRITY)


def _syncer(args: argparse.Namespace, vol: Volume):
    from .settings import VaultSettings
    from .sync import Syncer

    return Syncer(args.backing, VaultSettings.load(args.backing), remote=args.remote,
                  rclone_config=args.rclone_config, vault=_vault_keys(vol))


def _run_sync(args: argparse.Namespace, verb: str) -> int:
    from . import mount as m
    from .settings import VaultSettings
    from .sync.engine import Engine

    where = m.writeback_mount_of(args.backing)
    if where:
        raise CryptfsError(
            f"{args.backing} is mounted on {where} with --writeback: the kernel keeps its "
            "own file sizes there, so a sync from outside the mount could show pulled "
            "files cut short. Let the mount sync (mount --remote), or unmount first")
    vol = _unlock(args)  # to name conflict copies (and check the key)
    syncer = _syncer(args, vol)
    tty = sys.stderr.isatty()

    def progress(p) -> None:
        if tty:
            eta = f"ETA {p.eta:.0f}s" if isinstance(p.eta, (int, float)) else ""
            sys.stderr.write(f"\r{verb}: {p.files_done}/{p.files_total} files, "
                             f"{p.bytes_done / 2**20:.1f}/{p.bytes_total / 2**20:.1f} MiB, "
                             f"{p.speed / 2**20:.1f} MiB/s {eta}    ")
            sys.stderr.flush()

    settings = VaultSettings.load(args.backing)
    if args.remote:
        settings.remote = _check_remote_arg(args.backing, settings.remote, args.remote)
    started = time.time()
    engine = Engine(syncer)
    try:
        # Without a live mount, nothing journalled what other programs wrote: compare
        # every folder (local work only; the remote is asked only about what changed).
        result = engine.run(full=getattr(args, "full", False),
                            verify=getattr(args, "verify", False),
                            scan_all=m.mount_of(args.backing) is None, progress=progress)
    except CryptfsError as exc:
        settings = VaultSettings.load(args.backing)
        settings.record_failure(str(exc))
        settings.save()
        raise
    finally:
        engine.close()
        if tty:
            sys.stderr.write("\n")
    settings = VaultSettings.load(args.backing)
    if args.remote and args.remote != settings.remote:
        settings.remote = args.remote
    settings.record_success(started, syncer.remote)
    settings.save()
    print(f"{verb}: ok remote={syncer.shown_remote} transfers={result.transfers} "
          f"bytes={result.bytes} seconds={result.seconds:.1f} "
          f"conflicts={len(result.renamed_conflicts)} uploads={result.uploads} "
          f"downloads={result.downloads} deletes={result.deletes} "
          f"remote_calls={result.calls} pending={result.pending} "
          f"problems={len(result.problems)} "
          f"mode={'full' if result.full else 'changes'}")
    _report(args.backing, vol, result)
    return int(ExitCode.INTEGRITY) if result.problems else 0


def _shown_backing(vol: Volume, rel: str) -> str:
    """A backing path as people read it: the plaintext path when it decrypts."""
    from .sync.resync import plain_path

    if rel.startswith("x/"):
        return f"extended attributes ({rel})"
    if rel.startswith("cryptfs-sync/"):
        return rel
    shown = plain_path(vol, rel)
    return f"{shown} ({rel})" if shown else rel


def _report(backing: str, vol: Volume, result) -> None:
    """What a sync did beyond copying, for the user (plaintext: this is their terminal)."""
    from .sync.resync import plain_path

    if result.config_note:
        print(f"config: {result.config_note}")
    if result.merged_without_state:
        print("note: full reconciliation, with no sync state to start from (first sync "
              "here, the state was lost, --full, or records were missing): both sides were "
              "merged; nothing was deleted, and every file that differed is kept twice")
    for note in getattr(result, "notes", []):
        print(f"note: {note}")
    for name in result.renamed_conflicts:
        print(f"conflict: this device's version kept as {name!r}")
    if result.only_remote:
        shown = [plain_path(vol, p) or p for p in result.only_remote]
        print(f"from the remote: {len(shown)} file(s) this device did not have (new on "
              "another device, or deleted here while the sync state was lost: delete "
              "them again then):")
        for name in shown[:50]:
            print(f"  {name}")
        if len(shown) > 50:
            print(f"  ... and {len(shown) - 50} more")
    for rel in result.repaired_dirs:
        where = plain_path(vol, rel)
        print(f"repaired: directory {where or rel} was left unreachable by the sync "
              "(reattached; see 'cryptfs fsck')")
    for kind, rel, text in getattr(result, "problems", []):
        print(f"integrity: {kind}: {_shown_backing(vol, rel)}: {text}")
    if getattr(result, "pending", 0):
        print(f"waiting: {result.pending} file(s) whose newest version could not be "
              "fetched yet (kept as they are; tried again at the next sync)")


def cmd_sync(args: argparse.Namespace) -> int:
    return _run_sync(args, "sync")


def cmd_pull(args: argparse.Namespace) -> int:
    return _run_sync(args, "pull")


def cmd_remote(args: argparse.Namespace) -> int:
    from .settings import VaultSettings
    from .sync import check_location, redact

    VaultConfig.load(args.backing)
    settings = VaultSettings.load(args.backing)
    if args.action == "set":
        if not args.remote:
            raise CryptfsError("usage: cryptfs remote set BACKING REMOTE:PATH")
        from .sync.state import SyncState

        settings.remote = check_location(args.remote, "remote")
        settings.upload_config = not args.no_upload_config
        # Start afresh with this remote: its first sync checks which vault it holds and
        # uploads everything (a remote emptied on purpose is filled again).
        SyncState(settings, settings.remote).reset()
        settings.last_sync_remote = None
        settings.save()
        print(f"remote of {args.backing}: {redact(settings.remote)} (config file "
              f"{'uploaded' if settings.upload_config else 'kept off the remote'}); the "
              "next sync uploads everything it lacks")
    elif args.action == "unset":
        settings.remote = None
        settings.save()
        print(f"{args.backing} has no remote now")
    else:
        print(redact(settings.remote) if settings.remote else "(no remote)")
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from .settings import VaultSettings
    from .sync import Syncer, check_location
    from .sync.state import SyncState, save_local_config_copy

    check_location(args.remote, "remote")
    if os.path.isdir(args.backing) and os.listdir(args.backing):
        raise CryptfsError(f"{args.backing} is not empty; clone needs a new directory")
    settings = VaultSettings.load(args.backing)
    settings.remote = args.remote
    settings.upload_config = args.config_file is None
    settings.last_sync = settings.last_sync_remote = None
    syncer = Syncer(args.backing, settings, rclone_config=args.rclone_config)
    with tempfile.TemporaryDirectory(prefix="cryptfs-clone-") as tmp:
        conf = os.path.join(tmp, CONFIG_NAME)
        if args.config_file:
            shutil.copyfile(args.config_file, conf)
        elif not syncer.download_config(conf):
            raise CryptfsError(f"{syncer.shown_remote} holds no cryptfs.conf (kept off the "
                               "remote?): give the config with --config-file FILE")
        cfg = VaultConfig.parse(Path(conf).read_bytes())
        key = _masterkey(args)
        if key is not None:
            cfg.verify_master_key(key)
        else:  # check the passphrase before downloading everything
            key = cfg.unlock(_source(args).get())
        os.makedirs(args.backing, mode=0o700, exist_ok=True)
        SyncState(settings, args.remote).reset()
        syncer.clone_into_backing()
        write_atomic(Path(args.backing) / CONFIG_NAME, cfg.to_json())
    save_local_config_copy(args.backing, cfg.to_json())
    vol = _after_unlock(Volume(args.backing, key, cfg, read_only=True))
    started = time.time()
    syncer.vault = _vault_keys(vol)
    from .sync.engine import Engine

    engine = Engine(syncer)  # checks the remote's vault; starts the sync state
    try:
        engine.run()
    finally:
        engine.close()
    settings.record_success(started, args.remote)
    settings.save()
    print(f"Cloned {syncer.shown_remote} into {args.backing}. Mount it with: "
          f"cryptfs mount {args.backing} MOUNTPOINT")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .settings import VaultSettings
    from .sync import redact
    from .sync.report import open_db, pending, problems
    from .sync.state import SyncState

    VaultConfig.load(args.backing)
    s = VaultSettings.load(args.backing)

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"

    synced = s.synced_to_current_remote()
    db = open_db(SyncState(s, s.remote).dir) if s.remote else None
    state_dir = SyncState(s, s.remote).dir if s.remote else None
    print(f"vault:           {os.path.abspath(args.backing)}")
    print(f"remote:          {redact(s.remote) if s.remote else '(none)'}")
    print(f"config uploaded: {'yes' if s.upload_config else 'no'}")
    found = []
    try:
        if synced and db is not None:
            print(f"last sync:       {when(s.last_sync)} ({s.syncs} successful syncs)")
            p = pending(db, args.backing, state_dir)
            count = max(p.changed, s.pending_count)
            print(f"pending:         {count} changed file(s) not yet uploaded")
            if p.waiting:
                print(f"waiting:         {p.waiting} file(s) whose newest version could not "
                      "be fetched yet")
            found = problems(db)
        elif synced:
            print(f"last sync:       {when(s.last_sync)} ({s.syncs} successful syncs)")
            print(f"pending:         {max(s.pending_count, len(s.pending_backing))} changed "
                  "file(s) not yet uploaded")
        elif s.remote:
            print("last sync:       never to this remote")
            print("pending:         everything (never synced to this remote)")
        else:
            print("last sync:       never")
    finally:
        if db is not None:
            db.close()
    if s.last_error:
        print(f"last error:      {when(s.last_error_time)}: {redact(s.last_error)}")
        print(f"failing since:   {when(s.failing_since)} (retried with backoff)")
    else:
        print("last error:      none")
    open_problems = [p for p in found if p[4] is None]
    if found:
        print(f"integrity:       {len(open_problems)} problem(s) detected on the remote"
              + (f", {len(found) - len(open_problems)} repaired in the last day"
                 if len(found) > len(open_problems) else ""))
    else:
        print("integrity:       no problem detected")
    vol = _unlock(args, read_only=True) if args.names and (s.pending_backing or found) \
        else None
    for kind, rel, text, t, resolved in found:
        shown = _shown_backing(vol, rel) if vol is not None else rel
        state = f"repaired {when(resolved)}" if resolved else "open"
        print(f"  {kind}: {shown} ({when(t)}, {state}): {text}")
    if found and vol is None:
        print("  (backing paths; 'cryptfs status --names' shows the plaintext paths)")
    if vol is not None:
        from .sync.resync import plain_path

        for rel in s.pending_backing:
            print(f"  not uploaded: {plain_path(vol, rel) or rel}")
    return 0


def _audit_against_state(args: argparse.Namespace, vol: Volume, syncer, temp: str) -> list:
    """Every downloaded object against engine 2's authenticated state, and every record
    (docs/SYNC.md §7); the findings are remembered for 'status' too."""
    from .fsck import Problem
    from .sync.records import record_key
    from .sync.report import audit_tree, open_db

    db = open_db(syncer.state.dir)
    if db is None:
        return []
    try:
        audit = audit_tree(db, temp, record_key(vol.master_key), db.get("device") or "")
        out = []
        for f in audit.findings:
            db.add_problem(f.kind, f.path, f.detail)
            plain = None
            if f.path.startswith("d/"):
                from .sync.resync import plain_path

                plain = plain_path(vol, f.path)
            out.append(Problem(f.kind, syncer.shown_remote.rstrip("/") + "/" + f.path, plain,
                               f.detail))
        return out
    finally:
        db.close()


def cmd_audit_remote(args: argparse.Namespace) -> int:
    import json
    import shutil
    import tempfile

    from .fsck import Checker, Problem

    vol = _unlock(args, read_only=True)
    syncer = _syncer(args, vol)
    temp = tempfile.mkdtemp(prefix="cryptfs-audit-")
    try:
        syncer.download_to(temp)
        remote_vol = Volume(temp, vol.master_key, vol.config, read_only=True)
        report = Checker(remote_vol).run()
        remote_conf = Path(temp) / "cryptfs.conf"
        local_conf = Path(args.backing) / "cryptfs.conf"
        if remote_conf.exists() and remote_conf.read_bytes() != local_conf.read_bytes():
            report.problems.append(Problem(
                "config", f"{syncer.shown_remote}/cryptfs.conf", None,
                "the remote config differs from the local one (an older passphrase?)"))
        for p in report.problems:
            p.backing_path = syncer.shown_remote.rstrip("/") + "/" + os.path.relpath(p.backing_path,
                                                                               temp)
        report.problems += _audit_against_state(args, vol, syncer, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for p in report.problems:
            print(f"{p.kind}: {p.plain_path or '(not a file of this vault)'}\n"
                  f"    remote object: {p.backing_path}\n    {p.detail}")
        verdict = "every object is valid ciphertext of this vault" if report.ok else \
            f"{len(report.problems)} problem(s)"
        print(f"audit-remote: {report.files} files, {report.dirs} dirs, "
              f"{report.bytes_checked / 2**20:.1f} MiB authenticated: {verdict}")
    return 0 if report.ok else int(ExitCode.INTEGRITY)


# -- parser -----------------------------------------------------------------------------
def _block_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 4096 or value > 1 << 20 or value & (value - 1):
        raise argparse.ArgumentTypeError("must be a power of two from 4096 to 1048576")
    return value


def _max_path(text: str) -> int:
    from .layout import MAX_MAX_PATH, MIN_MAX_PATH

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_MAX_PATH <= value <= MAX_MAX_PATH:
        raise argparse.ArgumentTypeError(f"must be from {MIN_MAX_PATH} to {MAX_MAX_PATH}")
    return value
def _duration(text: str) -> float:
    from .idle import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_completion(args: argparse.Namespace) -> int:
    from . import shellfiles

    sys.stdout.write(shellfiles.completion(args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptfs",
        description="Encrypted FUSE filesystem: a plaintext view of an encrypted directory.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cryptfs {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           allow_abbrev=False)  # --masterkey must be spelled out (main)
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "create an empty vault in BACKING")
    p.add_argument("backing")
    p.add_argument("--quiet", action="store_true", help="print only the recovery key")
    p.add_argument("--block-size", type=_block_size, default=16384, metavar="BYTES",
                   help="plaintext bytes per encrypted block, a power of two from 4096 to "
                        "1048576 (default 16384; 4096 suits random I/O such as databases "
                        "and VM images better, at a cost in sequential speed)")
    p.add_argument("--max-path", type=_max_path, default=250, metavar="CHARS",
                   help="longest path the vault may use in the cloud, relative to its "
                        "folder (default 250; lower it for a provider or sync client with "
                        "a tighter limit, e.g. Windows' 260 minus the sync folder's path)")
    p.add_argument("--remote", metavar="REMOTE:PATH",
                   help="remember this rclone remote (it must be empty)")
    p.add_argument("--rclone-config", metavar="FILE", help="rclone config file to use")
    p.add_argument("--force", action="store_true",
                   help="accept a passphrase shorter than 8 characters")
    _add_pass_args(p, masterkey=False)

    p = add("mount", cmd_mount, "mount BACKING on MOUNTPOINT")
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground, log to stderr")
    p.add_argument("--read-only", action="store_true", help="mount read-only")
    p.add_argument("-o", action="append", metavar="OPT[,OPT]",
                   help="FUSE mount options, e.g. allow_other")
    p.add_argument("--log", metavar="FILE",
                   help="daemon log file (default: syslog/the journal where /dev/log exists, "
                        "else $XDG_STATE_HOME/cryptfs/cryptfs.log)")
    p.add_argument("--idle", type=_duration, metavar="DURATION",
                   help="unmount after this long without filesystem activity, e.g. 30m, "
                        "1h, 90s (not while programs keep files open there)")
    p.add_argument("--writeback", action="store_true",
                   help="kernel writeback cache: small writes merged (faster untar); write "
                        "errors show at fsync, unflushed data is lost if the daemon is "
                        "killed (README: Writeback cache)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--remote", metavar="REMOTE:PATH",
                   help="keep this rclone remote in sync while mounted (remembered)")
    p.add_argument("--sync-interval", type=float, default=2.0, metavar="SECONDS",
                   help="wait this long after the last change before syncing (default 2)")
    p.add_argument("--poll-interval", type=float, default=5.0, metavar="SECONDS",
                   help="look for others' changes this often (default 5; one listing of "
                        "the remote's change log)")
    p.add_argument("--no-sync", action="store_true", help="do not sync while mounted")
    p.add_argument("--rclone-config", metavar="FILE", help="rclone config file to use")
    p.add_argument("--log-plaintext-names", action="store_true",
                   help="log plaintext paths (default: backing paths or hashes only)")
    _add_pass_args(p)

    p = add("unmount", cmd_unmount, "flush and unmount MOUNTPOINT")
    p.add_argument("mountpoint")
    p.add_argument("--lazy", action="store_true",
                   help="detach now even if busy; the daemon exits (and this command "
                        "returns) once the programs holding files there close them")

    p = add("passwd", cmd_passwd, "change the passphrase (no data is re-encrypted)")
    p.add_argument("backing")
    p.add_argument("--new-passfile", metavar="FILE",
                   help=f"new passphrase from FILE (else ${NEW_ENV_VAR}, else a prompt)")
    p.add_argument("--force", action="store_true",
                   help="accept a new passphrase shorter than 8 characters")
    _add_pass_args(p)

    p = add("info", cmd_info, "show the vault's format and parameters (no passphrase)")
    p.add_argument("backing")

    p = add("ls", cmd_ls, "list a directory of the vault without mounting")
    p.add_argument("backing")
    p.add_argument("path", nargs="?", default="/")
    p.add_argument("-l", "--long", action="store_true", help="mode, size, time, name")
    p.add_argument("-R", "--recursive", action="store_true")
    _add_pass_args(p)

    p = add("cat", cmd_cat, "write a file of the vault to stdout without mounting")
    p.add_argument("backing")
    p.add_argument("path")
    _add_pass_args(p)

    for name, func, text in (
            ("sync", cmd_sync, "two-way sync with the remote now: this device's changes go "
             "up, others' come down (checked against the authenticated state)"),
            ("pull", cmd_pull, "fetch others' changes from the remote now (two-way)"),
            ("audit-remote", cmd_audit_remote, "download the remote and check that every "
             "object is valid ciphertext of this vault and the version the change records "
             "announce")):
        p = add(name, func, text)
        p.add_argument("backing")
        p.add_argument("--remote", metavar="REMOTE:PATH")
        p.add_argument("--rclone-config", metavar="FILE")
        if name == "audit-remote":
            p.add_argument("--json", action="store_true")
        if name == "sync":
            p.add_argument("--full", action="store_true",
                           help="full reconciliation: compare every file with the remote "
                                "(downloads what has the same size to compare it), keep "
                                "both versions of every difference")
            p.add_argument("--verify", action="store_true",
                           help="also list the remote and check every object's presence "
                                "and size against the authenticated state (done daily)")
        _add_pass_args(p)

    p = add("remote", cmd_remote, "set, show or unset the vault's remote (kept locally)")
    p.add_argument("action", choices=["set", "show", "unset"])
    p.add_argument("backing")
    p.add_argument("remote", nargs="?")
    p.add_argument("--no-upload-config", action="store_true",
                   help="keep cryptfs.conf off the remote (you must keep a copy yourself)")

    p = add("clone", cmd_clone, "restore a vault from REMOTE into a new BACKING directory")
    p.add_argument("remote")
    p.add_argument("backing")
    p.add_argument("--config-file", metavar="FILE",
                   help="the vault's cryptfs.conf, if it was kept off the remote")
    p.add_argument("--rclone-config", metavar="FILE")
    _add_pass_args(p)

    p = add("status", cmd_status, "remote, last sync, pending changes, last error")
    p.add_argument("backing")
    p.add_argument("--names", action="store_true",
                   help="also list the plaintext paths not uploaded yet (asks for the "
                        "passphrase)")
    _add_pass_args(p)

    p = add("recover", cmd_recover,
            "put back a lost or replaced cryptfs.conf: from this device's saved copy or "
            "the remote's (with the passphrase or the recovery key), else rebuilt around "
            "the recovery key with a new passphrase")
    p.add_argument("backing")
    p.add_argument("--remote", metavar="REMOTE:PATH",
                   help="where to look for the config (default: the vault's remote)")
    p.add_argument("--rclone-config", metavar="FILE")
    p.add_argument("--new-passfile", metavar="FILE",
                   help=f"new passphrase from FILE (else ${NEW_ENV_VAR}, else a prompt)")
    _add_pass_args(p)

    p = add("fsck", cmd_fsck, "check every name, directory, back-reference, symlink, block "
                              "and attribute (offline)")
    p.add_argument("backing")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--quarantine", metavar="DIR",
                   help="move unreadable backing entries into DIR (outside the vault)")
    p.add_argument("--repair", action="store_true",
                   help="fix the structure: reattach orphaned directories (where their "
                        "back-reference says, else under /lost+found), rewrite stale "
                        "back-references, remove leftovers")
    _add_pass_args(p)

    p = add("ignore", cmd_ignore, "list what sync keeps on this device: paths the ignore "
            "rules (/.cryptfsignore in the vault, gitignore syntax, and the defaults) "
            "exclude, and which rule does (offline)")
    p.add_argument("backing")
    p.add_argument("--check", metavar="PATH",
                   help="only say whether PATH (a plaintext path in the vault) is ignored, "
                        "and why")
    _add_pass_args(p)

    p = add("encrypt-name", cmd_encrypt_name, "backing path of a plaintext path")
    p.add_argument("backing")
    p.add_argument("plain_path")
    _add_pass_args(p)

    p = add("decrypt-name", cmd_decrypt_name, "plaintext path of a backing path (write "
            "'./NAME' or put '--' before a name that starts with '-')")
    p.add_argument("backing")
    p.add_argument("backing_path")
    _add_pass_args(p)

    p = add("completion", cmd_completion, "print the shell completion script for SHELL "
            "(e.g. cryptfs completion bash > ~/.local/share/bash-completion/completions/"
            "cryptfs)")
    p.add_argument("shell", choices=["bash", "zsh", "fish"])
    return parser


def _masterkey_out_of_argv() -> None:
    """``--masterkey HEX`` on the command line is readable by every user in ps for the
    process's whole life (a mount daemon's: for days). Warn, and run again with the key
    handed over through a pipe (--masterkey-fd) instead."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--masterkey" and i + 1 < len(argv) and argv[i + 1] != "-":
            key, rest = argv[i + 1], argv[:i] + argv[i + 2:]
            break
        if arg.startswith("--masterkey=") and arg != "--masterkey=-":
            key, rest = arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
            break
    else:
        return
    print("cryptfs: warning: a recovery key given as an argument is visible to other users "
          "(ps, /proc) while it is there; give it on stdin with '--masterkey -' or with "
          "--masterkey-fd FD. cryptfs now moves it out of its command line.", file=sys.stderr)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, key.encode(errors="replace")[:4000] + b"\n")
    os.close(write_fd)
    os.set_inheritable(read_fd, True)
    insert = i if i <= len(rest) else len(rest)
    new = [*rest[:insert], "--masterkey-fd", str(read_fd), *rest[insert:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, "-m", "cryptfs", *new])  # noqa: S606
    except OSError:
        os.close(read_fd)  # could not re-run: go on with the key where it is


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _masterkey_out_of_argv()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="cryptfs: %(levelname)s: %(message)s")
    if not args.verbose:
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CryptfsError as exc:
        print(f"cryptfs: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except FileNotFoundError as exc:
        print(f"cryptfs: not found: {exc.filename or exc}", file=sys.stderr)
        return int(ExitCode.NOT_FOUND)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"cryptfs: {exc.strerror or exc}{where}", file=sys.stderr)
        return int(ExitCode.ERROR)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0


