"""harness.runbook.meaning: a block as bash or PostgreSQL reads it (what the gate compares)."""

from __future__ import annotations

import pytest

from harness import project
from harness.runbook import parse_runbook
from harness.runbook.meaning import Unreadable, bash_meaning, hba_meaning, meaning, settings_meaning


def test_postgresql_conf_is_read_as_guc_file_l_reads_it():
    body = (
        "# a comment line\n"
        "listen_addresses = '*'   # a trailing comment\n"
        "Wal_Level replica\n"
        "archive_command = 'test ! -f /a/%f && echo it''s # not a comment\\t'\n"
        "max_slot_wal_keep_size=1GB\n"
        "custom.OPTION = 0x1F\n"
        "include_if_exists 'extra.conf'\n"
    )
    assert settings_meaning(body) == (
        ("listen_addresses", "*"),
        ("wal_level", "replica"),
        ("archive_command", "test ! -f /a/%f && echo it's # not a comment\t"),
        ("max_slot_wal_keep_size", "1GB"),
        ("custom.option", "0x1F"),
        ("include_if_exists", "extra.conf"),
    )


@pytest.mark.parametrize(
    "line",
    ["x = ", "x = 1 2", "x = a.b", "x = @", "= 1", "x = 'open", "x = = 1", "'x' = 1"],
    ids=[
        "no value",
        "two values",
        "a qualified name as value",
        "a stray character",
        "no name",
        "an open quote",
        "two =",
        "a quoted name",
    ],
)
def test_a_line_postgresql_would_reject_is_unreadable(line):
    with pytest.raises(Unreadable, match="line 2 is not a setting PostgreSQL reads"):
        settings_meaning(f"a = 1\n{line}\n")


def test_pg_hba_conf_is_read_as_fields_with_their_quotes():
    body = (
        "# TYPE DATABASE USER ADDRESS METHOD\n"
        "host  replication\treplica_user 10.0.0.2/32 scram-sha-256#c\n"
        'local "a #b" all peer\n'
    )
    assert hba_meaning(body) == (
        ("host", "replication", "replica_user", "10.0.0.2/32", "scram-sha-256"),
        ("local", '"a #b"', "all", "peer"),
    )


def test_every_block_of_every_runbook_can_be_read_and_bash_prints_each_shell_block_stably():
    """Else the gate would count any edit to it as a change (safe, but the plan would say so)."""
    problems = []
    for path in sorted((project.current().root / "runbooks").glob("*.md")):
        runbook = parse_runbook(path)
        for block in runbook.blocks:
            read = meaning(block, runbook.bindings)
            if read.value is None:
                problems.append(f"{path.name}:{block.line} {block.step}: {read.why}")
            elif block.kind == "sh":
                body = read.value.split("\n", 2)[2].rsplit("\n}", 1)[0]  # inside `NAME () \n{ \n ... \n}`
                if bash_meaning(body) != read.value:
                    problems.append(f"{path.name}:{block.line} {block.step}: bash prints it differently again")
    assert problems == []


def test_nothing_of_a_block_runs_while_bash_reads_it(tmp_path):
    """bash prints a block only after `bash -n` parsed it alone: a stray `}` cannot end the function early."""
    marker = tmp_path / "ran"
    assert f"touch {marker}" in bash_meaning(f"touch {marker}\n")
    for body in (f"}}; touch {marker}; f() {{\n", f"echo a\n}}\ntouch {marker}\ng() {{\n"):
        with pytest.raises(Unreadable, match="bash -n refuses it"):
            bash_meaning(body)
    assert not marker.exists()
