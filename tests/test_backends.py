"""Backends by registry and targets by protocol: a backend is one file and one registry line, a
target any object with the Target protocol's members; no code asks which class either is.

The pair's roles follow the runbook's promote step, and the runbook's host names stay bound to the
set-up roles until rebind_runbook(); shown here on local hosts with a runbook that only echoes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from local_backend import LocalHost

from harness import ROLES
from harness.hosts import BACKENDS, backend
from harness.lifecycle import open_pair
from harness.pair import ReplicationPair
from harness.runbook import parse_text
from harness.targets import DEFAULT_IMAGE, target_matrix

BOOK = """# Two local hosts

| Example value | Meaning | Bound to |
|---|---|---|
| `192.0.2.2` | the secondary | `secondary.address` |

```sh {"step":"greet","host":"primary","os":["debian"]}
echo "primary here, my secondary is at 192.0.2.2"
```

```sh {"step":"fence","host":"primary","os":["debian"],"part":"failover","action":"fence"}
echo fenced
```

```sh {"step":"promote","host":"secondary","os":["debian"],"part":"failover","action":"promote"}
echo promoted
```
"""


@pytest.fixture
def local_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, "local", "local_backend:LocalHost")  # the one registry line


@dataclass(frozen=True)
class LocalTarget:
    """A target of two local hosts: the Target protocol's members, nothing else."""

    backend: str = "local"
    shared_hosts: bool = False
    image: str | None = None
    label: str = "local"
    kept: bool = False

    @contextmanager
    def open(self, runbook, *, log) -> Iterator[ReplicationPair]:
        transport = backend(self.backend)
        addresses = dict(zip(ROLES, ("192.0.2.1", "192.0.2.2"), strict=True))
        hosts = {
            role: transport.for_machine(SimpleNamespace(name=role, address=addresses[role], lost=lambda: None), None)
            for role in ROLES
        }
        yield ReplicationPair(runbook, hosts, "debian", 15, None, log=log)

    def check(self) -> None:
        return None

    def fresh(self) -> LocalTarget:
        return self

    def with_shared_archive(self, volumes) -> LocalTarget | None:
        return None

    def for_session(self, *, keep_if, setup_recurs) -> LocalTarget:
        return self


def test_a_registered_backend_is_chosen_by_name_and_runs_scripts(local_backend):
    transport = backend("local")
    assert transport is LocalHost
    host = transport.for_machine(SimpleNamespace(name="primary", address="192.0.2.1", lost=lambda: None), None)
    assert host.run("echo $((6 * 7))").stdout == "42\n"
    assert target_matrix(images=[DEFAULT_IMAGE], backends=["local"], ssh_images=[])[0].label == f"{DEFAULT_IMAGE}-local"


def test_a_backend_that_is_not_registered_is_refused_by_name():
    from harness.targets import BadTarget

    with pytest.raises(BadTarget, match="--backend local: choose from docker, ssh"):
        target_matrix(images=[DEFAULT_IMAGE], backends=["local"], ssh_images=[])


def test_any_target_opens_a_pair_and_its_roles_follow_the_promote_step(local_backend):
    book = parse_text(BOOK, "runbooks/local.md")
    with open_pair(LocalTarget(), book, log=lambda line: None) as pair:
        first, second = pair.nodes["primary"], pair.nodes["secondary"]
        assert (pair.primary, pair.secondary) == (first, second)
        pair.run("setup")
        assert pair.transcript.records[-1].host == "primary"

        pair.run("failover")  # the runbook's "secondary" is promoted: it is primary from now on
        assert (pair.primary, pair.secondary) == (second, first)
        assert [(r.step, r.host) for r in pair.transcript.records[-2:]] == [
            ("fence", "primary"),
            ("promote", "secondary"),
        ]

        pair.rebind_runbook()  # the runbook's blocks now name the current roles: a switch-back
        pair.run("failover")
        assert (pair.primary, pair.secondary) == (first, second)
        assert [(r.step, r.host) for r in pair.transcript.records[-2:]] == [
            ("fence", "secondary"),
            ("promote", "primary"),
        ]
        said = []
        pair.run("setup", after=lambda block, result: said.append(result.stdout))
        assert said == ["primary here, my secondary is at 192.0.2.1\n"]  # its bindings follow the hosts too


def test_a_failed_promote_step_leaves_the_roles_as_they_were(local_backend):
    from harness.runbook import StepFailed, edit_block

    book = edit_block(parse_text(BOOK, "runbooks/local.md"), "promote", "echo promoted", "false")
    with open_pair(LocalTarget(), book, log=lambda line: None) as pair:
        before = (pair.primary, pair.secondary)
        with pytest.raises(StepFailed):
            pair.run("failover")
        assert (pair.primary, pair.secondary) == before


def test_a_part_runs_up_to_and_with_a_step_and_an_unknown_step_is_refused_by_name(local_backend):
    with open_pair(LocalTarget(), parse_text(BOOK, "runbooks/local.md"), log=lambda line: None) as pair:
        pair.run("failover", until="fence")
        assert [r.step for r in pair.transcript.records] == ["fence"]
        with pytest.raises(ValueError, match="'greet' is not among the debian blocks of failover"):
            pair.run("failover", until="greet")
        assert [r.step for r in pair.transcript.records] == ["fence"]
