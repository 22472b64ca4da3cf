"""Read offloading under load: pgbench writes on the primary while pgbench -S reads on the secondary,
then the two servers hold the same data and amcheck finds nothing (the source's first promise).

Figures (`pytest -s`) go to the artifacts folder's figures/load.txt; bench/bench.py --load prints the same.
"""

from __future__ import annotations

import pytest

from harness.load import SCALE, amcheck, init_pgbench, read_offload, table_checksums

pytestmark = [pytest.mark.parts("setup", "verify"), pytest.mark.bringups(1)]


@pytest.fixture(scope="module")
def loaded(pair, figures):
    init_pgbench(pair.primary)
    measured = read_offload(pair.primary, pair.secondary)
    pair.primary.wait_for_catchup(pair.secondary)
    figures("load").record(f"{pair.family} PostgreSQL {pair.pg_major}\n{measured.render()}")
    return pair, measured


def test_the_secondary_serves_reads_while_the_primary_takes_writes(loaded):
    _, measured = loaded
    assert measured.write_tps > 0 and measured.read_tps > 0
    assert measured.samples > 0, "the secondary was never seen in pg_stat_replication during the load"


def test_after_catch_up_every_table_is_equal_on_both(loaded):
    pair, _ = loaded
    primary, secondary = table_checksums(pair.primary), table_checksums(pair.secondary)
    assert primary["public.pgbench_accounts"][0] == 100_000 * SCALE
    assert primary["public.pgbench_history"][0] > 0, "pgbench wrote nothing"
    assert secondary == primary


def test_amcheck_finds_no_corruption_on_either(loaded):
    pair, _ = loaded
    for node in pair.nodes.values():
        amcheck(node)


def test_the_comparison_sees_a_change_the_secondary_did_not_get(loaded):
    """Negative control: with replay paused on the secondary, one changed row makes the checksums differ."""
    pair, _ = loaded
    primary, secondary = pair.primary, pair.secondary
    secondary.query("SELECT pg_wal_replay_pause()")
    try:
        primary.query("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1")
        assert table_checksums(secondary) != table_checksums(primary)
    finally:
        secondary.query("SELECT pg_wal_replay_resume()")
    primary.wait_for_catchup(secondary)
    assert table_checksums(secondary) == table_checksums(primary)
