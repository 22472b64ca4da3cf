"""The committed mutation report (`runbooks/NAME.mutation.md`) names the runbook's mutants as they are now (its
per-cell fingerprints of the mutant list must match the runbook's), it is exactly what its committed verdicts
(`runbooks/NAME.mutation.json`) make, on a fresh clone too, and a verdict's key changes with what can change the
mutant's outcome and with nothing else. No Docker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import project
from harness.gate import module_parts
from harness.images import ImageProfile
from harness.kills import ledger_path
from harness.mutate import NOT_RUN, Ledger, Mutant, MutantKeys, mutants, part_modules, scenario_digest
from harness.mutation_report import (
    REGENERATE,
    Cell,
    Row,
    cell_digest,
    cell_digests,
    cells,
    code,
    family_mutants,
    markdown,
    recorded_digests,
    report_path,
)

RUNBOOK = Path(project.current().default_runbook)
ROOT = project.current().root
RELATIVE = str(RUNBOOK.resolve().relative_to(ROOT))


def test_the_committed_report_is_not_stale():
    report = report_path(RUNBOOK)
    assert report.is_file(), f"{report} is missing: write it with `{REGENERATE}`"
    recorded, now = recorded_digests(report), cell_digests(RUNBOOK)
    changed = sorted(cell for cell in recorded.keys() | now.keys() if recorded.get(cell) != now.get(cell))
    assert not changed, (
        f"{report.relative_to(ROOT)} is stale: the mutants of {', '.join(changed)} changed with the runbook or its "
        f"explanations. Fix: `{REGENERATE}` (it runs no scenario and keeps every verdict)"
    )


def test_the_committed_report_is_what_its_committed_verdicts_make_on_a_fresh_clone(tmp_path):
    """The project's files as git has them (tracked and not ignored: no artifacts/, no state), copied to a scratch
    directory, and `mutate --report` run there: the report it writes is the committed one, byte for byte."""
    report = report_path(RUNBOOK)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "runbooks", "images", "scenarios"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    clone = tmp_path / "clone"
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    written = clone / report.relative_to(ROOT)
    written.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGREPL")}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--project", str(clone), "mutate", "--report", "--artifacts", "artifacts"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert written.read_text() == report.read_text(), (
        f"{report.relative_to(ROOT)} is not what its verdicts ({ledger_path(RUNBOOK).relative_to(ROOT)}) and the "
        f"runbook make now. Fix: `{REGENERATE}` (it runs no scenario and keeps every verdict)"
    )


def mutant(first: int, text: str, step: str = "s") -> Mutant:
    return Mutant(step, "setup", first, first, text)


def test_a_digest_changes_when_a_line_changes_or_is_explained_not_when_it_moves():
    base = [mutant(10, "a = 1"), mutant(11, "b = 2")]
    digest = cell_digest(base, set())
    assert cell_digest(list(base), set()) == digest
    assert cell_digest([mutant(11, "a = 1"), mutant(12, "b = 2")], set()) == digest  # moved: no line is shown
    assert cell_digest([mutant(10, "a = 2"), mutant(11, "b = 2")], set()) != digest  # changed
    assert cell_digest(base[:1], set()) != digest  # removed
    assert cell_digest(base, {("s", "a = 1", "", "")}) != digest  # explained


@pytest.mark.parametrize(
    ("text", "cell"), [("a = 1", "`a = 1`"), ("x | y", "`x \\| y`"), ("echo `date`", "`` echo `date` ``")]
)
def test_a_line_is_a_code_span_that_keeps_the_table(text, cell):
    assert code(text) == cell


def test_a_cell_score_says_how_much_of_the_cell_it_is_measured_on():
    rows = [Row(mutant(1, "a"), "killed"), Row(mutant(2, "b"), "explained"), Row(mutant(3, "c"), "not measured")]
    cell = Cell("debian", "debian-12", "setup", "delete", rows)
    assert cell.score == "100.0% of 1 measured; 1 not measured"
    cell.rows[2] = Row(mutant(3, "c"), "survived")
    assert cell.score == "50.0% of 2 measured, all"
    cell.rows = [Row(mutant(2, "b"), "explained"), Row(mutant(3, "c"), "not measured")]
    assert cell.score == "none measured (1 not measured)"
    cell.rows = [Row(mutant(2, "b"), "explained")]
    assert cell.score == "-"
    cell.rows = [Row(mutant(1, "a"), "killed", modules=("test_x",))]
    assert cell.score == "100.0% of 1 measured, all (only some modules)"


def test_the_report_shows_a_kept_verdict_in_its_cell_and_the_rest_as_not_measured(tmp_path):
    found = family_mutants(RUNBOOK, "debian", "debian-12", "delete")["slot-limit"]
    survivor = found[1]
    tests = scenario_digest(ROOT, part_modules(module_parts(), RELATIVE, "slot-limit"))
    keys = MutantKeys(RUNBOOK)
    ledger = Ledger(tmp_path / "verdicts.json")
    ledger.put(keys.key("debian-12", found[0]), {"verdict": "killed", "by": "m"})
    ledger.put(keys.key("debian-12", survivor), {"verdict": "survived", "tests": tests})
    ledger.put(keys.key("debian-12", found[2]), {"verdict": "survived", "tests": "other tests"})
    text = markdown(RUNBOOK, ROOT, tmp_path / "verdicts.json")
    assert (
        "| debian (`debian-12`) | slot-limit | delete | 3 | 1 | 1 | 0 | 1 | 0 | 50.0% of 2 measured; 1 not measured |"
        in text
    )
    assert f"| debian | slot-limit | delete | {survivor.step} | {code(survivor.what)} |" in text
    assert (
        "| el8 (`el8-pgdg-layout`) | slot-limit | delete | 3 | 0 | 0 | 0 | 3 | 0 | none measured (3 not measured) |"
        in text
    )
    assert "How to read this report" in text.split("## Score")[0]


def test_a_package_step_of_an_image_that_skips_them_is_reported_as_not_run_here(tmp_path):
    """el8-pgdg-layout skips the runbook's package steps: their mutants are neither measured nor explained, and
    the report says so in their cell and names the steps and the reason once per family."""
    text = markdown(RUNBOOK, ROOT, tmp_path / "verdicts.json")
    el8 = [c for c in cells(RUNBOOK, tmp_path / "verdicts.json") if c.family == "el8" and c.part == "setup"]
    skipped = [r for c in el8 for r in c.rows if r.status == NOT_RUN]
    assert skipped and all(r.mutant.action == "packages" for r in skipped)
    assert {r.mutant.step for r in skipped} == {
        "primary-package-source",
        "primary-install",
        "secondary-package-source",
        "secondary-install",
    }
    debian = [r for c in cells(RUNBOOK, tmp_path / "verdicts.json") if c.family == "debian" for r in c.rows]
    assert not any(r.status == NOT_RUN for r in debian), "debian-12 runs its package steps"
    assert "- el8 (`el8-pgdg-layout`): " in text.split(f"## {NOT_RUN.capitalize()}")[1]


def test_report_of_a_runbook_outside_the_project_is_refused_in_one_line(tmp_path, capsys):
    from harness import __main__ as cli_main

    outside = tmp_path / "book.md"
    outside.write_text(RUNBOOK.read_text())
    assert cli_main.main(["mutate", "--report", "--runbook", str(outside), "--artifacts", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the report is of a runbook of the project" in err and "Traceback" not in err, err
    assert not report_path(outside).exists() and not (tmp_path / "summary.md").exists()


def test_a_report_without_verdicts_says_so_and_records_the_digests_the_staleness_test_computes(tmp_path):
    text = markdown(RUNBOOK, ROOT, tmp_path / "none.json")
    assert "No verdict is kept for this runbook as it is now." in text and "\n.\n" not in text
    (tmp_path / "report.md").write_text(text)
    assert recorded_digests(tmp_path / "report.md") == cell_digests(RUNBOOK)


# Keys. One scenario module judges the slot-limit part and runs the setup with it; nothing runs `archive`.
JUDGES = {"scenarios/test_x.py": (RELATIVE, ("setup", "slot-limit"))}


def slot_limit_keys(runbook: Path, image: str = "debian-12") -> dict[tuple, str]:
    """(step, text, operator, change) -> key of every slot-limit mutant of `runbook` (a copy: named as the real one)."""
    profile = ImageProfile.load(image)
    keys = MutantKeys(runbook, JUDGES, relative=RELATIVE)
    found = mutants(runbook, profile.family, ("slot-limit",), profile.package_source, classes=("delete", "value"))
    return {(m.step, m.text, m.operator, m.change): keys.key(image, m) for m in found}


def edited(tmp_path: Path, edit) -> Path:
    copy = tmp_path / RUNBOOK.name
    copy.write_text(edit(RUNBOOK.read_text()))
    return copy


def in_block(step: str, family: str, line: str):
    """An edit: `line` added as the first line of the body of `step`'s block for `family`."""

    def edit(text: str) -> str:
        opening = re.compile(r'^```\w+ \{"step":"' + re.escape(step) + r'".*"' + family + r'".*$', re.MULTILINE)
        found = opening.search(text)
        assert found, (step, family)
        return text[: found.end()] + "\n" + line + text[found.end() :]

    return edit


def test_a_key_is_kept_across_prose_and_blocks_the_scenarios_do_not_run(tmp_path):
    before = slot_limit_keys(RUNBOOK)
    assert len(before) >= 3 and len(set(before.values())) == len(before)
    prose = edited(
        tmp_path, lambda t: t.replace("## Values used", "A new paragraph.\n\nAnd another.\n\n## Values used")
    )
    assert slot_limit_keys(prose) == before  # every line moved down: the keys stay
    other_family = edited(tmp_path, in_block("primary-configure", "el8", "work_mem = 8MB"))
    assert slot_limit_keys(other_family) == before
    other_part = edited(tmp_path, in_block("archive-shared-dir", "debian", "true"))
    assert slot_limit_keys(other_part) == before  # `archive`: no judge of slot-limit runs it
    assert slot_limit_keys(edited(tmp_path, shared("slot-limit-reload"))) == before  # Debian runs the same blocks


def shared(step: str):
    """An edit: `step`'s Debian block and its EL copy (one section per family) become one block for all three
    families, where the Debian one is."""

    def edit(text: str) -> str:
        def block(families: str) -> re.Match:
            opening = r'^```\w+ \{"step":"' + re.escape(step) + r'","host":"\w+","os":' + re.escape(families)
            found = re.search(opening + r"[^\n]*\n(?:.*\n)*?```\n\n", text, re.MULTILINE)
            assert found, (step, families)
            return found

        debian, el = block('["debian"]'), block('["el8","el7"]')
        assert debian.group(0).split("\n", 1)[1] == el.group(0).split("\n", 1)[1], "not a copy"
        merged = debian.group(0).replace('"os":["debian"]', '"os":["debian","el8","el7"]', 1)
        return text[: debian.start()] + merged + text[debian.end() : el.start()] + text[el.end() :]

    return edit


def test_a_key_changes_with_a_setup_block_the_bindings_the_image_or_the_judges_parts(tmp_path):
    before = slot_limit_keys(RUNBOOK)
    setup = edited(tmp_path, in_block("primary-configure", "debian", "work_mem = 8MB"))
    assert not set(slot_limit_keys(setup).values()) & set(before.values())
    meaning = edited(tmp_path, lambda t: t.replace("| private IP of the secondary |", "| the standby's IP |"))
    assert slot_limit_keys(meaning) == before  # a binding's meaning is prose
    bound = edited(tmp_path, lambda t: t.replace("(Step 9) | `primary.address` |", "(Step 9) | `secondary.address` |"))
    assert not set(slot_limit_keys(bound).values()) & set(before.values())
    book = MutantKeys(RUNBOOK, JUDGES)
    widened = MutantKeys(RUNBOOK, {**JUDGES, "scenarios/test_y.py": (RELATIVE, ("archive", "slot-limit"))})
    some = mutants(RUNBOOK, "debian", ("slot-limit",), "pgdg")[0]
    assert book.key("debian-12", some) != widened.key("debian-12", some)  # a judge now runs `archive` too
    assert book.key("debian-12", some) != book.key("debian-11", some)


def test_the_mutated_block_changed_elsewhere_makes_its_mutants_new(tmp_path):
    before = slot_limit_keys(RUNBOOK)
    step = next(iter(before))[0]
    changed = edited(tmp_path, in_block(step, "debian", "# a comment line"))
    after = slot_limit_keys(changed)
    assert after.keys() == before.keys() and not set(after.values()) & set(before.values())


def test_the_ledger_merges_what_is_on_disk_keeps_the_fields_the_report_needs_and_prunes_only_gone_keys(tmp_path):
    path = tmp_path / "verdicts.json"
    mine, theirs = Ledger(path), Ledger(path)
    mine.put("a1", {"verdict": "killed", "by": "m", "output": "long", "image": "debian-12", "modules": []})
    theirs.put("b2", {"verdict": "survived", "tests": "t", "image": "el8-pgdg-layout"})  # another run, same file
    mine.put("c3", {"verdict": "killed", "by": "n"})
    on_disk = json.loads(path.read_text())
    assert sorted(on_disk["verdicts"]) == ["a1", "b2", "c3"]
    assert on_disk["verdicts"]["a1"] == {"verdict": "killed", "by": "m", "image": "debian-12"}
    assert path.read_text() == json.dumps(on_disk, indent=1, sort_keys=True) + "\n"  # sorted, one field a line
    assert mine.prune({"a1", "b2", "zz"}) == ["c3"]
    assert sorted(json.loads(path.read_text())["verdicts"]) == ["a1", "b2"]
    before = path.read_text()
    assert mine.prune({"a1", "b2"}) == [] and path.read_text() == before


def test_processes_writing_one_ledger_at_once_lose_no_verdict(tmp_path):
    path = tmp_path / "verdicts.json"
    write = (
        "import sys; from pathlib import Path; from harness.mutate import Ledger; ledger = Ledger(Path(sys.argv[1]))\n"
        "for n in range(40): ledger.put(f'{sys.argv[2]}{n}', {'verdict': 'killed', 'image': 'debian-12'})"
    )
    writers = [subprocess.Popen([sys.executable, "-c", write, str(path), name]) for name in "abc"]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0, 0]
    assert len(json.loads(path.read_text())["verdicts"]) == 120
    assert [p.name for p in tmp_path.iterdir()] == ["verdicts.json"]  # no temporary file left


def test_the_committed_ledger_holds_the_report_fields_only_in_its_stable_form():
    from harness.mutate import LEDGER_FIELDS

    path = ledger_path(RUNBOOK)
    text = path.read_text()
    verdicts = json.loads(text)["verdicts"]
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n", f"{path.name}: written by mutate only"
    for key, verdict in verdicts.items():
        assert re.fullmatch(r"[0-9a-f]{16}", key) and set(verdict) <= set(LEDGER_FIELDS), (key, verdict)
        assert verdict["verdict"] in ("killed", "survived") and verdict["image"] and verdict["step"], (key, verdict)
