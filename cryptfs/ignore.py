"""Sync ignore rules: which plaintext paths stay local (pure, no I/O).

The rules are gitignore patterns (https://git-scm.com/docs/gitignore) evaluated on
plaintext paths relative to the vault root: the built-in ``DEFAULT_RULES`` first, then
the lines of ``/.cryptfsignore``, a file inside the vault (encrypted and synced like any
other, so every device follows the same rules). As in git, the last rule that matches a
path decides (``!pattern`` re-includes), a pattern ending in ``/`` matches directories
only, a pattern with a ``/`` elsewhere is anchored at the vault root, and nothing inside
an ignored directory can be re-included. ``/.cryptfsignore`` itself is never ignored.

Patterns are parsed and translated by ``pathspec`` (its gitignore patterns); this module
only applies them the way git walks a tree: a path is matched on its own (a directory
with ``is_dir=True``), after its parent directories were found not to be ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pathspec.patterns.gitignore import GitIgnorePatternError
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

IGNORE_FILE = ".cryptfsignore"
MAX_RULES_BYTES = 1 << 20  # a larger .cryptfsignore is refused (it is read on every sync)

# Machine-local clutter that is never worth uploading. Listed in the README; a
# .cryptfsignore can re-include any of them (``!.DS_Store``) or all (a first line ``!*``).
DEFAULT_RULES = """\
# desktop trash folders (freedesktop.org trash on other drives, macOS)
.Trash/
.Trash-*/
.Trashes/
# editor swap, lock, autosave and backup files
.*.sw[a-p]
.*.kate-swp
.#*
\\#*#
*~
.~lock.*#
~$*
.goutputstream-*
# folder view caches
.DS_Store
Thumbs.db
"""

_DIR_MARK = "ps_d"  # pathspec's group for "this slash ends a directory the pattern matched"


@dataclass(frozen=True)
class Rule:
    """One pattern line: where it comes from and what it does."""

    text: str  # as written
    source: str  # "default" or ".cryptfsignore"
    line: int  # 1-based line number in its source
    negated: bool  # a ``!pattern``: re-includes
    regex: re.Pattern  # pathspec's: matches the path or any path below it
    at_end: re.Pattern | None  # the same, ending at the end of the string

    def describe(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"

    def matches(self, path: str, is_dir: bool) -> bool:
        """True if this pattern matches ``path`` itself (not merely a parent of it)."""
        if self.at_end is None:  # ``dir/**``, ``*``: no directory mark, match anywhere
            return self.regex.search(path) is not None
        # pathspec ends the pattern with "(a slash closing a matched directory) or the
        # end": matching the whole path means the pattern names the path itself; a
        # directory pattern (``build/``) needs the slash that closes the directory.
        if self.at_end.search(path) is not None:
            return True
        return is_dir and self.at_end.search(path + "/") is not None


@dataclass(frozen=True)
class Verdict:
    """Whether a path is ignored, and why."""

    ignored: bool
    rule: Rule | None = None  # the deciding rule (None: no rule matches)
    parent: str | None = None  # set when an ignored parent directory decides


class Rules:
    """The rules in force: defaults, then the lines of .cryptfsignore."""

    def __init__(self, user_text: str | None = None) -> None:
        """``user_text``: the content of /.cryptfsignore (None if the vault has none).
        Lines that are not valid patterns are skipped and listed in ``problems``."""
        self.user_text = user_text
        self.problems: list[str] = []
        self.rules: list[Rule] = self._parse(DEFAULT_RULES, "default")
        if user_text is not None:
            self.rules += self._parse(user_text, IGNORE_FILE)

    def _parse(self, text: str, source: str) -> list[Rule]:
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                pattern = GitIgnoreSpecPattern(line)
            except (GitIgnorePatternError, ValueError, re.error) as exc:
                self.problems.append(f"{source}:{number}: {line!r} is not a valid "
                                     f"pattern ({exc}); skipped")
                continue
            if pattern.include is None or pattern.regex is None:
                continue  # blank line or comment
            regex = pattern.regex
            at_end = re.compile(f"(?:{regex.pattern})\\Z", regex.flags) \
                if _DIR_MARK in regex.groupindex else None
            out.append(Rule(line, source, number, not pattern.include, regex, at_end))
        return out

    def match(self, path: str, is_dir: bool) -> Rule | None:
        """The last rule that matches ``path`` (relative, '/'-separated, no leading
        '/'), negations included; None if none does."""
        for rule in reversed(self.rules):
            if rule.matches(path, is_dir):
                return rule
        return None

    def ignores(self, path: str, is_dir: bool) -> bool:
        """True if ``path`` is ignored on its own (its parents are not looked at: a walk
        never descends into an ignored directory)."""
        if path == IGNORE_FILE:
            return False
        rule = self.match(path, is_dir)
        return rule is not None and not rule.negated

    def check(self, path: str, is_dir: bool) -> Verdict:
        """Whether ``path`` is ignored, its parent directories included, and why."""
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            rule = self.match(parent, True)
            if rule is not None and not rule.negated:
                return Verdict(True, rule, parent)
        path = "/".join(parts)
        if path == IGNORE_FILE:
            return Verdict(False)
        rule = self.match(path, is_dir)
        return Verdict(rule is not None and not rule.negated, rule)
