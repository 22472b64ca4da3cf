"""`mutate`'s operators, without Docker: which mutants each line yields, and that each is a real,
well-formed change of the runbook."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import project
from harness.kills import first_to_run
from harness.mutate import (
    Mutant,
    MutateError,
    chosen_parts,
    explanations,
    failed_test,
    mutants,
    run_order,
)
from harness.mutations import (
    BOOT_VALUES,
    ENUM_VALUES,
    VALUE_OPERATORS,
    Change,
    hba_changes,
    name_changes,
    option_changes,
    runbook_names,
    setting_changes,
)
from harness.runbook import parse_runbook, parse_text
from harness.runbook.meaning import settings_meaning
from harness.runbook.parse import FAMILIES

RUNBOOK = Path(project.current().default_runbook)
BASEBACKUP = (
    "sudo -u postgres pg_basebackup -h 192.168.1.10 -D /var/lib/postgresql/18/main -U replica_user "
    "-S secondary_slot -w -v --wal-method=stream"
)


def changed(found: list[Change]) -> dict[str, str]:
    return {c.change: c.replacement for c in found}


# --- settings ----------------------------------------------------------------------------------


def test_a_setting_goes_to_its_boot_value():
    found = changed(list(setting_changes("listen_addresses = '*'", 15)))
    assert found == {"listen_addresses: '*' -> default 'localhost'": "listen_addresses = 'localhost'"}


def test_a_setting_at_its_default_has_no_default_mutant_but_its_other_values():
    found = list(setting_changes("wal_level = replica  # the default", 13))
    assert [c.operator for c in found] == ["other-value", "other-value"]
    assert [c.replacement for c in found] == [
        "wal_level = 'minimal'  # the default",
        "wal_level = 'logical'  # the default",
    ]


@pytest.mark.parametrize("written", ["on", "'on'", "true", "yes", "1", "ON"])
def test_a_boolean_is_compared_by_its_meaning(written):
    found = list(setting_changes(f"hot_standby = {written}", 18))
    assert [(c.operator, c.replacement) for c in found] == [("other-value", "hot_standby = 'off'")]


def test_a_boolean_off_goes_to_on_by_its_default_only():
    found = list(setting_changes("wal_log_hints = on", 17))
    assert [(c.operator, c.replacement) for c in found] == [("default", "wal_log_hints = 'off'")]


def test_an_enum_goes_to_the_default_and_to_every_other_value():
    found = changed(list(setting_changes("synchronous_commit = remote_apply", 15)))
    assert set(found) == {
        "synchronous_commit: 'remote_apply' -> default 'on'",
        "synchronous_commit: 'remote_apply' -> 'local'",
        "synchronous_commit: 'remote_apply' -> 'remote_write'",
        "synchronous_commit: 'remote_apply' -> 'off'",
    }


def test_an_unknown_setting_or_no_setting_yields_nothing():
    assert list(setting_changes("work_mem = 64MB", 15)) == []
    assert list(setting_changes("not a setting at all", 15)) == []


def test_every_setting_the_runbook_sets_has_its_boot_value_for_every_major():
    book = parse_runbook(RUNBOOK)
    conf = [b for b in book.blocks if b.kind == "conf" and not (b.file or "").endswith("pg_hba.conf")]
    names = {name for b in conf for name, _ in settings_meaning(b.body)}
    assert names <= set(BOOT_VALUES), f"no boot value recorded for {sorted(names - set(BOOT_VALUES))}"
    for name in names:
        assert set(BOOT_VALUES[name]) == {13, 15, 17, 18}, name
    for name, values in ENUM_VALUES.items():
        assert BOOT_VALUES[name][18] in values, name


# --- pg_hba.conf -------------------------------------------------------------------------------


def test_an_hba_rule_gets_trust_reject_and_a_wide_address():
    line = "host    replication     replica_user    192.168.1.20/32         scram-sha-256"
    found = changed(list(hba_changes(line)))
    assert found == {
        "method scram-sha-256 -> trust": "host    replication     replica_user    192.168.1.20/32         trust",
        "method scram-sha-256 -> reject": "host    replication     replica_user    192.168.1.20/32         reject",
        "address 192.168.1.20/32 -> 192.168.1.20/0": (
            "host    replication     replica_user    192.168.1.20/0         scram-sha-256"
        ),
    }


def test_a_local_rule_and_a_trust_rule():
    assert set(changed(list(hba_changes("local all postgres peer")))) == {
        "method peer -> trust",
        "method peer -> reject",
    }
    assert set(changed(list(hba_changes("host all all 10.0.0.0/0 trust")))) == {"method trust -> reject"}


# --- names -------------------------------------------------------------------------------------


def test_the_runbook_gives_these_names():
    assert runbook_names(list(parse_runbook(RUNBOOK).blocks)) == {
        "secondary_slot",
        "primary_slot",
        "secondary_node1",
        "old_primary",
        "replica_user",
    }


def test_each_occurrence_of_a_name_is_misspelt_on_its_own():
    unit = "primary_conninfo = 'user=replica_user application_name=secondary_node1' # replica_user"
    found = changed(list(name_changes(unit, {"replica_user", "secondary_node1"})))
    assert found == {
        "replica_user -> replica_userr (occurrence 1)": unit.replace("user=replica_user", "user=replica_userr"),
        "replica_user -> replica_userr (occurrence 2)": unit.replace("# replica_user", "# replica_userr"),
        "secondary_node1 -> secondary_node11 (occurrence 1)": unit.replace("node1'", "node11'"),
    }


def test_a_name_inside_a_longer_word_or_a_message_is_left_alone():
    assert list(name_changes("SELECT 'secondary_slot_2', my-replica_user", {"secondary_slot", "replica_user"})) == []
    assert list(name_changes('echo "secondary_node1 has replayed"', {"secondary_node1"})) == []


# --- options -----------------------------------------------------------------------------------


def test_each_option_of_a_command_is_dropped_with_its_argument():
    found = changed(list(option_changes(BASEBACKUP)))
    assert found["pg_basebackup: drop -S secondary_slot"] == BASEBACKUP.replace(" -S secondary_slot", "")
    assert found["pg_basebackup: drop --wal-method=stream"] == BASEBACKUP.replace(" --wal-method=stream", "")
    assert found["pg_basebackup: drop -w"] == BASEBACKUP.replace(" -w", "")
    assert found["sudo: drop -u postgres"] == BASEBACKUP.replace(" -u postgres", "")
    assert len(found) == 8  # sudo -u; -h -D -U -S -w -v --wal-method


def test_a_bundle_loses_one_letter_at_a_time_and_its_argument_with_the_last():
    unit = '  row=$(sudo -u postgres psql -Atc "SELECT 1")'
    found = changed(list(option_changes(unit)))
    assert found == {
        "sudo: drop -u postgres": '  row=$(sudo psql -Atc "SELECT 1")',
        "psql: drop -A from -Atc": '  row=$(sudo -u postgres psql -tc "SELECT 1")',
        "psql: drop -t from -Atc": '  row=$(sudo -u postgres psql -Ac "SELECT 1")',
        'psql: drop -c (and "SELECT 1") from -Atc': "  row=$(sudo -u postgres psql -At)",
    }


def test_options_of_the_shell_and_of_a_here_document_s_body_are_left_alone():
    assert list(option_changes("set -o history")) == []
    unit = "sudo -u postgres psql -v ON_ERROR_STOP=1 <<'SQL'\nSELECT '-x -y';\nSQL"
    found = changed(list(option_changes(unit)))
    assert set(found) == {"sudo: drop -u postgres", "psql: drop -v ON_ERROR_STOP=1"}
    assert all(text.endswith("\nSELECT '-x -y';\nSQL") for text in found.values())


@pytest.mark.parametrize(
    ("unit", "dropped"),
    [
        ('sudo -u postgres psql -v ON_ERROR_STOP=1 -c "SELECT pg_reload_conf();"', False),
        ('sudo -u postgres psql -v ON_ERROR_STOP=1 -Atc "SELECT pg_promote()"', False),
        ("sudo -u postgres psql -v ON_ERROR_STOP=1 <<'SQL'\nSELECT 1;\nSQL", True),  # a script
        ('sudo -u postgres psql -v ON_ERROR_STOP=1 \\\n  -c "GRANT a;" \\\n  -c "GRANT b;"', True),  # two commands
        ("sudo -u postgres psql -v ON_ERROR_STOP=1 -f setup.sql", True),
    ],
    ids=["one-c", "one-bundled-c", "here-document", "two-c", "file"],
)
def test_on_error_stop_is_dropped_only_where_psql_runs_more_than_one_command(unit, dropped):
    """With a single -c and no script psql exits 1 when the command fails, ON_ERROR_STOP or not: that
    drop would be an equivalent mutant, so it is not made."""
    assert ("psql: drop -v ON_ERROR_STOP=1" in changed(list(option_changes(unit)))) is dropped


def test_openssl_s_options_are_words_dropped_whole_with_their_argument():
    unit = "sudo openssl x509 -req -days 825 -CAkey ca.key -CAcreateserial -out a.crt"
    found = changed(list(option_changes(unit)))
    assert found == {
        "openssl: drop -req": "sudo openssl x509 -days 825 -CAkey ca.key -CAcreateserial -out a.crt",
        "openssl: drop -days 825": "sudo openssl x509 -req -CAkey ca.key -CAcreateserial -out a.crt",
        "openssl: drop -CAkey ca.key": "sudo openssl x509 -req -days 825 -CAcreateserial -out a.crt",
        "openssl: drop -CAcreateserial": "sudo openssl x509 -req -days 825 -CAkey ca.key -out a.crt",
        "openssl: drop -out a.crt": "sudo openssl x509 -req -days 825 -CAkey ca.key -CAcreateserial",
    }


def test_an_option_written_twice_in_a_unit_is_dropped_at_each_place_under_its_own_name():
    unit = "sudo -u postgres cat a | sudo -u postgres tee b"
    found = changed(list(option_changes(unit)))
    assert found == {
        "sudo: drop -u postgres": "sudo cat a | sudo -u postgres tee b",
        "sudo: drop -u postgres (occurrence 2)": "sudo -u postgres cat a | sudo tee b",
    }


def test_a_continued_command_loses_one_of_its_continued_options():
    unit = 'sudo -u postgres psql -v ON_ERROR_STOP=1 \\\n  -c "GRANT a;" \\\n  -c "GRANT b;"'
    found = changed(list(option_changes(unit)))
    assert "GRANT a" not in found['psql: drop -c "GRANT a;"'] and "GRANT b" in found['psql: drop -c "GRANT a;"']
    assert found['psql: drop -c "GRANT b;"'] == 'sudo -u postgres psql -v ON_ERROR_STOP=1 \\\n  -c "GRANT a;"'


# --- the mutants of the runbook ----------------------------------------------------------------


def all_mutants(family: str, classes=("delete", "value")) -> list[Mutant]:
    book = parse_runbook(RUNBOOK)
    variant = "distro" if family == "debian" else "pgdg"
    return mutants(RUNBOOK, family, tuple(book.parts()), variant, classes=classes, pg_major=15)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_value_mutant_changes_its_lines_only_and_the_runbook_still_parses(family):
    lines = RUNBOOK.read_text().splitlines(keepends=True)
    found = all_mutants(family, ("value",))
    assert {m.operator for m in found} == set(VALUE_OPERATORS)
    keys = [(m.key, m.first) for m in found]
    assert len(keys) == len(set(keys)), "two mutants of one line with the same change"
    for mutant in found:
        assert mutant.replacement != mutant.text, mutant.what
        assert "```" not in mutant.replacement, mutant.what  # no fence: the block stays one block
        mutated = mutant.apply(lines).splitlines(keepends=True)
        tail = len(lines) - mutant.last
        assert mutated[: mutant.first - 1] == lines[: mutant.first - 1], mutant.what
        assert mutated[len(mutated) - tail :] == lines[mutant.last :], mutant.what
    parse_text(found[0].apply(lines), RUNBOOK)
    parse_text(found[-1].apply(lines), RUNBOOK)


def test_the_security_weakenings_are_among_the_mutants():
    found = {(m.step, m.change) for m in all_mutants("debian", ("value",))}
    assert ("primary-hba", "method scram-sha-256 -> trust") in found
    assert ("primary-hba", "address 192.168.1.20/32 -> 192.168.1.20/0") in found
    assert ("secondary-basebackup", "pg_basebackup: drop -S secondary_slot") in found
    assert ("rejoin-rewind", "pg_rewind: drop --target-pgdata=/var/lib/postgresql/18/main") in found


def test_a_deletion_is_a_deletion_and_classes_and_steps_select():
    lines = RUNBOOK.read_text().splitlines(keepends=True)
    deletions = all_mutants("debian", ("delete",))
    assert {m.operator for m in deletions} == {"delete"}
    first = deletions[0]
    assert len(first.apply(lines).splitlines()) == len(lines) - (first.last - first.first + 1)
    only = mutants(RUNBOOK, "debian", ("setup",), "distro", classes=("value",), steps=("primary-hba",))
    assert {m.step for m in only} == {"primary-hba"} and len(only) == 4
    with pytest.raises(MutateError, match="--operators"):
        mutants(RUNBOOK, "debian", ("setup",), "distro", classes=("swap",))


def test_all_is_every_part_of_the_runbook_in_its_order_and_an_unknown_part_names_the_choices():
    assert chosen_parts(RUNBOOK, ("all",)) == tuple(parse_runbook(RUNBOOK).parts())
    assert chosen_parts(RUNBOOK, ("archive", "setup")) == ("archive", "setup")
    with pytest.raises(MutateError, match=r"--parts nosuch: .* has no such part; it has .*\(all: every part\)"):
        mutants(RUNBOOK, "debian", ("nosuch",), "distro")


def test_an_explanation_names_a_deletion_or_one_value_mutation(tmp_path):
    runbook = tmp_path / "book.md"
    runbook.write_text("")
    (tmp_path / "book.explained.toml").write_text(
        '[[line]]\nstep = "a"\ntext = "x = 1"\nwhy = "deleted"\n\n'
        '[[line]]\nstep = "a"\ntext = "x = 1"\nchange = "x: \'1\' -> default \'0\'"\nwhy = "changed"\n'
    )
    assert explanations(runbook) == {
        **{("a", "x = 1", "", family): "deleted" for family in FAMILIES},
        **{("a", "x = 1", "x: '1' -> default '0'", family): "changed" for family in FAMILIES},
    }


def test_an_explanation_with_os_holds_on_those_families_only(tmp_path):
    """A line that one family's package already makes redundant (Debian's `ssl = on`) is mutated on the others."""
    runbook = tmp_path / "book.md"
    runbook.write_text("")
    explained = tmp_path / "book.explained.toml"
    explained.write_text('[[line]]\nstep = "a"\ntext = "ssl = on"\nos = ["debian"]\nwhy = "the package sets it"\n')
    assert explanations(runbook) == {("a", "ssl = on", "", "debian"): "the package sets it"}
    explained.write_text('[[line]]\nstep = "a"\ntext = "ssl = on"\nos = ["suse"]\nwhy = "?"\n')
    with pytest.raises(MutateError, match="os must be a list of debian, el8, el7"):
        explanations(runbook)


def test_the_committed_explanations_each_name_a_mutant_there_is():
    """A stale explanation (its line or change gone from the runbook) would hide nothing: it is an error."""
    live = {m.key for family in FAMILIES for m in all_mutants(family)}
    families: dict[tuple[str, str, str], list[tuple]] = {}
    for key in explanations(RUNBOOK):  # one entry: its line on each family it names
        families.setdefault(key[:3], []).append(key)
    stale = [entry for entry, keys in families.items() if not any(key in live for key in keys)]
    assert stale == []


def test_list_prints_the_value_mutants_with_their_change(capsys):
    from harness import __main__ as cli_main

    assert cli_main.main(["mutate", "--list", "--operators", "value", "--steps", "primary-hba"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all("primary-hba" in line for line in out)
    assert any("[hba-method: method scram-sha-256 -> trust]" in line for line in out)


# --- the order modules run in on a mutant -------------------------------------------------------


def test_modules_that_killed_mutants_of_the_same_step_run_first_then_the_cheapest():
    ledger = [
        {"step": "primary-configure", "verdict": "killed", "by": "scenarios/test_archive_durability.py"},
        {"step": "primary-configure", "verdict": "killed", "by": "scenarios/test_archive_durability.py"},
        {"step": "primary-configure", "verdict": "killed", "by": "scenarios/test_install.py"},
        {"step": "primary-configure", "verdict": "survived", "by": None},
        {"step": "primary-hba", "verdict": "killed", "by": "scenarios/test_security.py"},
    ]
    chosen = ["scenarios/test_install.py", "scenarios/test_security.py", "scenarios/test_archive_durability.py"]
    first = first_to_run(ledger, ["primary-configure"], chosen)
    assert first == {"scenarios/test_archive_durability.py": [], "scenarios/test_install.py": []}
    costs = {"scenarios/test_install.py": 1, "scenarios/test_security.py": 2, "scenarios/test_archive_durability.py": 3}
    assert run_order(chosen, costs, first) == [
        "scenarios/test_archive_durability.py",
        "scenarios/test_install.py",
        "scenarios/test_security.py",
    ]
    none = first_to_run(ledger, ["secondary-configure"], chosen)
    assert none == {} and run_order(chosen, costs, none) == sorted(chosen, key=costs.get)


def test_the_tests_that_killed_mutants_of_the_step_come_per_module_most_kills_first():
    security, rewind, tls = "scenarios/test_security.py", "scenarios/test_rewind.py", "scenarios/test_tls.py"
    ledger = [
        {"step": "rejoin-hba", "verdict": "killed", "by": rewind, "test": "test_rewinds"},
        {"step": "rejoin-hba", "verdict": "killed", "by": security, "test": "test_third_refused"},
        {"step": "rejoin-hba", "verdict": "killed", "by": security, "test": "test_third_refused"},
        {"step": "rejoin-hba", "verdict": "killed", "by": security, "test": "test_grants"},
        {"step": "rejoin-hba", "verdict": "killed", "by": security},  # measured before tests were recorded
        {"step": "rejoin-hba", "verdict": "killed", "by": tls, "test": "test_tls"},  # not a module of this mutant
        {"step": "rejoin-hba", "verdict": "survived", "by": None},
        {"step": "rejoin-start", "verdict": "killed", "by": rewind, "test": "test_other_step"},
    ]
    assert first_to_run(ledger, ["rejoin-hba"], [rewind, security]) == {
        security: ["test_third_refused", "test_grants"],
        rewind: ["test_rewinds"],
    }
    assert first_to_run(ledger, ["rejoin-check"], [rewind, security]) == {}


def test_kills_of_the_mutant_s_own_line_come_before_the_step_s_other_lines():
    """A step's lines may be seen by different tests: the history of the very line wins over the step's."""
    security, rewind = "scenarios/test_security.py", "scenarios/test_rewind.py"
    hba = "host replication replica_user 192.168.1.20/32 scram-sha-256"
    ledger = [
        {"step": "rejoin-hba", "verdict": "killed", "by": security, "test": "test_third_refused", "text": "other"},
        {"step": "rejoin-hba", "verdict": "killed", "by": security, "test": "test_third_refused", "text": "other"},
        {"step": "rejoin-hba", "verdict": "killed", "by": rewind, "test": "test_rewinds", "text": f"{hba}  [x: y]"},
    ]
    assert list(first_to_run(ledger, ["rejoin-hba"], [rewind, security], line=hba)) == [rewind, security]
    assert list(first_to_run(ledger, ["rejoin-hba"], [rewind, security])) == [security, rewind]


def test_the_test_named_first_in_a_scenario_run_s_short_summary():
    output = (
        "..F\n=== short test summary info ===\n"
        "FAILED scenarios/test_security.py::test_third_refused[debian-12-docker] - AssertionError: got in\n"
        "!!! stopping after 1 failures !!!\n"
    )
    assert failed_test(output) == "test_third_refused"
    assert failed_test("E\nERROR scenarios/test_tls.py::test_tls[el8-pgdg-layout-docker] - StepFailed\n") == "test_tls"
    assert failed_test("1 passed in 3.0s\n") is None


def test_only_the_named_tests_run_and_the_skipped_ones_with_every_parameter_but_no_other(pytester):
    """The argv scenario_argv builds selects and deselects as meant, in pytest itself: `--deselect MODULE::NAME[`
    leaves test_probe_more (a name that starts with test_probe) alone."""
    from harness.mutate import Mutation

    pytester.makepyfile(
        test_m="""
        import pytest
        @pytest.mark.parametrize("image", ["a", "b"])
        def test_probe(image): pass
        @pytest.mark.parametrize("image", ["a"])
        def test_probe_more(image): pass
        def test_other(): pass
        """
    )
    mutation = Mutation.__new__(Mutation)
    mutation.image = "debian-12"

    def collected(**selection) -> list[str]:
        argv = mutation.scenario_argv("test_m.py", Path("r.md"), Path("a"), **selection)
        targets = argv[argv.index("pytest") + 1 : argv.index("-x")]
        deselect = [arg for i, arg in enumerate(argv) if i and argv[i - 1] == "--deselect"]
        result = pytester.runpytest("--collect-only", "-q", *targets, *(f"--deselect={d}" for d in deselect))
        return [line for line in result.outlines if "::" in line]

    assert collected(only=["test_probe"]) == ["test_m.py::test_probe[a]", "test_m.py::test_probe[b]"]
    assert collected(skip=["test_probe"]) == ["test_m.py::test_probe_more[a]", "test_m.py::test_other"]
