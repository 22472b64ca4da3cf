"""Switch back: fail over (Step 7), rejoin (Step 8), then the same two steps with the hosts'
roles exchanged, so the original primary is primary again. Both timeline switches are followed
and the contents are equal at each stage (Patroni and CloudNativePG test the same round trip).

At each stage only the primary archives: Step 2.4's `archive_mode = on` leaves a standby without an
archiver, whichever host it is. With `always` a standby archives all it receives: on EL the secondary
from the start (its postgresql.conf is the primary's, from the base backup), on Debian the old primary
once it rejoins. The negative control is Step 2.4 with `always`."""

from __future__ import annotations

import pytest

from harness.load import table_checksums
from harness.runbook import edit_block

pytestmark = [pytest.mark.parts("setup", "verify", "failover", "rejoin"), pytest.mark.bringups(2)]
TABLE = "pgrepl_switch"


def stage(primary, standby, name: str) -> None:
    primary.query(f"INSERT INTO {TABLE} (stage) VALUES (%s)", (name,))
    primary.wait_for_catchup(standby)


def follows(primary, standby, timeline: int) -> None:
    assert primary.timeline() == timeline and not primary.in_recovery()
    assert standby.row("SELECT status, received_tli FROM pg_stat_wal_receiver") == ("streaming", timeline)
    assert table_checksums(standby) == table_checksums(primary)
    assert not standby.runs_archiver(), f"{standby.name}, a standby, runs an archiver (archive_mode = always?)"


def test_fail_over_rejoin_and_switch_back_to_the_original_primary(pair):
    original, other = pair.primary, pair.secondary
    original.query(f"CREATE TABLE {TABLE} (id serial PRIMARY KEY, stage text)")
    stage(original, other, "before")
    first = original.timeline()
    assert not other.runs_archiver(), f"{other.name}, the secondary, runs an archiver (archive_mode = always?)"

    pair.run("failover")
    pair.run("rejoin")
    assert (pair.primary, pair.secondary) == (other, original)
    stage(other, original, "after the failover")
    follows(other, original, first + 1)

    pair.rebind_runbook()  # the runbook's "primary" blocks now run on `other`, the current primary
    pair.run("failover")
    pair.run("rejoin")
    assert (pair.primary, pair.secondary) == (original, other)  # the original primary is primary again
    stage(original, other, "after switching back")
    follows(original, other, first + 2)
    assert [s for (s,) in original.query(f"SELECT stage FROM {TABLE} ORDER BY id")] == [
        "before",
        "after the failover",
        "after switching back",
    ]


def test_negative_control_with_archive_mode_always_the_rejoined_old_primary_archives(make_pair, runbook):
    pair = make_pair(edit_block(runbook, "primary-configure", "archive_mode = on", "archive_mode = always"))
    pair.setup()
    old = pair.primary
    pair.run("failover")
    pair.run("rejoin")
    assert pair.secondary is old and old.in_recovery()
    assert old.runs_archiver()
