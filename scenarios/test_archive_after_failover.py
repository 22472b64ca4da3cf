"""Step 5 with a failover after it (#25 item 5): the primary takes the shared archive on a reload, and
the promoted secondary archives its new timeline into the shared archive, where the runbook says the
archive is.

Before this correction Step 5 restarted the primary, and gave the secondary only a restore_command: once
promoted, the secondary archived its timeline into /mnt/server/archivedir on its own disk (EL: the
archive_command it inherited at the base backup) or nowhere (Debian: archive_mode off). The negative
controls are Step 5 without its reload (the primary keeps archiving to its own disk) and Step 5 without
the secondary's two archive lines (the new timeline is not in the shared archive).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.pair import ReplicationPair
from harness.runbook import Runbook, drop_step, edit_block
from harness.waiting import wait_until

pytestmark = [pytest.mark.parts("setup", "archive", "failover"), pytest.mark.bringups(3)]
SHARED_ARCHIVE = {"archive": "/mnt/pgarchive"}
SHARED = "/mnt/pgarchive/wal"  # Step 5.1's directory on the shared mount
LOCAL = "/mnt/server/archivedir"  # Step 2.3's, on each host's own disk


def on_timeline(names: set[str], timeline: int) -> set[str]:
    """The WAL segments and history file of `timeline` among `names` (a .partial segment included)."""
    return {name for name in names if name.startswith(f"{timeline:08X}")}


def step_5(make_pair, book: Runbook | None = None) -> tuple[ReplicationPair, SimpleNamespace]:
    """Set-up, then Step 5; one segment completed afterwards: where the primary archived it, and whether
    Step 5 restarted it."""
    pair = make_pair(book, volumes=SHARED_ARCHIVE)
    pair.setup()
    primary = pair.primary
    started = primary.scalar("SELECT pg_postmaster_start_time()")
    pair.run("archive")
    before = primary.archiver().archived_count
    primary.advance_wal(1)
    primary.wait_for_archiver(f"archived_count > {before}")
    return pair, SimpleNamespace(
        restarted=primary.scalar("SELECT pg_postmaster_start_time()") != started,
        segment=primary.archiver().last_archived_wal,
        shared=primary.listing(SHARED),
        local=primary.listing(LOCAL),
    )


def failed_over(pair: ReplicationPair) -> SimpleNamespace:
    """Step 7 after Step 5; the new primary completes two segments and its archiver has done all it
    will: what the shared archive and the new primary's own directory then hold of its timeline."""
    pair.run("failover")
    new = pair.primary  # the promoted one: roles follow the promote step
    timeline = new.timeline()
    new.advance_wal(2)
    wait_until(lambda: new.archive_backlog() == 0, timeout=90, what=f"the archiver on {new.name} to catch up")
    return SimpleNamespace(
        new=new,
        timeline=timeline,
        shared=on_timeline(new.listing(SHARED), timeline),
        local=on_timeline(new.listing(LOCAL), timeline),
    )


@pytest.fixture(scope="module")
def archived(make_pair) -> tuple[ReplicationPair, SimpleNamespace]:
    return step_5(make_pair)


@pytest.fixture(scope="module")
def promoted(archived) -> SimpleNamespace:
    return failed_over(archived[0])


def test_step_5_applies_the_shared_archive_without_restarting_the_primary(archived):
    _, step5 = archived
    assert not step5.restarted, "Step 5 restarted the primary"
    assert step5.segment in step5.shared, f"{step5.segment} is not in {SHARED}"
    assert step5.segment not in step5.local


def test_the_new_primary_archives_its_timeline_into_the_shared_archive(promoted):
    assert promoted.timeline >= 2
    assert f"{promoted.timeline:08X}.history" in promoted.shared, f"no history file in {SHARED}: {promoted.shared}"
    segments = {name for name in promoted.shared if len(name) == 24}
    assert len(segments) >= 2, f"the new timeline's segments are not in {SHARED}: {sorted(promoted.shared)}"
    assert promoted.new.archiver().failed_count == 0
    assert promoted.local == set(), f"the new primary also archived into {LOCAL}: {sorted(promoted.local)}"


# --- negative controls: Step 5 as it was ---------------------------------------------------------


def test_without_the_reload_the_primary_keeps_archiving_to_its_own_disk(make_pair, runbook):
    _, step5 = step_5(make_pair, drop_step(runbook, "archive-primary-reload"))
    assert step5.segment in step5.local and step5.segment not in step5.shared


def test_without_the_secondary_s_archive_lines_the_new_timeline_misses_the_shared_archive(make_pair, runbook):
    block = next(b for b in runbook.blocks if b.step == "archive-secondary-conf")
    added = block.body[block.body.index("# Once promoted") :]
    pair, _ = step_5(make_pair, edit_block(runbook, "archive-secondary-conf", added, ""))
    after = failed_over(pair)
    assert after.shared == set(), f"the new timeline reached {SHARED}: {sorted(after.shared)}"
    if pair.family == "debian":  # the secondary's own postgresql.conf does not archive
        assert after.new.scalar("SHOW archive_mode") == "off"
        assert after.local == set()
    else:  # the archive_command inherited at the base backup: the new primary's own disk
        assert f"{after.timeline:08X}.history" in after.local, sorted(after.local)
