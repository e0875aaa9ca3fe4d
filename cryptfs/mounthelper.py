"""``mount.fuse.cryptfs``: the helper that mount(8) runs for ``-t fuse.cryptfs``.

So that ``mount -t fuse.cryptfs BACKING MNT -o passfile=FILE``, an fstab line and a
systemd ``.mount`` unit work like for any other filesystem. mount(8) calls

    mount.fuse.cryptfs BACKING MOUNTPOINT [-n] [-s] [-f] [-v] [-o OPT,OPT...] [-t TYPE]

(install it as /sbin/mount.fuse.cryptfs, see the README). Options, like mount.fuse3's:

- cryptfs's own: ``passfile=FILE``, ``extpass=CMD`` (no commas), ``idle=DURATION``,
  ``log=FILE``, ``remote=REMOTE:PATH``, ``nosync``, ``sync_interval=S``,
  ``poll_interval=S``, ``rclone_config=FILE``, ``writeback``;
- ``setuid=USER``: as root, mount as USER (the passfile is then read as USER);
- ``ro`` mounts read-only; mount(8)/fstab/systemd options (``rw``, ``defaults``,
  ``noauto``, ``user``, ``nofail``, ``_netdev``, ``x-systemd.*``, ``comment=...``) are
  dropped; everything else (``allow_other``, ``nosuid``, ...) goes to FUSE.

The mount is done by ``cryptfs mount`` in this process, which returns once it is live.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Sequence

from .errors import ExitCode

# option name -> cryptfs mount flag (takes the option's value)
VALUE_OPTIONS = {
    "passfile": "--passfile", "extpass": "--extpass", "idle": "--idle", "log": "--log",
    "remote": "--remote", "sync_interval": "--sync-interval",
    "poll_interval": "--poll-interval", "rclone_config": "--rclone-config",
}
FLAG_OPTIONS = {"ro": "--read-only", "nosync": "--no-sync", "no_sync": "--no-sync",
                "writeback": "--writeback"}
DROPPED = {"rw", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
           "nofail", "_netdev", "loop", "sw"}
DROPPED_PREFIXES = ("x-", "comment=", "helper=")

USAGE = ("usage: mount.fuse.cryptfs BACKING MOUNTPOINT [-o OPTIONS]  (run by "
         "'mount -t fuse.cryptfs BACKING MOUNTPOINT -o passfile=FILE,...')")


class HelperUsageError(Exception):
    """The helper's command line cannot be understood."""


def translate(argv: Sequence[str]) -> tuple[list[str], str | None, bool]:
    """mount(8)'s helper arguments -> (``cryptfs`` arguments, setuid user, fake).

    Raises HelperUsageError on a bad command line.
    """
    positional: list[str] = []
    options: list[str] = []
    verbose = fake = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-o":
            if not args:
                raise HelperUsageError("-o needs a value")
            options.extend(_split_options(args.pop(0)))
        elif arg.startswith("-o") and len(arg) > 2:
            options.extend(_split_options(arg[2:]))
        elif arg in ("-t", "-N"):
            if not args:
                raise HelperUsageError(f"{arg} needs a value")
            args.pop(0)
        elif arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("nsfvi"):
            verbose |= "v" in arg
            fake |= "f" in arg
        elif arg.startswith("-"):
            raise HelperUsageError(f"unknown flag {arg}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise HelperUsageError("expected BACKING and MOUNTPOINT")
    backing, mountpoint = positional
    flags: list[str] = []
    fuse: list[str] = []
    setuid = None
    for opt in options:
        key, sep, value = opt.partition("=")
        if key in VALUE_OPTIONS:
            if not sep or not value:
                raise HelperUsageError(f"option {key} needs a value ({key}=...)")
            flags += [VALUE_OPTIONS[key], value]
        elif key in FLAG_OPTIONS and not sep:
            flags.append(FLAG_OPTIONS[key])
        elif key == "setuid":
            setuid = value
        elif key in DROPPED or opt.startswith(DROPPED_PREFIXES):
            continue
        else:
            fuse.append(opt)
    if fuse:
        flags += ["-o", ",".join(fuse)]
    cli_args = (["-v"] if verbose else []) + ["mount", "--quiet", *flags, backing, mountpoint]
    return cli_args, setuid, fake


def _split_options(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def become(user: str) -> None:
    """Drop root for ``user`` (name or uid): groups, gid, uid, HOME, USER, LOGNAME.
    Raises HelperUsageError if the user is unknown, PermissionError if not root."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise HelperUsageError(f"setuid={user}: no such user") from None
    if os.geteuid() == pw.pw_uid:
        return
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    for var in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        os.environ.pop(var, None)  # root's; the user's defaults apply
    runtime = f"/run/user/{pw.pw_uid}"
    if os.access(runtime, os.W_OK):
        os.environ["XDG_RUNTIME_DIR"] = runtime


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cli_args, setuid, fake = translate(argv)
        if setuid:
            become(setuid)
    except HelperUsageError as exc:
        print(f"mount.fuse.cryptfs: {exc}\n{USAGE}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except PermissionError:
        print("mount.fuse.cryptfs: setuid=USER needs root", file=sys.stderr)
        return int(ExitCode.USAGE)
    if fake:
        return 0
    from .cli import main as cli_main

    return cli_main(cli_args)


if __name__ == "__main__":
    sys.exit(main())
