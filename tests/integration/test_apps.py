"""Real programs in the mount: git, sqlite3, tar, cp -a, rsync, the editor save pattern."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def run(*args: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e", HOME=str(cwd or "/tmp"))
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=240, check=False)
    assert proc.returncode == 0, f"{args} failed: {proc.stderr}"
    return proc.stdout


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]):
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sample_tree(root: Path) -> Path:
    """A small tree with nested dirs, binary files, a symlink and a hard link."""
    src = root / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    for i in range(30):
        (src / "pkg" / f"mod{i}.py").write_text(f"x = {i}\n" * (i * 50 + 1))
    (src / "pkg" / "sub" / "blob.bin").write_bytes(os.urandom(300_000))
    (src / "pkg" / "empty").write_bytes(b"")
    os.symlink("pkg/mod1.py", src / "link")
    os.link(src / "pkg" / "mod2.py", src / "hard")
    return src


@pytest.mark.skipif(shutil.which("git") is None, reason="git missing")
def test_git(work: Path) -> None:
    repo = work / "repo"
    repo.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=repo)
    for i in range(20):
        (repo / f"f{i}.txt").write_text(f"line {i}\n" * 100)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "first", cwd=repo)
    (repo / "f3.txt").write_text("changed\n")
    os.rename(repo / "f4.txt", repo / "renamed.txt")
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "second", cwd=repo)
    run("git", "gc", "-q", cwd=repo)
    run("git", "fsck", "--strict", cwd=repo)
    run("git", "clone", "-q", str(repo), str(work / "clone"), cwd=work)
    run("git", "fsck", "--strict", cwd=work / "clone")
    assert (work / "clone" / "f3.txt").read_text() == "changed\n"
    assert run("git", "log", "--oneline", cwd=work / "clone").count("\n") == 2


def test_sqlite_wal(work: Path) -> None:
    db = work / "test.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    for batch in range(20):
        con.executemany("INSERT INTO t (v) VALUES (?)",
                        [(os.urandom(200),) for _ in range(100)])
        con.commit()
    con.execute("DELETE FROM t WHERE id % 3 = 0")
    con.commit()
    con.execute("VACUUM")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == count
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    if shutil.which("sqlite3"):
        out = run("sqlite3", str(db), "PRAGMA integrity_check;")
        assert out.strip() == "ok"


def test_tar_roundtrip(work: Path, tmp_path: Path) -> None:
    src = sample_tree(tmp_path)
    archive = tmp_path / "a.tar"
    run("tar", "-cf", str(archive), "-C", str(src), ".")
    dest = work / "untar"
    dest.mkdir()
    run("tar", "-xf", str(archive), "-C", str(dest))
    assert tree_digest(dest) == tree_digest(src)
    back = tmp_path / "back.tar"
    run("tar", "-cf", str(back), "-C", str(dest), ".")
    out = tmp_path / "out"
    out.mkdir()
    run("tar", "-xf", str(back), "-C", str(out))
    assert tree_digest(out) == tree_digest(src)


def test_cp_a_and_diff(work: Path, tmp_path: Path) -> None:
    src = sample_tree(tmp_path)
    run("cp", "-a", str(src), str(work / "copy"))
    run("diff", "-r", "--no-dereference", str(src), str(work / "copy"))
    copied = work / "copy"
    assert (copied / "hard").stat().st_ino == (copied / "pkg" / "mod2.py").stat().st_ino
    assert os.readlink(copied / "link") == "pkg/mod1.py"
    assert (copied / "pkg").stat().st_mtime_ns == (src / "pkg").stat().st_mtime_ns


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync missing")
def test_rsync(work: Path, tmp_path: Path) -> None:
    src = sample_tree(tmp_path)
    run("rsync", "-aH", f"{src}/", f"{work}/r/")
    run("diff", "-r", "--no-dereference", str(src), str(work / "r"))
    (src / "pkg" / "mod5.py").write_text("changed")
    (src / "pkg" / "mod6.py").unlink()
    run("rsync", "-aH", "--delete", f"{src}/", f"{work}/r/")
    run("diff", "-r", "--no-dereference", str(src), str(work / "r"))
    back = tmp_path / "back"
    run("rsync", "-aH", f"{work}/r/", f"{back}/")
    assert tree_digest(back) == tree_digest(src)


def test_editor_save_pattern(work: Path) -> None:
    target = work / "document.txt"
    target.write_text("version 1\n")
    for version in range(2, 6):
        tmp = work / ".document.txt.swp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, f"version {version}\n".encode() * 1000)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, target)
        dfd = os.open(work, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        assert target.read_text() == f"version {version}\n" * 1000
    assert os.listdir(work) == ["document.txt"]


def test_python_shutil_copytree(work: Path, tmp_path: Path) -> None:
    src = sample_tree(tmp_path)
    shutil.copytree(src, work / "tree", symlinks=True)
    assert tree_digest(work / "tree") == tree_digest(src)
    shutil.rmtree(work / "tree")
    assert not (work / "tree").exists()
    assert sys.version_info >= (3, 10)


def _xattr_tree(root: Path) -> None:
    (root / "dir").mkdir()
    (root / "dir" / "doc.txt").write_text("with attributes")
    (root / "plain.txt").write_text("without")
    os.setxattr(root / "dir" / "doc.txt", "user.xdg.origin.url", b"https://example.org/doc")
    os.setxattr(root / "dir" / "doc.txt", "user.tag", b"\x00binary\xff")
    os.setxattr(root / "dir", "user.xdg.comment", b"a folder comment")


def _xattrs(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = {a: os.getxattr(p, a) for a in sorted(os.listxattr(p))}
    return out


@pytest.mark.parametrize("tool", ["rsync", "cp", "tar"])
def test_xattrs_survive_copy_tools_both_ways(work: Path, tmp_path: Path, tool: str) -> None:
    """rsync -aX, cp -a and tar --xattrs keep user attributes into the mount and out."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} missing")
    src = tmp_path / "src"
    src.mkdir()
    _xattr_tree(src)
    expected = _xattrs(src)
    inside, back = work / "in", tmp_path / "back"
    if tool == "rsync":
        run("rsync", "-aX", f"{src}/", str(inside))
        run("rsync", "-aX", f"{inside}/", str(back))
    elif tool == "cp":
        run("cp", "-a", str(src), str(inside))
        run("cp", "-a", str(inside), str(back))
    else:
        archive = tmp_path / "a.tar"
        run("tar", "--xattrs", "--xattrs-include=user.*", "-cf", str(archive), "-C", str(src),
            ".")
        inside.mkdir()
        run("tar", "--xattrs", "--xattrs-include=user.*", "-xf", str(archive), "-C",
            str(inside))
        archive2 = tmp_path / "b.tar"
        run("tar", "--xattrs", "--xattrs-include=user.*", "-cf", str(archive2), "-C",
            str(inside), ".")
        back.mkdir()
        run("tar", "--xattrs", "--xattrs-include=user.*", "-xf", str(archive2), "-C",
            str(back))
    assert _xattrs(inside) == expected
    assert _xattrs(back) == expected
