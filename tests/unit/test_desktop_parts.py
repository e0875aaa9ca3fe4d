"""Pieces of issue 13 that need no mount: failure explanations, the stderr capture, the
daemon's log target, the mount(8) helper's option translation, passphrase length."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cryptfs import daemonlog, diagnose, mounthelper
from cryptfs.passphrase import PassphraseError, check_new

# What libfuse 3.14 and fusermount3 print (seen on this kind of machine).
ALLOW_OTHER = ("fusermount3: option allow_other only allowed if 'user_allow_other' is set "
               "in /etc/fuse.conf\n")
DEV_FUSE = "fuse: failed to open /dev/fuse: Permission denied\n"
NOISE = "Ignoring invalid max threads value 4294967295 > max (100000).\n"


def test_explain_allow_other() -> None:
    text = diagnose.explain("/m", 4, NOISE + ALLOW_OTHER)
    assert text.startswith("FUSE mount of /m failed:\n  fusermount3: option allow_other")
    assert "user_allow_other' to /etc/fuse.conf" in text and "Ignoring" not in text


def test_explain_dev_fuse_names_mode_and_fix(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "fuse"
    fake.write_text("")
    os.chmod(fake, 0o600)
    monkeypatch.setattr(diagnose, "DEV_FUSE", str(fake))
    hint = diagnose.dev_fuse_hint(str(fake))
    assert "-rw-------" in hint and f"chmod 0666 {fake}" in hint and "usermod -aG" in hint
    text = diagnose.explain("/m", 4, DEV_FUSE)
    assert "/dev/fuse: Permission denied" in text and "chmod 0666" in text


def test_explain_without_output_gives_the_code() -> None:
    text = diagnose.explain("/m", 7, NOISE)
    assert "libfuse returned 7" in text and "-v mount -f" in text


def test_stderr_capture_sees_children_and_restores(tmp_path: Path) -> None:
    code = (
        "import os, subprocess, sys\n"
        "from cryptfs.diagnose import StderrCapture\n"
        "c = StderrCapture()\n"
        "subprocess.run(['sh', '-c', 'echo child-says >&2'])\n"
        "print('python-says', file=sys.stderr)\n"
        "captured = c.text()\n"
        "c.release(replay=False)\n"
        "print('after', file=sys.stderr)\n"
        "print(repr(captured))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert "child-says" in proc.stdout and "python-says" in proc.stdout
    assert proc.stderr == "after\n"  # nothing leaked while captured; stderr back after


def test_stderr_capture_replays_on_success_without_noise() -> None:
    code = ("import os\nfrom cryptfs.diagnose import StderrCapture\n"
            "c = StderrCapture()\n"
            f"os.write(2, {NOISE.encode()!r} + b'a warning\\n')\n"
            "c.release(replay=True)\nc.release(replay=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stderr == "a warning\n"


def test_log_target_file_in_state_dir_without_syslog(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    target = daemonlog.choose(None, syslog_socket=str(tmp_path / "no-such-socket"))
    assert target == daemonlog.LogTarget("file", str(tmp_path / "state/cryptfs/cryptfs.log"))
    assert oct((tmp_path / "state/cryptfs").stat().st_mode & 0o777) == "0o700"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = daemonlog.choose(None, syslog_socket=str(tmp_path / "no-such-socket"))
    assert target.path == str(tmp_path / "home/.local/state/cryptfs/cryptfs.log")


def test_log_target_syslog_when_the_socket_exists(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        target = daemonlog.choose(None, syslog_socket=str(path))
        assert target.kind == "syslog" and "journalctl -t cryptfs" in target.describe()
        assert daemonlog.choose("x.log", syslog_socket=str(path)).kind == "file"
        # The line reaches the socket tagged "cryptfs[PID]:" (journald's identifier).
        code = ("import logging\nfrom cryptfs import daemonlog\n"
                f"daemonlog.install(daemonlog.LogTarget('syslog', {str(path)!r}))\n"
                "logging.getLogger('cryptfs').warning('hello journal')\n")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        sock.settimeout(10)
        line = sock.recv(4096).decode()
        assert line.startswith("<12>cryptfs[") and "]: WARNING hello journal" in line
    finally:
        sock.close()


def test_mount_helper_translates_mount_options() -> None:
    args, setuid, fake = mounthelper.translate([
        "/srv/.vault", "/srv/vault", "-n", "-o",
        "rw,noauto,nofail,_netdev,x-systemd.automount,passfile=/etc/p,idle=30m,allow_other,"
        "nosuid,ro,setuid=alice,remote=r:vault,nosync", "-t", "fuse.cryptfs"])
    assert args == ["mount", "--quiet", "--passfile", "/etc/p", "--idle", "30m",
                    "--read-only", "--remote", "r:vault", "--no-sync",
                    "-o", "allow_other,nosuid", "/srv/.vault", "/srv/vault"]
    assert setuid == "alice" and not fake
    args, setuid, fake = mounthelper.translate(["b", "m", "-fv", "-opassfile=p"])
    assert args == ["-v", "mount", "--quiet", "--passfile", "p", "b", "m"] and fake


@pytest.mark.parametrize("argv", [["b"], ["b", "m", "c"], ["b", "m", "-o"],
                                  ["b", "m", "-o", "passfile"], ["b", "m", "--bogus"]])
def test_mount_helper_rejects_bad_command_lines(argv: list[str], capsys) -> None:
    assert mounthelper.main(argv) == 2
    assert "usage: mount.fuse.cryptfs" in capsys.readouterr().err


def test_mount_helper_fake_mount_does_nothing(tmp_path: Path) -> None:
    assert mounthelper.main([str(tmp_path / "missing"), str(tmp_path), "-f"]) == 0


def test_new_passphrase_length() -> None:
    with pytest.raises(PassphraseError, match=r"only 7 characters.*--force"):
        check_new(b"1234567")
    with pytest.raises(PassphraseError, match="only 7 characters"):
        check_new("äöüäöüä".encode())  # characters, not bytes
    assert check_new(b"12345678") is None
    assert "warning" in check_new(b"short", force=True)
