"""The committed mutation report (`runbooks/NAME.mutation.md`) names the runbook's mutants as they are now: its
per-cell fingerprints of the mutant list must match the runbook's (no Docker, no verdicts needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import project
from harness.mutate import Mutant
from harness.mutation_report import REGENERATE, cell_digest, cell_digests, code, recorded_digests, report_path

RUNBOOK = Path(project.current().default_runbook)


def test_the_committed_report_is_not_stale():
    report = report_path(RUNBOOK)
    assert report.is_file(), f"{report} is missing: write it with `{REGENERATE}`"
    recorded, now = recorded_digests(report), cell_digests(RUNBOOK)
    changed = sorted(cell for cell in recorded.keys() | now.keys() if recorded.get(cell) != now.get(cell))
    assert not changed, (
        f"{report.relative_to(project.current().root)} is stale: the mutants of {', '.join(changed)} changed "
        f"with the runbook or its explanations; regenerate it with `{REGENERATE}` (and measure the cells again "
        "with `pgrepl-harness mutate`: a changed runbook's verdicts read 'not measured')"
    )


def mutant(first: int, text: str, step: str = "s") -> Mutant:
    return Mutant(step, "setup", first, first, text)


def test_a_digest_changes_when_a_line_moves_changes_or_is_explained():
    base = [mutant(10, "a = 1"), mutant(11, "b = 2")]
    digest = cell_digest(base, set())
    assert cell_digest(list(base), set()) == digest
    assert cell_digest([mutant(11, "a = 1"), mutant(12, "b = 2")], set()) != digest  # moved
    assert cell_digest([mutant(10, "a = 2"), mutant(11, "b = 2")], set()) != digest  # changed
    assert cell_digest(base[:1], set()) != digest  # removed
    assert cell_digest(base, {("s", "a = 1", "")}) != digest  # explained


@pytest.mark.parametrize(
    ("text", "cell"), [("a = 1", "`a = 1`"), ("x | y", "`x \\| y`"), ("echo `date`", "`` echo `date` ``")]
)
def test_a_line_is_a_code_span_that_keeps_the_table(text, cell):
    assert code(text) == cell
