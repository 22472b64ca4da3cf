"""Slot retention across a secondary outage (Step 2.7), and the disk guard of Step 6."""

from __future__ import annotations

import pytest

from harness.cluster import Cluster, Node
from harness.runbook import drop_step, edit_block

TABLE = "outage_rows"
CONTENT = f"SELECT count(*), md5(coalesce(string_agg(id::text || note, ',' ORDER BY id), '')) FROM {TABLE}"


def write_during_outage(primary: Node, segments: int) -> None:
    """Rows, then `segments` WAL segment switches and checkpoints: old WAL becomes removable."""
    primary.query(f"CREATE TABLE IF NOT EXISTS {TABLE} (id serial PRIMARY KEY, note text)")
    primary.query(f"INSERT INTO {TABLE} (note) SELECT 'row ' || g FROM generate_series(1, 1000) g")
    primary.advance_wal(segments)
    primary.checkpoint()
    primary.checkpoint()


def segment_on_disk(primary: Node, lsn: str) -> bool:
    return bool(
        primary.scalar("SELECT count(*) > 0 FROM pg_ls_waldir() WHERE name = pg_walfile_name(%s::pg_lsn)", (lsn,))
    )


def slot(primary: Node) -> tuple:
    return primary.query(
        "SELECT active, restart_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = 'secondary_slot'"
    )[0]


def stop_secondary(cluster: Cluster) -> str:
    """Stop the secondary; return the LSN it had replayed."""
    replayed = cluster.secondary.lsn("replay")
    cluster.secondary.stop()
    cluster.primary.poll_query_until("SELECT count(*) FROM pg_stat_replication", 0)
    return replayed


@pytest.fixture(scope="module")
def slot_cluster(make_cluster, runbook):
    # Step 6's size, shrunk from 1GB to 64MB so that the disk-guard test writes 8 segments, not 70.
    made = make_cluster(edit_block(runbook, "slot-limit-conf", "1GB", "64MB"))
    made.setup()
    return made


def test_slot_keeps_wal_for_a_stopped_secondary_which_then_catches_up(slot_cluster):
    primary, secondary = slot_cluster.primary, slot_cluster.secondary
    system_id = secondary.system_identifier()
    stop_secondary(slot_cluster)
    active, restart_lsn, _ = slot(primary)
    assert not active

    write_during_outage(primary, segments=5)

    _, held_lsn, wal_status = slot(primary)
    assert held_lsn == restart_lsn and wal_status in ("reserved", "extended")
    assert segment_on_disk(primary, restart_lsn), "the segment the secondary needs was removed"
    secondary.start()
    primary.wait_for_catchup(secondary)
    assert secondary.system_identifier() == system_id, "the secondary was rebuilt, not caught up"
    assert secondary.query(CONTENT) == primary.query(CONTENT)


def test_slot_keeps_wal_across_a_network_cut_then_streaming_resumes(slot_cluster):
    primary, secondary = slot_cluster.primary, slot_cluster.secondary
    primary.wait_for_catchup(secondary)
    primary.cut_from(secondary)
    try:
        # Feedback sent before the cut may still land, so the slot may move up to here, not past it.
        cut_lsn = primary.lsn("write")
        write_during_outage(primary, segments=3)
        _, held_lsn, _ = slot(primary)
        assert primary.scalar("SELECT %s::pg_lsn <= %s::pg_lsn", (held_lsn, cut_lsn)), "the slot let go of WAL"
        assert segment_on_disk(primary, held_lsn)
    finally:
        primary.heal()
    primary.wait_for_catchup(secondary, timeout=90)
    assert secondary.query(CONTENT) == primary.query(CONTENT)


def test_bounded_slot_is_invalidated_and_wal_stays_bounded(slot_cluster):
    primary = slot_cluster.primary
    stop_secondary(slot_cluster)
    slot_cluster.run("slot-limit")
    _, restart_lsn, _ = slot(primary)
    offset = primary.log_offset()

    write_during_outage(primary, segments=8)

    primary.poll_query_until("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'secondary_slot'", "lost")
    primary.wait_for_log(r"invalidating (obsolete replication )?slot \"secondary_slot\"", offset)
    assert not segment_on_disk(primary, restart_lsn), "the bounded slot still holds WAL"
    wal_mb = primary.scalar("SELECT sum(size) / 1024 / 1024 FROM pg_ls_waldir()")
    print(f"pg_wal after invalidation: {wal_mb} MB (max_slot_wal_keep_size = 64MB)")


def test_negative_control_without_a_slot_the_secondary_cannot_continue(make_cluster, runbook):
    """No slot, wal_keep_size = 0 (default): the WAL the secondary needs is gone after an outage."""
    book = drop_step(runbook, "primary-create-slot")
    book = edit_block(book, "secondary-basebackup", " -S secondary_slot", "")
    book = edit_block(book, "secondary-configure", "primary_slot_name = 'secondary_slot'", "")
    made = make_cluster(book)
    made.setup()
    assert made.primary.scalar("SHOW wal_keep_size") == "0"
    stop_secondary(made)
    write_during_outage(made.primary, segments=5)
    offset = made.secondary.log_offset()
    made.secondary.start()
    made.secondary.wait_for_log(r"requested WAL segment \w+ has already been removed", offset)
