"""The committed mutation report (`runbooks/NAME.mutation.md`) names the runbook's mutants as they are now: its
per-cell fingerprints of the mutant list must match the runbook's (no Docker, no verdicts needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import project
from harness.gate import module_parts
from harness.mutate import Mutant, Verdicts, mutant_key, part_modules, scenario_digest
from harness.mutation_report import (
    REGENERATE,
    Cell,
    Row,
    cell_digest,
    cell_digests,
    code,
    family_mutants,
    markdown,
    recorded_digests,
    report_path,
)

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


def test_a_cell_is_measured_partly_or_not_and_its_score_counts_kills_among_the_judged():
    rows = [Row(mutant(1, "a"), "killed"), Row(mutant(2, "b"), "explained"), Row(mutant(3, "c"), "not measured")]
    cell = Cell("debian", "debian-12", "setup", "delete", rows)
    assert (cell.state, cell.score) == ("partly measured (1 of 2)", "100.0%")
    cell.rows[2] = Row(mutant(3, "c"), "survived")
    assert (cell.state, cell.score) == ("measured", "50.0%")
    cell.rows = [Row(mutant(2, "b"), "explained"), Row(mutant(3, "c"), "not measured")]
    assert (cell.state, cell.score) == ("not measured", "-")


def test_the_report_shows_a_kept_verdict_in_its_cell_and_the_rest_as_not_measured(tmp_path):
    root = project.current().root
    found = family_mutants(RUNBOOK, "debian", "debian-12", "delete")["slot-limit"]
    original = RUNBOOK.read_text().splitlines(keepends=True)
    survivor = found[1]
    tests = scenario_digest(root, part_modules(module_parts(), str(RUNBOOK.relative_to(root)), "slot-limit"))
    verdicts = Verdicts(tmp_path / "state.json")
    verdicts.put(mutant_key("debian-12", found[0].apply(original)), {"verdict": "killed", "by": "m"})
    verdicts.put(mutant_key("debian-12", survivor.apply(original)), {"verdict": "survived", "tests": tests})
    verdicts.put(mutant_key("debian-12", found[2].apply(original)), {"verdict": "survived", "tests": "other tests"})
    text = markdown(RUNBOOK, root, tmp_path / "state.json", "today", "abc")
    assert (
        "| debian (`debian-12`) | slot-limit | delete | 3 | 1 | 1 | 0 | 1 | 50.0% | partly measured (2 of 3) |" in text
    )
    assert f"| debian | slot-limit | delete | {survivor.first} | {survivor.step} | {code(survivor.what)} |" in text
    assert "| el8 (`el8-pgdg-layout`) | slot-limit | delete | 3 | 0 | 0 | 0 | 3 | - | not measured |" in text


def test_report_of_a_runbook_outside_the_project_is_refused_in_one_line(tmp_path, capsys):
    from harness import __main__ as cli_main

    outside = tmp_path / "book.md"
    outside.write_text(RUNBOOK.read_text())
    assert cli_main.main(["mutate", "--report", "--runbook", str(outside), "--artifacts", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the report is of a runbook of the project" in err and "Traceback" not in err, err
    assert not report_path(outside).exists() and not (tmp_path / "summary.md").exists()


def test_a_report_without_verdicts_says_so_and_records_the_digests_the_staleness_test_computes(tmp_path):
    text = markdown(RUNBOOK, project.current().root, tmp_path / "state.json", "today", "abc")
    assert "No verdict is kept for this runbook as it is now." in text and "\n.\n" not in text
    (tmp_path / "report.md").write_text(text)
    assert recorded_digests(tmp_path / "report.md") == cell_digests(RUNBOOK)
