"""No value reaches a root shell unchecked: every block of every family keeps its command structure
with the widest values the harness accepts, and refuses any other value before a block renders.

The structure of a script is seen two ways, by bash itself:
- parsed: the script is read as the body of a function (defining one runs nothing) and `declare -f`
  prints it back in bash's canonical form: a value that ends a command prints back otherwise;
- run against stubs: with no program on PATH, bash's `command_not_found_handle` records each command's
  argv instead of running it (builtins run): a value that opens a substitution adds a command, one
  that splits a word changes an argv.
With the plain value put back in place of the tested one, both must be what the plain value gives.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_static_gate import ADDRESSES, CASES, RUNBOOK

from harness.layout import layout_for
from harness.pair import Node
from harness.runbook import RunbookError, script, values
from harness.runbook.execute import without_stdin
from harness.secrets import Secret

BASH = shutil.which("bash") or "/bin/bash"
PLAIN = values.live_values(ADDRESSES, "pw0", 18)
# the widest accepted values: IPv6 (colons), an IPv4-mapped address, a password of every character
# token_urlsafe makes, starting with '-'
WIDEST = {
    values.PRIMARY_ADDRESS: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    values.SECONDARY_ADDRESS: "::ffff:192.0.2.1",
    values.REPLICATION_PASSWORD: "-_AZaz09-_AZaz09-_AZaz09",
}
HOSTILE = [
    "fe80::1%x;sudo${IFS}id;#",
    "10.0.0.1;id",
    "$(id)",
    "`id`",
    "10.0.0.1 -oProxyCommand=id",
    "10.0.0.1\nid",
    "10.0.0.1'",
    '10.0.0.1"',
    "10.0.0.1|id",
    "a&&id",
    "x>/etc/passwd",
]


@functools.cache
def structure(text: str) -> str:
    """`text` as bash parses it (canonical form), without running any of it."""
    define = 'IFS= read -r -d "" text; eval "__block() {\n$text\n}"; declare -f __block'
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", define],
        input=text,
        text=True,
        capture_output=True,
        env={"PATH": "/nonexistent"},  # should a value break out of the function anyway: no program runs
    )
    return done.stdout if done.returncode == 0 and done.stdout else f"does not parse: {done.stderr}"


# Records each external command's argv (fields split by \x1f) and succeeds; past 200 commands (a wait
# loop whose stub never says yes) it ends the whole run: its own session, started for it alone.
RECORDER = r"""command_not_found_handle() {
    local IFS=$'\x1f' seen
    printf '%s\n' "$*" >> "$TRACE"
    while read -r _; do :; done  # as a real command would, or a writer into its pipe may get SIGPIPE
    mapfile -t seen < "$TRACE"
    if [ "${#seen[@]}" -gt 200 ]; then kill -KILL 0; fi
    return 0
}
"""


@functools.cache
def trace(text: str) -> tuple[str, ...]:
    """The external commands `text` runs (as the executor runs it), each argv as one line."""
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "trace"
        log.touch()
        done = subprocess.run(
            [BASH, "--norc", "--noprofile", "-e", "-o", "pipefail", "-s"],
            input=RECORDER + without_stdin(text),
            text=True,
            capture_output=True,
            env={"PATH": "/nonexistent", "TRACE": str(log), "HOME": scratch},
            cwd=scratch,
            timeout=30,
            start_new_session=True,
        )
        return (*log.read_text().splitlines(), f"exit {done.returncode}")


def same_structure(block, target: str, value: str) -> bool:
    """Whether `block` rendered with `value` for `target` parses and runs as it does with the plain value."""
    plain = script(block, RUNBOOK.bindings, PLAIN)
    rendered = script(block, RUNBOOK.bindings, {**PLAIN, target: value})
    assert not structure(plain).startswith("does not parse"), structure(plain)
    assert len(trace(plain)) > 1, f"{block.step}: runs no command"
    back = PLAIN[target]
    parsed = structure(rendered).replace(value, back) == structure(plain)
    return parsed and tuple(line.replace(value, back) for line in trace(rendered)) == trace(plain)


UNIQUE = list({(case.values[1].step, case.values[1].body): case for case in CASES}.values())


@pytest.mark.parametrize(("name", "block"), UNIQUE)
def test_every_block_keeps_its_structure_with_the_widest_accepted_values(name, block):
    for target, value in WIDEST.items():
        assert same_structure(block, target, value), f"{block.where(RUNBOOK.path)} with {target} = {value!r}"


@pytest.mark.parametrize("value", HOSTILE)
def test_every_block_refuses_a_hostile_value_before_it_renders(value):
    for target in (values.PRIMARY_ADDRESS, values.SECONDARY_ADDRESS):
        for case in UNIQUE:
            block = case.values[1]
            with pytest.raises(RunbookError, match="is not a plain word"):
                script(block, RUNBOOK.bindings, {**PLAIN, target: value})


def test_the_structure_check_sees_an_injection():
    """The control: the secondary's base backup with the issue's scope id, spliced in past the check."""
    block = next(b for b in RUNBOOK.blocks if b.step == "secondary-basebackup" and "debian" in b.os)
    plain = script(block, RUNBOOK.bindings, PLAIN)
    address = PLAIN[values.PRIMARY_ADDRESS]
    assert f"-h {address} " in plain and "pg_basebackup" in structure(plain)
    for value in HOSTILE:
        hostile = plain.replace(address, value)
        parsed = structure(hostile).replace(value, address) == structure(plain)
        ran = tuple(line.replace(value, address) for line in trace(hostile)) == trace(plain)
        assert not (parsed and ran), value


def test_generated_passwords_are_plain_words():
    for _ in range(200):
        script(UNIQUE[0].values[1], RUNBOOK.bindings, {**PLAIN, values.REPLICATION_PASSWORD: Secret.generate()})


class Recorder:
    """A host that records the scripts it is asked to run."""

    name, url = "primary", "test://primary"

    def __init__(self, address: str = "10.0.0.1"):
        self.address, self.scripts = address, []

    def run(self, text: str, **kwargs):
        self.scripts.append(text)


@pytest.mark.parametrize("value", HOSTILE)
def test_the_firewall_rules_pass_the_peers_address_as_one_argument(value, tmp_path: Path):
    """Run against a stub `nft` that records its arguments (nothing else is on PATH)."""
    here = Node(Recorder(), layout_for("debian", 18), Secret("unused-password"))
    peer = Node(Recorder(value), layout_for("debian", 18), Secret("unused-password"))
    here.cut_from(peer)
    here.isolate_from(peer)
    stub = tmp_path / "nft"
    stub.write_text(f"#!{BASH}\nprintf '%s\\0' \"$@\" >> {tmp_path}/args\nprintf '\\36' >> {tmp_path}/args\n")
    stub.chmod(0o755)
    rules = []
    for text in here.host.scripts:
        (tmp_path / "args").unlink(missing_ok=True)
        done = subprocess.run([BASH, "-e", "-s"], input=text, text=True, env={"PATH": str(tmp_path)})
        assert done.returncode == 0, text
        calls = [call.split("\0")[:-1] for call in (tmp_path / "args").read_text().split("\36")[:-1]]
        assert len(calls) == 3, calls
        rules.append(calls[2])
    rule = ["add", "rule", "inet", "pgrepl_cut", "input", "ip", "saddr", value]
    assert rules == [[*rule, "tcp", "dport", "5432", "drop"], [*rule, "drop"]]


PGPASS_BLOCKS = [pytest.param(b, id=f"{b.step}-{'-'.join(b.os)}") for b in RUNBOOK.blocks if b.step.endswith("pgpass")]


@pytest.mark.parametrize("block", PGPASS_BLOCKS)
def test_pgpass_is_never_readable_by_others(block, tmp_path: Path):
    """Run as written, with `sudo -u postgres` running as this user and `~postgres` a scratch directory.
    With `chmod` doing nothing the file must still be mode 600 (created so, never 644 for a moment);
    an older file of mode 644 must end 600 with the new password."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "sudo").write_text(f'#!{BASH}\nwhile [ "${{1#-}}" != "$1" ]; do shift 2; done\nexec "$@"\n')
    (stubs / "sudo").chmod(0o755)
    home = tmp_path / "~postgres"  # no user postgres here: the shell leaves ~postgres as it is
    home.mkdir()
    rendered = script(block, RUNBOOK.bindings, PLAIN)

    def run(chmod_does_nothing: bool) -> None:
        (stubs / "chmod").unlink(missing_ok=True)
        if chmod_does_nothing:
            (stubs / "chmod").write_text("#!/bin/sh\nexit 0\n")
            (stubs / "chmod").chmod(0o755)
        env = {"PATH": f"{stubs}:/usr/bin:/bin"}
        done = subprocess.run(
            [BASH, "-e", "-o", "pipefail", "-c", f"umask 022\n{without_stdin(rendered)}"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr

    pgpass = home / ".pgpass"
    run(chmod_does_nothing=True)
    assert oct(pgpass.stat().st_mode & 0o777) == oct(0o600) and ":replica_user:pw0" in pgpass.read_text()
    pgpass.write_text("old:5432:*:replica_user:old-password\n")
    pgpass.chmod(0o644)
    run(chmod_does_nothing=False)
    assert oct(pgpass.stat().st_mode & 0o777) == oct(0o600) and "old-password" not in pgpass.read_text()
