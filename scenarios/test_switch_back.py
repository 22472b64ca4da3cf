"""Switch back: fail over (Step 7), rejoin (Step 8), then the same two steps with the hosts'
roles exchanged, so the original primary is primary again. Both timeline switches are followed
and the contents are equal at each stage (Patroni and CloudNativePG test the same round trip)."""

from __future__ import annotations

import pytest

from harness.load import table_checksums

pytestmark = [pytest.mark.parts("setup", "verify", "failover", "rejoin"), pytest.mark.bringups(1)]
TABLE = "pgrepl_switch"


def stage(primary, standby, name: str) -> None:
    primary.query(f"INSERT INTO {TABLE} (stage) VALUES (%s)", (name,))
    primary.wait_for_catchup(standby)


def follows(primary, standby, timeline: int) -> None:
    assert primary.timeline() == timeline and not primary.in_recovery()
    assert standby.row("SELECT status, received_tli FROM pg_stat_wal_receiver") == ("streaming", timeline)
    assert table_checksums(standby) == table_checksums(primary)


def test_fail_over_rejoin_and_switch_back_to_the_original_primary(pair):
    original, other = pair.primary, pair.secondary
    original.query(f"CREATE TABLE {TABLE} (id serial PRIMARY KEY, stage text)")
    stage(original, other, "before")
    first = original.timeline()

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
