"""Read offloading under load: pgbench writes on the primary while pgbench -S reads on the secondary,
then the two servers hold the same data and amcheck finds nothing (the source's first promise).

Figures (`pytest -s`) go to /tmp/pgrepl-load-figures.txt; bench/bench.py --load prints the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.load import SCALE, amcheck, init_pgbench, read_offload, table_checksums

pytestmark = [pytest.mark.parts("setup", "verify"), pytest.mark.bringups(1)]
FIGURES = Path("/tmp/pgrepl-load-figures.txt")


@pytest.fixture(scope="module")
def loaded(cluster):
    init_pgbench(cluster.primary)
    figures = read_offload(cluster.primary, cluster.secondary)
    cluster.primary.wait_for_catchup(cluster.secondary)
    text = f"{cluster.family} PostgreSQL {cluster.pg_major}\n{figures.render()}"
    print("\n" + text)
    with FIGURES.open("a") as out:
        out.write(text + "\n")
    return cluster, figures


def test_the_secondary_serves_reads_while_the_primary_takes_writes(loaded):
    _, figures = loaded
    assert figures.write_tps > 0 and figures.read_tps > 0
    assert figures.samples > 0, "the secondary was never seen in pg_stat_replication during the load"


def test_after_catch_up_every_table_is_equal_on_both(loaded):
    cluster, _ = loaded
    primary, secondary = table_checksums(cluster.primary), table_checksums(cluster.secondary)
    assert primary["public.pgbench_accounts"][0] == 100_000 * SCALE
    assert primary["public.pgbench_history"][0] > 0, "pgbench wrote nothing"
    assert secondary == primary


def test_amcheck_finds_no_corruption_on_either(loaded):
    cluster, _ = loaded
    for node in cluster.nodes.values():
        amcheck(node)


def test_the_comparison_sees_a_change_the_secondary_did_not_get(loaded):
    """Negative control: with replay paused on the secondary, one changed row makes the checksums differ."""
    cluster, _ = loaded
    primary, secondary = cluster.primary, cluster.secondary
    secondary.query("SELECT pg_wal_replay_pause()")
    try:
        primary.query("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1")
        assert table_checksums(secondary) != table_checksums(primary)
    finally:
        secondary.query("SELECT pg_wal_replay_resume()")
    primary.wait_for_catchup(secondary)
    assert table_checksums(secondary) == table_checksums(primary)
