"""The runbook's security promises as tests (#24 item 3), each with a negative control that weakens
the runbook the way a careless edit would and shows the weakening is seen.

- Replication only from the secondary's address (2.8's `/32`): a third machine on the pair's
  network (a container from the same image, `start_neighbour`) is refused even with the right
  password. Control: the rule widened to `/0` admits it.
- Replication only with the password (2.8's `scram-sha-256`): a wrong one is refused. Control: the
  rule's method changed to `trust` admits a wrong password, and the trust check names the rule.
- No pg_hba.conf rule of either node admits without a password (`trust`), except that the harness's
  own rule (ReplicationPair.grant_harness_access: `host all pgrepl_harness RUNNER/32 scram-sha-256`) is left
  out by its exact fields; it is no `trust` rule either, and is checked to be there once.
- `.pgpass` (3.3) is never seen wider than 600 and the archive directory (2.3) never wider than 700,
  from the moment they exist: the block runs again on its host, after what it made is removed, while
  a watcher records every mode they pass through. Controls: `umask 077` removed (the file is 644,
  664 on EL, between `touch` and `chmod`), `chmod 600` removed (a leftover world-readable `.pgpass` gets the
  password), the directory made as the runbook made it before (`mkdir`, `chown`, `chmod`: 755 for a
  moment) and without `-m 700`.
- replica_user has only what the runbook gives it: replication and login, no other attribute, no
  membership, no grant or object after setup; after Step 8.2, on the new primary, exactly the four
  EXECUTE grants of the pg_rewind manual page. Controls: `SUPERUSER` added to 2.6's CREATE ROLE; a
  fifth grant (pg_read_server_files) added to 8.2.
- After the failover, the same for the new primary's rule of 7.3 (the old primary's `/32`,
  `scram-sha-256`): no rule of either node trusts, a third machine is refused with the password, the
  old primary's host with a wrong one. Control: that rule opened to `/0 trust` is named by the trust
  check and admits both (found by `mutate`: its method and address mutants survived).
- Step 8.2 fails when one of its grants fails (a grant refused by an event trigger,
  Node.refusing_grants). Control: without `-v ON_ERROR_STOP=1` the step is green and the grant missing
  (found by `mutate`: that option's mutant survived; psql exits with the last -c's status).
- After Step 8.2, the new primary lets replica_user reach its databases (for pg_rewind) from the old
  primary only: a third machine is refused with the password. Control: 8.2's rule widened to `/0`
  admits it (found by `mutate`: that address mutant survived).
- Every file of both data directories is postgres's, after setup and after Step 8. Control: 8.4's
  `standby.signal` made as root is named (found by `mutate`: `sudo -u postgres` dropped survived).
"""

from __future__ import annotations

import pytest

from harness.hosts.docker import start_neighbour
from harness.runbook import StepFailed, edit_block
from harness.secrets import Secret
from harness.security import (
    PG_REWIND_GRANTS,
    foreign_files,
    is_harness_rule,
    run_watched,
    trusting_rules,
    trusts_user,
    wider,
)

pytestmark = [pytest.mark.parts("setup", "verify", "failover", "rejoin"), pytest.mark.bringups(6)]
USER = "replica_user"
REFUSED_ADDRESS = "no pg_hba.conf entry for replication connection from host"
REFUSED_PASSWORD = f'password authentication failed for user "{USER}"'
ARCHIVE_DIR = "/mnt/server/archivedir"
# 2.3 as the runbook had it before: the directory is 755 between mkdir and chmod
OLD_ARCHIVE_DIR = (
    f"sudo mkdir -p {ARCHIVE_DIR}\nsudo chown postgres:postgres {ARCHIVE_DIR}\nsudo chmod 700 {ARCHIVE_DIR}\n"
)
PROBE = "/tmp/pgrepl-security-probe"  # world-writable /tmp: the block's user (postgres, or sudo) writes it
EXTRA_GRANT = '  -c "GRANT pg_read_server_files TO replica_user;"'
LS_DIR_GRANT = "EXECUTE on function pg_ls_dir(text,boolean,boolean)"


def third_machine(pair):
    """A machine on the pair's network that is neither host (skips where none can be started)."""
    try:
        return start_neighbour(pair.primary.host)
    except TypeError as exc:
        pytest.skip(f"no third machine here: {exc}")


def granted(node) -> set[str]:
    """What replica_user holds on `node` beyond PUBLIC: grants, owned objects, role memberships."""
    return node.privileges(USER) | {f"member of {role}" for role in node.role(USER).member_of}


def pgpass(node) -> str:
    return node.host.run("echo ~postgres/.pgpass").stdout.strip()


def archive_steps(pair) -> list[str]:
    """The setup steps of this family that create the archive directory on a host's own disk."""
    return [b.step for b in pair.blocks("setup") if ARCHIVE_DIR in b.body and b.kind == "sh"]


@pytest.fixture(scope="module")
def third(pair):
    return third_machine(pair)


# --- replication: only from the secondary, only with the password ----------------------------------


def test_the_secondary_replicates_with_the_password(pair):
    """The positive control of the checks below: from the secondary, with the password, the
    replication connection works (IDENTIFY_SYSTEM answers with the primary's system identifier)."""
    done = pair.primary.replicate_from(pair.secondary.host, user=USER, password=pair.replication_password)
    assert done.ok, done.tail()
    assert str(pair.primary.system_identifier()) in done.stdout


def test_replication_from_a_third_machine_is_refused_even_with_the_password(pair, third):
    done = pair.primary.replicate_from(third, user=USER, password=pair.replication_password)
    assert not done.ok
    assert f'{REFUSED_ADDRESS} "{third.address}"' in done.stderr, done.tail()


def test_replication_with_a_wrong_password_is_refused(pair):
    done = pair.primary.replicate_from(pair.secondary.host, user=USER, password=Secret.generate())
    assert not done.ok
    assert REFUSED_PASSWORD in done.stderr, done.tail()


# --- pg_hba.conf: nothing admitted without a password ----------------------------------------------


def test_no_rule_of_either_node_trusts(pair):
    for node in pair.nodes.values():
        rules = node.hba_rules()
        assert sum(is_harness_rule(rule, node) for rule in rules) == 1, f"{node.name}: the harness rule, once"
        assert trusting_rules(node) == [], f"{node.name}'s pg_hba.conf admits without a password"


# --- the replication user: what the runbook gives it, nothing more ---------------------------------


def test_replica_user_may_replicate_and_log_in_and_nothing_else(pair):
    role = pair.primary.role(USER)
    assert (role.rolreplication, role.rolcanlogin) == (True, True)
    assert (role.rolsuper, role.rolcreatedb, role.rolcreaterole, role.rolbypassrls) == (False, False, False, False)
    assert granted(pair.primary) == set()


# --- files: .pgpass and the archive directory never open to others ---------------------------------


def test_every_file_of_both_data_directories_is_postgres_s(pair):
    for node in pair.nodes.values():
        assert foreign_files(node) == [], f"{node.name}: not postgres's"


def test_pgpass_is_never_seen_wider_than_600(pair):
    secondary = pair.secondary
    path = pgpass(secondary)
    secondary.host.run(f"rm -f {path}", user="root")
    seen = run_watched(pair, "secondary-pgpass", [path])
    assert seen[0].mode is None and seen[-1].mode == 0o600 and seen[-1].size, [str(s) for s in seen]
    assert wider(seen, 0o600) == [], [str(s) for s in seen]


def plant_readable_pgpass(node) -> str:
    """An empty ~postgres/.pgpass that everyone may read, as an earlier `tee` left it."""
    path = pgpass(node)
    node.host.run(f"rm -f {path} && install -m 644 -o postgres -g postgres /dev/null {path}", user="root")
    return path


def test_a_leftover_readable_pgpass_is_closed_before_the_password_goes_in(pair):
    path = plant_readable_pgpass(pair.secondary)
    seen = run_watched(pair, "secondary-pgpass", [path])
    assert seen[0].mode == 0o644 and seen[-1].mode == 0o600 and seen[-1].size, [str(s) for s in seen]
    assert wider(seen, 0o600, holding=True) == [], [str(s) for s in seen]


def test_the_archive_directory_is_never_seen_wider_than_700(pair):
    for step in archive_steps(pair):
        node = pair.nodes[next(b.host for b in pair.blocks("setup") if b.step == step)]
        node.host.run(f"rm -rf {ARCHIVE_DIR}", user="root")
        seen = run_watched(pair, step, [ARCHIVE_DIR])
        assert seen[0].mode is None and seen[-1].mode == 0o700, [str(s) for s in seen]
        assert wider(seen, 0o700) == [], f"{step}: {[str(s) for s in seen]}"


# --- negative controls: the runbook weakened, and each check sees it ------------------------------


def test_control_umask_removed_the_pgpass_is_seen_readable(pair, runbook):
    """Deterministic, unlike a watcher racing the block's chmod: a probe between its touch and its chmod
    records the mode the file was created with."""
    created, file = 'touch "$1" && ', '"$1"'
    weakened = edit_block(runbook, "secondary-pgpass", f"umask 077 && {created}", f"{created}{probe(file)} && ")
    path = pgpass(pair.secondary)
    pair.secondary.host.run(f"rm -f {path}", user="root")
    mode = probed(pair, "secondary-pgpass", weakened)
    assert mode & 0o044, f"created as {mode:04o}"  # 644 under umask 022, 664 under EL's 002 for postgres


def test_control_chmod_600_removed_a_leftover_pgpass_gets_the_password_readable(pair, runbook):
    weakened = edit_block(runbook, "secondary-pgpass", ' && chmod 600 "$1"', "")
    path = plant_readable_pgpass(pair.secondary)
    seen = run_watched(pair, "secondary-pgpass", [path], book=weakened)
    assert [s.mode for s in wider(seen, 0o600, holding=True)] == [0o644], [str(s) for s in seen]
    pair.secondary.host.run(f"chmod 600 {path}", user="root")


def test_control_the_archive_directory_as_it_was_is_open_before_its_chmod(pair, runbook):
    """The old mkdir, chown, chmod 700: a probe before the chmod records the mode mkdir gave it."""
    step = archive_steps(pair)[0]
    made = f"sudo mkdir -p {ARCHIVE_DIR}\n"
    as_it_was = OLD_ARCHIVE_DIR.replace(made, f"{made}{probe(ARCHIVE_DIR)}\n")
    weakened = edit_block(runbook, step, f"sudo install -d -o postgres -g postgres -m 700 {ARCHIVE_DIR}\n", as_it_was)
    node = pair.host_of(pair.block_of(step))
    node.run(f"rm -rf {ARCHIVE_DIR}", user="root")
    try:
        assert probed(pair, step, weakened) == 0o755
    finally:
        node.run(f"chmod 700 {ARCHIVE_DIR}", user="root")


def test_control_the_archive_directory_without_m_700_is_seen_open(pair, runbook):
    step = archive_steps(pair)[0]
    weakened = edit_block(runbook, step, " -m 700 ", " ")
    node = pair.host_of(pair.block_of(step))
    node.run(f"rm -rf {ARCHIVE_DIR}", user="root")
    try:
        seen = run_watched(pair, step, [ARCHIVE_DIR], book=weakened)
        assert 0o755 in [s.mode for s in wider(seen, 0o700)], [str(s) for s in seen]  # its mode at the end
    finally:
        node.run(f"chmod 700 {ARCHIVE_DIR}", user="root")


def probe(path: str) -> str:
    """A command recording `path`'s mode in PROBE, to put into a block between two of its commands."""
    return f"stat -c %a {path} > {PROBE}"


def probed(pair, step: str, book) -> int:
    """Run `step` of `book` (a block with a `probe` in it); the mode the probe recorded."""
    host = pair.host_of(pair.block_of(step, book))
    host.run(f"rm -f {PROBE}", user="root")
    pair.run_step(step, book=book)
    try:
        return int(host.run(f"cat {PROBE}", user="root").stdout.strip(), 8)
    finally:
        host.run(f"rm -f {PROBE}", user="root")


def test_control_trust_admits_a_wrong_password_and_is_named(make_pair, runbook):
    weak = make_pair(edit_block(runbook, "primary-hba", "scram-sha-256", "trust"))
    weak.setup()
    assert trusts_user(weak.primary, USER)
    done = weak.primary.replicate_from(weak.secondary.host, user=USER, password=Secret.generate())
    assert done.ok, "with trust, a wrong password should get in: the wrong-password check would see it"


def test_control_a_rule_widened_to_0_admits_a_third_machine(make_pair, runbook):
    weak = make_pair(edit_block(runbook, "primary-hba", "192.168.1.20/32", "192.168.1.20/0"))
    weak.setup()
    third = third_machine(weak)
    done = weak.primary.replicate_from(third, user=USER, password=weak.replication_password)
    assert done.ok, "with /0 the third machine should get in: the address check would see it"


def test_control_superuser_added_to_the_role_is_seen(make_pair, runbook):
    weak = make_pair(edit_block(runbook, "primary-create-user", "WITH REPLICATION", "WITH SUPERUSER REPLICATION"))
    weak.setup()
    assert weak.primary.role(USER).rolsuper


# --- after a failover: the grants of 8.2, exactly (and its control) ---------------------------------


@pytest.fixture(scope="module")
def rejoined(make_pair):
    """A pair of its own after Steps 7 and 8 (the module's shared pair stays as set up, in any test order)."""
    pair = make_pair()
    pair.setup()
    pair.run("failover")
    pair.run("rejoin")
    pair.primary.wait_for_catchup(pair.secondary)  # roles follow the promote step: primary is the new one
    return pair


@pytest.fixture(scope="module")
def third_after_rejoin(rejoined):
    return third_machine(rejoined)


def test_after_8_2_replica_user_holds_exactly_the_pg_rewind_grants(rejoined):
    new_primary = rejoined.primary
    assert granted(new_primary) == PG_REWIND_GRANTS
    role = new_primary.role(USER)
    assert (role.rolsuper, role.rolcreatedb, role.rolcreaterole, role.rolbypassrls) == (False, False, False, False)


def test_control_a_fifth_grant_in_8_2_is_seen(rejoined, runbook):
    last = 'pg_read_binary_file(text, bigint, bigint, boolean) TO replica_user;"'
    weakened = edit_block(runbook, "rejoin-grant-rewind", last, f"{last} \\\n{EXTRA_GRANT}")
    rejoined.run_step("rejoin-grant-rewind", book=weakened)
    assert granted(rejoined.primary) - PG_REWIND_GRANTS == {"member of pg_read_server_files"}


def test_8_2_fails_when_one_of_its_grants_fails(rejoined):
    """A step is green only if every line of it succeeded: psql runs its -c commands in turn and, without
    ON_ERROR_STOP, exits with the last one's status, so a refused first grant would go unseen (and
    pg_rewind fail later, in 8.3, for want of it)."""
    with rejoined.primary.refusing_grants("pg_ls_dir"), pytest.raises(StepFailed, match="exit code"):
        rejoined.run_step("rejoin-grant-rewind")


def test_control_without_on_error_stop_8_2_is_green_with_a_grant_refused(rejoined, runbook):
    lax = edit_block(runbook, "rejoin-grant-rewind", "psql -v ON_ERROR_STOP=1 \\", "psql \\")
    new_primary = rejoined.primary
    new_primary.psql(f"REVOKE EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) FROM {USER};")
    try:
        with new_primary.refusing_grants("pg_ls_dir"):
            rejoined.run_step("rejoin-grant-rewind", book=lax)  # green...
        assert LS_DIR_GRANT not in granted(new_primary)  # ...without the grant
    finally:
        rejoined.run_step("rejoin-grant-rewind")


def test_after_8_4_every_file_of_both_data_directories_is_postgres_s(rejoined):
    for node in rejoined.nodes.values():
        assert foreign_files(node) == [], f"{node.name}: not postgres's"


def test_control_8_4_s_standby_signal_made_as_root_is_named(rejoined, runbook):
    old = rejoined.secondary  # the old primary, a standby again
    signal = f"{old.layout.data_dir}/standby.signal"
    as_root = edit_block(runbook, "rejoin-standby-signal", "sudo -u postgres touch", "sudo touch")
    old.host.run(f"rm {signal}", user="root")
    try:
        rejoined.run_step("rejoin-standby-signal", book=as_root)
        assert foreign_files(old) == [signal]
    finally:
        old.host.run(f"chown postgres: {signal}", user="root")


def test_after_the_failover_no_rule_of_either_node_trusts(rejoined):
    for node in rejoined.nodes.values():
        assert trusting_rules(node) == [], f"{node.name}'s pg_hba.conf admits without a password after Step 7"


def test_after_the_failover_the_new_primary_admits_the_old_one_only_with_the_password(rejoined, third_after_rejoin):
    new, old = rejoined.primary, rejoined.secondary
    done = new.replicate_from(old.host, user=USER, password=rejoined.replication_password)
    assert done.ok, done.tail()
    done = new.replicate_from(old.host, user=USER, password=Secret.generate())
    assert not done.ok
    assert REFUSED_PASSWORD in done.stderr, done.tail()
    done = new.replicate_from(third_after_rejoin, user=USER, password=rejoined.replication_password)
    assert not done.ok
    assert f'{REFUSED_ADDRESS} "{third_after_rejoin.address}"' in done.stderr, done.tail()


def test_after_8_2_replica_user_reaches_the_new_primary_s_databases_from_the_old_primary_only(
    rejoined, third_after_rejoin
):
    new, old = rejoined.primary, rejoined.secondary
    answer = new.psql_from(old.host, "SELECT 1", user=USER, password=rejoined.replication_password)
    assert answer.ok, answer.tail()
    answer = new.psql_from(third_after_rejoin, "SELECT 1", user=USER, password=rejoined.replication_password)
    assert not answer.ok
    assert f'no pg_hba.conf entry for host "{third_after_rejoin.address}"' in answer.stderr, answer.tail()


def test_control_the_rule_of_8_2_widened_to_0_admits_a_third_machine(rejoined, third_after_rejoin, runbook):
    widened = edit_block(runbook, "rejoin-hba", "192.168.1.10/32", "192.168.1.10/0")
    new = rejoined.primary
    with new.restoring_conf("pg_hba.conf"):
        for step in ("rejoin-hba", "rejoin-reload"):
            rejoined.run_step(step, book=widened)
        answer = new.psql_from(third_after_rejoin, "SELECT 1", user=USER, password=rejoined.replication_password)
        assert answer.ok, "with /0 the third machine should get in: the address check would see it"


def test_control_the_rule_of_7_3_opened_to_0_trust_is_seen(make_pair, runbook):
    opened = edit_block(
        runbook, "failover-allow-old-primary", "192.168.1.10/32         scram-sha-256", "192.168.1.10/0 trust"
    )
    weak = make_pair(opened)
    weak.setup()
    weak.run("failover")
    new, old = weak.primary, weak.secondary
    assert trusts_user(new, USER)
    assert new.replicate_from(old.host, user=USER, password=Secret.generate()).ok, "a wrong password got no further"
    third = third_machine(weak)
    assert new.replicate_from(third, user=USER, password=weak.replication_password).ok, (
        "the third machine got no further"
    )
