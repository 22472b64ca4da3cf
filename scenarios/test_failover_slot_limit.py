"""Step 7's slot limit as tests (defect 20): the old primary dies and never comes back, and the slot the
new primary holds for it must not keep WAL without bound.

The runbook's 1GB (Steps 6 and 7.3) is shrunk to 64MB so that the test writes 8 segments, not 70. The
negative control is the same runbook without 7.3's limit: Step 6 ran on the old primary, yet the new
primary's slot keeps every segment.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.pair import ReplicationPair
from harness.runbook import Runbook, drop_step, edit_block
from harness.waiting import wait_until

pytestmark = [pytest.mark.parts("setup", "slot-limit", "failover"), pytest.mark.bringups(2)]
SLOT = "primary_slot"  # 7.3's slot for the old primary
LIMIT_MB = 64
SEGMENTS = 8  # 16 MB each: twice the limit


def with_a_small_limit(runbook: Runbook) -> Runbook:
    """Steps 6 and 7.3 with 64MB in place of 1GB."""
    for step in ("slot-limit-conf", "failover-slot-limit"):
        runbook = edit_block(runbook, step, "max_slot_wal_keep_size = 1GB", f"max_slot_wal_keep_size = {LIMIT_MB}MB")
    return runbook


def old_primary_lost_for_good(pair: ReplicationPair) -> SimpleNamespace:
    """Set-up and Step 6, then the primary dies (SIGKILL) and Step 7 fails over to the secondary; the old
    primary never returns. The new primary writes SEGMENTS segments and checkpoints twice."""
    pair.setup()
    pair.run("slot-limit")
    pair.primary.kill9()
    pair.run("failover")
    new = pair.primary  # the promoted secondary
    slot = new.slot(SLOT)
    assert slot is not None and not slot.active
    offset = new.log_offset()
    new.advance_wal(SEGMENTS)
    if new.scalar("SHOW archive_mode") != "off":  # EL: inherited from the primary (3.9.6)
        # a segment that waits for the archiver stays in pg_wal whatever the slot: let it go first
        wait_until(lambda: new.archive_backlog() == 0, timeout=90, what=f"the archiver on {new.name} to catch up")
    new.checkpoint()
    new.checkpoint()
    retained = new.wal_retained()
    print(f"pg_wal on the new primary holds {retained / 2**20:.0f} MB behind its write position")
    return SimpleNamespace(
        new=new,
        restart_lsn=slot.restart_lsn,
        offset=offset,
        retained=retained,
        limit=new.scalar("SHOW max_slot_wal_keep_size"),
    )


@pytest.fixture(scope="module")
def lost_for_good(make_pair, runbook) -> SimpleNamespace:
    return old_primary_lost_for_good(make_pair(with_a_small_limit(runbook)))


def test_the_old_primary_s_slot_is_invalidated_past_the_limit(lost_for_good):
    new = lost_for_good.new
    assert lost_for_good.limit == f"{LIMIT_MB}MB", "7.3 did not set the limit on the new primary"
    new.wait_for_slot(SLOT, wal_status="lost")
    new.wait_for_log(rf"invalidating (obsolete replication )?slot \"{SLOT}\"", lost_for_good.offset)


def test_pg_wal_on_the_new_primary_stays_within_the_limit(lost_for_good):
    assert not lost_for_good.new.has_wal_segment(lost_for_good.restart_lsn), "the slot still holds its first segment"
    assert lost_for_good.retained <= LIMIT_MB * 2**20, f"pg_wal holds {lost_for_good.retained} bytes"


def test_negative_control_without_7_3_s_limit_the_new_primary_keeps_every_segment(make_pair, runbook):
    """Step 6 ran on the old primary; without 7.3's line the new primary has no limit at all."""
    control = old_primary_lost_for_good(make_pair(drop_step(with_a_small_limit(runbook), "failover-slot-limit")))
    assert control.limit == "-1"
    assert control.new.slot(SLOT).wal_status in ("reserved", "extended")
    assert control.new.has_wal_segment(control.restart_lsn)
    assert control.retained >= SEGMENTS * 16 * 2**20 > LIMIT_MB * 2**20, f"pg_wal holds {control.retained} bytes"
