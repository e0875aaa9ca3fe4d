"""Small things that each cost a user an hour (issue 13, item 5): passphrase length, exit
codes that mean one thing, a missing path named in plaintext, a mistyped --remote, the
demo's last words."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cryptfs.errors import ExitCode
from tests.conftest import HAVE_FUSE, PASSWORD, cryptfs_cmd

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.timeout(120)


def test_short_passphrase_needs_force(tmp_path: Path) -> None:
    vault = tmp_path / "v"
    proc = cryptfs_cmd("init", str(vault), password="1234567")
    assert proc.returncode == 1
    assert b"only 7 characters" in proc.stderr and b"--force" in proc.stderr
    assert not vault.exists() or not os.listdir(vault)
    proc = cryptfs_cmd("init", "--quiet", "--force", str(vault), password="1234567")
    assert proc.returncode == 0 and b"warning" in proc.stderr
    proc = cryptfs_cmd("passwd", str(vault), password="1234567",
                       env={"CRYPTFS_NEW_PASSWORD": "short"})
    assert proc.returncode == 1 and b"only 5 characters" in proc.stderr
    assert cryptfs_cmd("ls", str(vault), password="1234567").returncode == 0  # unchanged
    proc = cryptfs_cmd("passwd", str(vault), password="1234567",
                       env={"CRYPTFS_NEW_PASSWORD": "a longer passphrase"})
    assert proc.returncode == 0, proc.stderr


def test_missing_path_is_named_in_plaintext(vault_dir: Path) -> None:
    for command in ("cat", "ls"):
        proc = cryptfs_cmd(command, str(vault_dir), "Documents/Taxes 2026/bank.txt")
        err = proc.stderr.decode()
        assert proc.returncode == 15, err
        assert "/Documents/Taxes 2026/bank.txt: no such file or directory in the vault" in err
        assert str(vault_dir) + "/" not in err.split("in the vault")[0]  # no backing path
    from cryptfs.volume import Volume

    vol = Volume.unlock(str(vault_dir), passphrase=PASSWORD.encode())
    vol.mkdir_path("/dir", 0o755)
    vol.close()
    proc = cryptfs_cmd("cat", str(vault_dir), "dir")
    assert proc.returncode == 1 and b"/dir is a directory in the vault" in proc.stderr


def test_fsck_leftover_temp_file_is_not_tampering(vault_dir: Path) -> None:
    (vault_dir / "cryptfs.0123abcd.tmp").mkdir()
    proc = cryptfs_cmd("fsck", str(vault_dir))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    assert "leftover-temp" in out and "OK (1 leftover(s) of interrupted operations" in out
    (vault_dir / "foreign-object").write_text("x")  # a name that does not decrypt
    assert cryptfs_cmd("fsck", str(vault_dir)).returncode == 14


def test_exit_codes_are_the_same_in_readme_help_and_code() -> None:
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme.split("**Exit codes**")[1],
                            re.MULTILINE))
    help_text = cryptfs_cmd("--help", password=None).stdout.decode()
    listed = dict(re.findall(r"^  (\d+) +(.+)$", help_text.split("exit codes:")[1],
                             re.MULTILINE))
    codes = {str(int(c)) for c in ExitCode}
    assert set(table) == codes == set(listed), (table, listed)
    assert "busy" in table["12"] and "busy" in listed["12"]


@pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")
def test_mistyped_remote_does_not_replace_the_remembered_one(vault_dir: Path,
                                                             tmp_path: Path) -> None:
    cloud = tmp_path / "cloud"
    cloud.mkdir()
    assert cryptfs_cmd("remote", "set", str(vault_dir), str(cloud)).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    typo = str(tmp_path / "clod")
    proc = cryptfs_cmd("mount", str(vault_dir), str(mnt), "--remote", typo)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"syncs with {cloud}, not {typo}" in err and "cryptfs remote set" in err
    proc = cryptfs_cmd("sync", str(vault_dir), "--remote", typo)
    assert proc.returncode == 2 and b"not " + typo.encode() in proc.stderr
    assert cryptfs_cmd("remote", "show", str(vault_dir)).stdout.decode().strip() == str(cloud)
    assert not os.path.exists(typo)


@pytest.mark.skipif(not HAVE_FUSE, reason="needs FUSE")
@pytest.mark.timeout(300)
def test_demo_lists_whole_cloud_names_and_ends_with_a_next_step(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    wrapper = tmp_path / "cryptfs"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m cryptfs \"$@\"\n")
    wrapper.chmod(0o755)
    env = dict(os.environ, DEMO_DIR=str(demo), CRYPTFS=str(wrapper))
    env.pop("CRYPTFS_PASSWORD", None)
    proc = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], env=env,
                          capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    listing = out.split("What the cloud holds")[1].split("\n== ")[0]
    paths = re.findall(r"^ *\d+  (\./.+)$", listing, re.MULTILINE)
    assert len(paths) >= 5
    for path in paths:  # every listed name is whole: it is a file in the cloud
        assert (demo / "cloud" / path).is_file(), path
    last = out.rstrip().splitlines()[-8:]
    assert any(line.startswith("Next,") for line in last), last
    assert any(f"{wrapper} mount {demo}/vault {demo}/mnt" in line for line in last), last
