"""Generate the man page and the shell completion scripts from the argparse parser.

    python tools/gendocs.py          # (make docs) rewrite cryptfs/data/*
    python tools/gendocs.py --check  # exit 1 if a generated file is out of date

The man page comes from argparse-manpage, the bash, zsh and fish completions from shtab;
both read ``cryptfs.cli.build_parser()``, so they follow the command line. The files are
kept in the repository (and shipped in the wheel) so that neither library is needed at
run time; tests/unit/test_docs.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptfs import __version__  # noqa: E402
from cryptfs.cli import build_parser  # noqa: E402
from cryptfs.ignore import DEFAULT_RULES  # noqa: E402
from cryptfs.shellfiles import COMPLETION_FILES, DATA, MAN_PAGE  # noqa: E402

# What to complete for arguments, by their dest (everything else: no file completion).
DIRECTORIES = {"backing", "mountpoint", "quarantine"}
FILES = {"passfile", "new_passfile", "log", "rclone_config", "config_file"}

def _roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


SECTIONS = {
    "files": (
        ".TP\n$XDG_CONFIG_HOME/cryptfs/ (default ~/.config/cryptfs/)\n"
        "Per-vault local settings and sync state; never uploaded.\n"
        ".TP\n$XDG_STATE_HOME/cryptfs/cryptfs.log (default ~/.local/state/cryptfs/)\n"
        "Log of background mounts where there is no syslog (/dev/log); else "
        "journalctl \\-t cryptfs.\n"
        ".TP\nBACKING/cryptfs.conf\n"
        "The vault's config: the master key wrapped under the passphrase.\n"
        ".TP\nMOUNTPOINT/.cryptfsignore\n"
        "Sync ignore rules, in the vault (encrypted, synced): gitignore patterns matched "
        "against plaintext paths; ignored paths stay on this device. Applied after the "
        "built-in defaults: " + ", ".join(_roff(line) for line in DEFAULT_RULES.splitlines()
                                          if line and not line.startswith("#"))
        + ". cryptfs ignore BACKING lists what they exclude."),
    "environment": (
        ".TP\nCRYPTFS_PASSWORD, CRYPTFS_NEW_PASSWORD\n"
        "Passphrase (and new passphrase for passwd) when no \\-\\-passfile or \\-\\-extpass "
        "is given.\n"
        ".TP\nRCLONE_CONFIG, CRYPTFS_RCLONE_ARGS\n"
        "rclone config file to use; extra rclone flags for every call.\n"
        ".TP\nXDG_CONFIG_HOME, XDG_STATE_HOME, XDG_RUNTIME_DIR\n"
        "Where settings, logs and the daemon pid files live."),
    "see also": "mount.fuse.cryptfs(8), mount.fuse3(8), fusermount3(1), rclone(1)",
}


def parser_with_completions() -> argparse.ArgumentParser:
    """The CLI parser with shtab's file/directory hints on path arguments."""
    parser = build_parser()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.dest in DIRECTORIES:
                action.complete = shtab.DIRECTORY
            elif action.dest in FILES:
                action.complete = shtab.FILE
    return parser


def man_page() -> str:
    parser = build_parser()
    page = Manpage(parser, _data={"project_name": "cryptfs", "version": __version__,
                                  "manual_title": "cryptfs manual",
                                  "date": "2026",
                                  "description": "encrypted folder synced to any cloud"})
    for heading, content in SECTIONS.items():
        page.add_section(heading, "=", content)
    return str(page)


def generated() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {DATA / MAN_PAGE: man_page()}
    for shell, name in COMPLETION_FILES.items():
        out[DATA / name] = shtab.complete(parser_with_completions(), shell=shell)
    return out


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in generated().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if check and stale:
        print("out of date (run 'make docs'): " + ", ".join(str(p.relative_to(ROOT))
                                                        for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
