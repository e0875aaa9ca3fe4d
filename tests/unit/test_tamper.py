"""Tampering evidence: random flips, deletions and truncations of backing files are all
detected, and no read ever returns bytes that differ from what was written."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cryptfs.errors import IntegrityError
from cryptfs.fsck import Checker
from cryptfs.volume import Volume
from tests.conftest import PASSWORD

BS = 4096


def build_mixed_vault(root: Path) -> tuple[Volume, dict[str, bytes]]:
    vol, _ = Volume.initialize(str(root), PASSWORD.encode(), block_size=BS)
    files = {
        "/empty": b"",
        "/tiny": b"x",
        "/exact": os.urandom(2 * BS),
        "/multi": os.urandom(5 * BS + 333),
        "/dir/nested": os.urandom(BS + 1),
        "/dir/" + "long" * 50: os.urandom(700),
    }
    vol.mkdir("/dir")
    for path, data in files.items():
        vol.write_file(path, data)
    fh = vol.create("/sparse", 0o644, os.O_RDWR)
    vol.write(fh, b"tail", 4 * BS)
    vol.release(fh)
    files["/sparse"] = bytes(4 * BS) + b"tail"
    return vol, files


def read_all(vol: Volume, files: dict[str, bytes]) -> tuple[int, int]:
    """(reads that failed, reads that succeeded); asserts successes are exact."""
    failed = ok = 0
    vol.mapper.clear_caches()
    for path, data in files.items():
        try:
            got = vol.read_file(path)
        except (IntegrityError, OSError):
            failed += 1
            continue
        assert got == data, f"{path}: tampering produced wrong plaintext"
        ok += 1
    return failed, ok


def content_files(vol: Volume, files: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(p, vol.mapper.path(p)) for p in files]


def run_mutations(tmp_path: Path, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    vol, files = build_mixed_vault(tmp_path / "v")
    targets = content_files(vol, files)
    stats = {"mutations": 0, "detected": 0, "flip": 0, "delete": 0, "truncate": 0}
    for _ in range(count):
        plain, backing = rng.choice(targets)
        original = Path(backing).read_bytes()
        kind = rng.choice(["flip", "delete", "truncate"])
        raw = bytearray(original)
        if kind == "flip":
            pos = rng.randrange(len(raw))
            raw[pos] ^= 1 << rng.randrange(8)
        elif kind == "delete":
            del raw[rng.randrange(len(raw))]
        else:
            del raw[rng.randrange(len(raw)):]
        Path(backing).write_bytes(bytes(raw))
        try:
            vol.read_file(plain)
            got = vol.read_file(plain)
            assert got == files[plain], f"seed {seed}: {kind} on {plain} gave wrong data"
        except (IntegrityError, OSError):
            stats["detected"] += 1
        stats["mutations"] += 1
        stats[kind] += 1
        Path(backing).write_bytes(original)
    failed, ok = read_all(vol, files)
    assert failed == 0 and ok == len(files)
    return stats


def test_random_mutations_are_all_detected(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTFS_FUZZ_SEED", "1234"))
    stats = run_mutations(tmp_path, 3000, seed)
    print(f"tamper fuzz seed={seed}: {stats}")
    assert stats["detected"] == stats["mutations"], stats


@pytest.mark.slow
def test_random_mutations_heavy(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTFS_FUZZ_SEED", "98765"))
    stats = run_mutations(tmp_path, 50000, seed)
    print(f"tamper fuzz seed={seed}: {stats}")
    assert stats["detected"] == stats["mutations"], stats


def test_every_cut_point_of_a_multi_block_file(tmp_path: Path) -> None:
    vol, _ = Volume.initialize(str(tmp_path / "v"), PASSWORD.encode(), block_size=BS)
    data = os.urandom(3 * BS + 100)
    vol.write_file("/f", data)
    path = Path(vol.mapper.path("/f"))
    full = path.read_bytes()
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        with pytest.raises(IntegrityError):
            vol.read_file("/f")
    path.write_bytes(full)
    assert vol.read_file("/f") == data


def test_replaced_directory_iv_hides_names(tmp_path: Path) -> None:
    vol, _files = build_mixed_vault(tmp_path / "v")
    ivfile = Path(vol.mapper.path("/dir")) / "cryptfs.diriv"
    os.chmod(ivfile, 0o644)
    ivfile.write_bytes(os.urandom(16))
    vol.mapper.clear_caches()
    assert vol.listdir("/dir") == []
    report = Checker(vol).run()
    assert {p.kind for p in report.problems} == {"name"}
    assert len(report.problems) == 2


def test_fsck_clean_vault_and_every_problem_kind(tmp_path: Path) -> None:
    vol, _files = build_mixed_vault(tmp_path / "v")
    assert Checker(vol).run().ok
    backing = Path(vol.backing)
    multi = Path(vol.mapper.path("/multi"))
    raw = bytearray(multi.read_bytes())
    raw[18 + 2 * (BS + 40) + 5] ^= 4
    multi.write_bytes(bytes(raw))
    (backing / "foreign.txt").write_text("x")
    (backing / "cryptfs.L.orphan.name").write_text("x")
    (backing / "cryptfs.0123.tmp").mkdir()
    os.symlink("garbage", backing / vol.names.encrypt(vol.names.root_iv(), b"badlink"))
    nested = Path(vol.mapper.path("/dir/nested"))
    nested.write_bytes(nested.read_bytes()[: 18 + BS + 40])  # cut at a block boundary
    report = Checker(vol).run()
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["content", "content", "leftover-temp", "name", "orphan-sidecar",
                     "symlink"], kinds
    by_plain = {p.plain_path: p for p in report.problems if p.plain_path}
    assert "block 2 failed authentication" in by_plain["/multi"].detail
    assert "/dir/nested" in by_plain
    quarantine = tmp_path / "q"
    report = Checker(vol, quarantine=str(quarantine)).run()
    assert all(p.quarantined_to for p in report.problems)
    assert Checker(vol).run().ok
    assert sorted(vol.listdir("/")) == ["dir", "empty", "exact", "sparse", "tiny"]


def test_fsck_refuses_quarantine_inside_vault(tmp_path: Path) -> None:
    vol, _ = build_mixed_vault(tmp_path / "v")
    with pytest.raises(ValueError):
        Checker(vol, quarantine=str(Path(vol.backing) / "q"))
