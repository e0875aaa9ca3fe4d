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
from .config import BACKUP_NAME, VaultConfig, write_atomic
from .errors import CryptfsError, ExitCode, NotFoundError, UsageError
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
  16  sync failed: the remote could not be reached or rclone failed (nothing lost)
"""


def _add_pass_args(p: argparse.ArgumentParser, masterkey: bool = True) -> None:
    g = p.add_argument_group("passphrase (first that is given wins; else $CRYPTFS_PASSWORD, "
                             "else a prompt)")
    if masterkey:
        g.add_argument("--masterkey", metavar="HEX",
                       help="use the recovery key printed by init instead of the passphrase")
    g.add_argument("--passfile", metavar="FILE", help="read the passphrase from FILE's first line")
    g.add_argument("--extpass", metavar="CMD",
                   help="run CMD (split like a shell would, run without one) and use "
                        "its first output line")


def _source(args: argparse.Namespace) -> PassphraseSource:
    return PassphraseSource(args.passfile, args.extpass)


def _unlock(args: argparse.Namespace, read_only: bool = False, **kw) -> Volume:
    if getattr(args, "masterkey", None):
        key = keys.parse_recovery_key(args.masterkey)
        return Volume.unlock(args.backing, master_key=key, read_only=read_only, **kw)
    cfg = VaultConfig.load(args.backing)  # fail on a bad vault before prompting
    del cfg
    passphrase = _source(args).get()
    return Volume.unlock(args.backing, passphrase=passphrase, read_only=read_only, **kw)


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
    passphrase = _source(args).get("New passphrase: ", confirm=True)
    warning = check_new(passphrase, args.force)
    if warning:
        print(f"cryptfs: {warning}", file=sys.stderr)
    if args.remote:
        from .sync import check_location

        check_location(args.remote, "remote")
    _, master_key = Volume.initialize(args.backing, passphrase, block_size=args.block_size,
                                      max_path=args.max_path)
    if args.remote:
        from .settings import VaultSettings

        settings = VaultSettings.load(args.backing)
        settings.remote = args.remote
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


def cmd_mount(args: argparse.Namespace) -> int:
    from . import daemonlog
    from . import mount as m

    m.check_fuse_available()
    m.check_mountpoint(args.mountpoint, args.backing)
    sync_setup = _prepare_autosync(args)
    volume = _unlock(args, read_only=args.read_only)
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

    Syncer(args.backing, settings, rclone_config=args.rclone_config)  # fail early

    def setup(volume: Volume):
        from .autosync import AutoSync

        syncer = Syncer(args.backing, VaultSettings.load(args.backing),
                        rclone_config=args.rclone_config, volume=volume)

        # A pull replaces files by new backing inodes, so the kernel, which holds
        # entries and attributes for 1 s, never mixes old sizes with new contents.
        return AutoSync(syncer.bisync, syncer.settings, interval=args.sync_interval,
                        poll_interval=args.poll_interval,
                        busy=volume.has_dirty_handles,
                        after_sync=volume.clear_caches)
    return setup


def cmd_unmount(args: argparse.Namespace) -> int:
    from . import mount as m
    from .settings import VaultSettings

    def say(text: str) -> None:
        print(f"cryptfs: {text}", file=sys.stderr, flush=True)

    started = time.time()
    backing = m.unmount(args.mountpoint, lazy=args.lazy, say=say)
    if backing and os.path.isdir(backing):
        settings = VaultSettings.load(backing)
        if settings.remote and settings.last_error_time and settings.last_error_time >= started:
            shown = ", ".join(settings.pending[:10]) or "recent changes"
            more = f" and {len(settings.pending) - 10} more" if len(settings.pending) > 10 else ""
            print(f"cryptfs: unmounted, but could not upload to {settings.remote}: "
                  f"{settings.last_error}\n  not uploaded yet: {shown}{more}\n"
                  f"  They are safe in {backing} and go up with the next sync "
                  f"('cryptfs sync {backing}').", file=sys.stderr)
            return int(ExitCode.SYNC_FAILED)
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    cfg = VaultConfig.load(args.backing)
    if args.masterkey:
        master_key = keys.parse_recovery_key(args.masterkey)
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
    print("Passphrase changed. No data was re-encrypted: the master key is the same.")
    print("Note: an old copy of cryptfs.conf (a backup, or a cloud's version history) still "
          "opens the vault with the old passphrase.")
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


def _syncer(args: argparse.Namespace, volume=None):
    from .settings import VaultSettings
    from .sync import Syncer

    VaultConfig.load(args.backing)
    return Syncer(args.backing, VaultSettings.load(args.backing), remote=args.remote,
                  rclone_config=args.rclone_config, volume=volume)


def _run_sync(args: argparse.Namespace, verb: str) -> int:
    from . import mount as m
    from .settings import VaultSettings

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
    try:
        result = syncer.bisync(progress)
    except CryptfsError as exc:
        settings.record_failure(str(exc))
        settings.save()
        raise
    finally:
        if tty:
            sys.stderr.write("\n")
    settings.record_success(started)
    settings.save()
    print(f"{verb}: ok remote={syncer.remote} transfers={result.transfers} "
          f"bytes={result.bytes} seconds={result.seconds:.1f} "
          f"conflicts={len(result.renamed_conflicts)}")
    for name in result.renamed_conflicts:
        print(f"conflict: this device's version kept as {name!r}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    return _run_sync(args, "sync")


def cmd_pull(args: argparse.Namespace) -> int:
    return _run_sync(args, "pull")


def cmd_remote(args: argparse.Namespace) -> int:
    from .settings import VaultSettings
    from .sync import check_location

    VaultConfig.load(args.backing)
    settings = VaultSettings.load(args.backing)
    if args.action == "set":
        if not args.remote:
            raise CryptfsError("usage: cryptfs remote set BACKING REMOTE:PATH")
        settings.remote = check_location(args.remote, "remote")
        settings.upload_config = not args.no_upload_config
        settings.save()
        print(f"remote of {args.backing}: {settings.remote} (config file "
              f"{'uploaded' if settings.upload_config else 'kept off the remote'})")
    elif args.action == "unset":
        settings.remote = None
        settings.save()
        print(f"{args.backing} has no remote now")
    else:
        print(settings.remote or "(no remote)")
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    import shutil

    from .settings import VaultSettings
    from .sync import Syncer, check_location

    check_location(args.remote, "remote")
    if os.path.isdir(args.backing) and os.listdir(args.backing):
        raise CryptfsError(f"{args.backing} is not empty; clone needs a new directory")
    os.makedirs(args.backing, mode=0o700, exist_ok=True)
    settings = VaultSettings.load(args.backing)
    settings.remote = args.remote
    settings.upload_config = args.config_file is None
    shutil.rmtree(settings.workdir, ignore_errors=True)
    syncer = Syncer(args.backing, settings, rclone_config=args.rclone_config)
    syncer.clone_into_backing()
    conf = Path(args.backing) / "cryptfs.conf"
    if args.config_file:
        shutil.copyfile(args.config_file, conf)
        os.chmod(conf, 0o600)
    if not conf.exists():
        raise CryptfsError(f"{args.remote} holds no cryptfs.conf (kept off the remote?): "
                           "give the config with --config-file FILE")
    VaultConfig.load(args.backing)
    started = time.time()
    syncer.bisync()  # records the common state, so the next sync is incremental
    settings.record_success(started)
    settings.save()
    print(f"Cloned {args.remote} into {args.backing}. Mount it with: "
          f"cryptfs mount {args.backing} MOUNTPOINT")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .settings import VaultSettings

    VaultConfig.load(args.backing)
    s = VaultSettings.load(args.backing)

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"

    changed = 0
    if s.last_sync:
        for root, _dirs, files in os.walk(args.backing):
            for f in files:
                try:
                    if os.lstat(os.path.join(root, f)).st_mtime > s.last_sync:
                        changed += 1
                except OSError:
                    pass
    print(f"vault:           {os.path.abspath(args.backing)}")
    print(f"remote:          {s.remote or '(none)'}")
    print(f"config uploaded: {'yes' if s.upload_config else 'no'}")
    print(f"last sync:       {when(s.last_sync)} ({s.syncs} successful syncs)")
    pending = len(s.pending) or changed
    print(f"pending:         {pending} changed file(s) not yet uploaded"
          if s.last_sync or s.pending else "pending:         everything (never synced)")
    if s.last_error:
        print(f"last error:      {when(s.last_error_time)}: {s.last_error}")
        print(f"failing since:   {when(s.failing_since)} (retried with backoff)")
    else:
        print("last error:      none")
    return 0


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
                "config", f"{syncer.remote}/cryptfs.conf", None,
                "the remote config differs from the local one (an older passphrase?)"))
        for p in report.problems:
            p.backing_path = syncer.remote.rstrip("/") + "/" + os.path.relpath(p.backing_path,
                                                                               temp)
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
                           formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--remote", metavar="REMOTE:PATH", help="remember this rclone remote")
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
    p.add_argument("--sync-interval", type=float, default=5.0, metavar="SECONDS",
                   help="wait this long after the last change before syncing (default 5)")
    p.add_argument("--poll-interval", type=float, default=60.0, metavar="SECONDS",
                   help="fetch others' changes this often when idle (default 60)")
    p.add_argument("--no-sync", action="store_true", help="do not sync while mounted")
    p.add_argument("--rclone-config", metavar="FILE", help="rclone config file to use")
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
            ("sync", cmd_sync, "two-way sync with the remote now, with progress"),
            ("pull", cmd_pull, "fetch others' changes from the remote now (two-way)"),
            ("audit-remote", cmd_audit_remote, "download the remote and check that every "
             "object is valid ciphertext of this vault")):
        p = add(name, func, text)
        p.add_argument("backing")
        p.add_argument("--remote", metavar="REMOTE:PATH")
        p.add_argument("--rclone-config", metavar="FILE")
        if name == "audit-remote":
            p.add_argument("--json", action="store_true")
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

    p = add("status", cmd_status, "remote, last sync, pending changes, last error")
    p.add_argument("backing")

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


def main(argv: Sequence[str] | None = None) -> int:
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
        return 130
    except BrokenPipeError:
        return 0


