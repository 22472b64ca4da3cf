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


def step_kills(verdicts: Iterable[dict], step: str) -> Counter[str]:
    """How many mutants of `step` each module killed, in `verdicts` (the ledger's, any family or operator)."""
    return Counter(v["by"] for v in kills_of(verdicts, step))


def first_to_run(verdicts: Iterable[dict], steps: Iterable[str], chosen: Iterable[str]) -> dict[str, list[str]]:
    """The `chosen` modules that killed mutants of any of `steps` before (`verdicts`: the ledger's, any family or
    operator), most kills first, each with the tests (function names) that did, most first: none for kills
    measured before the ledger named tests."""
    verdicts, chosen = list(verdicts), set(chosen)
    kills: Counter[str] = Counter()
    tests: Counter[tuple[str, str]] = Counter()
    for step in steps:
        for verdict in kills_of(verdicts, step):
            if verdict["by"] in chosen:
                kills[verdict["by"]] += 1
                if verdict.get("test"):
                    tests[(verdict["by"], verdict["test"])] += 1
    named = sorted(tests, key=lambda pair: (-tests[pair], pair))
    return {module: [t for m, t in named if m == module] for module in sorted(kills, key=lambda m: (-kills[m], m))}


def killing_tests(verdicts: Iterable[dict], step: str, chosen: Iterable[str]) -> dict[str, list[str]]:
    """The tests of the `chosen` modules that killed mutants of `step` before, per module (first_to_run's order),
    for the modules whose kills the ledger names a test of."""
    return {module: tests for module, tests in first_to_run(verdicts, [step], chosen).items() if tests}
