"""Step 8 long after Step 7: the new primary has recycled the WAL from before the split.

pg_rewind replays the old primary from the last checkpoint the two timelines share. A new primary
that has since checkpointed past it no longer holds that WAL, and PostgreSQL 13's pg_rewind also
removes the old primary's own copy (the files the source lacks). The old primary then asks the
new one for it forever ("requested WAL segment ... has already been removed") and never accepts a
connection - unless 8.4's `restore_command` reads it from the archive the old primary wrote (2.4).
PostgreSQL's pg_rewind documentation asks for that `restore_command`.

The negative control runs the same without that line.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.failover import fail_over_after_a_split
from harness.pair import ReplicationPair
from harness.runbook import Runbook, StepFailed, edit_block
from harness.targets import Target, known_major

pytestmark = [pytest.mark.parts("setup", "failover", "rejoin"), pytest.mark.bringups(2)]
TABLE = "pgrepl_recycled"
RESTORE = "restore_command = 'cp /mnt/server/archivedir/%f %p'\n"
# measured on the images' majors 13, 15, 17 and 18: only 13's pg_rewind deletes the segments
LAST_MAJOR_THAT_REMOVES = 13


def fail_over_then_recycle(pair: ReplicationPair) -> None:
    """The last checkpoint both share is a segment before the split (the split's segment is the
    first of the new timeline, which the new primary keeps); after the split, the new primary
    moves three segments on and checkpoints: the shared checkpoint's segment is gone from it."""
    old, new = pair.primary, pair.secondary
    old.query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY)")
    old.checkpoint()
    old.advance_wal(1)
    old.wait_for_catchup(new)
    fail_over_after_a_split(pair, f"INSERT INTO {TABLE} SELECT generate_series(1, 1000)")
    new.advance_wal(3)
    new.checkpoint()


@pytest.fixture(scope="module")
def rejoined(make_pair: Callable[..., ReplicationPair]) -> ReplicationPair:
    pair = make_pair()
    pair.setup()
    fail_over_then_recycle(pair)
    pair.run("rejoin")
    return pair


def test_the_old_primary_streams_again_with_wal_from_its_archive(rejoined):
    new, old = rejoined.primary, rejoined.secondary
    new.wait_for_catchup(old)
    assert old.row("SELECT status FROM pg_stat_wal_receiver") == ("streaming",)
    assert old.scalar(f"SELECT count(*) FROM {TABLE}") == new.scalar(f"SELECT count(*) FROM {TABLE}")


def test_without_the_restore_command_the_old_primary_never_gets_there(
    make_pair: Callable[..., ReplicationPair], runbook: Runbook, target: Target
) -> None:
    edited = edit_block(runbook, "rejoin-conf", RESTORE, "")
    pair = None
    major = known_major(target)  # skip before any container starts, where the image says it
    if major is None:
        pair = make_pair(edited)
        major = pair.pg_major
    if major > LAST_MAJOR_THAT_REMOVES:
        pytest.skip(
            f"PostgreSQL {major}'s pg_rewind leaves the old primary's own WAL from before the split "
            "in place: it needs no archive, so nothing fails without one"
        )
    pair = pair or make_pair(edited)
    pair.setup()
    fail_over_then_recycle(pair)
    with pytest.raises(StepFailed) as failure:
        pair.run("rejoin")
    assert failure.value.block.step in ("rejoin-start", "rejoin-drop-old-slot", "rejoin-check")
