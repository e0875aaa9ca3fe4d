"""What a sync pull changed, as top-level names (for the writeback cache's invalidation)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptfs.backing import changed_top_names, snapshot


def test_changed_top_names(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"1")
    (tmp_path / "same").write_bytes(b"x")
    (tmp_path / "gone").write_bytes(b"x")
    (tmp_path / "grows").write_bytes(b"x")
    os.symlink("/etc", tmp_path / "link")  # never followed
    before = snapshot(str(tmp_path))
    assert "a/b/f" in before and "link" in before and not any("passwd" in k for k in before)
    (tmp_path / "a" / "b" / "f").write_bytes(b"22")
    (tmp_path / "gone").unlink()
    (tmp_path / "grows").write_bytes(b"xy")
    (tmp_path / "new").mkdir()
    replaced = tmp_path / "replaced"
    replaced.write_bytes(b"x")
    mid = snapshot(str(tmp_path))
    assert changed_top_names(before, mid) == {"a", "gone", "grows", "new", "replaced"}
    tmp = tmp_path / "tmp"
    tmp.write_bytes(b"y")
    st = replaced.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, replaced)  # same size and mtime, new inode: a rename over it
    assert changed_top_names(mid, snapshot(str(tmp_path))) == {"replaced"}
    assert changed_top_names(mid, mid) == set()


def test_remembered_names_never_let_a_moved_name_through(tmp_path: Path) -> None:
    from cryptfs.volume import Volume
    from tests.conftest import PASSWORD

    vol, _ = Volume.initialize(str(tmp_path / "v"), PASSWORD.encode())
    vol.mkdir("/a")
    vol.mkdir("/b")
    vol.write_file("/a/secret.txt", b"x")
    assert vol.listdir("/a") == ["secret.txt"]  # listed and remembered
    a, b = vol.mapper.path("/a"), vol.mapper.path("/b")
    (name,) = [n for n in os.listdir(a) if not n.startswith("cryptfs.")]
    os.rename(os.path.join(a, name), os.path.join(b, name))
    assert vol.listdir("/b") == []  # bound to /a's IV: refused, even though remembered
    os.rename(os.path.join(b, name), os.path.join(a, name))
    assert vol.listdir("/a") == ["secret.txt"]
