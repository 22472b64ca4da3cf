"""What the mutation ledger says killed mutants of a step before, for whoever runs scenarios on a change of it.

`pgrepl-harness mutate` records, for each mutant it killed, the scenario module (and test) that failed, in the
runbook's committed ledger (`runbooks/NAME.mutation.json`). A mutant of a step is an edit of that step, and so is
an author's change: the modules and tests that killed the step's mutants are the likeliest to fail on it. mutate
runs them first on a new mutant of the step; the gate runs them first for a change of the step, so a change that
breaks the runbook fails in the first minute instead of wherever its killer sits in the usual order. The order
never changes a verdict: every selected test still runs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.errors import HarnessError


class UnreadableLedger(HarnessError, ValueError):
    """A ledger file that is not one (hand-edited, half-merged)."""


def ledger_path(runbook: Path) -> Path:
    """`runbooks/NAME.md` -> `runbooks/NAME.mutation.json`: the committed verdicts behind the report."""
    return runbook.with_suffix(".mutation.json")


def read_ledger(path: Path) -> dict[str, dict]:
    """The verdicts of ledger `path` by mutant key; none when there is no such file."""
    if not path.is_file():
        return {}
    try:
        verdicts = json.loads(path.read_text())["verdicts"]
        if not isinstance(verdicts, dict):
            raise TypeError("'verdicts' is not an object")
        return verdicts
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableLedger(
            f"{path}: not a verdict ledger ({exc}); restore it from git (`git checkout -- {path.name}`)"
        ) from None


def kills_of(verdicts: Iterable[dict], step: str) -> Iterator[dict]:
    """The verdicts of `verdicts` that a module killed a mutant of `step` in."""
    return (v for v in verdicts if v.get("step") == step and v.get("verdict") == "killed" and v.get("by"))


# between a verdict's line and, for a value mutant, `[operator: change]` (mutate's Mutant.what writes it)
CHANGE_MARK = "  ["


def line_of(verdict: dict) -> str:
    """The runbook line a verdict's mutant changed (its text is mutate's `Mutant.what`)."""
    return verdict.get("text", "").split(CHANGE_MARK)[0]


def first_to_run(
    verdicts: Iterable[dict], steps: Iterable[str], chosen: Iterable[str], *, line: str | None = None
) -> dict[str, list[str]]:
    """The `chosen` modules that killed mutants of any of `steps` before (`verdicts`: the ledger's, any family or
    operator), each with the tests (function names) that did: none for kills measured before the ledger named
    tests. Most kills first; with `line`, kills of mutants of that very line before any other (two lines of one
    step may well be seen by different tests)."""
    verdicts, chosen = list(verdicts), set(chosen)
    kills: Counter[tuple[str, str]] = Counter()  # (module, "") and (module, test)
    of_line: Counter[tuple[str, str]] = Counter()  # the same, of mutants of `line` only
    for step in steps:
        for verdict in kills_of(verdicts, step):
            if verdict["by"] not in chosen:
                continue
            found = [(verdict["by"], "")] + ([(verdict["by"], verdict["test"])] if verdict.get("test") else [])
            kills.update(found)
            if line is not None and line_of(verdict) == line:
                of_line.update(found)

    def rank(key: tuple[str, str]) -> tuple[int, int, tuple[str, str]]:
        return -of_line[key], -kills[key], key

    modules = [module for module, _ in sorted((key for key in kills if not key[1]), key=rank)]
    tests = sorted((key for key in kills if key[1]), key=rank)
    return {module: [test for m, test in tests if m == module] for module in modules}
