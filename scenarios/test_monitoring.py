"""Step 11's check as tests (issue 25, item 6): each of its four conditions is provoked and its line
appears; a healthy pair gets `OK`, and so does the pair again once the condition is gone.

- archiver failure: the archive directory of 2.3 made read-only for a moment (as a full or lost
  mount would);
- replay lag: replay paused on the secondary (pg_wal_replay_pause) while the primary writes 5
  segments, past the block's 64MB;
- inactive slot and slot wal_status: the secondary stopped, with Step 6's limit shrunk to 64MB and
  8 segments written past it (as in test_failover_slot_limit.py), so the slot goes `lost`.

Negative control: the same check with its lag threshold raised to 1TB (a mutated runbook) stays
silent under the same lag, so the line comes from the block's threshold, not from the harness. And
the check run on the standby, where every view is empty, says it is not a primary instead of OK.
"""

from __future__ import annotations

import shlex

import pytest

from harness.layout import ARCHIVE_DIRS
from harness.pair import ReplicationPair
from harness.runbook import Runbook, StepFailed, edit_block, script
from harness.waiting import wait_until

pytestmark = [pytest.mark.parts("setup", "verify", "slot-limit", "monitor"), pytest.mark.bringups(2)]
STEP = "monitor-check"
LAG = "pg_size_bytes('64MB')"
LIMIT_MB = 64


def check(pair: ReplicationPair, book: Runbook | None = None) -> str:
    """Step 11's check on the primary: '' when it prints OK, else the alerts it printed (each line
    starts with ALERT, as a monitoring system matching ^ALERT expects)."""
    try:
        pair.run_step(STEP, book=book)
    except StepFailed as failure:
        assert failure.result is not None and failure.result.rc == 1, str(failure)
        alerts = failure.result.stdout
        assert all(line.startswith("ALERT ") for line in alerts.splitlines()), alerts
        return alerts
    return ""


def lag_bytes(pair: ReplicationPair) -> int:
    """How far the secondary's replay is behind the primary's writes, in bytes (pg_stat_replication)."""
    sql = "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) FROM pg_stat_replication"
    return int(pair.primary.scalar(sql) or 0)


def test_a_healthy_pair_is_ok(pair):
    assert check(pair) == ""


def test_on_the_standby_the_check_says_it_is_not_a_primary(pair):
    """The wrong host (e.g. after a failover): a standby's views are empty, and the check without its
    first query printed OK there (found by this test)."""
    block = pair.block_of(STEP)
    result = pair.secondary.host.run(script(block, (), {}), check=False)  # the block holds no example value
    assert result.rc == 1 and result.stdout.startswith("ALERT not a primary:"), result.tail()


def test_an_archiver_failure_is_reported_until_archiving_works_again(pair):
    primary = pair.primary
    directory = shlex.quote(ARCHIVE_DIRS[0])  # 2.3's, in the archive_command of 2.4
    assert ARCHIVE_DIRS[0] in primary.scalar("SHOW archive_command")
    primary.host.run(f"chmod 500 {directory}", user="root")
    try:
        primary.advance_wal(1)
        primary.wait_for_archiver("last_failed_time > coalesce(last_archived_time, '-infinity')")
        alerts = check(pair)
    finally:
        primary.host.run(f"chmod 700 {directory}", user="root")
    assert "ALERT archiver:" in alerts, alerts
    primary.advance_wal(1)
    primary.wait_for_archiver("last_archived_time > last_failed_time", timeout=90)
    assert check(pair) == ""


def test_replay_lag_past_the_threshold_is_reported(pair, runbook):
    primary, secondary = pair.primary, pair.secondary
    secondary.query("SELECT pg_wal_replay_pause()")
    try:
        primary.advance_wal(5)
        wait_until(lambda: lag_bytes(pair) > 64 * 2**20, timeout=30, what="the secondary to lag 64MB")
        alerts = check(pair)
        silent = check(pair, edit_block(runbook, STEP, LAG, "pg_size_bytes('1TB')"))
    finally:
        secondary.query("SELECT pg_wal_replay_resume()")
    assert "ALERT replay lag:" in alerts, alerts
    assert "replay lag" not in silent, f"negative control: a 1TB threshold fired:\n{silent}"
    primary.wait_for_catchup(secondary)
    assert check(pair) == ""


def with_a_small_limit(runbook: Runbook) -> Runbook:
    """Step 6 with 64MB in place of 1GB, so that 8 segments make the slot lost."""
    limit = "max_slot_wal_keep_size = "
    return edit_block(runbook, "slot-limit-conf", f"{limit}1GB", f"{limit}{LIMIT_MB}MB")


def test_an_inactive_slot_and_then_a_lost_one_are_reported(make_pair, runbook):
    pair = make_pair(with_a_small_limit(runbook))
    pair.setup()
    pair.run("slot-limit")
    primary = pair.primary
    assert check(pair) == "", "the small limit alone fires"
    pair.secondary.stop()
    primary.wait_for_slot("secondary_slot", active=False)
    assert "ALERT inactive slot: secondary_slot" in check(pair)
    primary.advance_wal(8)
    # a segment that waits for the archiver stays in pg_wal whatever the slot
    wait_until(lambda: primary.archive_backlog() == 0, timeout=90, what="the archiver to catch up")
    primary.checkpoint()
    primary.checkpoint()
    primary.wait_for_slot("secondary_slot", wal_status="lost")
    assert "ALERT slot wal_status: secondary_slot is lost" in check(pair)
