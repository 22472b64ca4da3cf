"""The gate's semantic diff: a block whose text changed but not what runs (comments, blank lines,
spacing; a conf block's settings or rules as PostgreSQL reads them) is "comment only" and runs no
scenario; any change to what runs, and any text its reader refuses, still counts as changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import project as projects
from harness.gate import COMMENT_ONLY, STATIC_GATE, diff_runbooks, image_families, plan, pytest_argv, select
from harness.runbook import parse_text

BOOK = "runbooks/book.md"
BASE = {
    "sh": "echo a\n",
    "conf": "wal_level = replica\n",
    "hba": "host    replication     replica_user    192.168.1.20/32         scram-sha-256\n",
}
FILES = {"conf": "/etc/postgresql/18/main/postgresql.conf", "hba": "/etc/postgresql/18/main/pg_hba.conf"}


def book(bodies: dict[str, str], attrs: dict[str, dict] | None = None) -> str:
    """A runbook with a binding table and one block of each kind (step = the kind)."""
    blocks = []
    for kind, body in bodies.items():
        info = {"step": kind, "host": "primary", "os": ["debian"]}
        if kind in FILES:
            info["file"] = FILES[kind]
        info.update((attrs or {}).get(kind, {}))
        blocks.append(f"```{'sh' if kind == 'sh' else 'conf'} {json.dumps(info)}\n{body}```\n")
    table = (
        "| Example value | Meaning | Bound to |\n|---|---|---|\n| `192.168.1.10` | the primary | `primary.address` |\n"
    )
    return "# Book\n\n" + table + "\n" + "\n".join(blocks)


def edited(kind: str, old: str, new: str, attrs: dict | None = None):
    """The one change from a book whose `kind` block holds `old` to one where it holds `new`."""
    before = parse_text(book({**BASE, kind: old}), BOOK)
    after = parse_text(book({**BASE, kind: new}, {kind: attrs or {}}), BOOK)
    [change] = diff_runbooks(before, after, BOOK)
    return change


SAME = [
    ("sh", "a comment line added", "echo a\n", "# Say a.\necho a\n"),
    ("sh", "a comment reworded", "# Say a.\necho a\n", "# Print the letter a.\necho a\n"),
    ("sh", "a comment line removed", "# Say a.\necho a\n", "echo a\n"),
    ("sh", "a trailing comment", "echo a\n", "echo a  # say a\n"),
    ("sh", "blank lines", "echo a\necho b\n", "\necho a\n\n\necho b\n\n"),
    ("sh", "indentation", "if true; then\n    echo a\nfi\n", "if true; then\n  echo a\nfi\n"),
    ("sh", "spacing between tokens", "echo a b | cat\n", "echo   a\tb|cat\n"),
    (
        "sh",
        "a line broken with a backslash",
        "sudo apt-get install -y postgresql-18\n",
        "sudo apt-get \\\n  install -y postgresql-18\n",
    ),
    ("sh", "a comment after a here-document", "cat <<'EOF'\n# data\nEOF\n", "cat <<'EOF'\n# data\nEOF\n# Done.\n"),
    (
        "sh",
        "a comment in a case",
        "case $1 in a) echo a ;; esac\n",
        "case $1 in\n  # the letter\n  a) echo a ;;\nesac\n",
    ),
    ("conf", "a comment line", "wal_level = replica\n", "# Enough WAL for a standby.\nwal_level = replica\n"),
    ("conf", "a trailing comment", "wal_level = replica\n", "wal_level = replica   # for a standby\n"),
    ("conf", "blank lines", "wal_level = replica\n", "\nwal_level = replica\n\n"),
    ("conf", "spacing around =", "wal_level = replica\n", "wal_level=replica\n"),
    ("conf", "no = at all", "wal_level = replica\n", "  wal_level\treplica\n"),
    ("conf", "the name's case (PostgreSQL ignores it)", "wal_level = replica\n", "WAL_Level = replica\n"),
    # guc-file.l removes the quotes before the setting sees the value: `on` and 'on' are one value
    ("conf", "quotes a value does not need", "archive_mode = on\n", "archive_mode = 'on'\n"),
    ("conf", "'' and \\' for a quote", "x.y = 'it''s'\n", "x.y = 'it\\'s'\n"),
    ("hba", "spacing between fields", BASE["hba"], "host replication replica_user 192.168.1.20/32 scram-sha-256\n"),
    ("hba", "a comment line", BASE["hba"], "# TYPE DATABASE USER ADDRESS METHOD\n" + BASE["hba"]),
    ("hba", "a trailing comment", BASE["hba"], BASE["hba"].rstrip() + "  # the secondary\n"),
]

CHANGED = [
    ("sh", "a command's argument", "echo a\n", "echo b\n"),
    ("sh", "an operator", "echo a; echo b\n", "echo a && echo b\n"),
    ("sh", "a # inside single quotes", "echo '#a'\n", "echo '#b'\n"),
    ("sh", "a # inside double quotes", 'echo "#a"\n', 'echo "#b"\n'),
    ("sh", "a # in ${x#y}", "echo ${1#a}\n", "echo ${1#b}\n"),
    ("sh", "the words after $#", "echo $# items\n", "echo $# things\n"),
    ("sh", "a # inside a word", "echo a#b\n", "echo a#c\n"),
    ("sh", "spacing inside quotes", "echo 'a  b'\n", "echo 'a b'\n"),
    ("sh", "a # line of a here-document", "cat <<'EOF'\n# data\nEOF\n", "cat <<'EOF'\n# other data\nEOF\n"),
    ("sh", "a here-document line's indentation", "cat <<'EOF'\nx = 1\nEOF\n", "cat <<'EOF'\n  x = 1\nEOF\n"),
    # bash reads both as `echo 192.168.1.10`, but the binding table binds only the unbroken one
    ("sh", "an example value broken across lines", "echo 192.168.1.10\n", "echo 192.168.1.\\\n10\n"),
    ("conf", "a setting's value", "wal_level = replica\n", "wal_level = logical\n"),
    ("conf", "a setting's name", "wal_level = replica\n", "wal_level_x = replica\n"),
    ("conf", "a # inside a quoted value", "x.y = 'a#b'\n", "x.y = 'a#c'\n"),
    ("conf", "spacing inside a quoted value", "x.y = 'a b'\n", "x.y = 'a  b'\n"),
    ("conf", "the order of two settings (the last one wins)", "a.b = 1\na.b = 2\n", "a.b = 2\na.b = 1\n"),
    ("conf", "a value's unit", "max_slot_wal_keep_size = 1GB\n", "max_slot_wal_keep_size = 1024MB\n"),
    ("conf", "an include", "include 'a.conf'\n", "include 'b.conf'\n"),
    ("hba", "a field", BASE["hba"], BASE["hba"].replace("scram-sha-256", "md5")),
    ("hba", "a keyword quoted (then it is a name)", "host all all 0.0.0.0/0 md5\n", 'host "all" all 0.0.0.0/0 md5\n'),
    ("hba", "a # inside double quotes", 'host db "a#b" 0.0.0.0/0 md5\n', 'host db "a#c" 0.0.0.0/0 md5\n'),
    ("hba", "the order of rules", "local all a peer\nlocal all b md5\n", "local all b md5\nlocal all a peer\n"),
]


@pytest.mark.parametrize(("kind", "edit", "old", "new"), SAME, ids=[f"{k}-{e}" for k, e, _, _ in SAME])
def test_an_edit_that_runs_the_same_is_comment_only(kind, edit, old, new):
    change = edited(kind, old, new)
    assert (change.how, change.step) == (COMMENT_ONLY, kind), change
    assert not change.runs and "the same" in change.note


@pytest.mark.parametrize(("kind", "edit", "old", "new"), CHANGED, ids=[f"{k}-{e}" for k, e, _, _ in CHANGED])
def test_an_edit_to_what_runs_is_a_change(kind, edit, old, new):
    change = edited(kind, old, new)
    assert (change.how, change.note) == ("changed", ""), change
    assert change.runs


UNREADABLE = [
    ("sh", "echo a\n", "# Say a.\necho 'a\n", "bash -n refuses it"),
    ("sh", "cat <<'EOF'\nx\nEOF\n", "# Say x.\ncat <<'EOF'\nx\n", "bash -n refuses it"),
    ("conf", "a.b = 1\n", "# One.\na.b = 1 2\n", "line 2 is not a setting PostgreSQL reads"),
    ("hba", "local all all peer\n", "# Local.\nlocal all \\\nall peer\n", "line 2 ends in a backslash"),
    ("hba", "local all all peer\n", '# Local.\nlocal "all all peer\n', "unclosed double quote"),
]


@pytest.mark.parametrize(("kind", "old", "new", "why"), UNREADABLE, ids=[u[3] for u in UNREADABLE])
def test_a_text_its_reader_refuses_counts_as_changed_and_the_plan_says_why(kind, old, new, why):
    change = edited(kind, old, new)
    assert change.how == "changed" and change.runs
    assert "counted as changed, not compared" in str(change) and why in str(change)


@pytest.mark.parametrize(
    ("kind", "attrs"),
    [
        ("sh", {"expect": "a"}),
        ("sh", {"part": "verify"}),
        ("sh", {"action": "packages"}),
        ("conf", {"file": "/x.conf"}),
    ],
)
def test_an_attribute_change_is_a_change_even_when_the_body_only_gains_a_comment(kind, attrs):
    change = edited(kind, BASE[kind], "# A comment.\n" + BASE[kind], attrs)
    assert change.how == "changed"


MODULES = {"scenarios/test_setup.py": (BOOK, ("setup",))}
FAMILIES = {"debian-12": "debian", "el8-pgdg-layout": "el8"}


def test_a_comment_only_change_selects_no_scenario_but_a_real_one_beside_it_still_does():
    only = diff_runbooks(parse_text(book(BASE), BOOK), parse_text(book({**BASE, "sh": "# c\necho a\n"}), BOOK), BOOK)
    assert select(only, MODULES, FAMILIES) == {}
    both = {**BASE, "sh": "# c\necho a\n", "conf": "wal_level = logical\n"}
    changes = diff_runbooks(parse_text(book(BASE), BOOK), parse_text(book(both), BOOK), BOOK)
    assert sorted(c.how for c in changes) == ["changed", COMMENT_ONLY]
    assert set(select(changes, MODULES, FAMILIES)) == {("scenarios/test_setup.py", "debian-12")}


# --- the real plan, on a copy of the project's runbooks and scenario modules in a git repository -----


class Project:
    """The project's runbooks and scenario modules, committed to a fresh git repository the gate
    takes for the project; `edit` changes the working tree's runbook inside one block."""

    def __init__(self, root: Path):
        self.root = root
        self.runbook = root / projects.current().default_runbook.relative_to(projects.current().root)

    def edit(self, step: str, family: str, old: str, new: str) -> None:
        text = self.runbook.read_text()
        block = next(b for b in parse_text(text, "r.md").blocks if b.step == step and family in b.os)
        start = sum(len(line) for line in text.splitlines(keepends=True)[: block.line])  # after the fence
        assert text[start : start + len(block.body)] == block.body and old in block.body, (step, family, old)
        self.runbook.write_text(text[:start] + block.body.replace(old, new, 1) + text[start + len(block.body) :])


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    for folder in ("runbooks", "scenarios"):
        shutil.copytree(
            projects.current().root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    (tmp_path / "images").symlink_to(projects.current().images)  # the image profiles: which family is where

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "base")
    monkeypatch.setattr(projects, "_current", projects.Project(tmp_path))
    return Project(tmp_path)


def test_a_reworded_comment_in_the_debian_primary_configure_block_runs_the_static_gate_only(project):
    project.edit(
        "primary-configure", "debian", "# Write enough WAL for a streaming standby.", "# A standby streams this WAL."
    )
    chosen = plan("HEAD")
    [change] = chosen.changes
    assert (change.how, change.step, change.families) == (COMMENT_ONLY, "primary-configure", ("debian",))
    assert chosen.pairs == {} and not chosen.selects("scenarios/test_replication.py", "debian-12")
    assert pytest_argv(chosen, artifacts="a")[0] == STATIC_GATE and "-n" not in pytest_argv(chosen, artifacts="a")
    rendered = chosen.render()
    assert "comment only block primary-configure (part setup, debian)" in rendered
    assert "PostgreSQL reads the same settings" in rendered and "no scenario" in rendered


def test_a_changed_setting_in_that_block_still_runs_its_scenarios_on_debian(project):
    project.edit("primary-configure", "debian", "max_wal_senders = 10", "max_wal_senders = 12")
    chosen = plan("HEAD")
    assert [c.how for c in chosen.changes] == ["changed"]
    assert ("scenarios/test_replication.py", "debian-12") in chosen.pairs
    assert {image_families()[image] for _, image in chosen.pairs} == {"debian"}


def test_a_shell_blocks_comment_runs_nothing_and_its_here_document_runs_again(project):
    project.edit(
        "primary-create-user", "debian", "sudo -u postgres", "# The role the secondary logs in as.\nsudo -u postgres"
    )
    assert [c.how for c in plan("HEAD").changes] == [COMMENT_ONLY]
    project.edit("primary-create-user", "debian", "SET password_encryption", "SET  password_encryption")
    chosen = plan("HEAD")
    assert [c.how for c in chosen.changes] == ["changed"] and chosen.pairs


# --- the static gate checks the changed blocks, and the runbook-wide tests -----------------------


def test_the_static_gate_checks_only_the_changed_blocks_unless_everything_or_the_bindings_changed(project):
    assert plan("HEAD", files=["README.md"]).static_steps() == frozenset()
    assert plan("HEAD", files=["harness/pair.py"]).static_steps() is None
    project.edit("primary-configure", "debian", "# Write enough WAL for a streaming standby.", "# Streams.")
    chosen = plan("HEAD")
    assert chosen.static_steps() == {"primary-configure"}
    assert chosen.checks_statically("primary-configure") and chosen.checks_statically(None)
    assert not chosen.checks_statically("primary-install")
    assert "--gate-base=HEAD" in pytest_argv(chosen, artifacts="a")
    assert "changed blocks' checks on every image (primary-configure)" in chosen.render()
    table = project.runbook.read_text()
    project.runbook.write_text(table.replace("`192.168.1.20`", "`192.168.1.21`", 1))
    assert plan("HEAD").static_steps() is None, "a binding table change touches every block"


def collected(root: Path, *options: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", STATIC_GATE, *options],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_a_comment_edit_runs_every_images_checks_of_its_block_and_no_other_blocks(project):
    """Through pytest, as the gate runs it: the selection of a copy of the project with one edited block."""
    root = project.root
    (root / "tests").mkdir()
    shutil.copy(Path(__file__).parent / "test_static_gate.py", root / STATIC_GATE)
    (root / "conftest.py").write_text('pytest_plugins = ["harness.pytest.plugin"]\n')
    for args in (("add", "."), ("commit", "-q", "-m", "the static gate")):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e.invalid", *args], cwd=root, check=True)
    project.edit("primary-configure", "debian", "# Write enough WAL for a streaming standby.", "# Streams.")
    everything = collected(root)
    narrowed = collected(root, "--gate-base=HEAD")
    per_block = [test for test in everything if "[" in test and "-primary-configure" in test]
    runbook_wide = [test for test in everything if "[" not in test or "test_image_family" in test]
    assert per_block and set(per_block) | set(runbook_wide) <= set(narrowed)
    others = set(narrowed) - set(per_block) - set(runbook_wide)
    assert all("checker" in test for test in others), sorted(others)[:5]  # the checkers' own cases
    assert len(narrowed) < len(everything) / 10, (len(narrowed), len(everything))


# --- the modules that killed mutants of a changed step run first (harness.kills, the mutation ledger) ------

REWIND = "scenarios/test_rewind.py"
COLLECT = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly"]


def test_a_change_to_a_step_runs_first_the_module_that_killed_its_mutants(project):
    """wal_log_hints off breaks only pg_rewind: test_rewind, which killed that line's mutants, goes first, not
    last (it brings up the fewest pairs, and the usual order is longest first)."""
    project.edit("primary-wal-log-hints", "debian", "wal_log_hints = on", "wal_log_hints = off")
    chosen = plan("HEAD")
    assert list(chosen.first)[:1] == [REWIND] and set(chosen.first) <= set(chosen.modules)
    assert f"first, as they killed most mutants of the changed steps (the mutation ledger): {REWIND}" in chosen.render()


def test_one_module_goes_first_per_changed_step_the_others_keep_the_longest_first_order(project):
    project.edit("primary-configure", "debian", "wal_level = replica", "wal_level = logical")
    project.edit("primary-wal-log-hints", "debian", "wal_log_hints = on", "wal_log_hints = off")
    first = plan("HEAD").first
    assert len(first) == 2 and REWIND in first, first


def test_without_a_ledger_the_plan_keeps_the_usual_order_and_a_broken_one_is_named_not_fatal(project):
    project.edit("primary-wal-log-hints", "debian", "wal_log_hints = on", "wal_log_hints = off")
    ledger = project.runbook.with_suffix(".mutation.json")
    ledger.unlink()
    assert plan("HEAD").first == {}
    ledger.write_text("{not json")
    chosen = plan("HEAD")
    assert chosen.first == {} and chosen.pairs, "an unreadable ledger only loses the order"
    assert "in the usual order:" in chosen.render() and "not a verdict ledger" in chosen.render()


def test_through_pytest_the_killing_module_is_collected_first_and_without_the_ledger_last(project):
    root = project.root
    (root / "conftest.py").write_text('pytest_plugins = ["harness.pytest.plugin"]\n')
    for args in (("add", "."), ("commit", "-q", "-m", "the plugin")):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e.invalid", *args], cwd=root, check=True)
    project.edit("primary-wal-log-hints", "debian", "wal_log_hints = on", "wal_log_hints = off")

    def scenario_order() -> list[str]:
        done = subprocess.run(
            [*COLLECT, "scenarios", "--gate-base=HEAD", "--image", "debian-12", "--backend", "docker"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return list(dict.fromkeys(line.split("::")[0] for line in done.stdout.splitlines() if "::" in line))

    order = scenario_order()
    assert order[0] == REWIND and len(order) > 10, order
    project.runbook.with_suffix(".mutation.json").unlink()  # the negative control: no history, the usual order
    usual = scenario_order()
    assert usual.index(REWIND) > len(usual) // 2, usual


def test_a_failure_in_a_gate_run_names_the_change_it_came_after_on_its_report(project):
    """wal_log_hints off fails pg_rewind's step: the report names the rewind step's line, the block setting the
    parameter pg_rewind names (the likely cause) and the changed line of the diff - on a debian target; an el8
    target's failure is not pinned on a debian change, and without a gate plan nothing is said of changes."""
    from types import SimpleNamespace

    from harness.hosts.base import Result
    from harness.pytest.reporting import Reporting
    from harness.runbook import StepFailed

    project.edit("primary-wal-log-hints", "debian", "wal_log_hints = on", "wal_log_hints = off")
    book = parse_text(project.runbook.read_text(), project.runbook)
    hints = next(b for b in book.blocks if b.step == "primary-wal-log-hints" and "debian" in b.os)
    rewind = next(b for b in book.blocks if b.step == "rejoin-rewind" and "debian" in b.os)
    refusal = Result(
        1, "", 'pg_rewind: error: target server needs to use either data checksums or "wal_log_hints = on"'
    )
    error = StepFailed(rewind, "here", SimpleNamespace(name="primary", url="docker://p"), "", refusal, "exit 1", book)

    def properties(gate, image: str) -> dict[str, str]:
        item = SimpleNamespace(
            getparent=lambda cls: None,
            callspec=SimpleNamespace(params={"target": SimpleNamespace(image=image, label=image)}),
        )
        item.user_properties = []
        report = SimpleNamespace(failed=True, when="call", user_properties=[])
        pairs = SimpleNamespace(made={})
        Reporting(None, pairs, None, gate)._report_runbook(item, report, SimpleNamespace(value=error))
        return dict(report.user_properties)

    found = properties(plan("HEAD"), "debian-12")
    runbook = str(project.runbook.relative_to(project.root))
    assert found["runbook_line"] == str(rewind.line)
    assert found["runbook_cause"].endswith(f":{hints.line}:primary-wal-log-hints")
    assert found["runbook_change"] == f"{runbook}:{hints.line}:primary-wal-log-hints"
    assert "runbook_change" not in properties(plan("HEAD"), "el8-pgdg-layout")
    assert "runbook_change" not in properties(None, "debian-12")
