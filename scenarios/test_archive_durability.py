"""Step 5's archive command as tests (defect 19): a copy that dies half-way, or a segment archived twice,
does not stop archiving, and the archive never holds a truncated segment under a segment's name.

A crash mid-copy is the server's own archive_command, run as the archiver runs it, killed by a file
size limit after 1 MiB; the server has not recorded the segment as archived (archive_status .ready),
so its archiver copies the segment again. The negative controls run the same with the source's
`test ! -f ... && cp` in Step 5.

5.1's directory is the postgres user's alone (mode 700) as both hosts see it; the control runs 5.1
without `-m 700`.
"""

from __future__ import annotations

import signal

import pytest

from harness.pair import FileDigest, Node, ReplicationPair
from harness.runbook import Runbook, edit_block

pytestmark = [pytest.mark.parts("setup", "archive"), pytest.mark.bringups(2)]
SHARED_ARCHIVE = {"archive": "/mnt/pgarchive"}
ARCHIVE = "/mnt/pgarchive/wal"  # Step 5.1's directory on the shared mount
SOURCE_COMMAND = f"archive_command = 'test ! -f {ARCHIVE}/%f && cp %p {ARCHIVE}/%f'"
CRASH_AFTER_KIB = 1024  # of a 16 MiB segment
RESTORED = "/tmp/pgrepl-restored-segment"  # where the secondary's restore_command is asked to copy a segment


def step5_archive_command(runbook: Runbook) -> str:
    """Step 5's archive_command line, the same in each family's block."""
    lines = {
        line
        for block in runbook.blocks
        if block.step == "archive-primary-conf"
        for line in block.body.splitlines()
        if line.startswith("archive_command")
    }
    assert len(lines) == 1, f"Step 5 should set one archive_command in every family's block, not {sorted(lines)}"
    return lines.pop()


def archiving_pair(make_pair, book: Runbook | None = None) -> ReplicationPair:
    pair = make_pair(book, volumes=SHARED_ARCHIVE)
    pair.setup()
    pair.run("archive")
    # From now on every segment stays in pg_wal, so no checkpoint removes one a test archives again.
    pair.primary.query("SELECT pg_create_physical_replication_slot('pgrepl_keep_wal', true)")
    return pair


@pytest.fixture(scope="module")
def archiving(make_pair) -> ReplicationPair:
    """The runbook with Step 5: the primary archives into the shared directory."""
    return archiving_pair(make_pair)


@pytest.fixture(scope="module")
def archiving_as_the_source(make_pair, runbook) -> ReplicationPair:
    """The same with Step 5's archive_command as the source writes it (made after `archiving`'s tests:
    on inventory hosts a new pair replaces the previous one)."""
    return archiving_pair(
        make_pair, edit_block(runbook, "archive-primary-conf", step5_archive_command(runbook), SOURCE_COMMAND)
    )


def archived_segment(primary: Node) -> tuple[str, FileDigest]:
    """Complete one more segment and wait until the archiver has archived it: its name and its content."""
    archived = primary.archiver().archived_count
    primary.advance_wal(1)
    primary.wait_for_archiver(f"archived_count > {archived}")
    segment = primary.archiver().last_archived_wal
    content = primary.file_digest(f"{primary.layout.data_dir}/pg_wal/{segment}")
    assert content is not None, f"{segment} is no longer in pg_wal"
    return segment, content


def crash_mid_copy(primary: Node, segment: str) -> None:
    """`segment` as if never archived (removed from the archive), then the server's archive_command
    copies it and dies half-way."""
    primary.host.run(f"rm {ARCHIVE}/{segment}", user="root")
    copy = primary.run_wal_command("archive_command", segment, f"pg_wal/{segment}", write_limit_kib=CRASH_AFTER_KIB)
    assert copy.rc == 128 + signal.SIGXFSZ, f"the copy did not die half-way (rc {copy.rc}): {copy.tail()}"


def restore(secondary: Node, segment: str) -> FileDigest | None:
    """What the secondary's restore_command gets for `segment` (None when the command fails)."""
    secondary.host.run(f"rm -f {RESTORED}", user="root")
    if not secondary.run_wal_command("restore_command", segment, RESTORED).ok:
        return None
    return secondary.file_digest(RESTORED)


def unblock(primary: Node, segment: str) -> None:
    """Remove the archive's file of `segment` and wait until the archiver has copied the segment again."""
    archived = primary.archiver().archived_count
    primary.host.run(f"rm -f {ARCHIVE}/{segment}", user="root")
    primary.advance_wal(1)  # wakes the archiver
    primary.wait_for_archiver(f"archived_count >= {archived + 2}")


# --- 5.1's directory: the postgres user's alone ------------------------------------------------


def test_the_shared_archive_is_the_postgres_user_s_alone_on_both_hosts(archiving):
    """5.1: mode 700, owned by postgres; the secondary sees the same directory (one shared mount)."""
    for node in (archiving.primary, archiving.secondary):
        assert node.owners_and_modes(ARCHIVE) == {ARCHIVE: "postgres:postgres 700"}, node.name


def test_control_5_1_without_m_700_leaves_the_archive_open(archiving, runbook):
    """The same line without `-m 700`, into a directory beside the live archive (which keeps serving)."""
    beside = f"{ARCHIVE}-control"
    weakened = edit_block(runbook, "archive-shared-dir", f"-m 700 {ARCHIVE}", beside)
    try:
        archiving.run_step("archive-shared-dir", book=weakened)
        seen = archiving.primary.owners_and_modes(beside)[beside]
        assert int(seen.split()[-1], 8) & 0o077, f"{beside}: {seen}, which the check above would refuse"
    finally:
        archiving.primary.host.run(f"rm -rf {beside}", user="root")


# --- the runbook's command --------------------------------------------------------------------


def test_a_copy_that_dies_half_way_leaves_no_segment_and_archiving_goes_on(archiving):
    primary, secondary = archiving.primary, archiving.secondary
    segment, content = archived_segment(primary)
    crash_mid_copy(primary, segment)

    assert primary.file_digest(f"{ARCHIVE}/{segment}") is None, "a segment's name holds a half-written copy"
    torn = primary.file_digest(f"{ARCHIVE}/{segment}.tmp")
    assert torn is not None and 0 < torn.size < content.size
    assert restore(secondary, segment) is None, "the secondary restored a segment the archive does not hold whole"

    before = primary.archiver()
    primary.mark_unarchived(segment)
    primary.wait_for_archiver(f"archived_count >= {before.archived_count + 2}")
    assert primary.archiver().failed_count == before.failed_count
    assert primary.file_digest(f"{ARCHIVE}/{segment}") == content
    assert primary.file_digest(f"{ARCHIVE}/{segment}.tmp") is None
    assert restore(secondary, segment) == content


def test_a_segment_archived_twice_is_accepted_when_identical(archiving):
    """After a crash between the copy and the server recording it, the segment is archived again."""
    primary = archiving.primary
    segment, content = archived_segment(primary)
    before = primary.archiver()
    primary.mark_unarchived(segment)
    primary.wait_for_archiver(f"archived_count >= {before.archived_count + 2}")
    assert primary.archiver().failed_count == before.failed_count
    assert primary.file_digest(f"{ARCHIVE}/{segment}") == content


def test_a_different_file_under_the_segment_s_name_is_never_overwritten(archiving):
    """A truncated file under the segment's name (as the source's command leaves one): archiving stops
    at that segment and the file stays, until someone moves it away (5.4)."""
    primary = archiving.primary
    segment, content = archived_segment(primary)
    primary.host.run(f"truncate -s {CRASH_AFTER_KIB}K {ARCHIVE}/{segment}", user="root")
    before = primary.archiver()
    primary.mark_unarchived(segment)
    try:
        primary.wait_for_archiver(f"failed_count > {before.failed_count} AND last_failed_wal = '{segment}'")
        assert primary.file_digest(f"{ARCHIVE}/{segment}").size == CRASH_AFTER_KIB * 1024
    finally:
        unblock(primary, segment)
    assert primary.file_digest(f"{ARCHIVE}/{segment}") == content


# --- negative controls: the source's command in Step 5 ----------------------------------------


def test_source_command_a_copy_that_dies_half_way_stops_archiving_for_good(archiving_as_the_source):
    primary, secondary = archiving_as_the_source.primary, archiving_as_the_source.secondary
    segment, content = archived_segment(primary)
    crash_mid_copy(primary, segment)
    try:
        torn = primary.file_digest(f"{ARCHIVE}/{segment}")
        assert torn is not None and 0 < torn.size < content.size, "no truncated copy under the segment's name"
        assert restore(secondary, segment) == torn, "the secondary's restore_command did not get the torn copy"

        before = primary.archiver()
        primary.mark_unarchived(segment)
        primary.wait_for_archiver(f"failed_count >= {before.failed_count + 3} AND last_failed_wal = '{segment}'")
        primary.advance_wal(1)  # more WAL: the archiver tries again, and fails again on the same segment
        primary.wait_for_archiver(f"failed_count >= {before.failed_count + 6} AND last_failed_wal = '{segment}'")
        assert primary.archiver().archived_count == before.archived_count, "a later segment was archived"
        assert primary.archive_backlog() >= 3, "the segments behind the torn one do not wait in pg_wal"
    finally:
        unblock(primary, segment)


def test_source_command_refuses_a_segment_archived_twice(archiving_as_the_source):
    primary = archiving_as_the_source.primary
    segment, _ = archived_segment(primary)
    before = primary.archiver()
    primary.mark_unarchived(segment)
    try:
        primary.wait_for_archiver(f"failed_count > {before.failed_count} AND last_failed_wal = '{segment}'")
    finally:
        unblock(primary, segment)
