"""A rewind that has to copy blocks (PostgreSQL's 004_timeline_switch.pl and pg_rewind's own tests):
the network splits, the primary writes what the secondary never gets, then dies (kill -9); the
secondary is promoted by Step 7 and written to; Step 8 rewinds the old primary, which loses its
own writes and follows the new timeline.

The negative control is in test_promotion.py: after a clean stop (every WAL record shipped)
pg_rewind says "no rewind required", so "copied data" here is not a given.
"""

from __future__ import annotations

import re

import pytest

from harness.failover import RewindOutput, fail_over_after_a_split
from harness.load import amcheck, table_checksums

pytestmark = [pytest.mark.parts("setup", "verify", "failover", "rejoin"), pytest.mark.bringups(1)]
TABLE = "pgrepl_rewind"


@pytest.fixture(scope="module")
def rewound(pair):
    old, new = pair.primary, pair.secondary  # Step 7 promotes the secondary
    old.query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v text)")
    old.query(f"INSERT INTO {TABLE} SELECT g, 'before the split' FROM generate_series(1, 20000) g")
    old.wait_for_catchup(new)
    timeline = old.timeline()
    fail_over_after_a_split(
        pair,
        f"INSERT INTO {TABLE} SELECT g, 'only on the old primary' FROM generate_series(20001, 30000) g",
        f"UPDATE {TABLE} SET v = 'changed on the old primary' WHERE id <= 10000",
    )
    new.query(f"INSERT INTO {TABLE} SELECT g, 'only on the new primary' FROM generate_series(30001, 31000) g")
    said = RewindOutput()
    pair.run("rejoin", after=said)
    new.wait_for_catchup(old)
    return pair, str(said), timeline


def test_pg_rewind_copied_data(rewound):
    _, said, _ = rewound
    assert "no rewind required" not in said
    copied = re.search(r"need to copy (\d+) MB", said)
    assert copied is not None, said
    assert "Done!" in said


def test_the_old_primary_s_own_writes_are_gone_and_the_new_primary_s_arrived(rewound):
    pair, _, _ = rewound
    for node in pair.nodes.values():
        assert node.scalar(f"SELECT count(*) FROM {TABLE} WHERE v <> 'before the split' AND id <= 30000") == 0
        assert node.scalar(f"SELECT count(*) FROM {TABLE} WHERE v = 'only on the new primary'") == 1000


def test_the_old_primary_streams_on_the_new_timeline(rewound):
    pair, _, timeline = rewound
    new, old = pair.primary, pair.secondary
    assert new.timeline() == timeline + 1
    assert old.in_recovery()
    assert old.row("SELECT status, received_tli FROM pg_stat_wal_receiver") == ("streaming", timeline + 1)


def test_contents_are_equal_and_amcheck_is_clean(rewound):
    pair, _, _ = rewound
    new, old = pair.primary, pair.secondary
    new.query("CREATE EXTENSION IF NOT EXISTS amcheck")
    new.wait_for_catchup(old)
    assert table_checksums(old) == table_checksums(new)
    for node in (new, old):
        amcheck(node)
