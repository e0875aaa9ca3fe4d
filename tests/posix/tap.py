"""Parse the TAP output of one pjdfstest file and summarise it (pure, no I/O).

pjdfstest's ``*.t`` files print a plan (``1..N``) and one line per assertion:
``ok N``, ``not ok N - tried 'ARGS', expected E, got R`` or ``not ok N # TODO reason``.
A ``# TODO`` failure is an expected failure that pjdfstest itself documents (e.g. "Linux
doesn't clear the SGID bit..."); like ``prove`` we count it apart, not as ``not ok``.
Assertions that the plan announces but that never printed a line (the script died or
timed out) count as ``not ok`` with the message ``missing``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PLAN = re.compile(r"^1\.\.(\d+)")
_LINE = re.compile(r"^(not )?ok (\d+)\b ?(.*)$")


@dataclass
class Failure:
    """One failed assertion: its number in the file and the text after it."""

    number: int
    message: str


@dataclass
class FileResult:
    """The outcome of one test file.

    ``assertions`` is the plan (or the highest number seen when it is larger or absent);
    ``failures`` holds every ``not ok`` that is not ``# TODO``, plus the missing ones;
    ``error`` is set when the file could not be judged (no TAP at all, timeout, hang).
    """

    name: str
    assertions: int = 0
    failures: list[Failure] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)
    skipped: int = 0
    error: str | None = None
    cleanup: str | None = None  # why the file's directory could not be removed afterwards
    seconds: float = 0.0

    @property
    def not_ok(self) -> int:
        """Number of failed assertions (an unjudgeable file with no plan counts as 1)."""
        if self.error and not self.assertions:
            return max(1, len(self.failures))
        return len(self.failures)

    @property
    def failed_numbers(self) -> list[int]:
        return [f.number for f in self.failures]


def parse_tap(name: str, text: str) -> FileResult:
    """Summarise the TAP ``text`` printed by the test file ``name``."""
    result = FileResult(name)
    plan: int | None = None
    seen: set[int] = set()
    for line in text.splitlines():
        m = _PLAN.match(line)
        if m and plan is None:
            plan = int(m.group(1))
            continue
        m = _LINE.match(line)
        if not m:
            continue
        failed, number, rest = bool(m.group(1)), int(m.group(2)), m.group(3)
        seen.add(number)
        directive = rest.split("#", 1)[1].strip().upper() if "#" in rest else ""
        if directive.startswith("SKIP"):
            result.skipped += 1
        elif failed and directive.startswith("TODO"):
            result.todo.append(number)
        elif failed:
            result.failures.append(Failure(number, rest.lstrip("- ").strip()))
    highest = max(seen, default=0)
    result.assertions = max(plan or 0, highest)
    if plan is not None:
        for number in range(1, plan + 1):
            if number not in seen:
                result.failures.append(Failure(number, "missing"))
    result.failures.sort(key=lambda f: f.number)
    if plan is None and not seen:
        result.error = "no TAP output"
    return result


def ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3,7,9-10"`` (input in any order, duplicates ok)."""
    out: list[str] = []
    ordered = sorted(set(numbers))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)
