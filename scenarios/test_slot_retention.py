"""Slot retention across a secondary outage (Step 2.7), and the disk guard of Step 6."""

from __future__ import annotations

import re

import pytest

from harness.pair import Node, ReplicationPair
from harness.runbook import drop_step, edit_block

pytestmark = [pytest.mark.parts("setup", "slot-limit"), pytest.mark.bringups(3)]
SLOT = "secondary_slot"
TABLE = "outage_rows"
CONTENT = f"SELECT count(*), md5(coalesce(string_agg(id::text || note, ',' ORDER BY id), '')) FROM {TABLE}"


def write_during_outage(primary: Node, segments: int) -> None:
    """Rows, then `segments` WAL segment switches and checkpoints: old WAL becomes removable."""
    primary.query(f"CREATE TABLE IF NOT EXISTS {TABLE} (id serial PRIMARY KEY, note text)")
    primary.query(f"INSERT INTO {TABLE} (note) SELECT 'row ' || g FROM generate_series(1, 1000) g")
    primary.advance_wal(segments)
    primary.checkpoint()
    primary.checkpoint()


def stop_secondary(pair: ReplicationPair) -> str:
    """Stop the secondary; return the LSN it had replayed."""
    replayed = pair.secondary.lsn("replay")
    pair.secondary.stop()
    pair.primary.wait_for_no_walsender()
    return replayed


def with_a_small_limit(make_pair, runbook) -> ReplicationPair:
    """A pair set up by the runbook whose Step 6 (not yet run) limits slots to 64MB, not 1GB, so
    that the disk-guard test writes 8 segments, not 70."""
    made = make_pair(edit_block(runbook, "slot-limit-conf", "1GB", "64MB"))
    made.setup()
    return made


@pytest.fixture(scope="module")
def slot_pair(make_pair, runbook):
    """Shared by the outage tests, each of which leaves the secondary streaming and the slot intact."""
    return with_a_small_limit(make_pair, runbook)


def test_slot_keeps_wal_for_a_stopped_secondary_which_then_catches_up(slot_pair):
    primary, secondary = slot_pair.primary, slot_pair.secondary
    system_id = secondary.system_identifier()
    stop_secondary(slot_pair)
    before = primary.slot(SLOT)
    assert not before.active

    write_during_outage(primary, segments=5)

    after = primary.slot(SLOT)
    assert after.restart_lsn == before.restart_lsn and after.wal_status in ("reserved", "extended")
    assert primary.has_wal_segment(before.restart_lsn), "the segment the secondary needs was removed"
    secondary.start()
    primary.wait_for_catchup(secondary)
    assert secondary.system_identifier() == system_id, "the secondary was rebuilt, not caught up"
    assert secondary.query(CONTENT) == primary.query(CONTENT)


def test_slot_keeps_wal_across_a_network_cut_then_streaming_resumes(slot_pair):
    primary, secondary = slot_pair.primary, slot_pair.secondary
    primary.wait_for_catchup(secondary)
    primary.cut_from(secondary)
    try:
        # Feedback sent before the cut may still land, so the slot may move up to here, not past it.
        cut_lsn = primary.lsn("write")
        write_during_outage(primary, segments=3)
        held_lsn = primary.slot(SLOT).restart_lsn
        assert primary.scalar("SELECT %s::pg_lsn <= %s::pg_lsn", (held_lsn, cut_lsn)), "the slot let go of WAL"
        assert primary.has_wal_segment(held_lsn)
    finally:
        primary.heal()
    primary.wait_for_catchup(secondary, timeout=90)
    assert secondary.query(CONTENT) == primary.query(CONTENT)


def test_bounded_slot_is_invalidated_and_wal_stays_bounded(make_pair, runbook):
    """A pair of its own: the slot ends invalidated and the secondary stopped."""
    bounded = with_a_small_limit(make_pair, runbook)
    primary = bounded.primary
    stop_secondary(bounded)
    said = {}
    bounded.run("slot-limit", after=lambda block, result: said.update({block.step: result.stdout}))
    # the check prints the one line the runbook shows as its expected output: no header, no row count
    check = said["slot-limit-check"]
    assert re.fullmatch(r"secondary_slot\|(reserved|extended)\|-?\d+", check.strip()), check
    restart_lsn = primary.slot(SLOT).restart_lsn
    offset = primary.log_offset()

    write_during_outage(primary, segments=8)

    primary.wait_for_slot(SLOT, wal_status="lost")
    primary.wait_for_log(rf"invalidating (obsolete replication )?slot \"{SLOT}\"", offset)
    assert not primary.has_wal_segment(restart_lsn), "the bounded slot still holds WAL"
    wal_mb = primary.scalar("SELECT sum(size) / 1024 / 1024 FROM pg_ls_waldir()")
    print(f"pg_wal after invalidation: {wal_mb} MB (max_slot_wal_keep_size = 64MB)")


def test_negative_control_without_a_slot_the_secondary_cannot_continue(make_pair, runbook):
    """No slot, wal_keep_size = 0 (default): the WAL the secondary needs is gone after an outage."""
    book = drop_step(runbook, "primary-create-slot")
    book = edit_block(book, "secondary-basebackup", " -S secondary_slot", "")
    book = edit_block(book, "secondary-configure", "primary_slot_name = 'secondary_slot'", "")
    made = make_pair(book)
    made.setup()
    assert made.primary.scalar("SHOW wal_keep_size") == "0"
    stop_secondary(made)
    write_during_outage(made.primary, segments=5)
    offset = made.secondary.log_offset()
    made.secondary.start()
    made.secondary.wait_for_log(r"requested WAL segment \w+ has already been removed", offset)
