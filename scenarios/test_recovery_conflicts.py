"""Reads on the secondary against VACUUM on the primary (source defect 16; PostgreSQL's own
031_recovery_conflict.pl): without hot_standby_feedback a long read is cancelled, with the
runbook's Step 9 it completes, and the primary shows what that costs (the slot's xmin, and
dead rows its VACUUM must keep). What feedback does not prevent, as Step 9 says: a lock conflict
(VACUUM truncating an emptied table) still cancels a read that holds the table's lock.

To keep the scenario short, the secondary's max_standby_streaming_delay is lowered from 30 s to
1 s (the harness says so in the transcript); the conflict is the same, only sooner.
"""

from __future__ import annotations

import pytest

from harness.conflicts import ROWS, long_read_against_vacuum, read_against_truncation

pytestmark = [pytest.mark.parts("setup", "verify", "read-offload"), pytest.mark.bringups(1)]


@pytest.fixture(scope="module")
def reads(pair):
    pair.note("harness: max_standby_streaming_delay = 1s on the secondary (30 s by default), to keep the test short")
    pair.secondary.append_conf("postgresql.conf", "max_standby_streaming_delay = 1s", reload=True)
    return pair


# The order is the fixtures': the read without feedback is measured first, then Step 9 turns feedback
# on for the rest of the module and the same read is measured again; the tests may run in any order.
@pytest.fixture(scope="module")
def without_feedback(reads):
    assert reads.secondary.scalar("SHOW hot_standby_feedback") == "off", "feedback is on before Step 9"
    return long_read_against_vacuum(reads.primary, reads.secondary)


@pytest.fixture(scope="module")
def with_step_9(reads, without_feedback):
    reads.run("read-offload")
    return long_read_against_vacuum(reads.primary, reads.secondary)


def test_without_feedback_vacuum_on_the_primary_cancels_a_long_read_on_the_secondary(reads, without_feedback):
    outcome = without_feedback
    assert outcome.error is not None, f"the read returned {outcome.rows} rows: no conflict"
    assert "conflict with recovery" in outcome.error
    assert outcome.dead_rows_kept == 0, "without feedback VACUUM removes every deleted row at once"
    reads.secondary.poll_query_until(
        "SELECT confl_snapshot > 0 FROM pg_stat_database_conflicts WHERE datname = 'postgres'", timeout=15
    )


def test_with_step_9_the_same_read_completes_and_the_primary_holds_back_vacuum(with_step_9):
    outcome = with_step_9
    assert outcome.error is None, (
        f"the read was cancelled although the runbook set hot_standby_feedback: {outcome.error}"
    )
    assert outcome.rows == ROWS, "the read did not see every row its snapshot holds"
    assert outcome.held_xmin is not None, "the primary never saw the secondary's xmin"
    assert outcome.dead_rows_kept > 0, "VACUUM on the primary removed the rows the read still needed"


def test_feedback_does_not_prevent_a_lock_conflict_vacuum_truncation_cancels_the_read(reads):
    """Step 9 says feedback prevents snapshot conflicts only: VACUUM's truncation of an emptied table
    takes an ACCESS EXCLUSIVE lock that replay needs on the secondary, and a read holding the table's
    lock there is cancelled all the same (confl_lock)."""
    if "read-offload" not in reads.parts_run:
        reads.run("read-offload")
    before = reads.secondary.scalar("SELECT confl_lock FROM pg_stat_database_conflicts WHERE datname = 'postgres'")
    outcome = read_against_truncation(reads.primary, reads.secondary)
    assert outcome.held_xmin is not None, "the primary never saw the secondary's feedback"
    assert outcome.dead_rows_kept == 0, "feedback held the deleted rows: VACUUM could not empty the table"
    assert outcome.error is not None, "the read survived VACUUM's truncation: no lock conflict"
    assert "conflict with recovery" in outcome.error, outcome.error
    reads.secondary.poll_query_until(
        f"SELECT confl_lock > {before} FROM pg_stat_database_conflicts WHERE datname = 'postgres'", timeout=15
    )
