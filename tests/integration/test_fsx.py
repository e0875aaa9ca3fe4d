"""Random operations on the mount vs a plain directory (tests/fsx.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Mount
from tests.fsx import Fsx

pytestmark = [pytest.mark.mount]


@pytest.mark.timeout(300)
def test_fsx(mounted: Mount, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTFS_FSX_SEED", "20261127"))
    ref = tmp_path / "ref"
    ref.mkdir()
    Fsx(mounted.mnt, ref, seed).run(int(os.environ.get("CRYPTFS_FSX_OPS", "3000")))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fsx_heavy(mounted: Mount, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    for seed in range(5):
        Fsx(mounted.mnt, ref, 1000 + seed).run(10000)
