"""The replication password in no shell history and on no command line (defect 17, and #25 item 5).

Every block that holds the password (2.6's CREATE ROLE, 3.3's and 8.1's .pgpass) is typed into an
interactive bash on its host, line by line as a paste reaches it, and that shell's history is read
back. The CREATE ROLE is typed without running it (the role exists: a failing CREATE ROLE would
write its statement, password and all, to the server log); the .pgpass blocks run for real. The
negative controls type the same blocks without their `set +o history` line, and 3.3 as it was
(`echo "...:PASSWORD" | sudo ...`): the history then holds the password.
"""

from __future__ import annotations

import pytest

from harness.hosts.base import TYPED_AFTER
from harness.runbook import Runbook, edit_block

pytestmark = [pytest.mark.parts("setup", "rejoin"), pytest.mark.bringups(1)]
PASSWORD_STEPS = ("primary-create-user", "secondary-pgpass", "rejoin-pgpass")
HISTORY_OFF = "set +o history\n"
# 3.3 before this correction: the line on echo's command line (a bash builtin: no process, no sudo log)
OLD_PGPASS = (
    'echo "192.168.1.10:5432:replication:replica_user:YOUR_SECURE_PASSWORD" | sudo -u postgres sh -c '
    '\'umask 077 && touch "$1" && chmod 600 "$1" && cat > "$1"\' sh ~postgres/.pgpass\n'
)


def runs(step: str) -> bool:
    """Whether typing `step` again may run it: not the CREATE ROLE of a role that exists."""
    return step != "primary-create-user"


def old_pgpass(runbook: Runbook) -> Runbook:
    """The runbook with 3.3's block as it was before the correction."""
    block = next(b for b in runbook.blocks if b.step == "secondary-pgpass")
    typed = block.body[block.body.index(HISTORY_OFF) :]
    return edit_block(runbook, "secondary-pgpass", typed, OLD_PGPASS)


@pytest.fixture(scope="module")
def typed(make_pair):
    pair = make_pair()
    pair.setup()
    return pair


@pytest.fixture(scope="module")
def histories(typed) -> dict[str, str]:
    """Each block that holds the password, typed on its host: the shell history it left, by step."""
    return {step: typed.shell_history(step, run=runs(step)) for step in PASSWORD_STEPS}


def test_the_steps_typed_here_are_every_block_that_holds_the_password(typed, runbook):
    holding = {b.step for b in runbook.blocks if typed.family in b.os and "YOUR_SECURE_PASSWORD" in b.body}
    assert holding == set(PASSWORD_STEPS)


@pytest.mark.parametrize("step", PASSWORD_STEPS)
def test_typing_the_block_leaves_no_password_in_the_shell_history(typed, histories, step):
    assert HISTORY_OFF.strip() in histories[step], f"{step}: the shell recorded nothing, the check would see nothing"
    assert typed.replication_password not in histories[step], f"{step}: the password is in the shell history"
    assert TYPED_AFTER in histories[step], f"{step}: the block leaves the shell history off"


def test_the_typed_pgpass_blocks_wrote_a_working_file_and_sudo_logged_no_password(typed, histories):
    """After the typing above: the .pgpass the blocks wrote is postgres's, mode 600, and holds the
    password; sudo's log (every command line sudo ran, the typed ones too) does not."""
    for node in typed.nodes.values():
        mode = node.host.run("stat -c '%U %a' ~postgres/.pgpass", user="root").stdout.split()
        assert mode == ["postgres", "600"], f"{node.name}: {mode}"
        assert typed.replication_password in node.host.run("cat ~postgres/.pgpass", user="root").stdout
        log = node.host.sudo_log()
        assert "COMMAND=" in log, f"{node.name}: sudo logged nothing, the check would see nothing"
        assert typed.replication_password not in log, f"{node.name}: the password is in sudo's log"


# --- negative controls: the same blocks as the runbook had them ---------------------------------


@pytest.mark.parametrize("step", PASSWORD_STEPS)
def test_without_set_minus_o_history_the_shell_history_stays_off(typed, runbook, step):
    history = typed.shell_history(step, book=edit_block(runbook, step, "set -o history\n", ""), run=False)
    assert TYPED_AFTER not in history, f"{step}: the history is on after the block without its set -o history"


@pytest.mark.parametrize("step", PASSWORD_STEPS)
def test_without_set_o_history_the_here_document_puts_the_password_in_the_history(typed, runbook, step):
    """A here-document alone (2.6's CREATE ROLE before this correction): bash records its lines."""
    history = typed.shell_history(step, book=edit_block(runbook, step, HISTORY_OFF, ""), run=False)
    assert typed.replication_password in history, f"{step}: no password in the history, the check sees nothing"


def test_the_old_echo_line_puts_the_password_in_the_history(typed, runbook):
    history = typed.shell_history("secondary-pgpass", book=old_pgpass(runbook), run=False)
    assert typed.replication_password in history, "the old echo line left no password in the history"
