"""The source procedure followed literally (runbooks/source-as-written.md): its defects reproduce.

Each test shows one item of shared/source-defects.md failing on real hosts, which is the proof
that the gate would have caught it; the corrected runbook passes the same checks elsewhere.
On Debian the source stops at the base backup (defect 5); on the EL families (PGDG's layout)
it gets through, and the defects that do not depend on that still show.
"""

from __future__ import annotations

import contextlib

import pytest

from harness import project
from harness.pair import ReplicationPair
from harness.runbook import StepFailed, parse_runbook

pytestmark = [pytest.mark.parts("setup", "verify", runbook="source-as-written.md"), pytest.mark.bringups(1)]


@pytest.fixture(scope="module")
def set_up(make_pair) -> tuple[ReplicationPair, StepFailed | None]:
    """The source's steps until the first that fails (if one does: the failure), and the harness's access."""
    pair = make_pair(parse_runbook(project.current().runbooks / "source-as-written.md"))
    try:
        pair.setup()
    except StepFailed as failure:
        pair.grant_harness_access(pair.primary)
        return pair, failure
    return pair, None


@pytest.fixture(scope="module")
def source(set_up) -> ReplicationPair:
    return set_up[0]


@pytest.fixture(scope="module")
def failure(set_up) -> StepFailed | None:
    """The step of the source that failed, or None when its setup got through."""
    return set_up[1]


def test_defect_5_base_backup_refuses_the_directory_the_package_created(source, failure):
    data_dir = source.secondary.layout.data_dir
    if source.family != "debian":  # PGDG's package leaves the data directory empty: nothing to refuse
        assert failure is None, f"the source's EL procedure should get through: {failure}"
        assert source.secondary.in_recovery()
        return
    assert failure is not None and failure.block.step == "secondary-basebackup"
    assert source.secondary.host.run(f"ls -A {data_dir}", user="root").stdout.strip(), "the directory is not empty"
    if source.pg_major >= 14:
        assert "exists but is not empty" in str(failure)
    else:  # PostgreSQL 13 stored an md5 password: the scram-sha-256 rule refuses the login even earlier
        assert "password authentication failed" in str(failure)


def test_defect_1_archiving_fails_because_the_directory_was_never_created(source):
    primary = source.primary
    primary.advance_wal(1)
    primary.wait_for_archiver("failed_count > 0")
    assert primary.archiver().archived_count == 0


def test_defect_2_the_secondary_cannot_reach_the_archive_nor_restore_from_it(source):
    assert source.primary.host.run("test -d /mnt/server/archivedir", check=False).rc != 0
    assert source.secondary.host.run("test -d /mnt/server/archivedir", check=False).rc != 0
    assert source.secondary.psql("SHOW restore_command") == ""  # the standby's, or (Debian) its package's cluster


def test_defect_17_the_password_is_on_a_command_line_in_sudo_s_log(source):
    assert source.replication_password in source.primary.host.sudo_log()


def test_defect_12_the_process_check_passes_with_nothing_streaming(source, failure):
    if failure is None:  # it streams (EL): take the secondary away first
        source.secondary.stop()
        source.primary.wait_for_no_walsender()
    assert source.primary.scalar("SELECT count(*) FROM pg_stat_replication") == 0
    # "Passes": grep matches its own command line - when ps lists it. ps and grep start together, and
    # now and then ps reads the process table before grep exists; so one pass in a few tries shows it.
    outcomes = []
    for _ in range(5):
        with contextlib.suppress(StepFailed):
            source.run("verify", steps={"verify-walsender"})
        outcomes.append(source.transcript.records[-1].outcome)
        if outcomes[-1] == "ok":
            break
    assert "ok" in outcomes, outcomes
