"""The security checks' own logic, without Docker: which states are too open, which rules admit
without a password, and that the harness's own rule is left out by its exact fields only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.pair import HARNESS_ROLE
from harness.security import Seen, is_harness_rule, trusting_rules, wider

RUNNER = "10.213.0.1"


def rule(line, kind, database, user, address, method, netmask="255.255.255.255", error=None):
    return SimpleNamespace(
        line_number=line,
        type=kind,
        database=database,
        user_name=user,
        address=address,
        netmask=netmask if address else None,
        auth_method=method,
        error=error,
    )


def node(*rules):
    return SimpleNamespace(host=SimpleNamespace(runner_address=RUNNER), hba_rules=lambda: list(rules))


HARNESS = rule(9, "host", ["all"], [HARNESS_ROLE], RUNNER, "scram-sha-256")


def test_the_harness_rule_is_recognised_by_its_exact_fields_only():
    assert is_harness_rule(HARNESS, node())
    for other in (
        rule(9, "host", ["all"], [HARNESS_ROLE], "10.213.0.9", "scram-sha-256"),  # another address
        rule(9, "host", ["all"], [HARNESS_ROLE], RUNNER, "trust"),  # another method
        rule(9, "host", ["all"], [HARNESS_ROLE], RUNNER, "scram-sha-256", netmask="0.0.0.0"),  # wider
        rule(9, "host", ["all"], ["replica_user"], RUNNER, "scram-sha-256"),  # another role
        rule(9, "hostssl", ["all"], [HARNESS_ROLE], RUNNER, "scram-sha-256"),
    ):
        assert not is_harness_rule(other, node())


def test_trust_anywhere_but_in_the_harness_rule_is_named():
    checked = node(
        rule(1, "local", ["all"], ["postgres"], None, "peer"),
        rule(2, "host", ["replication"], ["replica_user"], "10.213.0.3", "trust"),
        rule(3, "local", ["all"], ["all"], None, "trust"),
        HARNESS,
        rule(4, "host", ["all"], ["all"], "10.213.0.0", "scram-sha-256", error="invalid IP mask"),
    )
    assert trusting_rules(checked) == [
        "line 2: host replication replica_user 10.213.0.3/255.255.255.255 trust",
        "line 3: local all all trust",
        "line 4: host all all 10.213.0.0/255.255.255.255 scram-sha-256 (error: invalid IP mask)",
    ]
    assert trusting_rules(node(HARNESS, rule(1, "local", ["all"], ["all"], None, "peer"))) == []


@pytest.mark.parametrize(
    ("modes", "limit", "holding", "too_open"),
    [
        ([(None, 0), (0o600, 0), (0o600, 69)], 0o600, False, []),
        ([(None, 0), (0o644, 0), (0o600, 0), (0o600, 69)], 0o600, False, [0o644]),
        ([(0o644, 0), (0o600, 0), (0o600, 69)], 0o600, True, []),  # open while empty: nothing to read
        ([(0o644, 0), (0o644, 69)], 0o600, True, [0o644]),
        ([(None, 0), (0o755, 4096), (0o700, 4096)], 0o700, False, [0o755]),
        ([(0o400, 5)], 0o600, False, []),  # narrower is fine
    ],
)
def test_wider_names_the_states_more_open_than_allowed(modes, limit, holding, too_open):
    seen = [Seen("/p", mode, None if mode is None else 26, size) for mode, size in modes]
    assert [s.mode for s in wider(seen, limit, holding=holding)] == too_open
