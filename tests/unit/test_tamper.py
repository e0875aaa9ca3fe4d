"""Tampering evidence (format 2): random flips, byte deletions, truncations, renames and
deletions of every kind of backing object (file blocks and headers, names, directory
entries, back-references, long-name sidecars, symlinks, special nodes, xattr objects) are
detected, and no read ever returns something other than what was written. Entries moved
to another storage folder do not decrypt."""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from cryptfs import layout
from cryptfs.errors import IntegrityError
from cryptfs.fsck import Checker
from cryptfs.volume import Volume
from tests.unit.vfs import fresh, link, mknod, new_volume, symlink

BS = 4096
LONG = "long" * 50


def build_mixed_vault(root: Path) -> tuple[Volume, dict[str, tuple]]:
    """A vault with every kind of object, and what a reader must see (path -> view)."""
    vol = new_volume(root, block_size=BS)
    files = {
        "/empty": b"",
        "/tiny": b"x",
        "/exact": os.urandom(2 * BS),
        "/multi": os.urandom(5 * BS + 333),
        "/dir/nested": os.urandom(BS + 1),
        f"/dir/{LONG}": os.urandom(700),
    }
    vol.mkdir_path("/dir")
    vol.mkdir_path(f"/dir/sub-{LONG}")
    for path, data in files.items():
        vol.write_file(path, data)
    parent, name = vol.resolve_parent("/sparse")
    fh, _ = vol.create(parent, name, 0o644, os.O_RDWR)
    vol.write(fh, 4 * BS, b"tail")
    vol.release(fh)
    files["/sparse"] = bytes(4 * BS) + b"tail"
    link(vol, "/tiny", f"/dir/sub-{LONG}/tiny-link")
    files[f"/dir/sub-{LONG}/tiny-link"] = b"x"
    symlink(vol, "/link", b"dir/nested")
    symlink(vol, f"/dir/link-{LONG}", b"t" * 300)
    mknod(vol, "/fifo", stat.S_IFIFO | 0o640)
    mknod(vol, "/dir/dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    vol.setxattr(vol.resolve("/multi"), b"user.checksum", b"sha256:1234")
    vol.setxattr(vol.resolve("/dir"), b"user.color", b"blue")
    want: dict[str, tuple] = {"/": ("dir", {}), "/dir": ("dir", {b"user.color": b"blue"}),
                              f"/dir/sub-{LONG}": ("dir", {})}
    for path, data in files.items():
        want[path] = ("file", data, {b"user.checksum": b"sha256:1234"} if path == "/multi"
                      else {})
    want["/link"] = ("symlink", b"dir/nested")
    want[f"/dir/link-{LONG}"] = ("symlink", b"t" * 300)
    want["/fifo"] = ("node", stat.S_IFIFO | 0o640, 0)
    want["/dir/dev"] = ("node", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return vol, want


def view(vol: Volume, path: str) -> tuple:
    """What a reader sees at ``path``: the same shapes as ``build_mixed_vault``'s, or
    ("absent",) / ("error", errno-or-name)."""
    try:
        ino = vol.resolve(path)
        attr = vol.getattr(ino)
        if stat.S_ISDIR(attr.mode):
            return ("dir", {n: vol.getxattr(ino, n) for n in vol.listxattr(ino)})
        if stat.S_ISLNK(attr.mode):
            return ("symlink", vol.readlink(ino))
        if stat.S_ISREG(attr.mode):
            data = vol.read_file(path)
            ino = vol.resolve(path)
            return ("file", data, {n: vol.getxattr(ino, n) for n in vol.listxattr(ino)})
        return ("node", attr.mode, attr.rdev)
    except FileNotFoundError:
        return ("absent",)
    except IntegrityError:
        return ("error", "integrity")
    except OSError as exc:
        return ("error", errno.errorcode.get(exc.errno, exc.errno))


def visible_paths(vol: Volume) -> set[str]:
    """Every path a listing shows, tolerating undecodable directories."""
    out, todo = {"/"}, ["/"]
    while todo:
        top = todo.pop()
        try:
            entries = vol.scandir(top)
        except (IntegrityError, OSError):
            continue
        for name, attr in entries:
            path = top.rstrip("/") + "/" + name
            out.add(path)
            if stat.S_ISDIR(attr.mode):
                todo.append(path)
    return out


def targets(vol: Volume) -> list[str]:
    """Every backing object but the config (tests/unit/test_config.py has those)."""
    out = []
    for dirpath, _dirs, files in os.walk(vol.backing):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), vol.backing)
            if rel != "cryptfs.conf":
                out.append(rel)
    return sorted(out)


def kind_of(rel: str) -> str:
    name = rel.rpartition("/")[2]
    if rel.startswith("x/"):
        return "xattr"
    if name == layout.BACKREF_NAME:
        return "backref"
    parsed = layout.parse(name)
    assert parsed is not None, rel
    if parsed.kind is None:
        return "sidecar"
    return {"": "file", "d": "dir-entry", "l": "symlink", "n": "node"}[parsed.kind.value]


def mutate(backing: Path, rel: str, how: str, rng: random.Random) -> tuple[str, bytes]:
    """Apply one mutation; returns what to undo it with (the path now, original bytes)."""
    path = backing / rel
    original = path.read_bytes()
    raw = bytearray(original)
    if how == "flip":
        pos = rng.randrange(len(raw))
        raw[pos] ^= 1 << rng.randrange(8)
    elif how == "delete-byte":
        del raw[rng.randrange(len(raw))]
    elif how == "truncate":
        del raw[rng.randrange(len(raw)):]
    elif how == "rename":
        name = rel.rpartition("/")[2]
        stem, dot, suffix = name.partition(".")
        pos = rng.randrange(len(stem))
        alphabet = "abcdefghijklmnopqrstuvwxyz234567".replace(stem[pos], "")
        new = stem[:pos] + rng.choice(alphabet) + stem[pos + 1:] + dot + suffix
        newpath = path.with_name(new)
        path.rename(newpath)
        return str(newpath.relative_to(backing)), original
    elif how == "remove":
        path.unlink()
        return rel, original
    path.write_bytes(bytes(raw))
    return rel, original


def undo(backing: Path, rel_now: str, rel: str, original: bytes) -> None:
    now, path = backing / rel_now, backing / rel
    if now != path and now.exists():
        now.unlink()
    path.write_bytes(original)


def check_one(vol: Volume, want: dict[str, tuple], kind: str, how: str, rel: str) -> str:
    """Reads everything through a fresh Volume and fscks; returns how it was noticed."""
    other = fresh(vol)
    try:
        noticed = []
        for path, expected in want.items():
            got = view(other, path)
            if got == expected:
                continue
            if how == "remove" and kind == "xattr" and got == (*expected[:-1], {}):
                got = ("absent", "xattrs")  # deleting an object is deleting its content
            assert got[0] in ("absent", "error"), \
                f"{how} on {kind} {rel}: {path} read as {got!r}, wrote {expected!r}"
            noticed.append(path)
        visible = visible_paths(other)
        extra = visible - set(want)
        assert not extra, f"{how} on {kind} {rel} made new names appear: {extra}"
        noticed += sorted(set(want) - visible)  # hidden from listings (a bad sidecar)
        report = Checker(other).run()
    finally:
        other.close()
    if how in ("remove",):
        return "read" if noticed else ("fsck" if not report.ok else "none")
    assert not report.ok, f"fsck missed {how} on {kind} {rel}"
    if kind != "backref":  # the mount never reads back-references (FORMAT.md §5.4)
        assert noticed, f"reading everything missed {how} on {kind} {rel}"
    return "read" if noticed else "fsck"


def run_mutations(tmp_path: Path, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    vol, want = build_mixed_vault(tmp_path / "v")
    backing = Path(vol.backing)
    objects = targets(vol)
    by_kind: dict[str, list[str]] = {}
    for rel in objects:
        by_kind.setdefault(kind_of(rel), []).append(rel)
    assert set(by_kind) == {"file", "dir-entry", "backref", "sidecar", "symlink", "node",
                            "xattr"}, by_kind
    stats: dict[str, int] = {}
    for _ in range(count):
        kind = rng.choice(sorted(by_kind))
        rel = rng.choice(by_kind[kind])
        how = rng.choice(["flip", "flip", "delete-byte", "truncate", "rename", "remove"])
        if how == "rename" and kind in ("backref", "xattr"):
            how = "flip"
        rel_now, original = mutate(backing, rel, how, rng)
        try:
            noticed = check_one(vol, want, kind, how, rel)
        finally:
            undo(backing, rel_now, rel, original)
        key = f"{kind}/{how}/{noticed}"
        stats[key] = stats.get(key, 0) + 1
    other = fresh(vol)
    assert {p: view(other, p) for p in want} == want
    assert Checker(other).run().ok
    return stats


def test_random_mutations_are_all_detected(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTFS_FUZZ_SEED", "1234"))
    stats = run_mutations(tmp_path, 600, seed)
    print(f"tamper fuzz seed={seed}: {sorted(stats.items())}")
    assert sum(stats.values()) == 600


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4 minutes on 2 cores
def test_random_mutations_heavy(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTFS_FUZZ_SEED", "98765"))
    stats = run_mutations(tmp_path, 50000, seed)
    print(f"tamper fuzz seed={seed}: {sorted(stats.items())}")
    assert sum(stats.values()) == 50000


@pytest.mark.parametrize("kind", ["dir-entry", "backref", "sidecar", "symlink", "node",
                                  "xattr"])
def test_every_single_bit_flip_of_small_objects(tmp_path: Path, kind: str) -> None:
    """Exhaustive for one object of each small kind: every bit of every byte."""
    vol, want = build_mixed_vault(tmp_path / "v")
    backing = Path(vol.backing)
    rel = next(r for r in targets(vol) if kind_of(r) == kind)
    original = (backing / rel).read_bytes()
    owners = {vol.objects.xattr_storage_name(k, i): (k, i) for k, i in (
        (b"f", vol._xattr_owner(vol._node(vol.resolve("/multi")))[1]),
        (b"d", vol._dir(vol.resolve("/dir")).dir_id))}
    owner = owners.get(rel.replace("x/", "", 1).replace("/", ""))
    opener = {
        "xattr": lambda b: vol.objects.open_xattrs(*owner, b),
        "dir-entry": vol.objects.open_dirref,
        "backref": lambda b: vol.objects.open_backref(rel.split("/")[1] + rel.split("/")[2],
                                                      b),
        "symlink": vol.objects.open_symlink,
        "node": vol.objects.open_node,
    }.get(kind)
    if kind == "xattr":
        assert owner is not None and opener(original)
    for pos in range(len(original)):
        for bit in range(8):
            raw = bytearray(original)
            raw[pos] ^= 1 << bit
            if opener is not None:
                with pytest.raises(IntegrityError):
                    opener(bytes(raw))
            elif kind == "sidecar" and raw.isascii():
                assert layout.long_stem(raw.decode("ascii")) != rel.rpartition("/")[2][:-2]
    # and end to end for a sample of positions
    for pos in range(0, len(original), max(1, len(original) // 8)):
        raw = bytearray(original)
        raw[pos] ^= 0x20
        (backing / rel).write_bytes(bytes(raw))
        check_one(vol, want, kind, "flip", rel)
    (backing / rel).write_bytes(original)


def test_corrupted_special_node_is_an_error(tmp_path: Path) -> None:
    """A MAC failure is EIO (project rule): a tampered device node must not show as a
    FIFO with mode 0000."""
    vol, want = build_mixed_vault(tmp_path / "v")
    rel = Path(vol.backing, vol.backing_path_of("/dir/dev"))
    raw = bytearray(rel.read_bytes())
    raw[-1] ^= 1
    rel.write_bytes(bytes(raw))
    other = fresh(vol)
    got = view(other, "/dir/dev")
    assert got[0] == "error", f"a tampered node reads as {got}, wrote {want['/dir/dev']}"


def test_cut_points_of_a_multi_block_file(tmp_path: Path) -> None:
    """Every cut near the header and the block boundaries, every 5th byte elsewhere
    (test_content.py checks every backing size arithmetically)."""
    vol = new_volume(tmp_path / "v", block_size=BS)
    data = os.urandom(2 * BS + 100)  # header, two full blocks, a short last block
    vol.write_file("/f", data)
    path = Path(vol.backing, vol.backing_path_of("/f"))
    full = path.read_bytes()
    edges = {18 + i * vol.content.stored_block for i in range(3)}
    cuts = [c for c in range(len(full))
            if c % 5 == 0 or c < 100 or any(abs(c - e) <= 41 for e in edges)]
    for cut in cuts:
        path.write_bytes(full[:cut])
        with pytest.raises(IntegrityError):
            vol.read_file("/f")
    path.write_bytes(full)
    assert vol.read_file("/f") == data


def test_swapped_blocks_and_copied_bodies_fail(tmp_path: Path) -> None:
    vol = new_volume(tmp_path / "v", block_size=BS)
    sb = vol.content.stored_block
    vol.write_file("/f", os.urandom(3 * BS))
    vol.write_file("/g", os.urandom(3 * BS))
    pf = Path(vol.backing, vol.backing_path_of("/f"))
    pg = Path(vol.backing, vol.backing_path_of("/g"))
    raw = bytearray(pf.read_bytes())
    b0, b1 = raw[18:18 + sb], raw[18 + sb:18 + 2 * sb]
    raw[18:18 + sb], raw[18 + sb:18 + 2 * sb] = b1, b0
    pf.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        vol.read_file("/f")
    pf.write_bytes(pf.read_bytes()[:18] + pg.read_bytes()[18:])
    with pytest.raises(IntegrityError):
        vol.read_file("/f")


def test_tampered_block_gives_integrity_error_only_there(tmp_path: Path) -> None:
    vol = new_volume(tmp_path / "v", block_size=BS)
    data = os.urandom(3 * BS + 100)
    vol.write_file("/f", data)
    path = Path(vol.backing, vol.backing_path_of("/f"))
    raw = bytearray(path.read_bytes())
    raw[vol.content.block_offset(1) + 50] ^= 1
    path.write_bytes(bytes(raw))
    fh = vol.open(vol.resolve("/f"), os.O_RDONLY)
    assert vol.read(fh, 0, BS) == data[:BS]
    assert vol.read(fh, 2 * BS, BS) == data[2 * BS:3 * BS]
    with pytest.raises(IntegrityError):
        vol.read(fh, BS + 5, 10)
    vol.release(fh)


# -- entries moved to another storage folder ----------------------------------------------
@pytest.mark.parametrize("mode", ["move", "copy"])
def test_entries_moved_to_another_storage_folder_do_not_decrypt(tmp_path: Path,
                                                                 mode: str) -> None:
    vol, _want = build_mixed_vault(tmp_path / "v")
    src = Path(vol.backing, vol.storage_path_of("/dir"))
    dst = Path(vol.backing, vol.root_storage)
    before_root, before_dir = sorted(vol.listdir("/")), sorted(vol.listdir("/dir"))
    moved = [n for n in os.listdir(src) if n != layout.BACKREF_NAME]
    assert {n.rpartition(".")[2] for n in moved if "." in n} >= {"d", "l", "n", "s"}
    for name in moved:
        (shutil.move if mode == "move" else shutil.copy2)(src / name, dst / name)
    other = fresh(vol)
    assert sorted(other.listdir("/")) == before_root
    assert sorted(other.listdir("/dir")) == (before_dir if mode == "copy" else [])
    for name in ("nested", LONG, "dev", "link-" + LONG, "sub-" + LONG):
        assert errno_of_lookup(other, "/" + name) == errno.ENOENT
    report = Checker(other).run()
    names = [p for p in report.problems if p.kind == "name"]
    assert len(names) == len([n for n in moved if not n.endswith(".s")])
    if mode == "move":  # the sub-directory's storage lost its entry
        assert [p.kind for p in report.problems if p.kind != "name"] == ["orphan-storage"]


def errno_of_lookup(vol: Volume, path: str) -> int:
    try:
        vol.resolve(path)
    except OSError as exc:
        return exc.errno
    return 0


def test_back_reference_swapped_between_folders_is_refused(tmp_path: Path) -> None:
    vol, _ = build_mixed_vault(tmp_path / "v")
    a = Path(vol.backing, vol.storage_path_of("/dir"))
    b = Path(vol.backing, vol.storage_path_of(f"/dir/sub-{LONG}"))
    ra, rb = (a / layout.BACKREF_NAME).read_bytes(), (b / layout.BACKREF_NAME).read_bytes()
    (a / layout.BACKREF_NAME).write_bytes(rb)
    (b / layout.BACKREF_NAME).write_bytes(ra)
    other = fresh(vol)
    for storage in (vol.storage_path_of("/dir"), vol.storage_path_of(f"/dir/sub-{LONG}")):
        with pytest.raises(IntegrityError):
            other.read_backref(storage)
    kinds = [p.kind for p in Checker(other).run().problems]
    assert kinds == ["backref", "backref"]


def test_directory_entry_pointing_elsewhere_is_a_duplicate(tmp_path: Path) -> None:
    """A .d entry replaced by a copy of another directory's entry must not show that
    directory twice without fsck noticing."""
    vol, _ = build_mixed_vault(tmp_path / "v")
    vol.mkdir_path("/other")
    e_other = Path(vol.backing, vol.backing_path_of("/other"))
    e_dir = Path(vol.backing, vol.backing_path_of("/dir"))
    e_other.write_bytes(e_dir.read_bytes())
    other = fresh(vol)
    kinds = sorted(p.kind for p in Checker(other).run().problems)
    assert "duplicate-entry" in kinds and "orphan-storage" in kinds
