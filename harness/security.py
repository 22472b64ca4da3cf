"""What the runbook promises about who may connect and who may read, as checks a scenario can make.

- `trusting_rules`: the pg_hba.conf rules of a node that let a client in without a password
  (`trust`), the harness's own access rule excluded by its exact fields.
- `foreign_files`: what in a node's data directory postgres does not own.
- `watched`: a runbook block run on its host while a watcher records every mode and owner the
  paths it creates have, from before the block until after it (a file is never unseen, even for the
  moment between a `touch` and a `chmod`).
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.hosts.base import Host
from harness.pair import HARNESS_ROLE, Node, ReplicationPair
from harness.runbook import Runbook
from harness.waiting import wait_until

# The grants the pg_rewind page of the PostgreSQL manual lists for a role that is not a superuser,
# as regprocedure prints them: Step 8.2 grants these and nothing else.
PG_REWIND_GRANTS = frozenset(
    {
        "EXECUTE on function pg_ls_dir(text,boolean,boolean)",
        "EXECUTE on function pg_stat_file(text,boolean)",
        "EXECUTE on function pg_read_binary_file(text)",
        "EXECUTE on function pg_read_binary_file(text,bigint,bigint,boolean)",
    }
)


def is_harness_rule(rule: Any, node: Node) -> bool:
    """Whether `rule` (a row of Node.hba_rules) is exactly the one ReplicationPair.grant_harness_access adds:
    `host all pgrepl_harness RUNNER/32 scram-sha-256`."""
    return (
        rule.type == "host"
        and list(rule.database) == ["all"]
        and list(rule.user_name) == [HARNESS_ROLE]
        and rule.address == node.host.runner_address
        and rule.netmask == "255.255.255.255"
        and rule.auth_method == "scram-sha-256"
    )


def describe(rule: Any) -> str:
    address = f" {rule.address}/{rule.netmask}" if rule.address else ""
    return (
        f"line {rule.line_number}: {rule.type} {','.join(rule.database or [])} {','.join(rule.user_name or [])}"
        f"{address} {rule.auth_method}"
    )


def trusting_rules(node: Node) -> list[str]:
    """The rules of `node`'s pg_hba.conf, other than the harness's own, that admit without a password
    (`trust`), or that the server cannot read (an error: the file would not load), as text."""
    return [
        describe(rule) + (f" (error: {rule.error})" if rule.error else "")
        for rule in node.hba_rules()
        if not is_harness_rule(rule, node) and (rule.auth_method == "trust" or rule.error)
    ]


def foreign_files(node: Node) -> list[str]:
    """The paths in `node`'s data directory that the postgres user does not own (a step run as root by
    mistake): the server, pg_rewind or a backup, all running as postgres, could not change them."""
    found = node.host.run(f"find {shlex.quote(node.layout.data_dir)} ! -user postgres", user="root")
    return sorted(found.stdout.split())


def trusts_user(node: Node, user: str) -> bool:
    """Whether a rule of `node`'s pg_hba.conf, other than the harness's own, admits `user` without a
    password: what a control that opens a rule to `trust` must show the trust check sees."""
    return any(f"{user} " in rule and rule.endswith(" trust") for rule in trusting_rules(node))


@dataclass(frozen=True)
class Seen:
    """One state of a watched path: its permission bits and owner, or absent."""

    path: str
    mode: int | None  # None: the path does not exist
    uid: int | None
    size: int | None

    def __str__(self) -> str:
        if self.mode is None:
            return f"{self.path} absent"
        return f"{self.path} mode {self.mode:04o} uid {self.uid} size {self.size}"


# One line per state of a path, as both perl programs below print it.
_STATE = r"""
sub state { my ($p) = @_; my @s = lstat($p);
  @s ? sprintf("%s\t%o\t%d\t%d", $p, $s[2] & 07777, $s[4], $s[7]) : "$p\tabsent" }
"""

# Polls lstat of every path in a tight loop (no process per look: a state that lasts as long as the
# fork and exec of the next command is seen) and prints each state once, until a stop file appears.
WATCHER = (
    _STATE
    + r"""
$| = 1;
my ($stop, $seconds, @paths) = @ARGV;
my %last; my $end = time + $seconds; my $n = 0;
while (1) {
  for my $p (@paths) {
    my $state = state($p);
    if (($last{$p} // "") ne $state) { print "$state\n"; $last{$p} = $state; }
  }
  print "ready\n" if !$n;
  last if -e $stop || (++$n % 4096 == 0 && time > $end);
}
print "done\n";
"""
)

# The state of every path now, once each.
LOOK = _STATE + r"""print state($_), "\n" for @ARGV;"""


def _last_states(log: str) -> dict[str, str]:
    """The last state line the watcher printed for each path."""
    states: dict[str, str] = {}
    for line in log.splitlines():
        if "\t" in line:
            states[line.split("\t", 1)[0]] = line
    return states


@contextmanager
def watching(host: Host, paths: list[str], *, timeout: float = 300) -> Iterator[list[Seen]]:
    """Every state `paths` on `host` pass through while the body runs (filled in on exit), as root.
    The watcher (perl, which Debian's and EL's base systems have) runs in the background, and the
    body starts only once it has looked at every path once."""
    tag = f"/tmp/pgrepl-watch-{uuid.uuid4().hex[:8]}"
    stop, log = f"{tag}.stop", f"{tag}.log"
    program = shlex.quote(WATCHER)
    words = " ".join(shlex.quote(p) for p in paths)
    host.run(f"setsid -f perl -e {program} {stop} {int(timeout)} {words} >{log} 2>&1 </dev/null", user="root")
    read = f"cat {log}"
    wait_until(
        lambda: "ready" in host.run(read, user="root").stdout,
        timeout=30,
        what=f"the mode watcher on {host.name} to start",
        seen=lambda: host.run(read, user="root", check=False).stdout,
    )
    seen: list[Seen] = []
    try:
        yield seen
        # The watcher stops only once it has printed the state every path is in now: one the machine's
        # load kept from running until the body was over still ends on the final states.
        now = host.run(f"perl -e {shlex.quote(LOOK)} {words}", user="root").stdout.splitlines()
        final = {line.split("\t", 1)[0]: line for line in now}
        wait_until(
            lambda: final.items() <= _last_states(host.run(read, user="root").stdout).items(),
            timeout=30,
            what=f"the mode watcher on {host.name} to see {now}",
            seen=lambda: host.run(read, user="root", check=False).stdout,
        )
    finally:
        host.run(f"touch {stop}", user="root")
        text = wait_until(
            lambda: (out := host.run(read, user="root").stdout).endswith("done\n") and out,
            timeout=30,
            what=f"the mode watcher on {host.name} to stop",
        )
        host.run(f"rm -f {stop} {log}", user="root")
        for line in text.splitlines():
            fields = line.split("\t")
            if len(fields) == 2:
                seen.append(Seen(fields[0], None, None, None))
            elif len(fields) == 4:
                seen.append(Seen(fields[0], int(fields[1], 8), int(fields[2]), int(fields[3])))


def run_watched(pair: ReplicationPair, step: str, paths: list[str], *, book: Runbook | None = None) -> list[Seen]:
    """`pair.run_step`, and every state `paths` on the step's host passed through meanwhile."""
    with watching(pair.host_of(pair.block_of(step, book)), paths) as seen:
        pair.run_step(step, book=book)
    return seen


def wider(seen: list[Seen], mode: int, *, holding: bool = False) -> list[Seen]:
    """The states in `seen` whose permission bits grant more than `mode` (to group or others, or
    anything `mode` lacks); with `holding`, only those with content (a file's size above zero)."""
    return [s for s in seen if s.mode is not None and s.mode & ~mode and (not holding or (s.size or 0) > 0)]
