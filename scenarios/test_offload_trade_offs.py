"""Step 9's trade-offs as tests (#25 items 3 and 5): what hot_standby_feedback costs the primary while
the secondary is down, the query that shows it, and the pg_hba.conf rule readers need on the secondary.

With Step 9 the slot keeps the secondary's last xmin when the secondary stops, and VACUUM on the
primary keeps every row deleted meanwhile, until the secondary streams again. The negative control is
Step 9 without its feedback line (and without its pg_hba.conf rule): VACUUM removes the rows, and an
application from the allowed address is refused by the secondary. The application server is played by
the primary's host (the runbook binds its example address, 192.168.1.30, to the primary's).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from harness.conflicts import ROWS, vacuum_after_delete, vacuum_keeps
from harness.pair import ReplicationPair
from harness.runbook import Runbook, StepFailed, drop_step, edit_block
from harness.secrets import Secret
from harness.security import trusting_rules, trusts_user
from harness.waiting import wait_until

pytestmark = [pytest.mark.parts("setup", "read-offload"), pytest.mark.bringups(2)]
SLOT = "secondary_slot"
DEAD = "pgrepl_dead_rows"  # the table whose deleted rows VACUUM keeps or removes
READER = "pgrepl_reader"  # the application's role (the runbook's rule admits every role from its address)
CHECK = "read-offload-held-xmin"  # Step 9's check query
HELD = r"^secondary_slot\|([tf])\|(\d+)\|(\d+)$"


def step_9(pair: ReplicationPair, *, steps: set[str] | None = None) -> SimpleNamespace:
    """Set-up, an application role, then Step 9 (only `steps` of it, if given); what its check said."""
    pair.setup()
    password = Secret.generate()
    pair.primary.create_login_role(READER, password)
    pair.primary.wait_for_catchup(pair.secondary)
    said = []
    pair.run("read-offload", steps=steps, after=lambda block, result: said.append(result.stdout))
    return SimpleNamespace(pair=pair, password=password, said=said)


def secondary_down_while_the_primary_deletes(pair: ReplicationPair) -> SimpleNamespace:
    """Stop the secondary; on the primary, delete ROWS rows and VACUUM; what the slot kept, and Step 9's
    check query as a DBA runs it meanwhile (its output, or None when the step is not in the runbook)."""
    primary = pair.primary
    pair.secondary.stop()
    before = primary.wait_for_slot(SLOT, active=False)
    kept = vacuum_after_delete(primary, DEAD)
    check = None
    if any(b.step == CHECK for b in pair.blocks("read-offload")):
        try:
            said = []
            pair.run("read-offload", steps={CHECK}, after=lambda block, result: said.append(result.stdout))
            check = said[0]
        except StepFailed as failure:  # the query found no slot with an xmin: its expected line is missing
            assert "output does not match" in str(failure), failure
            check = ""
    return SimpleNamespace(xmin_before=before.xmin, xmin_after=primary.slot(SLOT).xmin, kept=kept, check=check)


@pytest.fixture(scope="module")
def offloaded(make_pair) -> SimpleNamespace:
    return step_9(make_pair())


@pytest.fixture(scope="module")
def without_feedback_nor_rule(make_pair, runbook) -> SimpleNamespace:
    """Step 9 without its feedback line and without its pg_hba.conf rule (its check, which waits for the
    feedback, left out: it would fail; its deadline cut from 30 s to 3 s for the test of that failure)."""
    book: Runbook = drop_step(drop_step(runbook, "read-offload-feedback"), "read-offload-hba")
    book = edit_block(book, "read-offload-check", "SECONDS + 30", "SECONDS + 3")
    return step_9(make_pair(book), steps={"read-offload-reload"})


# --- the pg_hba.conf rule for readers ------------------------------------------------------------


def test_an_application_from_the_allowed_address_reads_from_the_secondary(offloaded):
    pair = offloaded.pair
    answer = pair.secondary.psql_from(
        pair.primary.host, "SELECT pg_is_in_recovery()", user=READER, password=offloaded.password
    )
    assert answer.ok and answer.stdout.strip() == "t", answer.tail()


def test_the_rule_admits_that_address_only(offloaded):
    """The secondary's own address is another host to the rule: refused."""
    pair = offloaded.pair
    answer = pair.secondary.psql_from(pair.secondary.host, "SELECT 1", user=READER, password=offloaded.password)
    assert not answer.ok and "no pg_hba.conf entry for host" in answer.stderr, answer.tail()


def test_the_rule_asks_for_the_password_and_nothing_trusts(offloaded):
    pair = offloaded.pair
    answer = pair.secondary.psql_from(pair.primary.host, "SELECT 1", user=READER, password=Secret.generate())
    assert not answer.ok and f'password authentication failed for user "{READER}"' in answer.stderr, answer.tail()
    for node in pair.nodes.values():
        assert trusting_rules(node) == [], f"{node.name}'s pg_hba.conf admits without a password after Step 9"


# --- what feedback costs while the secondary is down ---------------------------------------------


def test_the_check_query_shows_the_feedback_the_slot_keeps(offloaded):
    said = re.search(HELD, offloaded.said[-1], re.M)
    assert said is not None and said.group(1) == "t", offloaded.said[-1]


def test_while_the_secondary_is_down_the_slot_keeps_its_xmin_and_vacuum_keeps_the_dead_rows(offloaded):
    pair = offloaded.pair
    down = secondary_down_while_the_primary_deletes(pair)
    try:
        assert down.xmin_before is not None, "the slot held no xmin when the secondary stopped"
        assert down.xmin_after == down.xmin_before, "the slot's xmin moved while the secondary was down"
        assert down.kept == ROWS, f"VACUUM removed {ROWS - down.kept} of the {ROWS} deleted rows"
        said = re.search(HELD, down.check or "", re.M)
        assert said is not None, f"Step 9's check query said {down.check!r}"
        assert (said.group(1), int(said.group(2))) == ("f", down.xmin_before) and int(said.group(3)) > 0
    finally:
        pair.secondary.start()
    pair.primary.wait_for_streaming(pair.secondary)
    # once it streams the secondary reports a newer xmin (within wal_receiver_status_interval, 10 s),
    # and VACUUM removes the rows after all
    wait_until(
        lambda: vacuum_keeps(pair.primary, DEAD) == 0,
        timeout=60,
        what="VACUUM on the primary to remove the deleted rows once the secondary streams again",
        seen=lambda: pair.primary.rows_as_text("SELECT slot_name, active, xmin FROM pg_replication_slots"),
    )


# --- negative control: Step 9 without its feedback line and its rule -----------------------------


def test_without_the_feedback_line_vacuum_removes_the_rows_while_the_secondary_is_down(without_feedback_nor_rule):
    pair = without_feedback_nor_rule.pair
    try:
        down = secondary_down_while_the_primary_deletes(pair)
    finally:
        pair.secondary.start()
    assert down.xmin_before is None and down.kept == 0, f"xmin {down.xmin_before}, {down.kept} rows kept"
    assert down.check == "", f"Step 9's check query said {down.check!r}: it should list no slot"


def test_without_the_rule_the_secondary_refuses_the_application(without_feedback_nor_rule):
    pair = without_feedback_nor_rule.pair
    pair.primary.wait_for_streaming(pair.secondary)
    answer = pair.secondary.psql_from(
        pair.primary.host, "SELECT 1", user=READER, password=without_feedback_nor_rule.password
    )
    assert not answer.ok and "no pg_hba.conf entry for host" in answer.stderr, answer.tail()


def test_without_the_feedback_line_the_check_fails_and_says_so(without_feedback_nor_rule):
    """Step 9's check must fail by its exit status, naming the slot, when no feedback arrives."""
    pair = without_feedback_nor_rule.pair
    pair.note("test: read-offload-check's deadline cut from 30 s to 3 s (its failure path is under test)")
    with pytest.raises(StepFailed) as failure:
        pair.run("read-offload", steps={"read-offload-check"})
    assert failure.value.block.step == "read-offload-check"
    assert "exit code 1" in str(failure.value), "the step must fail by its exit status, not only by its output"
    assert "no hot standby feedback on secondary_slot" in str(failure.value)


def test_control_the_rule_with_trust_admits_a_wrong_password_and_is_named(without_feedback_nor_rule, runbook):
    """Step 9's rule as `trust`, on the pair that lacks it (its pg_hba.conf restored afterwards)."""
    pair = without_feedback_nor_rule.pair
    secondary = pair.secondary
    weakened = edit_block(runbook, "read-offload-hba", "scram-sha-256", "trust")
    with secondary.restoring_conf("pg_hba.conf"):
        for step in ("read-offload-hba", "read-offload-reload"):
            pair.run_step(step, book=weakened)
        assert trusts_user(secondary, "all")
        answer = secondary.psql_from(pair.primary.host, "SELECT 1", user=READER, password=Secret.generate())
        assert answer.ok, "with trust a wrong password should get in: the password check would see it"
