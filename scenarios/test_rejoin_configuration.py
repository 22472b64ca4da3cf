"""Step 8 leaves the old primary its own configuration (issue 25, item 4).

pg_rewind copies the new primary's configuration files whole. On EL, whose configuration lives in
the data directory, that replaced the old primary's postgresql.conf and pg_hba.conf; 8.6.3 now copies
them aside before the rewind and back after it. On Debian they live in /etc/postgresql, out of its
reach, and the runbook has no such blocks: the same test checks that the Debian text stays right.

Before the failover the old primary gets settings of its own, as an operator's would be: Step 6's
limit sized for its disk (2GB, where 7.3 gives the new primary the runbook's 1GB), Step 10's
synchronous standby, and a pg_hba.conf rule for the clients that write to it. It writes past the
split (isolated from the secondary, then killed), so that pg_rewind has blocks to copy: after "no
rewind required" it copies no file at all, and the test would prove nothing. In the same run an
ALTER SYSTEM setting made on the old primary alone is replaced, on both families, as 8.3 says of
postgresql.auto.conf: the files were copied.

The negative control is the EL runbook without 8.6.3's two blocks: the three are lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pytest

from harness.failover import RewindOutput, fail_over_after_a_split
from harness.images import ImageProfile
from harness.pair import Node, ReplicationPair
from harness.runbook import Runbook, drop_step, edit_block

pytestmark = [pytest.mark.parts("setup", "slot-limit", "sync-commit", "failover", "rejoin"), pytest.mark.bringups(2)]
TABLE = "pgrepl_rejoin_conf"
OWN_LIMIT = "2GB"  # Step 6 sized for the old primary's disk; 7.3 gives the new primary the runbook's 1GB
SETTINGS = ("max_slot_wal_keep_size", "synchronous_standby_names")  # Steps 6 and 10 on the old primary
CLIENT_ADDRESS = "192.0.2.30"  # a writer of the old primary's (TEST-NET-1: no host of the pair)
AUTO_SETTING, AUTO_VALUE = "log_min_duration_statement", "4321ms"  # ALTER SYSTEM on the old primary only
CONF_STEPS = ("rejoin-save-conf", "rejoin-restore-conf")


@dataclass(frozen=True)
class Configuration:
    """What a node's configuration files say: SETTINGS and AUTO_SETTING as SHOW has them, and the
    pg_hba.conf rules as pg_hba_file_rules reads them (without their line numbers)."""

    settings: dict[str, str]
    hba: list[tuple[Any, ...]]

    @classmethod
    def of(cls, node: Node) -> Configuration:
        settings = {name: node.scalar(f"SHOW {name}") for name in (*SETTINGS, AUTO_SETTING)}
        return cls(settings, [tuple(rule[1:]) for rule in node.hba_rules()])

    def admits_the_client(self) -> bool:
        return any(rule[3] == CLIENT_ADDRESS for rule in self.hba)


@dataclass(frozen=True)
class Rejoined:
    pair: ReplicationPair
    old: Node  # the old primary, a standby again
    before: Configuration  # the old primary's, just before the failover
    after: Configuration  # the rejoined node's
    rewind_said: str


def with_the_old_primary_s_own_limit(runbook: Runbook) -> Runbook:
    """Step 6 with the limit an operator sized for the old primary's disk."""
    limit = "max_slot_wal_keep_size = "
    return edit_block(runbook, "slot-limit-conf", f"{limit}1GB", f"{limit}{OWN_LIMIT}")


def configure_the_old_primary_alone(pair: ReplicationPair) -> None:
    """Steps 6 and 10, a client rule and an ALTER SYSTEM setting: on the primary, not the secondary."""
    pair.run("slot-limit")
    pair.run("sync-commit")
    old = pair.primary
    rule = f"host all all {CLIENT_ADDRESS}/32 scram-sha-256"
    old.append_conf("pg_hba.conf", f"# clients that write to this primary\n{rule}")
    old.query(f"ALTER SYSTEM SET {AUTO_SETTING} = '{AUTO_VALUE}'")
    old.query("SELECT pg_reload_conf()")
    old.poll_query_until(f"SHOW {AUTO_SETTING}", AUTO_VALUE, timeout=10)


def rejoin_after_a_split(make_pair, book: Runbook) -> Rejoined:
    """Set-up, the old primary's own settings, a split in which it writes alone and dies, Step 7,
    then Step 8; what pg_rewind said is kept."""
    pair = make_pair(book)
    pair.setup()
    configure_the_old_primary_alone(pair)
    old, new = pair.primary, pair.secondary
    before = Configuration.of(old)
    old.query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v text)")
    old.query(f"INSERT INTO {TABLE} SELECT g, 'before the split' FROM generate_series(1, 20000) g")
    old.wait_for_catchup(new)
    fail_over_after_a_split(
        pair,
        "SET synchronous_commit = local",  # Step 10: the cut-off secondary would never confirm
        f"UPDATE {TABLE} SET v = 'only on the old primary' WHERE id <= 10000",
    )
    said = RewindOutput()
    pair.run("rejoin", after=said)
    new.wait_for_catchup(old)
    return Rejoined(pair, old, before, Configuration.of(old), str(said))


def assert_rewound(rejoined: Rejoined) -> None:
    """pg_rewind copied (a 'no rewind required' copies no configuration file either)."""
    said = rejoined.rewind_said
    assert "no rewind required" not in said and "Done!" in said, said


@pytest.fixture(scope="module")
def rejoined(make_pair, runbook) -> Rejoined:
    return rejoin_after_a_split(make_pair, with_the_old_primary_s_own_limit(runbook))


def test_the_rejoined_node_keeps_the_old_primary_s_settings_and_rules(rejoined):
    assert_rewound(rejoined)
    before, after = rejoined.before, rejoined.after
    assert before.settings["max_slot_wal_keep_size"] == OWN_LIMIT and before.admits_the_client()
    for name in SETTINGS:
        assert after.settings[name] == before.settings[name], f"{name}: {before.settings[name]!r} before the rejoin"
    assert after.hba == before.hba, "pg_hba.conf is not the old primary's own"


def test_postgresql_auto_conf_is_the_new_primary_s_as_8_3_says(rejoined):
    """The files were copied: what ALTER SYSTEM set on the old primary alone is gone, on both families."""
    assert_rewound(rejoined)
    assert rejoined.before.settings[AUTO_SETTING] == AUTO_VALUE
    assert rejoined.after.settings[AUTO_SETTING] != AUTO_VALUE


def test_the_rejoined_node_follows_the_new_primary_and_no_saved_copy_is_left(rejoined):
    old = rejoined.old
    assert old.in_recovery()
    assert old.scalar("SHOW primary_slot_name") == "primary_slot"  # 8.4's lines, after the restored file
    assert old.scalar(f"SELECT count(*) FROM {TABLE} WHERE v = 'only on the old primary'") == 0
    assert not {n for n in old.listing(str(PurePosixPath(old.layout.data_dir).parent)) if "conf-before-rewind" in n}


def test_negative_control_without_8_3_s_blocks_el_loses_the_old_primary_s_settings(make_pair, runbook, target):
    image = getattr(target, "image", None)
    if image is not None and ImageProfile.load(image).family == "debian":
        pytest.skip(f"{image}: Debian keeps postgresql.conf and pg_hba.conf in /etc, and has no such blocks")
    book = with_the_old_primary_s_own_limit(runbook)
    for step in CONF_STEPS:
        book = drop_step(book, step)
    control = rejoin_after_a_split(make_pair, book)
    if control.pair.family == "debian":  # an inventory's Debian hosts (no image to look at above)
        pytest.skip("Debian keeps postgresql.conf and pg_hba.conf in /etc, and has no such blocks")
    assert_rewound(control)
    assert control.after.settings["max_slot_wal_keep_size"] == "1GB", "not 7.3's limit of the new primary"
    assert control.after.settings["synchronous_standby_names"] == "", "Step 10's setting survived"
    assert not control.after.admits_the_client(), "the old primary's client rule survived"
