"""Shared fixtures. Mount tests run the real CLI as a subprocess and always unmount."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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


class NormalUser:
    """Runs commands as an unprivileged user: a user made for the test session when the
    suite runs as root, else the user running it."""

    def __init__(self, uid: int, gid: int, base: Path) -> None:
        self.uid, self.gid, self.base = uid, gid, base
        self._n = 0

    def _argv(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--", *argv]

    def env(self) -> dict[str, str]:
        home = self.base / "home"
        return dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                    XDG_RUNTIME_DIR=str(home / "run"), XDG_STATE_HOME=str(home / "state"),
                    CRYPTFS_PASSWORD=PASSWORD, CRYPTFS_TESTONLY_WEAK_KDF="1",
                    RCLONE_CONFIG=str(home / "rclone.conf"))

    def workdir(self) -> Path:
        """A fresh directory owned by the user."""
        self._n += 1
        d = self.base / f"w{self._n}"
        self.run(["mkdir", "-p", str(d)])
        return d

    def run(self, argv: list[str], check: bool = True) -> str:
        proc = subprocess.run(self._argv(argv), capture_output=True, text=True,
                              env=self.env(), timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} as uid {self.uid} failed ({proc.returncode}): "
                                 f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    def popen(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(self._argv(argv), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=self.env(),
                                start_new_session=True)


@pytest.fixture(scope="session")
def normal_user(tmp_path_factory):
    import tempfile

    if os.geteuid() != 0:
        base = Path(tempfile.mkdtemp(prefix="cryptfs-user-"))
        yield NormalUser(os.getuid(), os.getgid(), base)
        shutil.rmtree(base, ignore_errors=True)
        return
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs useradd and setpriv to run as a normal user")
    name = f"cfst{os.getpid() % 100000}"
    base = Path(tempfile.mkdtemp(prefix="cryptfs-user-"))
    os.chmod(base, 0o755)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(base / "home"),
                    "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        import pwd

        pw = pwd.getpwnam(name)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        user = NormalUser(pw.pw_uid, pw.pw_gid, base)
        user.run(["mkdir", "-p", str(base / "home" / "run")])
        probe = subprocess.run(user._argv([sys.executable, "-c", "import cryptfs"]),
                               capture_output=True, env=user.env(), check=False)
        if probe.returncode != 0:
            pytest.skip(f"user {name} cannot run this checkout's Python: "
                        f"{probe.stderr.decode(errors='replace').strip()[-200:]}")
        yield user
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, check=False)
        subprocess.run(["userdel", name], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
