"""A rewind that has to copy blocks (PostgreSQL's 004_timeline_switch.pl and pg_rewind's own tests):
the network splits, the primary writes what the secondary never gets, then dies (kill -9); the
secondary is promoted by Step 7 and written to; Step 8 rewinds the old primary, which loses its
own writes and follows the new timeline.

The negative control is in test_promotion.py: after a clean stop (every WAL record shipped)
pg_rewind says "no rewind required", so "copied data" here is not a given. 8.5 enables the old
primary's service again, which Step 7 disabled; its control runs 8.5 without that line.
"""

from __future__ import annotations

import re

import pytest

from harness.failover import RewindOutput, fail_over_after_a_split
from harness.load import amcheck, table_checksums
from harness.runbook import StepFailed, edit_block

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


def test_the_old_primary_starts_at_boot_again(rewound):
    """Step 7 disabled its service (the fence); 8.5 enables it again: a standby that a reboot leaves down
    lets the new primary's slot hold WAL without end."""
    pair, _, _ = rewound
    assert pair.secondary.service_enabled() == "enabled"


def test_control_without_8_5_s_enable_the_old_primary_stays_disabled(rewound, runbook):
    """8.5 without its `systemctl enable` line, where Step 7 left the old primary: disabled (and running)."""
    pair, _, _ = rewound
    old = pair.secondary
    enable = next(line for line in pair.block_of("rejoin-start").body.splitlines() if "systemctl enable" in line)
    old.set_enabled(False)
    try:
        pair.run_step("rejoin-start", book=edit_block(runbook, "rejoin-start", f"{enable}\n", ""))
        assert old.service_enabled() == "disabled"
    finally:
        old.set_enabled(True)


def test_when_the_old_primary_does_not_stream_8_5_s_check_fails_and_says_so(rewound, runbook):
    """8.5's wait must fail by its exit status, saying so, when the old primary never streams (here:
    stopped); its deadline is cut from 30 s to 3 s for the test, and the transcript says so."""
    pair, _, _ = rewound
    new, old = pair.primary, pair.secondary
    pair.note("test: rejoin-check's deadline cut from 30 s to 3 s (its failure path is under test)")
    old.stop()
    try:
        new.wait_for_no_walsender()
        with pytest.raises(StepFailed) as failure:
            pair.run_step("rejoin-check", book=edit_block(runbook, "rejoin-check", "SECONDS + 30", "SECONDS + 3"))
        assert "exit code 1" in str(failure.value), "the step must fail by its exit status, not only by its output"
        assert "old_primary is not streaming from this server" in str(failure.value)
    finally:
        old.start()
        new.wait_for_catchup(old)


def test_contents_are_equal_and_amcheck_is_clean(rewound):
    pair, _, _ = rewound
    new, old = pair.primary, pair.secondary
    new.query("CREATE EXTENSION IF NOT EXISTS amcheck")
    new.wait_for_catchup(old)
    assert table_checksums(old) == table_checksums(new)
    for node in (new, old):
        amcheck(node)
