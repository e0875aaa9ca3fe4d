"""Install for a person (issue 13, item 3): a wheel that `pip install` alone makes work,
and `make install-user`, each used by a normal user from outside the checkout.

Offline: the new environments see the test environment's packages through a .pth file, so
pip resolves the wheel's dependencies against them with --no-index (it fails if a declared
dependency is missing) instead of downloading them again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, User, is_mounted, needs_fuse

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [needs_fuse, pytest.mark.timeout(300)]


def _copy_checkout(dest: Path) -> Path:
    """The files a fresh clone would have: tracked and new ones not ignored (or, outside
    a git work tree, everything but environments and build output)."""
    listed = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "build", "dist", "*.egg-info", "demo",
            ".pytest_cache", ".ruff_cache", ".hypothesis"))
        return dest
    for name in filter(None, listed.stdout.split(b"\0")):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
    return dest


def _chown_tree(user: User, path: Path) -> None:
    if user.switch:
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), user.uid, user.gid)
        os.chown(path, user.uid, user.gid)


def _see_test_packages(user: User, venv: Path) -> None:
    """Let ``venv`` import this environment's packages (see the module docstring)."""
    out = user.run([str(venv / "bin" / "python"), "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   env=user.env(PYTHONPATH=""))
    assert out.returncode == 0, out.stderr
    pth = Path(out.stdout.decode().strip()) / "test-deps.pth"
    pth.write_text(sysconfig.get_paths()["purelib"] + "\n")
    os.chmod(pth, 0o644)


def _mount_cycle(user: User, env: dict[str, str], where: Path) -> None:
    """init, mount, write, unmount, cat with the `cryptfs` found on env's PATH."""
    vault, mnt = where / "vault", user.mkdir(where / "mnt")

    def run(*args: str) -> subprocess.CompletedProcess:
        return user.run(["cryptfs", *args], env=dict(env, CRYPTFS_PASSWORD=PASSWORD), cwd="/")

    assert run("init", "--quiet", str(vault)).returncode == 0
    proc = run("mount", str(vault), str(mnt))
    assert proc.returncode == 0, proc.stderr
    try:
        wrote = user.run(["sh", "-c", 'echo installed > "$0"', str(mnt / "f")], env=env)
        assert wrote.returncode == 0, wrote.stderr
    finally:
        assert run("unmount", str(mnt)).returncode == 0
    assert not is_mounted(mnt)
    assert run("cat", str(vault), "f").stdout == b"installed\n"


def test_wheel_installed_by_pip_alone_works_for_a_normal_user(normal_user: User,
                                                              user_dir: Path,
                                                              tmp_path: Path) -> None:
    src = _copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(dist), str(src)],
                           capture_output=True, timeout=240, check=False)
    assert built.returncode == 0, built.stderr.decode()[-3000:]
    (wheel,) = dist.glob("cryptfs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("cryptfs/data/cryptfs.1", "cryptfs/data/cryptfs.fish",
                   "cryptfs/mounthelper.py"):
        assert needed in names, needed
    assert any(n.endswith(".data/data/share/man/man1/cryptfs.1") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "cryptfs = cryptfs.cli:main" in text
    assert "mount.fuse.cryptfs = cryptfs.mounthelper:main" in text

    venv = user_dir / "venv"
    made = normal_user.run([*normal_user.python, "-m", "venv", "--without-pip", str(venv)],
                           env=normal_user.env(PYTHONPATH=""))
    assert made.returncode == 0, made.stderr
    _see_test_packages(normal_user, venv)
    installed = subprocess.run([sys.executable, "-m", "pip", "--python",
                                str(venv / "bin" / "python"), "install", "-q", "--no-index",
                                str(wheel)], capture_output=True, timeout=240, check=False)
    assert installed.returncode == 0, installed.stderr.decode()[-3000:]
    _chown_tree(normal_user, venv)

    env = normal_user.env(PYTHONPATH="", PATH=f"{venv}/bin:/usr/bin:/bin")
    where = normal_user.run(["cryptfs", "completion", "fish"], env=env, cwd="/")
    assert where.returncode == 0 and b"complete -c cryptfs" in where.stdout, where.stderr
    origin = normal_user.run([str(venv / "bin" / "python"), "-c",
                              "import cryptfs; print(cryptfs.__file__)"], env=env, cwd="/")
    assert origin.stdout.decode().startswith(str(venv)), origin.stdout  # not the checkout
    assert normal_user.run(["mount.fuse.cryptfs", "b", "m", "-f"], env=env).returncode == 0
    if shutil.which("man"):
        manpage = normal_user.run(["man", "-w", "cryptfs"], env=env, cwd="/")
        assert manpage.stdout.decode().strip() == f"{venv}/share/man/man1/cryptfs.1"
    _mount_cycle(normal_user, env, user_dir)


def test_make_install_user_puts_cryptfs_on_the_path(normal_user: User, user_dir: Path,
                                                    tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    listed = re.search(r"^DEB_PACKAGES := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    if shutil.which("dpkg-query") is None:
        pytest.skip("make install-user installs Debian packages: needs dpkg")
    for package in listed.group(1).split():
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True, check=False).stdout
        if "install ok installed" not in status:
            pytest.skip(f"Debian package {package} missing: run make install first")
    src = _copy_checkout(user_dir / "src")
    _chown_tree(normal_user, src)
    home = normal_user.mkdir(user_dir / "home")
    venv = home / ".local/share/cryptfs/venv"
    normal_user.mkdir(venv.parent)
    # Kept by install-user, which reuses an existing venv: its pip then resolves against
    # the test packages (including a setuptools that builds wheels offline).
    made = normal_user.run([*normal_user.python, "-m", "venv", "--without-pip", str(venv)],
                           env=normal_user.env(PYTHONPATH=""), timeout=120)
    assert made.returncode == 0, made.stderr
    _see_test_packages(normal_user, venv)
    env = normal_user.env(HOME=str(home), PYTHONPATH="", PATH="/usr/bin:/bin")
    proc = normal_user.run(["make", "-s", "install-user", f"PYTHON={normal_user.python[0]}",
                            "PIP_FLAGS=--no-index --no-build-isolation"],
                           env=env, cwd=src, timeout=280)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-3000:]
    assert "Add " + str(home / ".local/bin") + " to your PATH" in out  # it is not yet
    for path in (".local/bin/cryptfs", ".local/bin/mount.fuse.cryptfs",
                 ".local/share/man/man1/cryptfs.1",
                 ".local/share/bash-completion/completions/cryptfs",
                 ".local/share/zsh/site-functions/_cryptfs",
                 ".config/fish/completions/cryptfs.fish",
                 ".config/systemd/user/cryptfs@.service"):
        assert (home / path).exists(), path
    # A login shell of this user: ~/.local/bin on PATH, as Debian's ~/.profile sets it.
    login = normal_user.env(HOME=str(home), PYTHONPATH="",
                            PATH=f"{home}/.local/bin:/usr/bin:/bin")
    version = normal_user.run(["sh", "-c", "cryptfs --version"], env=login, cwd="/")
    assert version.returncode == 0 and version.stdout.startswith(b"cryptfs "), version.stderr
    if shutil.which("man"):
        manpage = normal_user.run(["man", "-w", "cryptfs"], env=login, cwd="/")
        assert manpage.stdout.decode().strip() == f"{home}/.local/share/man/man1/cryptfs.1"
    _mount_cycle(normal_user, login, user_dir)
