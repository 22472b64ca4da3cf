"""Step 8 after a crash whose recovery was cut short (found by the harness: a CI run on el7 and el8).

PGDG's unit restarts a killed server (`Restart=on-failure`). When 7.1's fence stops it before its
crash recovery has ended, the control file says "shut down in recovery" with the checkpoint from
before the crash, and pg_rewind, which takes that state for a clean stop, reports "no rewind
required" although the old primary wrote past the split: the rejoined node cannot follow the new
timeline. 8.3's finish-recovery block (8.6.3 on EL) ends the recovery first (single-user mode).

The recovery is held (its startup process stopped) until the fence has the unit stopping, so the
state is made every time instead of by a loaded machine's timing. On Debian, whose unit restarts
nothing, the server is started again as an operator would.
"""

from __future__ import annotations

import re

import pytest

from harness.failover import RewindOutput, fail_over_mid_crash_recovery, wal_after
from harness.runbook import StepFailed, drop_step

pytestmark = [pytest.mark.parts("setup", "verify", "failover", "rejoin"), pytest.mark.bringups(2)]
TABLE = "pgrepl_cut_short"
STEP = "rejoin-finish-recovery"


def diverged_and_stopped_mid_recovery(make_pair, runbook):
    """A pair whose old primary wrote past the split, crashed, and was stopped mid-recovery."""
    pair = make_pair(runbook)
    pair.setup()
    primary, secondary = pair.primary, pair.secondary
    primary.query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v text)")
    primary.query(f"INSERT INTO {TABLE} SELECT g, 'before the split' FROM generate_series(1, 20000) g")
    primary.wait_for_catchup(secondary)
    primary.isolate_from(secondary)
    secondary.isolate_from(primary)
    try:
        primary.query(f"UPDATE {TABLE} SET v = 'only on the old primary' WHERE id <= 10000")
        fail_over_mid_crash_recovery(pair)
    finally:
        primary.heal()
        secondary.heal()
    secondary.query(f"INSERT INTO {TABLE} VALUES (20001, 'only on the new primary')")
    return pair


def rejoin(pair, *, until: str | None = None) -> tuple[str, StepFailed | None]:
    """Run Step 8 (up to and with the step `until`): what pg_rewind said, and the step that failed."""
    said = RewindOutput()
    try:
        pair.run("rejoin", until=until, after=said)
    except StepFailed as failure:
        return str(said), failure
    return str(said), None


def test_the_rejoin_rewinds_an_old_primary_stopped_mid_recovery(make_pair, runbook):
    pair = diverged_and_stopped_mid_recovery(make_pair, runbook)
    new, old = pair.primary, pair.secondary  # after Step 7
    assert "Database cluster state: shut down in recovery" in old.control_state()
    said, failure = rejoin(pair)
    assert failure is None, str(failure)
    assert "no rewind required" not in said and "Done!" in said, said
    new.wait_for_catchup(old)
    assert old.scalar(f"SELECT count(*) FROM {TABLE} WHERE v = 'only on the old primary'") == 0
    assert old.scalar(f"SELECT v FROM {TABLE} WHERE id = 20001") == "only on the new primary"
    assert old.row("SELECT status, received_tli FROM pg_stat_wal_receiver") == ("streaming", new.timeline())


def test_negative_control_without_the_block_pg_rewind_rewinds_nothing_of_what_the_old_primary_wrote(make_pair, runbook):
    """Step 8 as it was on EL (no finish-recovery block; Debian's finished only an "in production" crash).

    What follows depends on timing: the old primary may replay its own WAL past the split and never
    stream (the CI run's 'rejoin-check' timeout), or follow the new timeline with pages its own
    writes changed. So the control stops at pg_rewind's wrong answer, which is certain.
    """
    pair = diverged_and_stopped_mid_recovery(make_pair, drop_step(runbook, STEP))
    old = pair.secondary
    assert "Database cluster state: shut down in recovery" in old.control_state()
    said, failure = rejoin(pair, until="rejoin-rewind")
    assert failure is None, str(failure)
    assert "no rewind required" in said, said
    split = re.search(r"servers diverged at WAL location ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)", said)
    assert split is not None, said
    _, records = wal_after(old, split[1], int(split[2]))
    assert records > 0, "the old primary's WAL ends at the split: there was nothing to rewind"
