"""The runbook gate: which blocks a change touches, what runs for it, and how failures are reported."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from harness import project
from harness.ci_report import annotations, summary
from harness.gate import STATIC_GATE, Plan, diff_runbooks, module_parts, plan, pytest_argv, select
from harness.runbook import parse_runbook, parse_text

pytest_plugins = ["pytester"]
BOOK = "runbooks/book.md"
TEXT = """# Book

Some prose.

| Example value | Meaning | Bound to |
|---|---|---|
| `192.168.1.10` | the primary | `primary.address` |

```sh {"step":"install","host":"primary","os":["debian","el8"]}
echo install
```

```sh {"step":"check","host":"primary","os":["debian"],"part":"verify"}
echo check
```

```sh {"step":"check","host":"primary","os":["el8"],"part":"verify"}
echo check el8
```
"""


def changes(new_text: str):
    return diff_runbooks(parse_text(TEXT, BOOK), parse_text(new_text, BOOK), BOOK)


def test_a_prose_only_change_touches_no_block():
    assert changes(TEXT.replace("Some prose.", "Some better prose, with a comma.")) == []


def test_a_changed_block_is_named_with_its_part_families_and_line():
    [change] = changes(TEXT.replace("echo check\n", "echo check twice\n"))
    assert (change.step, change.part, change.families, change.how) == ("check", "verify", ("debian",), "changed")
    assert TEXT.replace("echo check\n", "echo check twice\n").splitlines()[change.line - 1].startswith("```sh")


def test_an_el8_only_block_touches_el8_only():
    [change] = changes(TEXT.replace("echo check el8", "echo checked on el8"))
    assert change.families == ("el8",)


def test_added_and_removed_blocks_and_changed_bindings():
    removed = TEXT.replace(
        '```sh {"step":"check","host":"primary","os":["el8"],"part":"verify"}\necho check el8\n```', ""
    )
    assert [c.how for c in changes(removed)] == ["removed"]
    rebound = TEXT.replace("| `192.168.1.10` | the primary |", "| `192.168.1.11` | the primary |")
    assert {c.how for c in changes(rebound)} == {"bindings"} and len(changes(rebound)) == 3


MODULES = {
    "scenarios/test_setup.py": (BOOK, ("setup",)),
    "scenarios/test_verify.py": (BOOK, ("setup", "verify")),
    "scenarios/test_other_book.py": ("runbooks/other.md", ("setup", "verify")),
}
FAMILIES = {"debian-12": "debian", "debian-13": "debian", "el8-pgdg-layout": "el8"}


def test_a_debian_verify_change_runs_the_verify_modules_on_debian_images_only():
    pairs = select(changes(TEXT.replace("echo check\n", "echo check twice\n")), MODULES, FAMILIES)
    assert set(pairs) == {("scenarios/test_verify.py", "debian-12"), ("scenarios/test_verify.py", "debian-13")}


def test_an_el8_change_runs_no_debian_scenario():
    pairs = select(changes(TEXT.replace("echo check el8", "echo checked on el8")), MODULES, FAMILIES)
    assert set(pairs) == {("scenarios/test_verify.py", "el8-pgdg-layout")}


def test_a_change_to_the_harness_runs_everything_and_prose_runs_the_static_gate_only():
    everything = plan("HEAD", files=["harness/pair.py", "README.md"])
    assert everything.everything == ["harness/pair.py"] and "-n" in pytest_argv(everything, artifacts="a")
    prose = plan("HEAD", files=["README.md"])
    assert prose.pairs == {} and prose.prose == ["README.md"]
    assert pytest_argv(prose, artifacts="a")[0] == STATIC_GATE and "-n" not in pytest_argv(prose, artifacts="a")
    assert "static gate" in prose.render()


def test_the_gate_runs_without_the_hypothesis_plugin_which_none_of_what_it_runs_uses():
    """The plugin costs every session 1.5-2 s; what the gate and mutate run never needs it."""
    from pathlib import Path

    from harness.gate import WITHOUT_HYPOTHESIS

    prose = pytest_argv(plan("HEAD", files=["README.md"]), artifacts="a")
    assert " ".join(WITHOUT_HYPOTHESIS) in " ".join(prose)
    everything = pytest_argv(plan("HEAD", files=["harness/pair.py"]), artifacts="a")
    assert " ".join(WITHOUT_HYPOTHESIS) not in " ".join(everything)  # tests/test_properties.py needs it
    root = project.current().root
    run = [
        root / STATIC_GATE,
        root / "conftest.py",
        *(root / "scenarios").rglob("*.py"),
        *(root / "harness").rglob("*.py"),
    ]
    imports = re.compile(r"^\s*(from|import) hypothesis\b", re.M)
    assert [str(p.relative_to(root)) for p in run if imports.search(Path(p).read_text())] == []


def test_every_scenario_module_declares_the_parts_it_runs():
    declared = module_parts()
    assert "scenarios/test_replication.py" in declared
    assert declared["scenarios/test_source_as_written.py"][0] == "runbooks/source-as-written.md"
    assert all("setup" in parts for _, parts in declared.values())


def test_a_module_s_markers_are_its_pytestmark_s_not_a_test_s_own():
    """A test's own marks (test_password_history's parametrize) are not the module's: mutate orders
    modules by the module's `bringups`, the gate selects by its `parts`."""
    from harness.gate import scenario_markers

    calls = scenario_markers()["scenarios/test_password_history.py"]
    assert set(calls) == {"parts", "bringups"} and calls["bringups"].args[0].value == 1


def test_an_unknown_base_revision_is_a_clear_error():
    from harness.gate import GateError

    with pytest.raises(GateError, match="no-such-revision"):
        plan("no-such-revision")


# --- reports -------------------------------------------------------------------------------------


def test_annotations_point_at_the_step_and_at_the_likely_cause():
    props = {
        "runbook_file": "runbooks/x.md",
        "runbook_line": "40",
        "runbook_step": "secondary-basebackup",
        "runbook_host": "secondary",
        "runbook_cause": "runbooks/x.md:30:primary-hba",
    }
    first, cause = annotations(props, "scenarios/test_a.py::test_b", "StepFailed: no pg_hba.conf entry, 50%\nmore")
    assert first.startswith("::error file=runbooks/x.md,line=40,title=step secondary-basebackup::")
    assert first.endswith("no pg_hba.conf entry, 50%25") and "\n" not in first
    assert cause.startswith("::error file=runbooks/x.md,line=30,title=likely cause%3A step primary-hba::")


def test_the_summary_opens_with_the_step_by_image_matrix():
    book = parse_text(TEXT, BOOK)
    text = summary(
        book,
        {"debian-12-docker": "debian", "el8-pgdg-layout-docker": "el8", "centos-8-docker": "el8"},
        {"debian-12-docker": {"passed": 3, "failed": 1}, "el8-pgdg-layout-docker": {"passed": 4}},
        {"centos-8-docker": "no registry here"},
        {"debian-12-docker": {"install": "reused", "check": "failed"}, "el8-pgdg-layout-docker": {"install": "ok"}},
        [
            {
                "test": "t::x",
                "target": "debian-12-docker",
                "message": "boom",
                "runbook_file": BOOK,
                "runbook_line": "12",
                "runbook_step": "check",
                "runbook_host": "primary",
            }
        ],
    )
    matrix = text.split("## Verified on")[1].split("\n\n")[1].splitlines()
    assert matrix[0] == "| step | centos-8-docker | debian-12-docker | el8-pgdg-layout-docker |"
    assert matrix[2] == "| `install` | static gate only | reused | ok |"
    assert matrix[3] == "| `check` | static gate only | failed | not run by a scenario |"
    assert "`runbooks/book.md:12` step `check` on primary" in text
    assert "| centos-8-docker | 0 | 0 | 0 (no registry here) |" in text


def test_a_failed_step_reaches_junit_and_github_annotations_with_its_runbook_line(harnessed, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    harnessed.makepyfile(
        f"""
        from harness.runbook import parse_runbook, Executor
        from harness.runbook.values import live_values
        from tests.test_hosts_base import LocalHost

        def test_it():
            book = parse_runbook({str(project.current().default_runbook)!r})
            block = next(b for b in book.blocks if b.step == "secondary-basebackup")
            refused = "echo 'no pg_hba.conf entry for replication' >&2; exit 1"
            broken = type(block)(**{{**block.__dict__, "body": refused}})
            values = live_values({{"primary": "10.0.0.1", "secondary": "10.0.0.2"}}, "pw", 15)
            Executor(book, {{"secondary": LocalHost(), "primary": LocalHost()}}, values).run([broken])
        """
    )
    harnessed.syspathinsert(str(project.current().default_runbook.parent.parent))
    result = harnessed.runpytest("--junit-xml=junit.xml", "-o", "junit_family=xunit2", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    book = parse_runbook(project.current().default_runbook)
    line = next(b.line for b in book.blocks if b.step == "secondary-basebackup")
    hba = next(b for b in book.blocks if (b.file or "").endswith("pg_hba.conf"))
    result.stdout.fnmatch_lines(
        [
            f"::error file=runbooks/postgresql-primary-secondary.md,line={line},title=step secondary-basebackup::*",
            f"::error file=runbooks/postgresql-primary-secondary.md,line={hba.line},title=likely cause*",
        ]
    )
    case = ET.parse(harnessed.path / "junit.xml").find(".//testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["runbook_line"] == str(line) and props["runbook_step"] == "secondary-basebackup"
    assert case.find("failure") is not None


def test_plan_renders_what_runs_and_why():
    chosen = Plan("main", pairs={("scenarios/test_verify.py", "debian-12"): ["changed check (runbooks/book.md:12)"]})
    assert "run scenarios/test_verify.py on debian-12 (docker): changed check (runbooks/book.md:12)" in chosen.render()


def test_on_github_actions_each_generated_secret_is_masked_in_the_log(monkeypatch):
    import os

    from harness import secrets

    read, write = os.pipe()
    monkeypatch.setattr(secrets, "_MASK_FD", write)
    value = secrets.Secret.generate()
    os.close(write)
    assert os.read(read, 1000).decode() == f"::add-mask::{value}\n"


def test_the_matrix_counts_a_negative_control_only_for_steps_it_ran_ok_word_for_word():
    from types import SimpleNamespace

    from harness.ci_report import step_outcomes
    from harness.runbook import edit_block
    from harness.runbook.execute import StepRecord

    book = parse_text(TEXT, BOOK)
    edited = edit_block(book, "check", "echo check\n", "echo changed\n")

    def made(runbook, *records):
        return SimpleNamespace(runbook=runbook, transcript=SimpleNamespace(records=list(records)))

    outcomes = step_outcomes(
        [
            (made(book, StepRecord("install", "primary", 0.1, "reused")), True),
            (
                made(
                    edited, StepRecord("install", "primary", 0.1, "ok"), StepRecord("check", "primary", 0.1, "failed")
                ),
                False,
            ),
        ],
        book,
    )
    assert outcomes == {"install": "ok"}


def test_evidence_of_a_removed_pair_is_its_transcript_alone(tmp_path):
    from types import SimpleNamespace

    from harness.ci_report import collect_evidence

    def unreachable(*args, **kwargs):
        raise AssertionError("a removed pair's hosts were asked for evidence")

    node = SimpleNamespace(host=SimpleNamespace(run=unreachable), layout=SimpleNamespace(log_file="x", unit="u"))
    transcript = SimpleNamespace(render=lambda: "step ok")
    removed = SimpleNamespace(transcript=transcript, nodes={"primary": node})
    written = collect_evidence([(removed, False)], tmp_path)
    assert [p.name for p in written] == ["transcript.txt"]
    assert (tmp_path / "pair-1" / "transcript.txt").read_text() == "step ok"


def _rewind_failed(output: str, family: str = "debian"):
    """StepFailed of the runbook's own `rejoin-rewind` block for `family`, having printed `output`."""
    from types import SimpleNamespace

    from harness.hosts.base import Result
    from harness.runbook import StepFailed

    book = parse_runbook(project.current().default_runbook)
    block = next(b for b in book.blocks if b.step == "rejoin-rewind" and family in b.os)
    host = SimpleNamespace(name="primary", url="docker://primary")
    return book, StepFailed(block, "here", host, block.body, Result(1, "", output), "exit status 1", book)


def test_the_likely_cause_is_the_block_setting_the_parameter_the_output_names():
    """pg_rewind refuses a target without `wal_log_hints = on`: the cause named is the block of the same
    family that sets it, not the rewind step that failed; output naming no setting names no cause."""
    from harness.ci_report import likely_cause

    refusal = 'pg_rewind: error: target server needs to use either data checksums or "wal_log_hints = on"'
    for family in ("debian", "el8", "el7"):
        book, error = _rewind_failed(refusal, family)
        line, step = likely_cause(error)
        block = next(b for b in book.blocks if b.line == line)
        assert family in block.os and block.kind == "conf" and "wal_log_hints" in block.body, (family, step)
    assert likely_cause(_rewind_failed("pg_rewind: error: could not connect to server")[1]) is None
    assert likely_cause(_rewind_failed("max_wal_senders_x is not a setting")[1]) is None  # a whole name only


def _changed_plan(how: str = "changed") -> Plan:
    from harness.gate import BlockChange

    conf = BlockChange(BOOK, "primary-wal-log-hints", "setup", ("debian",), 363, how)
    el8 = BlockChange(BOOK, "primary-wal-log-hints", "setup", ("el8",), 564, how)
    return Plan("HEAD", changes=[el8, conf], families={"debian-12": "debian", "el8-pgdg-layout": "el8"})


def test_a_gate_failure_names_the_changed_blocks_of_its_family_it_may_come_from():
    behind = _changed_plan().changes_behind("rejoin-rewind", "debian-12")
    assert [(c.line, c.step) for c in behind] == [(363, "primary-wal-log-hints")]
    assert [c.line for c in _changed_plan().changes_behind(None, None)] == [363, 564]  # a real host: either
    assert _changed_plan().changes_behind("primary-wal-log-hints", "debian-12") == []  # its own line says it
    assert _changed_plan("comment only").changes_behind("rejoin-rewind", "debian-12") == []
    from harness.ci_report import change_property

    removed = change_property(_changed_plan("removed").changes_behind("rejoin-rewind", "debian-12"))
    assert removed == [("runbook_change", f"{BOOK}:363:primary-wal-log-hints (removed, its line at the base)")]


def test_annotations_and_summary_mark_the_changed_line_a_failure_came_after():
    props = {"runbook_change": "runbooks/x.md:363:primary-wal-log-hints;runbooks/x.md:370:primary-hba"}
    marks = annotations(props, "scenarios/test_rewind.py::test_a", "AssertionError: rewound\nmore")
    assert [m.split("::")[1] for m in marks] == [
        "error file=runbooks/x.md,line=363,title=changed in this diff%3A step primary-wal-log-hints",
        "error file=runbooks/x.md,line=370,title=changed in this diff%3A step primary-hba",
    ]
    assert marks[0].endswith("scenarios/test_rewind.py::test_a: failed after this change (AssertionError: rewound)")
    removed = {"runbook_change": "runbooks/x.md:363:primary-wal-log-hints (removed, its line at the base)"}
    assert annotations(removed, "t::a", "boom") == []  # no line of today's file to mark
    text = summary(parse_text(TEXT, BOOK), {}, {}, {}, {}, [{"test": "t::x", "message": "boom", **props}])
    assert (
        "- changed in this diff, and run on this OS family: `runbooks/x.md:363` step `primary-wal-log-hints`, " in text
    )
