"""Step 5 of the runbook as tests: a secondary whose WAL the primary removed recovers from the shared archive."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.runbook import drop_step

pytestmark = [pytest.mark.parts("setup", "archive"), pytest.mark.bringups(3)]
SHARED_ARCHIVE = {"archive": "/mnt/pgarchive"}
CHECKSUM = "SELECT count(*), md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM archive_rows"


def drive_secondary_past_its_wal(pair) -> SimpleNamespace:
    """Stop the secondary, drop its slot, write and remove WAL it needs; recreate the slot. The secondary stays down."""
    primary, secondary = pair.primary, pair.secondary
    assert primary.scalar("SHOW wal_keep_size") == "0", "wal_keep_size would keep the WAL this outage must remove"
    replayed = secondary.lsn("replay")
    secondary.stop()
    primary.wait_for_slot("secondary_slot", active=False)
    primary.query("SELECT pg_drop_replication_slot('secondary_slot')")
    primary.query("CREATE TABLE archive_rows (id int PRIMARY KEY, note text)")
    primary.query("INSERT INTO archive_rows SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    primary.advance_wal(5)
    needed = primary.scalar("SELECT pg_walfile_name(%s::pg_lsn)", (replayed,))
    primary.wait_for_archiver(f"last_archived_wal >= '{needed}'")
    primary.checkpoint()
    primary.checkpoint()
    assert not primary.has_wal_segment(replayed), f"{needed} still in pg_wal"
    primary.query("SELECT pg_create_physical_replication_slot('secondary_slot', true)")
    return SimpleNamespace(needed=needed, log_offset=secondary.log_offset())


@pytest.fixture(scope="module")
def recovered(make_pair):
    """The runbook with Step 5, then the outage; the secondary is started again."""
    pair = make_pair(volumes=SHARED_ARCHIVE)
    pair.setup()
    pair.run("archive")
    archived_before = pair.primary.archiver().archived_count
    outage = drive_secondary_past_its_wal(pair)
    pair.secondary.start()
    return SimpleNamespace(pair=pair, archived_before=archived_before, **vars(outage))


def test_secondary_restores_the_removed_wal_from_the_shared_archive(recovered):
    """The secondary fetches the segment the primary no longer has from the archive."""
    recovered.pair.secondary.wait_for_log(f'restored log file "{recovered.needed}" from archive', recovered.log_offset)


def test_secondary_streams_again_and_has_the_primary_s_data(recovered):
    """After the archive, the secondary streams through the recreated slot and equals the primary."""
    primary, secondary = recovered.pair.primary, recovered.pair.secondary
    primary.wait_for_streaming(secondary)
    primary.wait_for_catchup(secondary)
    assert primary.slot("secondary_slot").active
    assert secondary.query(CHECKSUM) == primary.query(CHECKSUM)
    assert secondary.scalar("SELECT count(*) FROM archive_rows") == 1000


def test_archiving_to_the_shared_directory_never_fails(recovered):
    """pg_stat_archiver: no failed attempt, and the segments of the outage were archived."""
    primary = recovered.pair.primary
    primary.wait_for_archiver(f"archived_count > {recovered.archived_before}")
    assert primary.archiver().failed_count == 0


# --- negative controls: the source as written ---------------------------------------------


def test_source_as_written_cannot_recover_the_secondary(make_pair):
    """Archive on the primary's disk and no restore_command (no Step 5): the removed WAL is lost to the secondary."""
    pair = make_pair()
    pair.setup()
    outage = drive_secondary_past_its_wal(pair)
    pair.secondary.start()
    pair.secondary.wait_for_log(r"requested WAL segment [0-9A-F]{24} has already been removed", outage.log_offset)
    assert pair.primary.scalar("SELECT %s::pg_lsn < pg_current_wal_lsn()", (pair.secondary.lsn("replay"),))


def test_without_the_archive_directory_archiving_fails(make_pair, runbook):
    """Source defect 1: without creating /mnt/server/archivedir every archive attempt fails."""
    pair = make_pair(drop_step(runbook, "primary-archive-dir"))
    pair.setup()
    pair.primary.advance_wal(1)
    pair.primary.wait_for_archiver("failed_count > 0", timeout=30)
    assert pair.primary.archiver().archived_count == 0
