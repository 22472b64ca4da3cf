"""Steps 7 and 8 of the runbook as tests: fail over to the secondary while a client writes, then rejoin.

The mechanics (writer, probe, RTO/RPO) are in harness/failover.py. Figures are printed
(`pytest -s`) and written to the artifacts folder's figures/promotion.txt.

After Step 7 the pair's roles are the new ones: `pair.primary` is the promoted node, `pair.secondary`
the old primary.
"""

from __future__ import annotations

import psycopg
import pytest

from harness.failover import PROBE_ID, TABLE, Failover, fail_over
from harness.pair import ReplicationPair
from harness.runbook import StepFailed, drop_step

pytestmark = [pytest.mark.parts("setup", "failover", "rejoin"), pytest.mark.bringups(3)]


@pytest.fixture(scope="module")
def record(figures):
    return figures("promotion").record


@pytest.fixture(scope="module")
def promoted(make_pair, record) -> tuple[ReplicationPair, Failover]:
    """A pair set up by the runbook, failed over under write load by its Step 7."""
    pair = make_pair()
    pair.setup()
    failover = fail_over(pair)
    record(failover.render())
    return pair, failover


@pytest.fixture(scope="module")
def rejoined(promoted, record) -> tuple[ReplicationPair, str]:
    """The same pair after Step 8: the old primary rewound and streaming from the new one; what
    pg_rewind said."""
    pair, _ = promoted
    said = []

    def show_rewind(block, result):
        if block.action == "rewind":
            said.append(result.stdout + result.stderr)
            record(f"== rejoin ==\npg_rewind said:\n{result.tail(4)}\n")

    pair.run("rejoin", after=show_rewind)
    return pair, "".join(said)


# --- Step 7: the promotion ---------------------------------------------------------------------


def test_promoted_secondary_leaves_recovery_on_the_next_timeline(promoted):
    pair, failover = promoted
    assert not pair.primary.in_recovery()
    assert failover.timeline_after == failover.timeline_before + 1


def test_the_fence_keeps_the_old_primary_from_starting_at_the_next_boot(promoted):
    """7.1 disables the old primary's service: a reboot must not bring back a second primary."""
    pair, failover = promoted
    service = pair.secondary.layout.service
    assert failover.old_enabled == "disabled", f"after Step 7.1 the old primary's {service} is {failover.old_enabled!r}"


def test_new_primary_accepts_writes(promoted):
    pair, failover = promoted
    assert failover.rto is not None, "no write was accepted after the promotion"
    assert pair.primary.scalar(f"SELECT count(*) FROM {TABLE} WHERE id = {PROBE_ID}") == 1
    pair.primary.query(f"INSERT INTO {TABLE} (id) VALUES (-1)")
    assert pair.primary.scalar(f"SELECT count(*) FROM {TABLE} WHERE id = -1") == 1


def test_every_replayed_commit_survives_and_a_clean_stop_loses_none(promoted):
    _, failover = promoted
    assert failover.unanswered is not None, f"the writes were not going on at the failure ({failover.writer_error})"
    assert failover.replayed_before > 0
    assert set(range(1, failover.replayed_before + 1)) <= failover.ids_after
    assert "shut down" in failover.old_state and "in production" not in failover.old_state
    assert failover.lost == [], "a clean stop ships every committed transaction to the secondary"
    assert failover.rpo_bytes == 0, failover.render()


def test_the_new_primary_archives_as_its_configuration_says(promoted):
    """EL: the base backup gave the secondary the primary's archive_mode and archive_command, and 3.9.7
    created the directory they write to, so the new primary archives its own WAL at once (source
    defects 1 and 7). Debian: the secondary's own configuration does not archive (see 5.3)."""
    pair, _ = promoted
    new = pair.primary
    if pair.family == "debian":
        assert new.scalar("SHOW archive_mode") == "off"
        return
    new.advance_wal(1)
    new.wait_for_archiver("archived_count > 0")
    assert new.archiver().failed_count == 0
    archived = new.archiver().last_archived_wal
    assert new.host.run(f"test -f /mnt/server/archivedir/{archived}", user="root", check=False).rc == 0


# --- Step 8: the rejoin ------------------------------------------------------------------------


def test_old_primary_rejoins_as_a_streaming_standby(rejoined, promoted):
    pair, _ = rejoined
    new, old = pair.primary, pair.secondary
    rows = new.query("SELECT application_name, state, host(client_addr) FROM pg_stat_replication")
    assert ("old_primary", "streaming", old.host.address) in rows
    assert new.slot("primary_slot").active
    assert old.in_recovery()
    assert old.query("SELECT status, received_tli, slot_name FROM pg_stat_wal_receiver") == [
        ("streaming", promoted[1].timeline_after, "primary_slot")
    ]
    assert old.query("SELECT slot_name FROM pg_replication_slots") == []


def test_after_a_clean_stop_pg_rewind_has_nothing_to_copy(rejoined):
    """Every WAL record reached the secondary before the clean stop: the control for test_rewind.py."""
    _, said = rejoined
    assert "no rewind required" in said


def test_row_written_on_new_primary_is_read_on_old_primary(rejoined):
    pair, _ = rejoined
    new, old = pair.primary, pair.secondary
    new.query(f"INSERT INTO {TABLE} (id) VALUES (-2)")
    new.wait_for_catchup(old)
    assert old.scalar(f"SELECT count(*) FROM {TABLE} WHERE id = -2") == 1
    assert old.scalar(f"SELECT count(*) FROM {TABLE}") == new.scalar(f"SELECT count(*) FROM {TABLE}")


# --- negative control --------------------------------------------------------------------------


def test_without_the_promote_step_the_secondary_stays_read_only(make_pair, runbook):
    pair = make_pair(drop_step(runbook, "failover-promote"))
    pair.setup()
    with pytest.raises(StepFailed) as failure:
        pair.run("failover")
    assert failure.value.block.step == "failover-check"
    assert pair.secondary.in_recovery()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pair.secondary.query("CREATE TABLE refused (id int)")


def test_without_the_secondary_s_archive_directory_the_new_primary_cannot_archive(promoted, make_pair, runbook):
    if promoted[0].family == "debian":
        pytest.skip("Debian: the secondary's own configuration does not archive, there is no directory to miss")
    pair = make_pair(drop_step(runbook, "secondary-archive-dir"))
    pair.setup()
    pair.run("failover")
    new = pair.primary
    new.advance_wal(1)
    new.wait_for_archiver("failed_count > 0")
    assert new.archiver().archived_count == 0


# --- the crash variant ---------------------------------------------------------------------------


def test_after_a_crash_of_the_primary_every_replayed_commit_survives(make_pair, record):
    """SIGKILL instead of a clean stop: what the secondary had replayed survives; RPO is measured, not asserted."""
    pair = make_pair()
    pair.setup()
    failover = fail_over(pair, crash=True)
    record(failover.render())
    assert not pair.primary.in_recovery()
    assert failover.timeline_after == failover.timeline_before + 1
    assert failover.rto is not None, "no write was accepted after the promotion"
    assert set(range(1, failover.replayed_before + 1)) <= failover.ids_after
    # Killed, so not shut down cleanly - unless its unit (PGDG's: Restart=on-failure) started it again
    # and the fence step then stopped it: after its crash recovery ("shut down", NRestarts > 0) or during
    # it ("shut down in recovery", which only a crash puts a primary in; test_interrupted_crash_recovery.py).
    killed = "in production" in failover.old_state or "shut down in recovery" in failover.old_state
    assert killed or failover.restarts > 0, "the old primary was not killed"
