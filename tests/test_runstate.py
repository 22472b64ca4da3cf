"""Set-up states shared by a session's processes (harness.runstate): one real setup per key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from harness import project, runstate
from harness.runbook import drop_step, edit_block, parse_runbook
from harness.runstate import (
    Claim,
    RunStates,
    SetupState,
    readdress,
    restorable_with,
    same_setup,
    subnet_addresses,
)
from harness.secrets import Secret


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    monkeypatch.setattr(runstate, "SESSIONS_ROOT", tmp_path)
    return tmp_path


STATE = SetupState(
    {"primary": "img-p", "secondary": "img-s"},
    {"gateway": "10.9.0.1", "primary": "10.9.0.2", "secondary": "10.9.0.3"},
    (Secret.generate(), Secret.generate()),
)


def test_a_setup_asked_for_once_is_not_saved_and_a_recurring_one_is_saved_at_once(sessions):
    states = RunStates()
    assert states.claim("session-runbook", recurs=True) is None  # not opened: nothing kept
    states.open("s1")
    assert states.claim("negative-control") is None  # its first request: set up, not saved
    assert states.claim("negative-control") == Claim("negative-control", saves=True)  # the second saves it
    assert states.claim("session-runbook", recurs=True) == Claim("session-runbook", saves=True)
    assert states.claim("session-runbook", recurs=True) is None  # being saved by this process: set up
    states.saved("session-runbook", STATE)
    restored = states.claim("session-runbook", recurs=True)
    assert restored == Claim("session-runbook", STATE)
    assert (sessions / "s1").stat().st_mode & 0o777 == 0o700
    assert (sessions / "s1" / "states.json").stat().st_mode & 0o777 == 0o600  # it holds the passwords


def test_a_saved_state_is_restored_even_by_a_first_request_that_would_not_save(sessions):
    """A later part's edit (a mutant, a test's own runbook) has the setup of the runbook: once saved by anyone
    its state is restored, not set up again; before that, such a request neither waits nor saves."""
    saver, other = RunStates(), RunStates()
    saver.open("s3")
    other.open("s3")
    assert other.claim("k") is None  # nothing saved yet: set up for real, no claim to save
    assert saver.claim("k", recurs=True) == Claim("k", saves=True)
    assert other.claim("k") is None  # being saved by another: this request does not wait for it
    saver.saved("k", STATE)
    assert RunStates().claim("k") is None  # a registry not opened: nothing kept
    fresh = RunStates()
    fresh.open("s3")
    assert fresh.claim("k") == Claim("k", STATE)
    assert fresh.claim("k", exists=lambda image: False) == Claim("k", saves=True)  # its images swept: saved anew


def test_in_a_held_session_every_setup_is_saved_at_its_first_request(sessions):
    states = RunStates()
    states.open("s4", recurring=True)
    assert states.claim("negative-control") == Claim("negative-control", saves=True)


def test_a_pair_with_shared_storage_restores_a_saved_state_but_never_saves_one(sessions):
    """A commit leaves a mounted volume out: such a pair may start from the state, not become it."""
    states = RunStates()
    states.open("s5", recurring=True)
    assert states.claim("k", recurs=True, may_save=False) is None  # nothing saved: set up for real
    assert json.loads((sessions / "s5" / "states.json").read_text()) == {}  # and no claim left to wait for
    states.saved("k", STATE)
    assert states.claim("k", recurs=True, may_save=False) == Claim("k", STATE)


def test_a_setup_that_names_a_mount_path_is_not_restored_with_that_mount():
    setup = parse_runbook(project.current().default_runbook).select(family="debian")
    assert restorable_with([], setup)
    assert restorable_with(["/mnt/pgarchive"], setup)  # Step 5's shared storage: the setup never goes there
    assert not restorable_with(["/mnt/server/archivedir"], setup)  # 2.3 makes that directory
    written = [block for block in setup if block.file]  # a conf block: the path it writes is not in its text
    assert written and not restorable_with([written[0].file.rsplit("/", 1)[0]], written)


def test_an_edit_of_a_later_part_keeps_the_setup_and_one_of_the_setup_does_not():
    book = parse_runbook(project.current().default_runbook)
    assert same_setup(book, book)
    assert same_setup(edit_block(book, "sync-commit-check", "SECONDS + 30", "SECONDS + 3"), book)
    assert not same_setup(edit_block(book, "primary-hba", "scram-sha-256", "trust"), book)
    assert not same_setup(drop_step(book, "primary-archive-dir"), book)


def test_another_process_waits_for_the_save_and_restores_the_same_state(sessions):
    states = RunStates()
    states.open("s2")
    assert states.claim("k", recurs=True).saves
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import json
                from pathlib import Path
                from harness import runstate
                runstate.SESSIONS_ROOT = Path({str(sessions)!r})
                states = runstate.RunStates()
                states.open("s2")
                print("claiming", flush=True)
                claim = states.claim("k", recurs=True)
                print(json.dumps([claim.saves, claim.state.images, claim.state.addresses]))
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout.readline() == "claiming\n"
    states.saved("k", STATE)  # the other process was waiting for this
    saves, images, addresses = json.loads(other.stdout.readline())
    assert other.wait(timeout=30) == 0
    assert (saves, images, addresses) == (False, STATE.images, STATE.addresses)


def test_a_dead_savers_claim_and_a_gone_image_are_taken_over(sessions):
    states = RunStates()
    states.open("s3")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (sessions / "s3" / "states.json").write_text(json.dumps({"k": {"owner": int(dead.stdout)}}))
    assert states.claim("k", recurs=True) == Claim("k", saves=True)
    states.saved("k", STATE)
    assert states.claim("k", recurs=True, exists=lambda image: image != "img-s") == Claim("k", saves=True)


def test_an_abandoned_claim_is_free_again(sessions):
    states = RunStates()
    states.open("s4")
    claim = states.claim("k", recurs=True)
    states.abandon(claim)
    assert json.loads((sessions / "s4" / "states.json").read_text()) == {}


def test_stale_registries_go_and_live_ones_stay(sessions):
    live, killed = RunStates(), RunStates()
    live.open("live")
    killed.open("killed")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (sessions / "killed" / "processes").write_text(f"{runstate.owner()} {int(dead.stdout)}\n")
    runstate.remove_stale_registries()
    assert sorted(p.name for p in sessions.iterdir()) == ["live"]


def test_a_restored_pair_gets_addresses_of_its_own_subnet_and_the_mapping_from_the_saved_ones():
    new = subnet_addresses("10.213.0.8/29")
    assert new == {"gateway": "10.213.0.9", "primary": "10.213.0.10", "secondary": "10.213.0.11"}
    assert readdress(STATE.addresses, new) == "10.9.0.1=10.213.0.9 10.9.0.2=10.213.0.10 10.9.0.3=10.213.0.11"
    assert readdress(new, new) == ""


def test_a_held_session_names_its_holder_whose_end_orphans_the_set_up_states():
    from harness import labels

    assert labels.held_session({}) is None
    assert labels.held_session({labels.HELD_SESSION_ENV: "abc123:4242"}) == ("abc123", 4242)
    for bad in ("abc123", "abc123:", ":4242", "a/b:4242", "abc123:42x"):
        with pytest.raises(labels.BadHeldSession, match=f"unset {labels.HELD_SESSION_ENV}"):
            labels.held_session({labels.HELD_SESSION_ENV: bad})
    before = labels._session, labels._holder  # this test run's own session, restored below
    try:
        labels.join_session("abc123", holder=4242)
        assert labels.session_holder() == 4242
        labels.join_session("own")
        assert labels.session_holder() == os.getpid()
    finally:
        labels.join_session(before[0], holder=before[1])


def test_a_claim_abandoned_after_its_session_s_registry_is_gone_is_no_error(sessions):
    """An interrupted run: the controller removes the session's registry while a bring-up still unwinds."""
    import shutil

    states = RunStates()
    states.open("s9", recurring=True)
    claim = states.claim("k")
    shutil.rmtree(sessions / "s9")
    states.abandon(claim)
    assert not (sessions / "s9").exists()  # and nothing made again
