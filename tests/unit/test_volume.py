"""The inode-based Volume API without FUSE (format 2): file content against models,
namespace operations against a model, rename semantics of every kind, directory identity
(O(1) renames, generations, offline merges), hard links, bounded backing paths, and
extended attributes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cryptfs import layout
from cryptfs.errors import IntegrityError
from cryptfs.volume import ROOT_INO, Volume
from cryptfs.xattrs import XATTR_CREATE, XATTR_REPLACE
from tests.conftest import PASSWORD
from tests.unit.vfs import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    assert_clean,
    backing_snapshot,
    changed_paths,
    describe,
    errno_of,
    fresh,
    link,
    make,
    mknod,
    new_volume,
    rename,
    rmdir,
    subdir_count,
    symlink,
    truncate,
    unlink,
    xattr_objects,
)

BS = 4096


@pytest.fixture
def vol(tmp_path: Path):
    v = new_volume(tmp_path / "v", block_size=BS)
    try:
        yield v
    finally:
        v.close()


# -- file content against a model ------------------------------------------------------------
class FileModel(RuleBasedStateMachine):
    """Random writes, truncates and reopens of two files compared with bytearrays."""

    @initialize()
    def setup(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.vol = new_volume(Path(self.dir, "v"), block_size=BS)
        self.model = {b"a": bytearray(), b"b": bytearray()}
        self.fh, self.ino = {}, {}
        for name in self.model:
            self.fh[name], attr = self.vol.create(ROOT_INO, name, 0o644, os.O_RDWR)
            self.ino[name] = attr.ino

    def teardown(self) -> None:
        if hasattr(self, "vol"):
            self.vol.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    names = st.sampled_from([b"a", b"b"])
    offsets = st.one_of(st.integers(0, 5 * BS), st.sampled_from([BS - 1, BS, BS + 1, 2 * BS]))

    @rule(n=names, off=offsets, data=st.binary(min_size=1, max_size=3 * BS))
    def write(self, n: bytes, off: int, data: bytes) -> None:
        assert self.vol.write(self.fh[n], off, data) == len(data)
        m = self.model[n]
        if off > len(m):
            m.extend(bytes(off - len(m)))
        m[off:off + len(data)] = data

    @rule(n=names, data=st.binary(min_size=1, max_size=BS + 10))
    def append(self, n: bytes, data: bytes) -> None:
        fh = self.vol.open(self.ino[n], os.O_WRONLY | os.O_APPEND)
        try:
            self.vol.write(fh, 0, data)  # O_APPEND: the offset is ignored
        finally:
            self.vol.release(fh)
        self.model[n] += data

    @rule(n=names, length=offsets)
    def truncate(self, n: bytes, length: int) -> None:
        self.vol.setattr(self.ino[n], size=length, fh=self.fh[n])
        m = self.model[n]
        if length < len(m):
            del m[length:]
        else:
            m.extend(bytes(length - len(m)))

    @rule(n=names, off=offsets, size=st.integers(1, 3 * BS))
    def read(self, n: bytes, off: int, size: int) -> None:
        assert self.vol.read(self.fh[n], off, size) == bytes(self.model[n][off:off + size])

    @rule(n=names, trunc=st.booleans())
    def reopen(self, n: bytes, trunc: bool) -> None:
        self.vol.release(self.fh[n])
        self.fh[n] = self.vol.open(self.ino[n], os.O_RDWR | (os.O_TRUNC if trunc else 0))
        if trunc:
            self.model[n].clear()

    @invariant()
    def sizes_and_backing_match(self) -> None:
        if not hasattr(self, "vol"):
            return
        for n, m in self.model.items():
            assert self.vol.getattr(self.ino[n]).size == len(m)
            backing = os.path.getsize(os.path.join(self.vol.backing,
                                                   self.vol.backing_path_of("/" + n.decode())))
            assert backing == self.vol.content.backing_size(len(m))


FileModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
TestFileModel = FileModel.TestCase


def test_appends_near_the_end_match_a_model(tmp_path: Path) -> None:
    """The last block's plaintext is kept between writes (no re-decrypt on append): it
    must never disagree with what is on disk, whatever mix of appends, overwrites near
    the end, truncates and O_TRUNC reopens happens."""
    import random

    rng = random.Random(5)
    vol = new_volume(tmp_path / "v", block_size=BS)
    fh, attr = vol.create(ROOT_INO, b"log", 0o644, os.O_RDWR)
    model = bytearray()
    for step in range(800):
        kind = rng.random()
        if kind < 0.6:
            data = rng.randbytes(rng.choice([1, 7, 100, 2048, BS - 1, BS, BS + 3]))
            vol.write(fh, len(model), data)
            model += data
        elif kind < 0.8:
            off = max(0, len(model) - rng.randrange(0, 2 * BS + 1))
            data = rng.randbytes(rng.randrange(1, 3 * BS))
            vol.write(fh, off, data)
            model[off:off + len(data)] = data
        elif kind < 0.95:
            length = max(0, len(model) + rng.randrange(-2 * BS, BS))
            vol.setattr(attr.ino, size=length, fh=fh)
            del model[length:]
            model.extend(bytes(length - len(model)))
        else:
            vol.release(fh)
            trunc = rng.random() < 0.3
            fh = vol.open(attr.ino, os.O_RDWR | (os.O_TRUNC if trunc else 0))
            if trunc:
                model.clear()
        if step % 40 == 0 or kind >= 0.95:
            other = fresh(vol)
            assert other.read_file("/log") == bytes(model), f"step {step}"
            other.close()
    vol.release(fh)
    assert vol.read_file("/log") == bytes(model)


def test_sparse_file_costs_little_disk(vol: Volume) -> None:
    fh, _ = vol.create(ROOT_INO, b"sparse", 0o644, os.O_RDWR)
    five_gib = 5 << 30
    vol.write(fh, five_gib, b"end")
    vol.release(fh)
    st_ = os.stat(os.path.join(vol.backing, vol.backing_path_of("/sparse")))
    assert vol.getattr(vol.resolve("/sparse")).size == five_gib + 3
    assert st_.st_blocks * 512 < 1 << 20
    fh = vol.open(vol.resolve("/sparse"), os.O_RDONLY)
    assert vol.read(fh, 12345678, 10) == bytes(10)
    assert vol.read(fh, five_gib - 2, 10) == b"\0\0end"
    vol.release(fh)


def test_empty_file_is_58_bytes_and_authenticated_at_open(vol: Volume) -> None:
    vol.write_file("/e", b"")
    rel = os.path.join(vol.backing, vol.backing_path_of("/e"))
    assert os.path.getsize(rel) == 58
    raw = bytearray(Path(rel).read_bytes())
    raw[40] ^= 1
    Path(rel).write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        vol.open(vol.resolve("/e"), os.O_RDONLY)


def test_zero_length_backing_file_is_invalid_until_truncated(vol: Volume) -> None:
    vol.write_file("/f", b"content")
    Path(vol.backing, vol.backing_path_of("/f")).write_bytes(b"")
    assert vol.getattr(vol.resolve("/f")).size == 0
    with pytest.raises(IntegrityError):
        vol.read_file("/f")
    vol.write_file("/f", b"again")  # O_TRUNC rewrites a valid file
    assert vol.read_file("/f") == b"again"


def test_read_only_volume_refuses_writes(vol: Volume) -> None:
    vol.write_file("/f", b"x")
    vol.mkdir_path("/d")
    ro = Volume.unlock(vol.backing, passphrase=PASSWORD.encode(), read_only=True)
    assert ro.read_file("/f") == b"x"
    f, d = ro.resolve("/f"), ro.resolve("/d")
    for call in (lambda: ro.write_file("/g", b"y"), lambda: ro.mkdir(ROOT_INO, b"e"),
                 lambda: ro.unlink(ROOT_INO, b"f"), lambda: ro.setattr(f, size=0),
                 lambda: ro.open(f, os.O_WRONLY), lambda: ro.rmdir(ROOT_INO, b"d"),
                 lambda: ro.rename(ROOT_INO, b"f", ROOT_INO, b"g"),
                 lambda: ro.setxattr(d, b"user.a", b"1"), lambda: ro.setattr(f, mode=0o600)):
        assert errno_of(call) == errno.EROFS


# -- namespace against a model ------------------------------------------------------------------
PATHS = ["/a", "/b", "/a/a", "/a/b", "/b/a", "/b/b"]


class _File:
    def __init__(self, data: bytes) -> None:
        self.data = data


class _Dir:
    """One directory (identity matters: a rename onto another empty one replaces it)."""


class NamespaceModel(RuleBasedStateMachine):
    """mkdir, write, unlink, rmdir, link and rename (all flags) on a small name space,
    compared with a dict; a fresh Volume must agree after every step, and fsck too."""

    @initialize()
    def setup(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.vol = new_volume(Path(self.dir, "v"), block_size=BS)
        self.model: dict[str, object] = {}  # path -> _Dir | _File (shared by hard links)
        self.counter = 0

    def teardown(self) -> None:
        if hasattr(self, "vol"):
            self.vol.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _parent_error(self, path: str) -> int | None:
        parent = path.rpartition("/")[0]
        if not parent:
            return None
        got = self.model.get(parent)
        if got is None:
            return errno.ENOENT
        return None if isinstance(got, _Dir) else errno.ENOTDIR

    def _children(self, path: str) -> list[str]:
        return [p for p in self.model if p.startswith(path + "/")]

    def _expect(self, expected: int | None, call) -> None:
        if expected is None:
            call()
        else:
            assert errno_of(call) == expected

    @rule(p=st.sampled_from(PATHS))
    def mkdir(self, p: str) -> None:
        err = self._parent_error(p) or (errno.EEXIST if p in self.model else None)
        self._expect(err, lambda: self.vol.mkdir_path(p))
        if err is None:
            self.model[p] = _Dir()

    @rule(p=st.sampled_from(PATHS))
    def write(self, p: str) -> None:
        self.counter += 1
        data = f"{p} #{self.counter}".encode() * (self.counter % 3)
        err = self._parent_error(p) or (errno.EISDIR if isinstance(self.model.get(p), _Dir)
                                              else None)
        self._expect(err, lambda: self.vol.write_file(p, data))
        if err is None:
            if isinstance(self.model.get(p), _File):
                self.model[p].data = data  # O_TRUNC rewrite: every hard link sees it
            else:
                self.model[p] = _File(data)

    @rule(p=st.sampled_from(PATHS))
    def unlink(self, p: str) -> None:
        got = self.model.get(p)
        err = self._parent_error(p) or (errno.ENOENT if got is None else
                                        errno.EISDIR if isinstance(got, _Dir) else None)
        self._expect(err, lambda: unlink(self.vol, p))
        if err is None:
            del self.model[p]

    @rule(p=st.sampled_from(PATHS))
    def rmdir(self, p: str) -> None:
        got = self.model.get(p)
        err = self._parent_error(p) or (
            errno.ENOENT if got is None else errno.ENOTDIR if not isinstance(got, _Dir) else
            errno.ENOTEMPTY if self._children(p) else None)
        self._expect(err, lambda: rmdir(self.vol, p))
        if err is None:
            del self.model[p]

    @rule(a=st.sampled_from(PATHS), b=st.sampled_from(PATHS))
    def link(self, a: str, b: str) -> None:
        src = self.model.get(a)
        err = self._parent_error(a) or (errno.ENOENT if src is None else None)
        if err is None:
            err = self._parent_error(b) or (errno.EPERM if isinstance(src, _Dir) else
                                            errno.EEXIST if b in self.model else None)
        self._expect(err, lambda: link(self.vol, a, b))
        if err is None:
            self.model[b] = src

    @rule(a=st.sampled_from(PATHS), b=st.sampled_from(PATHS),
          flags=st.sampled_from([0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, a: str, b: str, flags: int) -> None:
        assume(not b.startswith(a + "/") and not a.startswith(b + "/"))  # the kernel's job
        src, dst = self.model.get(a), self.model.get(b)
        err = self._parent_error(a) or self._parent_error(b) or \
            (errno.ENOENT if src is None else None)
        if err is None:
            if flags == RENAME_NOREPLACE and dst is not None:
                err = errno.EEXIST
            elif flags == RENAME_EXCHANGE and dst is None:
                err = errno.ENOENT
            elif flags == 0 and dst is not None and a != b and dst is not src:
                src_dir, dst_dir = isinstance(src, _Dir), isinstance(dst, _Dir)
                if src_dir and not dst_dir:
                    err = errno.ENOTDIR
                elif not src_dir and dst_dir:
                    err = errno.EISDIR
                elif dst_dir and self._children(b):
                    err = errno.ENOTEMPTY
        self._expect(err, lambda: rename(self.vol, a, b, flags))
        if err is not None or a == b:
            return
        if flags == 0 and dst is src:
            return  # two names of one file: POSIX does nothing
        moved = {p: v for p, v in self.model.items() if p == a or p.startswith(a + "/")}
        other = {p: v for p, v in self.model.items() if p == b or p.startswith(b + "/")} \
            if flags == RENAME_EXCHANGE else {}
        for p in list(moved) + [p for p in self.model if p == b or p.startswith(b + "/")]:
            self.model.pop(p, None)
        for p, v in moved.items():
            self.model[b + p[len(a):]] = v
        for p, v in other.items():
            self.model[a + p[len(b):]] = v

    @invariant()
    def agrees_with_a_fresh_volume(self) -> None:
        if not hasattr(self, "vol"):
            return
        for vol in (self.vol, fresh(self.vol)):
            seen = {}
            for top, dirs, files in vol.walk("/"):
                for d in dirs:
                    seen[top.rstrip("/") + "/" + d] = "dir"
                for f in files:
                    path = top.rstrip("/") + "/" + f
                    seen[path] = vol.read_file(path)
            want = {p: ("dir" if isinstance(v, _Dir) else v.data)
                    for p, v in self.model.items()}
            assert seen == want
            for p, v in self.model.items():
                attr = vol.getattr(vol.resolve(p))
                if isinstance(v, _Dir):
                    assert attr.nlink == 2 + sum(1 for c, w in self.model.items()
                                                 if isinstance(w, _Dir)
                                                 and c.rpartition("/")[0] == p), p
                else:
                    assert attr.nlink == sum(1 for w in self.model.values() if w is v), p
            if vol is not self.vol:
                vol.close()


NamespaceModel.TestCase.settings = settings(max_examples=40, stateful_step_count=20,
                                            deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
TestNamespaceModel = NamespaceModel.TestCase


def test_namespace_model_ends_clean_under_fsck(tmp_path: Path) -> None:
    vol = new_volume(tmp_path / "v", block_size=BS)
    for p in ("/a", "/a/b", "/b"):
        vol.mkdir_path(p)
    vol.write_file("/a/b/f", b"1")
    link(vol, "/a/b/f", "/b/g")
    rename(vol, "/a/b", "/b/c")
    rename(vol, "/a", "/b/c/a", RENAME_NOREPLACE)
    rename(vol, "/b/g", "/b/c", RENAME_EXCHANGE)
    assert_clean(vol)


# -- rename semantics of every kind ---------------------------------------------------------------
KINDS = ["file", "fulldir", "symlink", "fifo"]


def _expected_plain_rename_error(src: str, dst: str | None) -> int | None:
    if dst is None:
        return None
    src_dir, dst_dir = src.endswith("dir"), dst.endswith("dir")
    if src_dir and not dst_dir:
        return errno.ENOTDIR
    if not src_dir and dst_dir:
        return errno.EISDIR
    if dst == "fulldir":
        return errno.ENOTEMPTY
    return None


@pytest.mark.parametrize("cross", [False, True], ids=["same-dir", "cross-dir"])
@pytest.mark.parametrize("flags", [0, RENAME_NOREPLACE, RENAME_EXCHANGE],
                         ids=["plain", "noreplace", "exchange"])
@pytest.mark.parametrize("dst_kind", [None, "dir", *KINDS])
@pytest.mark.parametrize("src_kind", KINDS)
def test_rename_matrix(tmp_path: Path, src_kind: str, dst_kind: str | None, flags: int,
                       cross: bool) -> None:
    vol = new_volume(tmp_path / "v", block_size=BS)
    vol.mkdir_path("/p")
    vol.mkdir_path("/q")
    a, b = "/p/src", ("/q/dst" if cross else "/p/dst")
    make(vol, src_kind, a)
    if dst_kind:
        make(vol, dst_kind, b)
    before_a, before_b = describe(vol, a), describe(vol, b)
    if flags == RENAME_NOREPLACE:
        err = errno.EEXIST if dst_kind else None
    elif flags == RENAME_EXCHANGE:
        err = None if dst_kind else errno.ENOENT
    else:
        err = _expected_plain_rename_error(src_kind, dst_kind)
    if err is not None:
        assert errno_of(lambda: rename(vol, a, b, flags)) == err
        after = (describe(vol, a), describe(vol, b))
        assert after == (before_a, before_b), "a refused rename changed something"
    else:
        rename(vol, a, b, flags)
        want = (before_b, before_a) if flags == RENAME_EXCHANGE else (None, before_a)
        assert (describe(vol, a), describe(vol, b)) == want
        other = fresh(vol)
        assert (describe(other, a), describe(other, b)) == want
        other.close()
    for parent in ("/", "/p", "/q"):
        assert vol.getattr(vol.resolve(parent)).nlink == 2 + subdir_count(vol, parent), parent
    assert_clean(vol)


def test_parent_nlink_after_moving_a_dir_over_an_empty_dir_elsewhere(vol: Volume) -> None:
    """/p/src replaces the empty /q/dst: /p loses a subdirectory, /q keeps one. A wrong
    link count misleads find(1)'s leaf optimisation into skipping /q's subdirectory."""
    for p in ("/p", "/q", "/p/src", "/q/dst"):
        vol.mkdir_path(p)
    assert vol.getattr(vol.resolve("/q")).nlink == 3  # the count is now cached
    rename(vol, "/p/src", "/q/dst")
    assert vol.getattr(vol.resolve("/p")).nlink == 2
    got = vol.getattr(vol.resolve("/q")).nlink
    assert got == 3, f"/q has one subdirectory but shows nlink {got}"


def test_rename_flag_errors(vol: Volume) -> None:
    vol.write_file("/x", b"X")
    vol.write_file("/y", b"Y")
    for flags in (RENAME_NOREPLACE | RENAME_EXCHANGE, 4, 8, 1 << 31):
        assert errno_of(lambda f=flags: rename(vol, "/x", "/y", f)) == errno.EINVAL
    assert errno_of(lambda: rename(vol, "/nope", "/z")) == errno.ENOENT
    assert errno_of(lambda: rename(vol, "/x", "/nodir/z")) == errno.ENOENT
    assert errno_of(lambda: rename(vol, "/x", "/y/z")) == errno.ENOTDIR
    assert errno_of(lambda: vol.rename(ROOT_INO, b"x", ROOT_INO, b"a/b")) == errno.EINVAL
    assert errno_of(lambda: vol.rename(ROOT_INO, b"x", ROOT_INO, b"n" * 256)) == \
        errno.ENAMETOOLONG
    assert (vol.read_file("/x"), vol.read_file("/y")) == (b"X", b"Y")


def test_rename_onto_itself_and_onto_its_own_hard_link(vol: Volume) -> None:
    vol.write_file("/x", b"X")
    rename(vol, "/x", "/x")
    link(vol, "/x", "/y")
    before = backing_snapshot(vol)
    rename(vol, "/x", "/y")  # POSIX: nothing happens, both names stay
    assert backing_snapshot(vol) == before
    assert vol.listdir("/") == ["x", "y"]
    assert vol.getattr(vol.resolve("/y")).nlink == 2


def test_rename_replaces_a_long_name_and_a_long_name_replaces(vol: Volume) -> None:
    long_a, long_b = "/" + "a" * 200, "/" + "b" * 255
    vol.write_file(long_a, b"A")
    vol.write_file(long_b, b"B")
    rename(vol, long_a, long_b)
    assert vol.listdir("/") == ["b" * 255]
    assert vol.read_file(long_b) == b"A"
    rename(vol, long_b, "/short")
    rename(vol, "/short", long_a)
    assert vol.read_file(long_a) == b"A"
    root = Path(vol.backing, vol.root_storage)
    stem = layout.stem_for(vol.names.encrypt(vol.names.root_id, long_a[1:].encode()),
                           vol.max_path).stem
    assert sorted(os.listdir(root)) == sorted([layout.BACKREF_NAME, stem, stem + ".s"])
    assert_clean(vol)


# -- directories ----------------------------------------------------------------------------
def test_directories_basics(vol: Volume) -> None:
    vol.mkdir_path("/d")
    vol.mkdir_path("/d/e")
    vol.write_file("/d/e/f", b"data")
    assert errno_of(lambda: rmdir(vol, "/d")) == errno.ENOTEMPTY
    assert errno_of(lambda: vol.mkdir_path("/d")) == errno.EEXIST
    assert errno_of(lambda: rmdir(vol, "/d/e/f")) == errno.ENOTDIR
    assert errno_of(lambda: unlink(vol, "/d/e")) == errno.EISDIR
    assert errno_of(lambda: vol.rmdir(ROOT_INO, b".")) == errno.EINVAL
    assert errno_of(lambda: vol.mkdir_path("/nope/x")) == errno.ENOENT
    assert errno_of(lambda: vol.mkdir_path("/d/e/f/x")) == errno.ENOTDIR
    rename(vol, "/d", "/moved")
    assert vol.read_file("/moved/e/f") == b"data"
    assert errno_of(lambda: vol.resolve("/d/e/f")) == errno.ENOENT
    assert vol.getattr(vol.resolve("/")).nlink == 3
    assert vol.getattr(vol.resolve("/moved")).nlink == 3
    assert vol.lookup(vol.resolve("/moved/e"), b"..").ino == vol.resolve("/moved")


@pytest.mark.parametrize("what", ["file", "subdir", "symlink", "fifo", "long name"])
def test_rmdir_not_empty(vol: Volume, what: str) -> None:
    vol.mkdir_path("/d")
    path = "/d/" + ("x" * 200 if what == "long name" else "x")
    make(vol, {"subdir": "dir", "long name": "file"}.get(what, what), path)
    assert errno_of(lambda: rmdir(vol, "/d")) == errno.ENOTEMPTY
    assert describe(vol, path) is not None
    (unlink if what != "subdir" else rmdir)(vol, path)
    storage = vol.storage_path_of("/d")
    rmdir(vol, "/d")
    assert not Path(vol.backing, storage).exists(), "rmdir removes the storage folder"
    assert_clean(vol)


def test_mkdir_after_rename_away_gets_a_new_storage_folder(vol: Volume) -> None:
    """§5.1: a directory re-created under the name of one renamed away gets g = 1."""
    vol.mkdir_path("/a")
    vol.write_file("/a/old", b"old")
    first = vol.storage_path_of("/a")
    assert first == vol.storage_of(vol.names.child_id(vol.names.root_id, 0, b"a"))
    rename(vol, "/a", "/b")
    vol.mkdir_path("/a")
    second = vol.storage_path_of("/a")
    assert second != first == vol.storage_path_of("/b")
    assert second == vol.storage_of(vol.names.child_id(vol.names.root_id, 1, b"a"))
    vol.write_file("/a/new", b"new")
    assert vol.listdir("/a") == ["new"] and vol.listdir("/b") == ["old"]
    rename(vol, "/a", "/c")
    vol.mkdir_path("/a")
    assert vol.storage_path_of("/a") == vol.storage_of(
        vol.names.child_id(vol.names.root_id, 2, b"a"))
    rmdir(vol, "/a")
    unlink(vol, "/c/new")
    rmdir(vol, "/c")
    vol.mkdir_path("/a")  # generation 1 is free again
    assert vol.storage_path_of("/a") == vol.storage_of(
        vol.names.child_id(vol.names.root_id, 1, b"a"))
    assert_clean(vol)


def test_two_volumes_creating_the_same_directory_offline_merge(tmp_path: Path) -> None:
    """§5.1/§5.2: offline mkdir of the same path on two clones writes identical objects,
    so a sync tool merging the two backing trees keeps every entry decodable."""
    vol_a = new_volume(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    vol_b = Volume.unlock(str(tmp_path / "b"), master_key=vol_a.master_key)
    for vol, fname in ((vol_a, "from-a"), (vol_b, "from-b")):
        vol.mkdir_path("/Shared")
        vol.mkdir_path("/Shared/Photos")
        vol.mkdir_path("/Shared/" + "L" * 150)
        vol.write_file(f"/Shared/Photos/{fname}", fname.encode())
    snap_a, snap_b = backing_snapshot(vol_a), backing_snapshot(vol_b)
    common = snap_a.keys() & snap_b.keys()
    for rel in common:
        assert snap_a[rel] == snap_b[rel], f"{rel} differs between the two devices"
    only = (snap_a.keys() | snap_b.keys()) - common
    assert len(only) == 2, only  # the two files, nothing else
    for rel in sorted(snap_b.keys() - snap_a.keys()):  # merge b into a as a sync tool would
        shutil.copy2(tmp_path / "b" / rel, tmp_path / "a" / rel)
    merged = fresh(vol_a)
    assert merged.listdir("/Shared/Photos") == ["from-a", "from-b"]
    assert merged.read_file("/Shared/Photos/from-b") == b"from-b"
    assert_clean(merged)


@pytest.mark.parametrize("long_name", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_renaming_a_200_file_directory_changes_few_backing_paths(tmp_path: Path, cross: bool,
                                                                  long_name: bool) -> None:
    vol = new_volume(tmp_path / "v")
    vol.mkdir_path("/photos")
    vol.mkdir_path("/photos/raw")
    vol.mkdir_path("/archive")
    for i in range(200):
        vol.write_file(f"/photos/img-{i:04d}.jpg", b"x" * (i % 7))
    vol.write_file("/photos/raw/one", b"1")
    vol.setxattr(vol.resolve("/photos"), b"user.tag", b"holiday")
    before = backing_snapshot(vol)
    new = ("/archive/" if cross else "/") + ("p" * 150 if long_name else "photos-2026")
    rename(vol, "/photos", new)
    changed = changed_paths(before, backing_snapshot(vol))
    assert len(changed) <= 6, sorted(changed)
    assert len(vol.listdir(new)) == 201
    assert vol.getxattr(vol.resolve(new), b"user.tag") == b"holiday"
    assert vol.read_file(new + "/raw/one") == b"1"
    assert_clean(vol)


def test_deep_tree_backing_paths_stay_within_max_path(tmp_path: Path) -> None:
    """Issue 10: 60 levels of 12-byte names and a 255-byte name at the bottom; every
    backing path (relative to the vault root) is at most 250 characters."""
    vol = new_volume(tmp_path / "v")
    assert vol.max_path == 250
    path = ""
    for level in range(60):
        path += f"/level-{level:06d}"
        assert len(path.rpartition("/")[2]) == 12
        vol.mkdir_path(path)
    bottom = path + "/" + "z" * 255
    vol.write_file(bottom, b"deep")
    symlink(vol, path + "/" + "s" * 255, b"t" * 4095)
    vol.setxattr(vol.resolve(path), b"user.deep", b"1")
    assert vol.read_file(bottom) == b"deep"
    assert len(path) > 700
    longest = max(len(rel) for rel in backing_snapshot(vol))
    assert longest <= 250, longest
    rel = vol.backing_path_of(bottom)
    assert vol.plain_path_of(rel) == bottom
    assert vol.plain_path_of(vol.storage_path_of(path)) == path
    assert_clean(vol)


@pytest.mark.parametrize("max_path", [80, 100, 293, 294, 4096])
def test_backing_paths_within_a_custom_max_path(tmp_path: Path, max_path: int) -> None:
    vol = new_volume(tmp_path / "v", max_path=max_path)
    vol.mkdir_path("/" + "d" * 255)
    for n in (1, 16, 17, 60, 112, 113, 130, 255):
        vol.write_file("/" + "d" * 255 + "/" + "f" * n, b"x")
        symlink(vol, "/" + "s" * n, b"target")
        mknod(vol, "/" + "n" * n)
    assert max(len(rel) for rel in backing_snapshot(vol)) <= max_path
    assert len(vol.listdir("/" + "d" * 255)) == 8
    assert_clean(vol)


# -- hard links -----------------------------------------------------------------------------------
def test_hard_links_are_one_inode(vol: Volume) -> None:
    vol.mkdir_path("/d")
    vol.write_file("/f", b"shared")
    names = ["/f", "/d/g", "/d/" + "h" * 200, "/i"]
    for new in names[1:]:
        link(vol, "/f", new)
    inos = {vol.resolve(p) for p in names}
    assert len(inos) == 1
    for p in names:
        attr = vol.getattr(vol.resolve(p))
        assert attr.nlink == 4 and attr.size == 6, p
    fh = vol.open(vol.resolve("/d/g"), os.O_WRONLY)
    vol.write(fh, 0, b"SH")
    vol.release(fh)
    for p in names:
        assert vol.read_file(p) == b"SHared", p
    other = fresh(vol)
    assert {other.resolve(p) for p in names} == inos, "inode numbers are stable"
    other.close()
    unlink(vol, "/f")
    for p in names[1:]:
        assert vol.getattr(vol.resolve(p)).nlink == 3
    assert errno_of(lambda: link(vol, "/d/g", "/i")) == errno.EEXIST
    assert errno_of(lambda: link(vol, "/d", "/d2")) == errno.EPERM
    assert_clean(vol)


def test_hard_links_of_symlinks_and_nodes(vol: Volume) -> None:
    symlink(vol, "/s", b"somewhere")
    mknod(vol, "/n", stat.S_IFIFO | 0o640)
    link(vol, "/s", "/s2")
    link(vol, "/n", "/n2")
    assert vol.readlink(vol.resolve("/s2")) == b"somewhere"
    assert vol.getattr(vol.resolve("/n2")).mode == stat.S_IFIFO | 0o640
    assert vol.getattr(vol.resolve("/s")).nlink == 2
    assert vol.resolve("/n") == vol.resolve("/n2")


def test_unlink_of_an_open_file(vol: Volume) -> None:
    vol.write_file("/f", b"still here")
    fh = vol.open(vol.resolve("/f"), os.O_RDWR)
    unlink(vol, "/f")
    assert vol.listdir("/") == []
    assert errno_of(lambda: vol.resolve("/f")) == errno.ENOENT
    assert vol.read(fh, 0, 100) == b"still here"
    vol.write(fh, 10, b" and more")
    assert vol.read(fh, 0, 100) == b"still here and more"
    vol.release(fh)
    assert os.listdir(Path(vol.backing, vol.root_storage)) == [layout.BACKREF_NAME]
    vol.write_file("/f", b"new")
    assert vol.read_file("/f") == b"new"


# -- metadata ----------------------------------------------------------------------------------
def test_setattr_mode_times_and_node_mode(vol: Volume) -> None:
    vol.write_file("/f", b"x")
    mknod(vol, "/n", stat.S_IFIFO | 0o644)
    f, n = vol.resolve("/f"), vol.resolve("/n")
    assert stat.S_IMODE(vol.setattr(f, mode=0o640).mode) == 0o640
    attr = vol.setattr(f, atime_ns=1_000_000_123, mtime_ns=2_000_000_456)
    assert (attr.atime_ns, attr.mtime_ns) == (1_000_000_123, 2_000_000_456)
    assert vol.setattr(n, mode=0o600).mode == stat.S_IFIFO | 0o600
    other = fresh(vol)
    assert other.getattr(other.resolve("/n")).mode == stat.S_IFIFO | 0o600
    other.close()
    assert vol.setattr(f, size=3).size == 3
    assert vol.read_file("/f") == b"x\0\0"


def test_symlinks(vol: Volume) -> None:
    for target in (b"a", b"../x/y", b"/abs/path with space", b"t" * 4095, b"\xff\xfe"):
        symlink(vol, "/s", target)
        ino = vol.resolve("/s")
        assert vol.readlink(ino) == target
        assert vol.getattr(ino).size == len(target)
        assert stat.S_ISLNK(vol.getattr(ino).mode)
        unlink(vol, "/s")
    assert errno_of(lambda: symlink(vol, "/s", b"t" * 4096)) == errno.ENAMETOOLONG
    assert errno_of(lambda: symlink(vol, "/s", b"")) == errno.ENOENT
    vol.write_file("/f", b"")
    assert errno_of(lambda: vol.readlink(vol.resolve("/f"))) == errno.EINVAL
    symlink(vol, "/s", b"x")
    assert errno_of(lambda: vol.open(vol.resolve("/s"), os.O_RDONLY)) == errno.ELOOP


@pytest.mark.parametrize("mode, rdev", [(stat.S_IFIFO | 0o644, 0), (stat.S_IFSOCK | 0o755, 0),
                                        (stat.S_IFCHR | 0o600, os.makedev(1, 3)),
                                        (stat.S_IFBLK | 0o660, os.makedev(8, 1))])
def test_special_nodes(vol: Volume, mode: int, rdev: int) -> None:
    mknod(vol, "/n", mode, rdev)
    attr = vol.getattr(vol.resolve("/n"))
    assert (attr.mode, attr.rdev) == (mode, rdev)
    assert errno_of(lambda: vol.open(vol.resolve("/n"), os.O_RDONLY)) == errno.ENXIO
    assert Path(vol.backing, vol.backing_path_of("/n")).stat().st_mode & 0o777 == 0o600


def test_foreign_entries_are_skipped(vol: Volume, caplog) -> None:
    vol.write_file("/real", b"1")
    root = Path(vol.backing, vol.root_storage)
    for junk in ("notes.txt", "QUJD", "a" * 80, "a" * 52 + ".d", "b" * 32 + ".s", "c" * 32,
                 "cryptfs.whatever", "x" * 52 + ".zz"):
        (root / junk).write_text("junk")
    assert vol.listdir("/") == ["real"]
    assert "skipping foreign entry" in caplog.text
    other = fresh(vol)
    assert other.listdir("/") == ["real"]
    assert errno_of(lambda: other.resolve("/notes.txt")) == errno.ENOENT


# -- extended attributes ---------------------------------------------------------------------------
def test_xattr_errnos(vol: Volume) -> None:
    vol.write_file("/f", b"x")
    f = vol.resolve("/f")
    assert errno_of(lambda: vol.getxattr(f, b"user.a")) == errno.ENODATA
    assert vol.listxattr(f) == []
    assert errno_of(lambda: vol.removexattr(f, b"user.a")) == errno.ENODATA
    assert errno_of(lambda: vol.setxattr(f, b"user.a", b"1", XATTR_REPLACE)) == errno.ENODATA
    vol.setxattr(f, b"user.a", b"1", XATTR_CREATE)
    assert errno_of(lambda: vol.setxattr(f, b"user.a", b"2", XATTR_CREATE)) == errno.EEXIST
    vol.setxattr(f, b"user.a", b"3", XATTR_REPLACE)
    assert vol.getxattr(f, b"user.a") == b"3"
    assert errno_of(lambda: vol.setxattr(f, b"user." + b"n" * 251, b"v")) == errno.ERANGE
    vol.setxattr(f, b"user." + b"n" * 250, b"v")  # 255 bytes: allowed
    assert errno_of(lambda: vol.setxattr(f, b"user.big", bytes(65537))) == errno.E2BIG
    vol.setxattr(f, b"user.big", bytes(65536))
    vol.setxattr(f, b"user.big2", bytes(65536))
    vol.setxattr(f, b"user.big3", bytes(65536))
    assert errno_of(lambda: vol.setxattr(f, b"user.big4", bytes(65536))) == errno.ENOSPC
    assert errno_of(lambda: vol.getxattr(f, b"user.big4")) == errno.ENODATA
    assert vol.listxattr(f) == sorted([b"user.a", b"user." + b"n" * 250, b"user.big",
                                       b"user.big2", b"user.big3"])
    vol.removexattr(f, b"user.a")
    assert errno_of(lambda: vol.getxattr(f, b"user.a")) == errno.ENODATA
    assert errno_of(lambda: vol.setxattr(f, b"trusted.a", b"1")) in (errno.EOPNOTSUPP,
                                                                     errno.EPERM)
    assert errno_of(lambda: vol.getxattr(f, b"security.selinux")) == errno.ENODATA


def test_xattr_name_user_dot_alone_is_einval(vol: Volume) -> None:
    """Linux (fs/xattr.c xattr_resolve_name) refuses a name that is only the "user."
    prefix with EINVAL; ERANGE is for names over 255 bytes or empty names."""
    vol.write_file("/f", b"x")
    got = errno_of(lambda: vol.setxattr(vol.resolve("/f"), b"user.", b"v"))
    assert got == errno.EINVAL, f"setxattr('user.') gave {errno.errorcode[got]}, Linux EINVAL"


def test_xattrs_persist_and_are_encrypted(vol: Volume) -> None:
    vol.mkdir_path("/d")
    vol.write_file("/d/f", b"x")
    vol.setxattr(vol.resolve("/d/f"), b"user.secret-name", b"secret-value")
    vol.setxattr(vol.resolve("/d"), b"user.dir", b"dir-value")
    other = fresh(vol)
    assert other.getxattr(other.resolve("/d/f"), b"user.secret-name") == b"secret-value"
    assert other.listxattr(other.resolve("/d")) == [b"user.dir"]
    other.close()
    objs = xattr_objects(vol)
    assert len(objs) == 2
    for rel in objs:
        data = Path(vol.backing, rel).read_bytes()
        assert b"secret" not in data and b"user." not in data and b"dir-value" not in data


def test_xattrs_shared_by_hard_links_kept_across_renames(vol: Volume) -> None:
    vol.mkdir_path("/d")
    vol.mkdir_path("/e")
    vol.write_file("/d/f", b"x")
    link(vol, "/d/f", "/e/g")
    vol.setxattr(vol.resolve("/d/f"), b"user.k", b"v")
    assert vol.getxattr(vol.resolve("/e/g"), b"user.k") == b"v"
    rename(vol, "/e/g", "/d/" + "g" * 200)
    rename(vol, "/d", "/e/d2")
    vol.setxattr(vol.resolve("/e/d2"), b"user.dir", b"1")
    rename(vol, "/e/d2", "/moved")
    other = fresh(vol)
    assert other.getxattr(other.resolve("/moved/f"), b"user.k") == b"v"
    assert other.getxattr(other.resolve("/moved/" + "g" * 200), b"user.k") == b"v"
    assert other.getxattr(other.resolve("/moved"), b"user.dir") == b"1"
    rename(other, "/moved", "/e", RENAME_EXCHANGE)
    assert other.getxattr(other.resolve("/e"), b"user.dir") == b"1"
    other.close()
    assert len(xattr_objects(vol)) == 2
    assert_clean(vol)


def test_xattrs_removed_with_the_last_link(vol: Volume) -> None:
    vol.write_file("/f", b"x")
    link(vol, "/f", "/g")
    vol.setxattr(vol.resolve("/f"), b"user.k", b"v")
    unlink(vol, "/f")
    assert vol.getxattr(vol.resolve("/g"), b"user.k") == b"v"
    assert len(xattr_objects(vol)) == 1
    unlink(vol, "/g")
    assert xattr_objects(vol) == []
    vol.write_file("/h", b"x")
    other = fresh(vol)  # the last name removed by a volume that never looked the file up
    other.setxattr(other.resolve("/h"), b"user.k", b"v")
    other.close()
    other = fresh(vol)
    unlink(other, "/h")
    assert xattr_objects(vol) == []
    assert_clean(vol)


def test_xattrs_of_an_open_unlinked_file_go_at_release(vol: Volume) -> None:
    vol.write_file("/f", b"x")
    vol.setxattr(vol.resolve("/f"), b"user.k", b"v")
    ino = vol.resolve("/f")
    fh = vol.open(ino, os.O_RDONLY)
    unlink(vol, "/f")
    assert vol.getxattr(ino, b"user.k") == b"v", "an open file keeps its attributes"
    vol.release(fh)
    assert xattr_objects(vol) == []


def test_xattrs_removed_with_rmdir(vol: Volume) -> None:
    vol.mkdir_path("/d")
    vol.setxattr(vol.resolve("/d"), b"user.k", b"v")
    rmdir(vol, "/d")
    assert xattr_objects(vol) == []
    vol.mkdir_path("/d")  # the same id again (generation 0): no attributes come back
    assert vol.listxattr(vol.resolve("/d")) == []


def test_xattrs_of_a_file_replaced_by_rename_are_removed(vol: Volume) -> None:
    """The replaced file lost its last name: its xattr object must go with it (§9)."""
    vol.write_file("/a", b"A")
    vol.write_file("/b", b"B")
    vol.setxattr(vol.resolve("/b"), b"user.k", b"v")
    rename(vol, "/a", "/b")
    assert vol.listxattr(vol.resolve("/b")) == []
    assert xattr_objects(vol) == [], "rename over a file leaked the replaced file's xattrs"
    assert_clean(vol)


def test_xattrs_of_a_directory_replaced_by_rename_are_removed(vol: Volume) -> None:
    vol.mkdir_path("/d1")
    vol.mkdir_path("/d2")
    vol.setxattr(vol.resolve("/d2"), b"user.k", b"v")
    other = fresh(vol)  # never looked /d2 up
    rename(other, "/d1", "/d2")
    other.close()
    assert xattr_objects(vol) == [], \
        "rename over an empty directory leaked the replaced directory's xattrs"
    assert_clean(vol)


@pytest.mark.parametrize("how", ["O_TRUNC", "truncate(0)", "truncate(0) then grow"])
def test_xattrs_survive_truncation(vol: Volume, how: str) -> None:
    """Truncating a file does not touch its extended attributes (Linux), and a remount
    must see what the mounting volume saw."""
    vol.write_file("/f", b"content")
    vol.setxattr(vol.resolve("/f"), b"user.k", b"v")
    if how == "O_TRUNC":
        vol.write_file("/f", b"new content")
    else:
        truncate(vol, "/f", 0)
        if how.endswith("grow"):
            truncate(vol, "/f", 10)
    assert vol.getxattr(vol.resolve("/f"), b"user.k") == b"v"
    other = fresh(vol)
    try:
        got = other.listxattr(other.resolve("/f"))
    finally:
        other.close()
    assert got == [b"user.k"], f"after {how} a remount lost the file's xattrs"
    assert_clean(vol)


def test_symlinks_and_nodes_refuse_user_xattrs(vol: Volume) -> None:
    symlink(vol, "/s", b"t")
    mknod(vol, "/n")
    for path in ("/s", "/n"):
        ino = vol.resolve(path)
        assert errno_of(lambda i=ino: vol.setxattr(i, b"user.k", b"v")) == errno.EPERM
        assert errno_of(lambda i=ino: vol.getxattr(i, b"user.k")) == errno.ENODATA
        assert errno_of(lambda i=ino: vol.removexattr(i, b"user.k")) == errno.ENODATA
        assert vol.listxattr(ino) == []
    assert xattr_objects(vol) == []



# -- long-name sidecars, failures, kernel bookkeeping ------------------------------------------
@pytest.mark.parametrize("kind", ["file", "dir", "symlink", "fifo"])
def test_long_name_sidecar_lifecycle(vol: Volume, kind: str) -> None:
    """§6.3: a long entry has exactly one sidecar while it exists, under its stem."""
    long_a, long_b = "/" + "a" * 150, "/" + "b" * 150
    root = Path(vol.backing, vol.root_storage)

    def stems() -> list[str]:
        return sorted(n for n in os.listdir(root) if n != layout.BACKREF_NAME)

    make(vol, kind, long_a)
    (entry, sidecar) = sorted(stems(), key=lambda n: n.endswith(".s"))
    assert sidecar == entry.partition(".")[0] + ".s"
    assert Path(root, sidecar).read_text() == vol.names.encrypt(vol.names.root_id,
                                                                long_a[1:].encode())
    rename(vol, long_a, "/short")
    assert all(not n.endswith(".s") for n in stems()), "the old sidecar went with the name"
    rename(vol, "/short", long_b)
    assert len(stems()) == 2
    rename(vol, long_b, long_a)
    assert len(stems()) == 2
    (rmdir if kind == "dir" else unlink)(vol, long_a)
    assert stems() == []


def test_hard_links_with_long_names_keep_their_own_sidecars(vol: Volume) -> None:
    vol.write_file("/" + "a" * 150, b"x")
    link(vol, "/" + "a" * 150, "/" + "b" * 150)
    root = Path(vol.backing, vol.root_storage)
    assert sum(n.endswith(".s") for n in os.listdir(root)) == 2
    unlink(vol, "/" + "a" * 150)
    assert sum(n.endswith(".s") for n in os.listdir(root)) == 1
    assert vol.read_file("/" + "b" * 150) == b"x"
    assert_clean(vol)


@pytest.mark.parametrize("op", ["mkdir", "symlink", "mknod"])
@pytest.mark.parametrize("long_name", [False, True])
def test_a_failed_create_leaves_nothing_visible_behind(vol: Volume, monkeypatch, op: str,
                                                       long_name: bool) -> None:
    """The entry write fails (a full disk): the call fails with that errno, the name does
    not exist, no storage folder or sidecar stays behind (§11)."""
    name = "n" * 150 if long_name else "n"
    before = backing_snapshot(vol)
    real = vol.store.create_new

    def failing(rel: str, data: bytes, mode: int = 0o600):
        parsed = layout.parse(rel.rpartition("/")[2])
        if parsed is not None and parsed.kind is not None:
            raise OSError(errno.ENOSPC, "no space left")
        return real(rel, data, mode)

    monkeypatch.setattr(vol.store, "create_new", failing)
    call = {"mkdir": lambda: vol.mkdir(ROOT_INO, name.encode()),
            "symlink": lambda: vol.symlink(ROOT_INO, name.encode(), b"t"),
            "mknod": lambda: vol.mknod(ROOT_INO, name.encode(), stat.S_IFIFO | 0o644)}[op]
    assert errno_of(call) == errno.ENOSPC
    monkeypatch.undo()
    after = backing_snapshot(vol)
    leftover = {p for p in changed_paths(before, after)
                if not (after.get(p, 0) is None and not os.listdir(Path(vol.backing, p)))}
    assert leftover == set(), "only empty bucket folders may stay"
    assert vol.listdir("/") == []
    vol.mkdir_path("/" + name)  # and the name works afterwards
    assert_clean(vol)


def test_readdir_offsets_resume(vol: Volume) -> None:
    names = sorted(f"f{i:03d}" for i in range(30))
    for n in names:
        vol.write_file("/" + n, b"")
    dh = vol.opendir(ROOT_INO)
    full = list(vol.readdir(dh, 0))
    assert [n for n, _, _ in full[:2]] == [b".", b".."]
    assert sorted(n.decode() for n, _, _ in full[2:]) == names
    offsets = [off for _, _, off in full]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for k in (1, 2, 10, len(full) - 1, len(full)):
        rest = list(vol.readdir(dh, full[k - 1][2]))
        assert [n for n, _, _ in rest] == [n for n, _, _ in full[k:]], k
    vol.releasedir(dh)
    assert errno_of(lambda: list(vol.readdir(dh, 0))) == errno.EBADF


def test_lookup_counts_and_forget(vol: Volume) -> None:
    vol.write_file("/f", b"x")
    vol = fresh(vol)  # create() counted as a kernel lookup: start from none
    ino = vol.lookup(ROOT_INO, b"f").ino
    vol.lookup(ROOT_INO, b"f")
    vol.forget(ino, 1)
    assert vol.getattr(ino).size == 1, "one reference left"
    vol.forget(ino, 1)
    assert errno_of(lambda: vol.getattr(ino)) == errno.ESTALE
    assert vol.lookup(ROOT_INO, b"f").ino == ino, "the same number again"
    vol.forget(ROOT_INO, 100)
    assert stat.S_ISDIR(vol.getattr(ROOT_INO).mode)
    assert errno_of(lambda: vol.lookup(ROOT_INO, b"n" * 256)) == errno.ENAMETOOLONG
    assert vol.statfs()["f_namemax"] == 255


def test_initialize_refuses_a_non_empty_directory_or_a_file(tmp_path: Path) -> None:
    from cryptfs.errors import ConfigError

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    for where in ("full", "file"):
        with pytest.raises(ConfigError):
            Volume.initialize(str(tmp_path / where), b"pw")
    assert os.listdir(tmp_path / "full") == ["x"]


def test_unlock_without_the_root_storage_says_what_to_do(tmp_path: Path) -> None:
    from cryptfs.errors import ConfigError

    vol = new_volume(tmp_path / "v")
    shutil.rmtree(Path(vol.backing, vol.root_storage))
    with pytest.raises(ConfigError, match="fsck --repair"):
        fresh(vol)


def test_plain_and_backing_paths(vol: Volume) -> None:
    vol.mkdir_path("/a")
    vol.mkdir_path("/a/" + "b" * 200)
    vol.write_file("/a/" + "b" * 200 + "/c", b"")
    for path in ("/a", "/a/" + "b" * 200, "/a/" + "b" * 200 + "/c"):
        rel = vol.backing_path_of(path)
        assert vol.plain_path_of(rel) == path
    long_entry = vol.backing_path_of("/a/" + "b" * 200)
    sidecar = long_entry.rpartition(".")[0] + ".s"
    assert vol.plain_path_of(sidecar) == "/a/" + "b" * 200
    assert vol.plain_path_of(vol.storage_path_of("/a/" + "b" * 200)) == "/a/" + "b" * 200
    assert vol.backing_path_of("/") == vol.root_storage
    assert vol.plain_path_of(vol.root_storage) == "/"
    for bad in ("cryptfs.conf", "d", "x/ab/cd", vol.root_storage + "/cryptfs.back"):
        assert errno_of(lambda b=bad: vol.plain_path_of(b)) == errno.EINVAL
