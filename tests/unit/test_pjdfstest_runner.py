"""The pjdfstest harness itself (tests/posix): TAP counting, timeouts, table, exit status.

No pjdfstest, FUSE or root needed: fake ``*.t`` files print TAP into a plain directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.posix import run_pjdfstest as runner
from tests.posix.tap import parse_tap, ranges


def test_parse_counts_failures_todo_skip_and_missing():
    text = "\n".join([
        "1..7",
        "ok 1",
        "not ok 2 - tried 'link a b', expected 0, got EPERM",
        "not ok 3 # TODO Linux doesn't clear the SGID bit",
        "ok 4 # SKIP no chflags",
        "garbage from stderr",
        "ok 6",
    ])
    res = parse_tap("x/00.t", text)
    assert res.assertions == 7
    assert res.failed_numbers == [2, 5, 7]  # 5 and 7 never printed: missing
    assert res.failures[0].message == "tried 'link a b', expected 0, got EPERM"
    assert res.failures[1].message == "missing"
    assert res.todo == [3]
    assert res.skipped == 1
    assert res.not_ok == 3
    assert res.error is None


def test_parse_without_output_is_an_error_not_a_pass():
    res = parse_tap("x/00.t", "sh: cannot open\n")
    assert res.error == "no TAP output"
    assert res.not_ok == 1


def test_parse_more_lines_than_plan_counts_them():
    res = parse_tap("x/00.t", "1..1\nok 1\nnot ok 2 - extra\n")
    assert res.assertions == 2
    assert res.failed_numbers == [2]


def test_ranges():
    assert ranges([10, 9, 1, 2, 3, 7, 3]) == "1-3,7,9-10"
    assert ranges([]) == ""


def _fake_suite(tmp_path: Path, scripts: dict[str, str]) -> Path:
    root = tmp_path / "pjdfstest"
    for name, body in scripts.items():
        path = root / "tests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
    binary = root / "pjdfstest"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return root


def test_file_runs_in_fresh_0755_dir_which_is_removed(tmp_path):
    suite = _fake_suite(tmp_path, {"a/00.t": 'echo 1..1; stat -c "ok 1 # %a %n" .; touch x\n'})
    target = tmp_path / "target"
    target.mkdir()
    fr = runner.FileRunner(suite / "tests", target, timeout=30, out_dir=None)
    res = fr.run(0, "a/00.t")
    assert res.not_ok == 0 and res.assertions == 1
    assert os.listdir(target) == []  # the per-file directory is gone


def test_timeout_kills_the_file_and_counts_missing(tmp_path):
    # The test forks a grandchild that would outlive a plain kill of the shell.
    suite = _fake_suite(tmp_path, {"slow/00.t": "echo 1..3; echo ok 1; sleep 60 & wait\n"})
    target = tmp_path / "target"
    target.mkdir()
    fr = runner.FileRunner(suite / "tests", target, timeout=1, out_dir=None)
    started = time.monotonic()
    res = fr.run(0, "slow/00.t")
    assert time.monotonic() - started < 30  # not the 60 s of the sleep
    assert res.error is not None and res.error.startswith("timeout")
    assert res.failed_numbers == [2, 3]


@pytest.mark.skipif(os.geteuid() != 0, reason="the runner refuses to run unless root")
def test_main_table_and_exit_status(tmp_path, capsys):
    suite = _fake_suite(tmp_path, {
        "good/00.t": "echo 1..2; echo ok 1; echo ok 2\n",
        "bad/00.t": "echo 1..3; echo ok 1; echo 'not ok 2 - tried x'; echo 'not ok 3 # TODO'\n",
    })
    where = tmp_path / "plain"
    where.mkdir()
    rc = runner.main(["--pjdfstest", str(suite), "--target", str(where),
                      "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 1
    assert [line.split()[:3] for line in out.splitlines() if "/00.t" in line] == \
        [["bad/00.t", "3", "1"], ["good/00.t", "2", "0"]]
    assert "TOTAL (2 files)" in out
    assert os.listdir(where) == []  # the fresh subdirectory was removed
    # the same failure on a --compare filesystem only does not fail the run
    rc = runner.main(["--pjdfstest", str(suite), "--only", "good", "--target", str(where),
                      "--compare", str(where)])
    assert rc == 0
