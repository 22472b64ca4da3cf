"""Step 4 of the runbook as tests: the secondary streams from the primary and serves reads."""

from __future__ import annotations

import psycopg
import pytest

from harness.pair import SetupIncomplete
from harness.report import render
from harness.runbook import StepFailed, drop_step, edit_block

pytestmark = [pytest.mark.parts("setup", "verify"), pytest.mark.bringups(5)]


def test_primary_has_a_streaming_walsender_for_the_secondary(pair):
    rows = pair.primary.query("SELECT application_name, state, host(client_addr) FROM pg_stat_replication")
    assert ("secondary_node1", "streaming", pair.secondary.host.address) in rows


def test_secondary_walreceiver_streams_through_the_slot(pair):
    status, sender, slot = pair.secondary.query("SELECT status, sender_host, slot_name FROM pg_stat_wal_receiver")[0]
    assert (status, sender, slot) == ("streaming", pair.primary.host.address, "secondary_slot")
    assert pair.primary.slot("secondary_slot").active


def test_secondary_is_a_hot_standby(pair):
    assert pair.secondary.in_recovery()
    assert not pair.primary.in_recovery()


def test_row_written_on_primary_is_read_on_secondary(pair):
    pair.primary.query("CREATE TABLE IF NOT EXISTS scenario_rows (id int PRIMARY KEY, note text)")
    pair.primary.query("INSERT INTO scenario_rows VALUES (1, 'written on the primary')")
    pair.primary.wait_for_catchup(pair.secondary)
    assert pair.secondary.query("SELECT note FROM scenario_rows WHERE id = 1") == [("written on the primary",)]


def test_secondary_refuses_writes(pair):
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pair.secondary.query("CREATE TABLE refused (id int)")


def test_primary_archives_completed_segments_without_failure(pair):
    """Step 2.3/2.4: the archive directory exists and is the postgres user's, so archiving works."""
    before = pair.primary.archiver().archived_count
    pair.primary.advance_wal(1)
    pair.primary.wait_for_archiver(f"archived_count > {before}")
    assert pair.primary.archiver().failed_count == 0


def test_process_check_done_right_cannot_match_itself(pair):
    """Source defect 12: the source's `ps | grep` finds its own grep on a host with no walsender."""
    secondary = pair.secondary.host
    # grep matches its own command line when ps lists it; now and then ps reads the process table
    # before grep exists (more often on a busy machine), so one pass in a few tries shows it
    passes = [secondary.run('ps aux | grep "walsender.*streaming"', check=False).ok for _ in range(5)]
    assert any(passes), "the source's check should 'pass' on a secondary, which has no walsender"
    assert not secondary.run('ps -eo args | grep "[w]alsender.*streaming"', check=False).ok


def test_the_replication_password_is_on_no_command_line(pair):
    """Defect 17: sudo logs every command line it runs (journald); the password is on none of them."""
    for node in pair.nodes.values():
        log = node.host.sudo_log()
        assert "COMMAND=" in log, f"{node.name}: sudo logged nothing, the check would see nothing"
        assert pair.replication_password not in log, f"{node.name}: the password is in sudo's log"


def test_secrets_are_used_but_never_shown(pair, harness_log):
    shown = pair.transcript.render() + render(pair, kept=True) + harness_log.getvalue()
    for secret in (pair.replication_password, pair.harness_password):
        assert secret not in shown
    pgpass = pair.secondary.host.run("cat ~postgres/.pgpass", user="root").stdout
    assert pair.replication_password in pgpass, "the generated password is the one in use"


# --- negative controls: break one line of the runbook, the failure names the step -----------


def test_without_the_hba_rule_the_base_backup_fails_naming_the_step(make_pair, runbook):
    broken = edit_block(runbook, "primary-hba", "host    replication", "# host    replication")
    with pytest.raises(StepFailed) as failure:
        make_pair(broken).setup()
    assert failure.value.block.step == "secondary-basebackup"
    assert "no pg_hba.conf entry for replication connection" in str(failure.value)


def test_a_command_reading_stdin_cannot_hide_the_failing_line_after_it(make_pair, runbook):
    """A block whose `cat` would swallow the rest of the script (fed on stdin) still fails at `false`."""
    swallowing = edit_block(runbook, "verify-walsender", 'streaming"\n', 'streaming"\ncat >/dev/null\nfalse\n')
    pair = make_pair(swallowing)
    pair.setup()
    with pytest.raises(StepFailed) as failure:
        pair.verify()
    assert failure.value.block.step == "verify-walsender"


def test_without_standby_signal_the_secondary_is_not_a_standby(make_pair, runbook):
    with pytest.raises(SetupIncomplete) as failure:
        make_pair(drop_step(runbook, "secondary-standby-signal")).setup()
    assert "not in recovery" in str(failure.value)


def test_when_the_secondary_does_not_catch_up_the_catch_up_check_fails_and_says_so(make_pair, runbook):
    """Step 4's wait must fail, naming the LSN, when the secondary never replays it (here: stopped);
    its deadline is cut from 30 s to 3 s for the test, and the transcript says so."""
    pair = make_pair(edit_block(runbook, "verify-catchup", "SECONDS + 30", "SECONDS + 3"))
    pair.setup()
    pair.note("test: verify-catchup's deadline cut from 30 s to 3 s (its failure path is under test)")
    pair.secondary.stop()
    pair.primary.wait_for_no_walsender()
    with pytest.raises(StepFailed) as failure:
        pair.run("verify", steps={"verify-write", "verify-catchup"})
    assert failure.value.block.step == "verify-catchup"
    assert "exit code 1" in str(failure.value), "the step must fail by its exit status, not only by its output"
    assert "did not replay up to" in str(failure.value)
