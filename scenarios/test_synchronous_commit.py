"""Step 10, synchronous commit: a crash of the primary (kill -9) under write load, then the
runbook's failover, loses no acknowledged transaction, run after run; while the secondary is
down a commit waits, and the runbook's way to turn it off lets it through.

The asynchronous counterpart is measured, not asserted (a kill may or may not catch a commit in
flight): test_promotion.py's crash variant prints its RPO.
"""

from __future__ import annotations

import threading

import pytest

from harness.failover import Failover, fail_over
from harness.runbook import StepFailed, edit_block

pytestmark = [pytest.mark.parts("setup", "sync-commit", "sync-commit-off", "failover"), pytest.mark.bringups(7)]
RUNS = 5


def killed_under_load(pair) -> Failover:
    """Step 10, write load, kill -9 of the primary, Step 7."""
    pair.setup()
    pair.run("sync-commit")
    return fail_over(pair, crash=True)


@pytest.fixture(scope="module")
def kills(make_pair, figures):
    """RUNS new pairs, two at a time where the hosts are containers, each killed under load."""
    failovers = make_pair.each(RUNS, killed_under_load)
    for run, failover in enumerate(failovers, 1):
        figures("sync").record(f"run {run}/{RUNS} with synchronous commit:\n{failover.render()}")
    return failovers


def test_no_kill_loses_an_acknowledged_transaction(kills, figures):
    assert len(kills) == RUNS
    for failover in kills:
        assert failover.unanswered is not None, f"the writes were not going on at the kill ({failover.writer_error})"
        assert failover.lost == [], failover.render()
    acknowledged = sum(len(f.committed) for f in kills)
    figures("sync").record(
        f"RPO over {RUNS} kills with synchronous commit: 0 of {acknowledged} acknowledged transactions lost"
    )


def commit_while_replay_is_paused(pair) -> None:
    """Step 10 waits for the standby's flush, not its replay (`on`, as its comment says; `remote_apply` would
    wait here until replay resumes): a commit returns while the secondary's replay is paused."""
    pair.secondary.query("SELECT pg_wal_replay_pause()")
    committed = threading.Event()

    def commit() -> None:  # a connection of its own: a waiting commit must not hold the node's shared one
        with pair.primary.connect() as conn:
            conn.execute("SET statement_timeout = 0")
            conn.execute("INSERT INTO pgrepl_sync VALUES (1)")
            committed.set()

    try:
        threading.Thread(target=commit, name="commit-during-paused-replay", daemon=True).start()
        committed.wait(timeout=15)
        assert committed.is_set(), (
            "a commit waited for the paused replay of the secondary: Step 10's synchronous_commit is not 'on' "
            "(seen: "
            + pair.primary.rows_as_text(
                "SELECT wait_event, state, query FROM pg_stat_activity "
                "WHERE wait_event IS NOT NULL AND backend_type = 'client backend'"
            )
            + ")"
        )
    finally:
        pair.secondary.query("SELECT pg_wal_replay_resume()")


def test_with_the_secondary_down_a_commit_waits_until_synchronous_commit_is_off(make_pair):
    """The wait is seen in pg_stat_activity (wait_event SyncRep). statement_timeout does not end it:
    PostgreSQL turns the timeout off before it commits; only a cancel or Step 10's "off" does."""
    pair = make_pair(replacing=True)
    pair.setup()
    pair.run("sync-commit")
    primary = pair.primary
    primary.query("CREATE TABLE pgrepl_sync (id int)")
    commit_while_replay_is_paused(pair)
    pair.secondary.stop()
    primary.wait_for_no_walsender()
    committed = threading.Event()

    def commit() -> None:
        with primary.connect() as conn:
            conn.execute("SET statement_timeout = 0")
            conn.execute("INSERT INTO pgrepl_sync VALUES (2)")
            committed.set()

    waiter = threading.Thread(target=commit, name="waiting-commit", daemon=True)
    waiter.start()
    primary.poll_query_until("SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'SyncRep'", timeout=15)
    assert not committed.is_set(), "the commit did not wait for the (stopped) synchronous standby"
    pair.run("sync-commit-off")
    waiter.join(timeout=30)
    assert committed.is_set(), "turning synchronous commit off did not release the waiting commit"


def test_when_the_secondary_is_not_synchronous_the_check_fails_and_says_so(make_pair, runbook):
    """Step 10's check must fail, naming the standby, when it never becomes synchronous (here: stopped);
    its deadline is cut from 30 s to 3 s for the test, and the transcript says so."""
    pair = make_pair(edit_block(runbook, "sync-commit-check", "SECONDS + 30", "SECONDS + 3"), replacing=True)
    pair.setup()
    pair.note("test: sync-commit-check's deadline cut from 30 s to 3 s (its failure path is under test)")
    pair.secondary.stop()
    pair.primary.wait_for_no_walsender()
    with pytest.raises(StepFailed) as failure:
        pair.run("sync-commit")
    assert failure.value.block.step == "sync-commit-check"
    assert "exit code 1" in str(failure.value), "the step must fail by its exit status, not only by its output"
    assert "secondary_node1 is not a synchronous standby" in str(failure.value)
