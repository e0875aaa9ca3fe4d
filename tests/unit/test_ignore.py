"""Sync ignore rules (issue 13, item 4): gitignore semantics on plaintext paths, the
defaults, and how ignored paths become rclone filter rules over backing paths."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from cryptfs import ignore
from cryptfs.ignore import IGNORE_FILE, Rules
from cryptfs.sync import ignore as sync_ignore
from cryptfs.sync import rclone_binary


def ignored(rules: Rules, path: str, is_dir: bool = False) -> bool:
    return rules.check(path, is_dir).ignored


# -- the defaults ---------------------------------------------------------------------------
@pytest.mark.parametrize("path,is_dir", [
    (".Trash-1000", True), ("sub/.Trash-1000", True), (".Trash", True), (".Trashes", True),
    (".report.odt.swp", False), ("docs/.notes.txt.swo", False), (".#notes.txt", False),
    ("#notes.txt#", False), ("notes.txt~", False), (".~lock.report.odt#", False),
    ("~$report.docx", False), (".goutputstream-ABC123", False), (".DS_Store", False),
    ("photos/Thumbs.db", False), (".Trash-1000/files/old.txt", False),
])
def test_defaults_ignore_trash_swap_and_lock_files(path: str, is_dir: bool) -> None:
    rules = Rules(None)
    assert ignored(rules, path, is_dir)


@pytest.mark.parametrize("path,is_dir", [
    ("notes.txt", False), ("movie.swf", False), ("report.swp", False), ("Trash", True),
    (".Trash-1000", False),  # a file of that name is no trash folder
    ("lost+found", True), ("node_modules", True), (".venv", True), (IGNORE_FILE, False),
    ("a#b", False), ("~notes", False),
])
def test_defaults_keep_user_data(path: str, is_dir: bool) -> None:
    assert not ignored(Rules(None), path, is_dir)


def test_negation_overrides_a_default_and_bang_star_turns_them_all_off() -> None:
    rules = Rules("!.DS_Store\n")
    assert not ignored(rules, ".DS_Store")
    assert ignored(rules, "x.txt~")
    verdict = rules.check(".DS_Store", False)
    assert verdict.rule.source == IGNORE_FILE and verdict.rule.negated
    rules = Rules("!*\nbuild/\n")
    assert not ignored(rules, ".Trash-1000", True)
    assert not ignored(rules, ".notes.swp") and not ignored(rules, "x~")
    assert ignored(rules, "build", True)  # rules after '!*' still apply


def test_directory_patterns_and_nothing_reincluded_inside_an_ignored_directory() -> None:
    rules = Rules("build/\n!build/keep.txt\nlogs/**\n!logs/important.log\n")
    assert ignored(rules, "build", True) and ignored(rules, "src/build", True)
    assert not ignored(rules, "build", False)  # a file named build
    verdict = rules.check("build/keep.txt", False)
    assert verdict.ignored and verdict.parent == "build"  # as git: cannot re-include
    # 'logs/**' matches what is inside logs, not logs itself: re-including works there
    assert not ignored(rules, "logs", True)
    assert ignored(rules, "logs/a.log") and not ignored(rules, "logs/important.log")


def test_anchored_patterns() -> None:
    rules = Rules("/top.txt\ndocs/*.tmp\n/only-root/\n")
    assert ignored(rules, "top.txt") and not ignored(rules, "sub/top.txt")
    assert ignored(rules, "docs/x.tmp")
    assert not ignored(rules, "docs/sub/x.tmp") and not ignored(rules, "sub/docs/x.tmp")
    assert ignored(rules, "only-root", True) and not ignored(rules, "a/only-root", True)


def test_names_with_spaces_and_unicode() -> None:
    rules = Rules("my notes.txt\ntrailing\\ \nünïcode*\n日本語/\n\\#literal\n\\!bang\n")
    assert ignored(rules, "my notes.txt") and ignored(rules, "a/my notes.txt")
    assert ignored(rules, "trailing ") and not ignored(rules, "trailing")
    assert ignored(rules, "ünïcode.txt") and not ignored(rules, "unicode.txt")
    assert ignored(rules, "写真/日本語", True) and not ignored(rules, "日本語", False)
    assert ignored(rules, "#literal") and ignored(rules, "!bang")


def test_the_rules_file_itself_is_never_ignored() -> None:
    rules = Rules("*\n")
    assert not ignored(rules, IGNORE_FILE) and not rules.ignores(IGNORE_FILE, False)
    assert ignored(rules, "sub/" + IGNORE_FILE)  # only the vault root's is the rules


def test_invalid_lines_are_reported_and_skipped() -> None:
    rules = Rules("# comment\n\n!\na[z-a]\ngood.txt\n")
    assert ignored(rules, "good.txt")
    assert len(rules.problems) == 2
    assert all(p.startswith(f"{IGNORE_FILE}:") for p in rules.problems)


def test_rule_descriptions_name_their_source_and_line() -> None:
    rules = Rules("# mine\nbuild/\n")
    assert rules.check("build", True).rule.describe() == f"{IGNORE_FILE}:2: build/"
    assert rules.check(".DS_Store", False).rule.describe().startswith("default:")


# -- against git itself ---------------------------------------------------------------------
_PATTERNS = ["*.swp", "build/", "/top.txt", "a b.txt", "ünï*", "!keep.swp", "docs/*.tmp",
             "**/cache/", "logs/**", "!logs/important.log", "*~", "foo/**/bar", "x/", "!x/y",
             "[abc].dat", "!*/", "deep/a/b/", "*", "!*", "**/", "*/", "!/*/", "/*",
             "**/logs/**", "!build/", "x.swp/", "!a", "a/", "!**/important.log", "z/"]
_TREE = ["top.txt", "x/top.txt", "a.swp", "keep.swp", "build/o.o", "src/build/o", "build.txt",
         "a b.txt", "d/a b.txt", "ünïcode.txt", "docs/x.tmp", "docs/sub/x.tmp", "a/cache/z",
         "cache/z", "logs/a.log", "logs/important.log", "logs/s/important.log",
         "logs/x/logs/q", "n~", "foo/bar", "foo/a/b/bar", "foo/a/bar/z", "x/y", "x/z",
         "a.dat", "d.dat", "deep/a/b/c", "z/deep/a/b/c", "x.swp/q", "q/x.swp/r", "a/b.swp",
         "z/a/y"]


def _walk_ignored(rules: Rules) -> set[str]:
    """The files a tree walk that never enters an ignored directory leaves out."""
    out: set[str] = set()

    def walk(prefix: str, entries: list[str]) -> None:
        dirs: dict[str, list[str]] = {}
        for e in entries:
            head, _, rest = e.partition("/")
            if rest:
                dirs.setdefault(head, []).append(rest)
            elif rules.ignores(prefix + head, False):
                out.add(prefix + head)
        for d, sub in dirs.items():
            if rules.ignores(prefix + d, True):
                out.update(f"{prefix}{d}/{s}" for s in sub)
            else:
                walk(f"{prefix}{d}/", sub)
    walk("", _TREE)
    return out


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_rules_decide_exactly_as_git_does(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ignore, "DEFAULT_RULES", "")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for f in _TREE:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_bytes(b"")
    rng = random.Random(13)
    for _ in range(120):
        patterns = rng.sample(_PATTERNS, rng.randint(1, 6))
        (repo / ".gitignore").write_text("\n".join(patterns) + "\n")
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "--others", "--ignored",
                              "--exclude-standard", "-z"], capture_output=True, text=True,
                             check=True, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"})
        expected = {p for p in out.stdout.split("\0") if p and p != ".gitignore"}
        assert _walk_ignored(Rules("\n".join(patterns))) == expected, patterns


# -- backing paths as rclone filter rules ---------------------------------------------------
def test_filter_rules_match_exactly_the_listed_paths(tmp_path: Path) -> None:
    """Nested {a,b} groups, odd characters escaped (foreign conflict copies), trailing
    blanks kept, a kept back-reference inside an excluded folder; checked by rclone."""
    tree = tmp_path / "tree"
    odd = ["x{y}, [z] *?.d (host's conflicted copy)", "trailing space ", "a\\b"]
    names = [f"d/ab/{'c' * 30}/{n}" for n in ["e" * 52, "f" * 52 + ".d", *odd, "keep"]]
    names += [f"d/ab/{'g' * 30}/{n}" for n in ["cryptfs.back", "h" * 52]]
    names += [f"d/cd/{'i' * 30}/cryptfs.back", f"x/ab/{'j' * 30}", "cryptfs.conf",
              f"d/ab/{'c' * 30}/cryptfs.1234.tmp"]
    for n in names:
        (tree / n).parent.mkdir(parents=True, exist_ok=True)
        (tree / n).write_bytes(b"x")
    files = {f"d/ab/{'c' * 30}/{n}" for n in ["e" * 52, *odd]} | {f"x/ab/{'j' * 30}"}
    folders = {f"d/ab/{'g' * 30}"}
    keep = {f"d/ab/{'g' * 30}/cryptfs.back"}
    plan = sync_ignore.Plan(files, folders, keep, walk=None)
    path = sync_ignore.write_filter(plan, tmp_path)
    assert path is not None
    out = subprocess.run([rclone_binary(), "lsf", "-R", "--files-only", "--filter-from",
                          str(path), str(tree)], capture_output=True, text=True, check=True,
                         env={**os.environ, "RCLONE_CONFIG": "/dev/null"})
    listed = set(out.stdout.splitlines())
    expected = {n for n in names if n not in files and not n.startswith(f"d/ab/{'g' * 30}/")}
    expected |= keep
    expected -= {"cryptfs.conf", f"d/ab/{'c' * 30}/cryptfs.1234.tmp"}  # format excludes
    assert listed == expected


def test_filter_lines_stay_short_for_many_paths() -> None:
    rng = random.Random(1)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    folders = {"d/" + "".join(rng.choice(alphabet) for _ in range(2)) + "/" +
               "".join(rng.choice(alphabet) for _ in range(30)) for _ in range(5000)}
    lines = sync_ignore.filter_lines(sync_ignore.Plan(set(), folders, set(), walk=None))
    rules = [line for line in lines if line.startswith("- /d/")]
    assert 1 < len(rules) < 20
    assert all(len(line) < 60000 for line in lines)


# -- walking a vault ------------------------------------------------------------------------
def test_walk_finds_entries_storage_folders_sidecars_and_xattrs(volume) -> None:
    vol = volume
    vol.write_file("/" + IGNORE_FILE, b"cache/\n*.log\n")
    vol.mkdir_path("/cache")
    vol.mkdir_path("/cache/sub")
    vol.write_file("/cache/sub/blob", b"x")
    vol.setxattr(vol.resolve("/cache/sub"), b"user.a", b"1")
    vol.setxattr(vol.resolve("/cache/sub/blob"), b"user.b", b"1")
    long_name = "l" * 150 + ".log"
    vol.write_file("/" + long_name, b"long")
    vol.write_file("/kept.txt", b"k")
    vol.setxattr(vol.resolve("/kept.txt"), b"user.c", b"1")
    vol.write_file("/linked.log", b"hard")
    vol.setxattr(vol.resolve("/linked.log"), b"user.d", b"1")
    vol.link(vol.resolve("/linked.log"), 1, b"linked.txt")
    found = sync_ignore.walk(vol, sync_ignore.read_rules(vol))
    by_path = {i.path: i for i in found.ignored}
    assert sorted(by_path) == sorted(["/cache", "/" + long_name, "/linked.log"])
    cache = by_path["/cache"]
    assert cache.is_dir and cache.rule == ".cryptfsignore:1: cache/"
    assert cache.entry == vol.backing_path_of("/cache")
    assert cache.folders == {vol.storage_path_of("/cache"), vol.storage_path_of("/cache/sub")}
    xattr_objects = {p for p in cache.files if p.startswith("x/")}
    assert len(xattr_objects) == 2  # of /cache/sub and of /cache/sub/blob
    long_item = by_path["/" + long_name]
    sidecars = [p for p in long_item.files if p.endswith(".s")]
    assert len(sidecars) == 1 and long_item.entry in long_item.files
    # a hard link with a synced name keeps its attributes in the sync
    assert by_path["/linked.log"].files == {by_path["/linked.log"].entry}
    assert vol.backing_path_of("/kept.txt") in found.synced_entries
    assert vol.storage_path_of("/cache") not in found.synced_folders


def test_an_unreadable_rules_file_stops_the_sync(volume) -> None:
    vol = volume
    vol.write_file("/" + IGNORE_FILE, b"secret/\n")
    rel = vol.backing_path_of("/" + IGNORE_FILE)
    raw = bytearray(Path(vol.backing, rel).read_bytes())
    raw[-1] ^= 1
    Path(vol.backing, rel).write_bytes(bytes(raw))
    vol.clear_caches()
    with pytest.raises(sync_ignore.SyncError, match="not syncing"):
        sync_ignore.read_rules(vol)


def test_plan_remembers_what_the_remote_holds_and_hides_it_after_a_local_delete(
        volume, tmp_path: Path) -> None:
    vol = volume
    vol.write_file("/" + IGNORE_FILE, b"*.log\n")
    vol.write_file("/old.log", b"uploaded before the rule")
    vol.write_file("/new.log", b"never uploaded")
    old, new = vol.backing_path_of("/old.log"), vol.backing_path_of("/new.log")
    listing = tmp_path / "x.path2.lst"
    listing.write_text(f'# bisync listing v1\n- 58 - - 2026-01-01T00:00:00Z "{old}"\n')
    state = tmp_path / "state"
    plan = sync_ignore.plan(vol, state, [listing])
    assert {old, new} <= plan.files
    vol.unlink_path("/old.log")
    vol.unlink_path("/new.log")
    plan = sync_ignore.plan(vol, state, [])
    assert old in plan.files and new not in plan.files  # the remote's copy stays hidden
    vol.write_file("/" + IGNORE_FILE, b"")
    plan = sync_ignore.plan(vol, state, [])
    assert old not in plan.files  # no longer ignored: synced again as it is on each side
