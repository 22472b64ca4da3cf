"""The install steps: the PostgreSQL major the image promises, run by systemd, where the runbook says."""

from __future__ import annotations

import re

import pytest

from harness.pair import ReplicationPair
from harness.runbook import Runbook, StepFailed, drop_step, edit_block

pytestmark = [pytest.mark.parts("setup", "verify"), pytest.mark.bringups(4)]
CREATE_USER = "primary-create-user"
ON_ERROR_STOP = "-v ON_ERROR_STOP=1 "


@pytest.fixture(scope="module", params=["primary", "secondary"])
def node(request, pair):
    return pair.nodes[request.param]


def test_the_expected_major_is_installed(pair, node):
    assert node.host.run(node.layout.package_query).stdout.startswith(f"{pair.pg_major}")
    assert int(node.scalar("SELECT current_setting('server_version_num')::int / 10000")) == pair.pg_major


def test_the_service_is_enabled_and_active(node):
    assert node.service_enabled() == "enabled"
    assert node.unit_state() == "active"


def test_data_and_config_are_where_the_runbook_says(node):
    assert node.scalar("SHOW data_directory") == node.layout.data_dir
    assert node.scalar("SHOW config_file") == node.layout.postgresql_conf
    assert node.scalar("SHOW hba_file") == node.layout.pg_hba_conf


def test_data_checksums_reported_and_pg_rewind_possible(pair, node):
    """pg_rewind (Step 8) needs data checksums (initdb's default from 18 on) or wal_log_hints."""
    checksums, hints = node.scalar("SHOW data_checksums"), node.scalar("SHOW wal_log_hints")
    print(f"{node.name}: PostgreSQL {pair.pg_major}, data_checksums={checksums}, wal_log_hints={hints}")
    assert "on" in (checksums, hints)


def test_the_archive_directory_belongs_to_postgres_alone(pair):
    """Step 2.3: the WAL archive holds every change to the database: only postgres may read it."""
    archive = "/mnt/server/archivedir"
    assert pair.primary.owners_and_modes(archive) == {archive: "postgres:postgres 700"}


# The step that provides the server, and the first later step that cannot do without it.
NEEDED = {
    "debian": ("primary-install", "primary-archive-dir"),  # the postgres account comes with the package
    "el": ("primary-install", "primary-initdb"),  # postgresql-N-setup comes with the package
    "preinstalled": ("primary-initdb", "primary-configure"),  # PGDG's package leaves no configuration file
}


def test_without_the_step_providing_postgresql_the_first_step_needing_it_fails(pair, make_pair, runbook):
    kind = "preinstalled" if pair.preinstalled else pair.family.rstrip("0123456789")
    dropped, first_failing = NEEDED[kind]
    with pytest.raises(StepFailed) as failure:
        make_pair(drop_step(runbook, dropped)).setup()
    assert failure.value.block.step == first_failing


def test_where_the_secondary_s_configuration_comes_from(pair):
    """EL (PGDG): the configuration lives in the data directory, so the base backup copies the
    primary's postgresql.conf and the secondary only appends to it (source defect 6). Debian: the
    secondary keeps its own package's file, and 3.7 must set what it needs again."""
    primary_conf, secondary_conf = (
        n.host.run(f"cat {n.layout.postgresql_conf}", user="root").stdout for n in pair.nodes.values()
    )
    if pair.family == "debian":
        assert not secondary_conf.startswith(primary_conf)
        assert not re.search(r"^\s*archive_command", secondary_conf, re.M)
    else:
        assert secondary_conf.startswith(primary_conf), "the secondary's postgresql.conf is not the primary's copy"
        assert "primary_conninfo" in secondary_conf[len(primary_conf) :]


def with_a_failing_statement(book: Runbook) -> Runbook:
    """2.6's script with a statement that fails before its CREATE ROLE."""
    return edit_block(book, CREATE_USER, "CREATE ROLE", "SELECT 1/0;\nCREATE ROLE")


def has_replica_user(pair: ReplicationPair) -> bool:
    return pair.primary.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'replica_user'") == "1"


def test_a_statement_that_fails_fails_2_6_and_stops_its_script(make_pair, runbook):
    """2.6's psql runs its script with ON_ERROR_STOP: a failing statement ends it with exit 3, so the
    step fails where it failed and no later statement runs, instead of reading green."""
    pair = make_pair(with_a_failing_statement(runbook))
    with pytest.raises(StepFailed) as failure:
        pair.run("setup", until=CREATE_USER)
    assert failure.value.block.step == CREATE_USER
    assert not has_replica_user(pair), "the CREATE ROLE after the failing statement ran"


def test_negative_control_without_on_error_stop_2_6_reads_green_past_its_failure(make_pair, runbook):
    pair = make_pair(with_a_failing_statement(edit_block(runbook, CREATE_USER, ON_ERROR_STOP, "")))
    pair.run("setup", until=CREATE_USER)  # no StepFailed: psql went on and exited 0
    assert pair.transcript.records[-1].step == CREATE_USER and pair.transcript.records[-1].outcome == "ok"
    assert has_replica_user(pair), "the statement after the failing one did not run"
