"""At home on a desktop or server (issue 13), as a normal user where it matters: mount
failures explained, a normal stop, the idle unmount, the systemd units (verified and run
the way systemd runs them), the mount(8) helper, and what unmount waits for."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cryptfs.sync import process_alive
from tests.conftest import PASSWORD, User, cryptfs_cmd, is_mounted, needs_fuse, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
UNITS = ROOT / "examples" / "systemd"

pytestmark = [needs_fuse, pytest.mark.timeout(180)]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _vault(user: User, where: Path) -> tuple[Path, Path]:
    vault, mnt = where / "vault", user.mkdir(where / "mnt")
    proc = user.cryptfs("init", "--quiet", str(vault))
    assert proc.returncode == 0, proc.stderr
    return vault, mnt


def _daemon_pid(out: bytes) -> int:
    return int(re.search(rb"daemon pid (\d+)", out).group(1))


def _user_allows_other() -> bool:
    try:
        text = Path("/etc/fuse.conf").read_text()
    except OSError:
        return False
    return any(line.strip() == "user_allow_other" for line in text.splitlines())


class Holder:
    """A process of the user holding a file of the mount open until ``release``."""

    def __init__(self, user: User, path: Path) -> None:
        code = "import sys; f = open(sys.argv[1]); print('open', flush=True); sys.stdin.read()"
        self.proc = subprocess.Popen(user.argv(*user.python, "-c", code, str(path)),
                                     env=user.env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout.readline() == b"open\n"
        self.pid = self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


# -- 1. mount failures say why, logs are somewhere, a stop is a stop ----------------------
def test_allow_other_refusal_reaches_the_terminal(normal_user: User, user_dir: Path) -> None:
    if _user_allows_other():
        pytest.skip("/etc/fuse.conf allows allow_other for users here")
    vault, mnt = _vault(normal_user, user_dir)
    for mode in ((), ("-f",)):
        proc = normal_user.cryptfs("mount", *mode, "-o", "allow_other", str(vault), str(mnt))
        err = proc.stderr.decode()
        assert proc.returncode == 13, err
        assert "option allow_other only allowed if 'user_allow_other' is set" in err, err
        assert "what to do: as root, add a line 'user_allow_other' to /etc/fuse.conf" in err
        assert "see the log" not in err and not is_mounted(mnt)


@needs_root
def test_dev_fuse_refused_is_explained(normal_user: User, user_dir: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    vault, mnt = _vault(normal_user, user_dir)
    private = user_dir / "fuse-0600"  # stands in for /dev/fuse, in a mount namespace only
    private.write_text("")
    os.chmod(private, 0o600)
    script = 'mount --bind "$0" /dev/fuse && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(private),
         *normal_user.cryptfs_argv("mount", str(vault), str(mnt))],
        env=normal_user.env(CRYPTFS_PASSWORD=PASSWORD), capture_output=True, timeout=60,
        check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 13, err
    assert "cannot open /dev/fuse: permission denied" in err
    assert "-rw------- root:root" in err and "chmod 0666 /dev/fuse" in err


def test_background_mount_logs_where_the_user_can_read_it(normal_user: User,
                                                          user_dir: Path) -> None:
    vault, mnt = _vault(normal_user, user_dir)
    proc = normal_user.cryptfs("mount", "--idle", "1s", str(vault), str(mnt))
    assert proc.returncode == 0, proc.stderr
    pid = _daemon_pid(proc.stdout)
    assert wait_for(lambda: not is_mounted(mnt) and not process_alive(pid), timeout=60)
    has_syslog = os.path.exists("/dev/log")
    if has_syslog:
        assert b"log: syslog/journal (journalctl -t cryptfs)" in proc.stdout
        return
    log = normal_user.home / ".local/state/cryptfs/cryptfs.log"
    assert f"log: {log})".encode() in proc.stdout
    assert f"cryptfs[{pid}] WARNING unmounted {mnt} after 1s without activity" in \
        log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_foreground_mount_normally(normal_user: User, user_dir: Path,
                                                  sig: int) -> None:
    vault, mnt = _vault(normal_user, user_dir)
    proc = subprocess.Popen(normal_user.cryptfs_argv("mount", "-f", str(vault), str(mnt)),
                            env=normal_user.env(CRYPTFS_PASSWORD=PASSWORD),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, timeout=60)
        assert is_mounted(mnt), proc.communicate()
        wrote = normal_user.run(["sh", "-c", 'echo kept > "$0"', str(mnt / "f")])
        assert wrote.returncode == 0, wrote.stderr
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert b"failed" not in err
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
        normal_user.run(["fusermount3", "-u", "-z", str(mnt)])
    assert normal_user.cryptfs("cat", str(vault), "f").stdout == b"kept\n"


# -- 2. idle unmount ----------------------------------------------------------------------
def test_idle_unmount_waits_while_a_file_is_open(normal_user: User, user_dir: Path) -> None:
    vault, mnt = _vault(normal_user, user_dir)
    log = user_dir / "mount.log"
    proc = normal_user.cryptfs("mount", "--idle", "1s", "--log", str(log), str(vault),
                               str(mnt))
    assert proc.returncode == 0, proc.stderr
    pid = _daemon_pid(proc.stdout)
    try:
        made = normal_user.run(["sh", "-c", 'echo x > "$0"', str(mnt / "held")])
        assert made.returncode == 0, made.stderr
        holder = Holder(normal_user, mnt / "held")
        try:
            assert wait_for(lambda: "not unmounted" in log.read_text(), timeout=60)
            text = log.read_text()
            assert "busy" in text and f"pid {holder.pid}: 1 open file" in text, text
            assert is_mounted(mnt) and process_alive(pid)
        finally:
            holder.release()
        assert wait_for(lambda: not is_mounted(mnt) and not process_alive(pid), timeout=90)
        assert "without activity (--idle)" in log.read_text()
    finally:
        normal_user.run(["fusermount3", "-u", "-z", str(mnt)])


# -- 2. systemd units ---------------------------------------------------------------------
def _user_bin(user: User) -> Path:
    """~/.local/bin/cryptfs of the user, where make install-user and pipx put it."""
    path = user.mkdir(user.home / ".local" / "bin") / "cryptfs"
    env = f"PYTHONPATH={shlex.quote(user.pythonpath)} " if user.pythonpath else ""
    path.write_text(f"#!/bin/sh\n{env}exec {shlex.join(user.python)} -m cryptfs \"$@\"\n")
    os.chmod(path, 0o755)
    if user.switch:
        os.chown(path, user.uid, user.gid)
    return path


def test_units_pass_systemd_analyze_verify(normal_user: User, user_dir: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    _user_bin(normal_user)
    units = normal_user.mkdir(user_dir / "units")
    shutil.copy(UNITS / "cryptfs@.service", units / "cryptfs@work.service")
    shutil.copy(UNITS / "srv-vault.mount", units / "srv-vault.mount")
    man = normal_user.mkdir(user_dir / "man" / "man1")
    shutil.copy(ROOT / "cryptfs" / "data" / "cryptfs.1", man / "cryptfs.1")
    env = normal_user.env(MANPATH=str(user_dir / "man"))
    for mode, unit in (("--user", "cryptfs@work.service"), ("--system", "srv-vault.mount")):
        proc = normal_user.run(["systemd-analyze", mode, "verify", str(units / unit)],
                               env=env, cwd=units)
        # verify reports mistakes (unknown keys, bad values, missing binaries or man
        # pages) on stderr, often with exit code 0.
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()


def _unit(path: Path) -> dict[str, list[str]]:
    """The [Service] keys of a unit file (key -> values, in order)."""
    keys: dict[str, list[str]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        keys.setdefault(f"{section}{key}", []).append(value)
    return keys


def _expand(line: str, env: dict[str, str], home: Path) -> tuple[list[str], bool]:
    """A unit's command line as systemd runs it: %h, %i, ${VAR} (one word), $VAR (split);
    a leading '-' means failure is ignored."""
    ignore = line.startswith("-")
    words: list[str] = []
    for word in shlex.split(line.lstrip("-").replace("%h", str(home)).replace("%i", "work")):
        if re.fullmatch(r"\$[A-Z_]+", word):
            words.extend(env.get(word[1:], "").split())
        else:
            words.append(re.sub(r"\$\{([A-Z_]+)\}", lambda m: env.get(m.group(1), ""), word))
    return words, ignore


def test_user_unit_runs_as_systemd_runs_it(normal_user: User, user_dir: Path) -> None:
    """Start (Type=notify: READY=1 only once the mount is live) and stop the user unit as
    systemd would, as a normal user, with the command where make install-user puts it."""
    unit = _unit(UNITS / "cryptfs@.service")
    assert unit["[Service]Type"] == ["notify"]
    assert "network-online.target" not in (UNITS / "cryptfs@.service").read_text()
    assert all(cmd.lstrip("-").startswith(("/", "%h/")) for key in
               ("ExecStartPre", "ExecStart", "ExecStop", "ExecStopPost")
               for cmd in unit[f"[Service]{key}"])
    _user_bin(normal_user)
    vault, _ = _vault(normal_user, user_dir)
    passfile = user_dir / "pass"
    passfile.write_text(PASSWORD + "\n")
    os.chmod(passfile, 0o644)
    mountpoint = user_dir / "Work"  # made by ExecStartPre
    env_file = (unit["[Service]EnvironmentFile"][0].replace("%h", str(normal_user.home))
                .replace("%i", "work"))
    normal_user.mkdir(Path(env_file).parent)
    Path(env_file).write_text(f"VAULT={vault}\nMOUNTPOINT={mountpoint}\n"
                              f"PASSCMD=cat {passfile}\nOPTIONS=--idle 1h --no-sync\n")
    unit_env = dict(line.split("=", 1) for line in Path(env_file).read_text().splitlines())
    notify = user_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    os.chmod(notify, 0o777)
    sock.settimeout(0.5)
    env = normal_user.env(NOTIFY_SOCKET=str(notify), **unit_env)

    def run(key: str) -> None:
        for line in unit.get(f"[Service]{key}", []):
            argv, ignore = _expand(line, unit_env, normal_user.home)
            proc = normal_user.run(argv, env=env, timeout=120)
            assert ignore or proc.returncode == 0, (argv, proc.stderr)

    run("ExecStartPre")
    argv, _ = _expand(unit["[Service]ExecStart"][0], unit_env, normal_user.home)
    main = subprocess.Popen(normal_user.argv(*argv), env=env, stderr=subprocess.PIPE)
    try:
        messages: list[str] = []

        def notified() -> bool:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
            return bool(messages) or main.poll() is not None

        assert wait_for(notified, timeout=60, interval=0)
        assert messages and "READY=1" in messages[0].splitlines(), main.stderr.read()
        assert is_mounted(mountpoint)  # ready means live
        wrote = normal_user.run(["sh", "-c", 'echo unit > "$0"', str(mountpoint / "f")])
        assert wrote.returncode == 0, wrote.stderr
        run("ExecStop")
        assert main.wait(60) == 0, main.stderr.read()
        assert not is_mounted(mountpoint)
        run("ExecStopPost")
    finally:
        sock.close()
        if main.poll() is None:
            main.kill()
        normal_user.run(["fusermount3", "-u", "-z", str(mountpoint)])
    assert normal_user.cryptfs("cat", str(vault), "f").stdout == b"unit\n"


# -- 2. mount -t fuse.cryptfs, fstab, the helper ------------------------------------------
@needs_root
def test_mount_command_and_fstab_line_use_the_helper(normal_user: User,
                                                     user_dir: Path) -> None:
    """`mount -t fuse.cryptfs` and an fstab line (with setuid=USER) as root. mount(8) looks
    for /sbin/mount.fuse.cryptfs; the test puts it there in a private mount namespace."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount")
    assert (Path(sys.executable).parent / "mount.fuse.cryptfs").exists()  # the entry point
    sbin = user_dir / "sbin"
    sbin.mkdir()
    for entry in os.listdir("/usr/sbin"):
        os.symlink(f"/usr/sbin/{entry}", sbin / entry)
    helper = sbin / "mount.fuse.cryptfs"
    env_line = f"PYTHONPATH={shlex.quote(normal_user.pythonpath)} " \
        if normal_user.pythonpath else ""
    helper.write_text(f"#!/bin/sh\n{env_line}exec {shlex.join(normal_user.python)} "
                      "-m cryptfs.mounthelper \"$@\"\n")
    os.chmod(helper, 0o755)
    vault, mnt = _vault(normal_user, user_dir)
    mnt2 = normal_user.mkdir(user_dir / "mnt2")
    passfile = user_dir / "pass"
    passfile.write_text(PASSWORD + "\n")
    os.chmod(passfile, 0o644)
    fstab = user_dir / "fstab"
    fstab.write_text(f"{vault} {mnt2} fuse.cryptfs passfile={passfile},setuid="
                     f"{normal_user.name},noauto,nofail,x-systemd.automount 0 0\n")
    runtime = user_dir / "run-root"
    script = r"""
set -e
mount --bind "$SBIN" /usr/sbin
# 1. root mounts a vault by hand
mount -t fuse.cryptfs "$VAULT" "$MNT" -o "passfile=$PASSFILE,idle=1h,nosuid"
grep -q " - fuse.cryptfs cryptfs:$VAULT " /proc/self/mountinfo
echo by-root > "$MNT/root.txt"
echo "pid $(cat "$XDG_RUNTIME_DIR"/cryptfs/*.pid)"
umount "$MNT"
# 2. the fstab line, as the user named by setuid=
LIBMOUNT_FSTAB="$FSTAB" mount "$MNT2"
grep " $MNT2 " /proc/self/mountinfo | grep -q "user_id=$USER_UID,"
umount "$MNT2"
echo done
"""
    env = dict(os.environ, SBIN=str(sbin), VAULT=str(vault), MNT=str(mnt), MNT2=str(mnt2),
               PASSFILE=str(passfile), FSTAB=str(fstab), USER_UID=str(normal_user.uid),
               XDG_RUNTIME_DIR=str(runtime), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    env.pop("CRYPTFS_PASSWORD", None)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                           script], env=env, capture_output=True, timeout=120, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0 and out.endswith("done\n"), out + proc.stderr.decode()
    pid = int(re.search(r"pid (\d+)", out).group(1))
    assert wait_for(lambda: not process_alive(pid), timeout=60)
    assert cryptfs_cmd("cat", str(vault), "root.txt").stdout == b"by-root\n"


def test_mount_helper_as_a_normal_user(normal_user: User, user_dir: Path) -> None:
    vault, mnt = _vault(normal_user, user_dir)
    passfile = user_dir / "pass"
    passfile.write_text(PASSWORD + "\n")
    proc = normal_user.run([*normal_user.python, "-m", "cryptfs.mounthelper", str(vault),
                            str(mnt), "-o", f"rw,passfile={passfile},nosuid,nodev"])
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    try:
        assert is_mounted(mnt)
        wrote = normal_user.run(["sh", "-c", 'echo helper > "$0"', str(mnt / "f")])
        assert wrote.returncode == 0, wrote.stderr
    finally:
        assert normal_user.cryptfs("unmount", str(mnt)).returncode == 0
    assert normal_user.cryptfs("cat", str(vault), "f").stdout == b"helper\n"


# -- 5. unmount: busy is 12 and names who; --lazy says what it waits for -------------------
def test_busy_and_lazy_unmount_name_the_holders(normal_user: User, user_dir: Path) -> None:
    vault, mnt = _vault(normal_user, user_dir)
    proc = normal_user.cryptfs("mount", str(vault), str(mnt))
    assert proc.returncode == 0, proc.stderr
    pid = _daemon_pid(proc.stdout)
    try:
        made = normal_user.run(["sh", "-c", 'echo x > "$0"', str(mnt / "held")])
        assert made.returncode == 0, made.stderr
        holder = Holder(normal_user, mnt / "held")
        try:
            busy = normal_user.cryptfs("unmount", str(mnt))
            err = busy.stderr.decode()
            assert busy.returncode == 12, err
            assert f"pid {holder.pid}: 1 open file" in err and "--lazy" in err
            lazy = subprocess.Popen(normal_user.cryptfs_argv("unmount", "--lazy", str(mnt)),
                                    env=normal_user.env(), stderr=subprocess.PIPE)
            line = lazy.stderr.readline().decode()
            assert "is detached" in line and f"pid {holder.pid}: 1 open file" in line, line
            assert lazy.poll() is None and process_alive(pid)  # still waiting for it
        finally:
            holder.release()
        assert lazy.wait(90) == 0
        assert not process_alive(pid)
    finally:
        normal_user.run(["fusermount3", "-u", "-z", str(mnt)])
