"""Shared fixtures. Mount tests run the real CLI as a subprocess and always unmount."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ["CRYPTFS_TESTONLY_WEAK_KDF"] = "1"
PASSWORD = "correct horse battery staple"

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")
HAVE_FUSE = os.path.exists("/dev/fuse") and FUSERMOUNT is not None
needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs /dev/fuse and fusermount3")


def cryptfs_cmd(*args: str, password: str | None = PASSWORD, check: bool = False,
                input_: bytes | None = None, timeout: float = 60,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (``python -m cryptfs``)."""
    full_env = dict(os.environ)
    full_env.pop("CRYPTFS_PASSWORD", None)
    if password is not None:
        full_env["CRYPTFS_PASSWORD"] = password
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "cryptfs", *args], capture_output=True,
                          input=input_, env=full_env, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"cryptfs {args} failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def wait_for(check, timeout: float = 30.0, interval: float = 0.2) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def is_mounted(path: Path) -> bool:
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mountinfo", "rb") as fh:
        return any(line.split()[4] == target for line in fh)


def force_unmount(path: Path) -> None:
    if not is_mounted(path):
        return
    for args in (["-u"], ["-u", "-z"]):
        subprocess.run([FUSERMOUNT, *args, str(path)], capture_output=True, timeout=30,
                       check=False)
        if not is_mounted(path):
            return


class Mount:
    """A live cryptfs mount served by a foreground daemon that this test started."""

    def __init__(self, backing: Path, mountpoint: Path, extra: tuple[str, ...] = (),
                 umask: int | None = None) -> None:
        self.backing = backing
        self.mnt = mountpoint
        self.extra = extra
        self.umask = umask
        self.proc: subprocess.Popen | None = None
        self.log = mountpoint.parent / f"{mountpoint.name}.log"

    def start(self) -> Mount:
        env = dict(os.environ, CRYPTFS_PASSWORD=PASSWORD)
        self.logfh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cryptfs", "mount", "-f", *self.extra,
             str(self.backing), str(self.mnt)],
            stdout=self.logfh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=None if self.umask is None else lambda: os.umask(self.umask))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mount exited early: {self.log.read_text()}")
            if is_mounted(self.mnt):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError("mount did not come up")

    def stop(self) -> None:
        force_unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        if hasattr(self, "logfh"):
            self.logfh.close()

    def kill(self) -> None:
        """Simulate a crash of the daemon."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        force_unmount(self.mnt)

    def log_text(self) -> str:
        self.logfh.flush()
        return self.log.read_text(errors="replace")


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory, monkeypatch):
    """Per-test local settings, bisync state and an empty rclone config."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))  # daemon logs
    (base / "rclone.conf").write_text("")
    monkeypatch.setenv("RCLONE_CONFIG", str(base / "rclone.conf"))
    return base


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    backing = tmp_path / "vault"
    cryptfs_cmd("init", "--quiet", str(backing), check=True)
    return backing


@pytest.fixture
def mounted(tmp_path: Path, vault_dir: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(vault_dir, mnt)
    if not HAVE_FUSE:
        pytest.skip("needs /dev/fuse and fusermount3")
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def volume(tmp_path: Path):
    from cryptfs.volume import Volume

    vol, _key = Volume.initialize(str(tmp_path / "vault"), PASSWORD.encode())
    try:
        yield vol
    finally:
        vol.close()


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory):
    """One mount for a whole module of tests that each work in their own directory."""
    if not HAVE_FUSE:
        pytest.skip("needs /dev/fuse and fusermount3")
    base = tmp_path_factory.mktemp("shared")
    backing = base / "vault"
    cryptfs_cmd("init", "--quiet", str(backing), check=True)
    mnt = base / "mnt"
    mnt.mkdir()
    m = Mount(backing, mnt).start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def work(shared_mount: Mount, request) -> Path:
    """A fresh directory inside the shared mount."""
    d = shared_mount.mnt / request.node.name.replace("/", "_")[:100]
    d.mkdir()
    return d


# -- a normal (non-root) user -------------------------------------------------------------
class User:
    """Runs commands as an unprivileged user: a user this test session created (when the
    tests run as root) or the current user. ``python`` is an interpreter that user may
    run, with this checkout and its dependencies importable."""

    def __init__(self, name: str, uid: int, gid: int, home: Path, switch: bool) -> None:
        self.name, self.uid, self.gid, self.home, self.switch = name, uid, gid, home, switch
        self.python: list[str] = [sys.executable]
        self.pythonpath = ""

    def argv(self, *args: str) -> list[str]:
        """``args`` as this user (setpriv drops root; nothing to do otherwise)."""
        if not self.switch:
            return list(args)
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                *args]

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for this user (extra values override)."""
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
               "PATH": f"{self.home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
               "XDG_RUNTIME_DIR": str(self.home / "run"),
               "CRYPTFS_TESTONLY_WEAK_KDF": "1", "LANG": "C.UTF-8"}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        env.update(extra)
        return env

    def cryptfs_argv(self, *args: str) -> list[str]:
        return self.argv(*self.python, "-m", "cryptfs", *args)

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
            cwd: str | Path | None = None, input_: bytes | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*argv), env=env or self.env(), cwd=cwd or self.home,
                              capture_output=True, input=input_, timeout=timeout, check=False)

    def cryptfs(self, *args: str, password: str | None = PASSWORD, timeout: float = 60,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full = self.env(**({"CRYPTFS_PASSWORD": password} if password is not None else {}))
        full.update(env or {})
        return self.run([*self.python, "-m", "cryptfs", *args], env=full, timeout=timeout)

    def mkdir(self, path: Path) -> Path:
        """``mkdir -p`` as this user: every directory it makes belongs to the user."""
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        if self.switch:
            for made in [path, *missing]:
                os.chown(made, self.uid, self.gid)
        return path


def _user_python(user: User) -> None:
    """Pick an interpreter the user may run: ours, else the system's of the same version
    with our site-packages and checkout on PYTHONPATH (root's pyenv can be unreadable)."""
    import sysconfig

    root = str(Path(__file__).resolve().parent.parent)
    # Through a shell: setpriv itself may still find a binary that the user cannot reach.
    probe = ["sh", "-c", 'exec "$0" -c "import cryptfs, nacl, pyfuse3"']
    if user.run([*probe, sys.executable], cwd="/").returncode == 0:
        return
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    user.pythonpath = f"{sysconfig.get_paths()['purelib']}:{root}"
    if os.path.exists(system) and user.run([*probe, system], cwd="/").returncode == 0:
        user.python = [system]
        return
    pytest.skip("no Python interpreter that the unprivileged user may run")


@pytest.fixture(scope="session")
def normal_user(tmp_path_factory):
    """An unprivileged user with a home directory, and /dev/fuse usable by it.

    As root: a user made for this session (deleted at the end; its leftover processes,
    all started by the tests, are killed first). /dev/fuse is made mode 0666 if it is not
    (the mode Debian's udev rules give it; a container may not). Otherwise: the current
    user.
    """
    import pwd

    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.getuid())
        home = tmp_path_factory.mktemp("home-user")
        user = User(pw.pw_name, pw.pw_uid, pw.pw_gid, home, switch=False)
        (home / "run").mkdir(mode=0o700)
        _user_python(user)
        yield user
        return
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs useradd and setpriv to act as a normal user")
    name = f"cfst{os.getpid()}"
    home = Path(tempfile.mkdtemp(prefix="cryptfs-user-", dir="/tmp"))
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell",
                    "/bin/sh", "--user-group", name], check=True, capture_output=True)
    try:
        pw = pwd.getpwnam(name)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        os.chmod(home, 0o755)
        user = User(name, pw.pw_uid, pw.pw_gid, home, switch=True)
        user.mkdir(home / "run")
        os.chmod(home / "run", 0o700)
        if os.path.exists("/dev/fuse") and os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
            os.chmod("/dev/fuse", 0o666)
        _user_python(user)
        yield user
    finally:
        _kill_user_processes(pw.pw_uid)
        subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _kill_user_processes(uid: int) -> None:
    """Unmount what the test user left mounted and kill its processes (the tests started
    all of them: the user exists only for this session)."""
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split()
            if b"user_id=%d," % uid in line and b"fuse" in line:
                subprocess.run([FUSERMOUNT or "umount", "-u", "-z",
                                os.fsdecode(fields[4])], capture_output=True, check=False)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def user_dir(normal_user: User, request) -> Path:
    """A fresh directory owned by the normal user, inside its home."""
    return normal_user.mkdir(normal_user.home / request.node.name[:60])
