"""The man page and the bash/zsh/fish completions: generated from the parser, up to date,
and working in each shell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cryptfs import shellfiles
from cryptfs.cli import main

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "cryptfs" / "data"


def test_generated_files_are_up_to_date() -> None:
    pytest.importorskip("shtab")
    pytest.importorskip("argparse_manpage")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gendocs.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_man_page_renders_and_covers_every_command() -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    proc = subprocess.run(["man", "--warnings", "-l", str(DATA / "cryptfs.1")],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for word in ("cryptfs mount", "--idle", "--lazy", "--force", "completion", "16",
                 "XDG_STATE_HOME", "mount.fuse.cryptfs"):
        assert word in proc.stdout, word


def test_completion_command_prints_the_packaged_scripts(capsys) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert main(["completion", shell]) == 0
        assert capsys.readouterr().out == shellfiles.completion(shell)


def test_bash_completes_commands_options_and_paths(tmp_path: Path) -> None:
    (tmp_path / "vault-dir").mkdir()
    script = (f"source {DATA / 'cryptfs.bash'}\n"
              "complete_at() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); "
              "COMP_LINE=\"$*\"; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_cryptfs; "
              "echo \"${COMPREPLY[*]}\"; }\n"
              "complete_at cryptfs mo\n"
              "complete_at cryptfs mount --id\n"
              "complete_at cryptfs unmount --la\n"
              "complete_at cryptfs completion f\n"
              "complete_at cryptfs mount vau\n")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=True)
    assert proc.stdout.splitlines() == ["mount", "--idle", "--lazy", "fish", "vault-dir"]


def test_zsh_completion_loads_with_every_command() -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (make install adds it)")
    script = ("autoload -U compinit && compinit -u -D\n"
              f"eval \"$(<{DATA / '_cryptfs'})\"\n"  # as a .zshrc would load it
              "print -- $_comps[cryptfs]\n"
              "functions _shtab_cryptfs_commands\n"
              "print -l -- $_shtab_cryptfs_mount_options\n")
    proc = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("_shtab_cryptfs\n")  # registered for the command
    assert "mount:'mount BACKING on MOUNTPOINT'" in proc.stdout
    assert "--idle[unmount after this long" in proc.stdout


def test_fish_completes_commands_and_options() -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (make install adds it)")
    script = (f"source {DATA / 'cryptfs.fish'}\n"
              "complete -C 'cryptfs mo'\n"
              "complete -C 'cryptfs mount --id'\n"
              "complete -C 'cryptfs init --fo'\n")
    proc = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"HOME": "/tmp", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stderr
    firsts = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert firsts == ["mount", "--idle", "--force"], proc.stdout
