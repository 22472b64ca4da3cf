"""Safety on real hosts, with SSH containers standing in for ECS instances named in an inventory.

The harness refuses hosts that already have PostgreSQL in any of its forms, removes exactly what
its ownership record says it created, and removes nothing from a host it has no record for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import ownership
from harness.inventory import Inventory
from harness.lifecycle import open_cluster, remove_from_inventory
from harness.targets import InventoryTarget

pytestmark = pytest.mark.parts("setup")
USERS_OWN = "/mnt/pgarchive/wal/users-own-file"  # something of the user's where the runbook writes too


def inventory_for(cluster, path: Path) -> Inventory:
    """An inventory naming the stand-ins as real hosts (their key, their host keys as already seen)."""
    lines = ["[postgresql]", f"major = {cluster.pg_major}", f"package_source = {json.dumps(cluster.variant)}"]
    for role, host in cluster.hosts.items():
        lines += [
            f"[{role}]",
            f"ssh_address = {json.dumps(host.ssh_address)}",
            f"private_address = {json.dumps(host.private_address)}",
            f"user = {json.dumps(host.user)}",
            f"key = {json.dumps(str(host.key))}",
            f"known_hosts = {json.dumps(str(host.state_dir / 'known_hosts'))}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return Inventory.load(path)


@pytest.fixture(scope="module")
def stand_ins(make_cluster, target, tmp_path_factory):
    """Two fresh machines reached only over SSH, and an inventory naming them."""
    if target.shared_hosts or target.backend != "ssh":
        pytest.skip("stand-ins are SSH containers (--backend ssh); real inventory hosts are never dirtied on purpose")
    cluster = make_cluster(fresh=True)
    for node in cluster.nodes.values():  # reach them once, so their host keys are known
        node.host.run(f"mkdir -p {Path(USERS_OWN).parent} && touch {USERS_OWN}", user="root")
    return cluster, inventory_for(cluster, tmp_path_factory.mktemp("inventory") / "inventory.toml")


def test_the_harness_removes_exactly_what_it_created(stand_ins, runbook):
    cluster, inventory = stand_ins
    with open_cluster(InventoryTarget(inventory, clean_up=True), runbook) as real:
        real.setup()
        record = json.loads(real.primary.host.run(f"cat {ownership.RECORD}", user="root").stdout)
        assert USERS_OWN.rsplit("/", 1)[0] in record["paths_before"]
    for node in cluster.nodes.values():
        assert ownership.survey(node.host, node.layout) == {}, "PostgreSQL is left behind"
        assert node.host.run(f"test -f {USERS_OWN}", check=False).ok, "the user's own file was removed"


def test_a_host_with_a_running_postgresql_is_refused(stand_ins, runbook):
    cluster, inventory = stand_ins
    cluster.run("setup", steps={"primary-package-source", "primary-install"})
    with pytest.raises(ownership.HostNotPristine) as refused, open_cluster(InventoryTarget(inventory), runbook):
        pass
    for sign in ("server packages", "running servers", "listening on port 5432", "clusters"):
        assert sign in str(refused.value)


def test_a_stopped_cluster_with_another_name_is_refused(stand_ins, runbook):
    cluster, inventory = stand_ins
    major = cluster.pg_major
    cluster.primary.host.run(f"pg_ctlcluster {major} main stop && pg_renamecluster {major} main other", user="root")
    with pytest.raises(ownership.HostNotPristine) as refused, open_cluster(InventoryTarget(inventory), runbook):
        pass
    assert f"{major}  other" in str(refused.value) or f"{major} other" in str(refused.value)
    assert "running servers" not in str(refused.value)


def test_data_moved_elsewhere_without_packages_is_refused(stand_ins, runbook):
    cluster, inventory = stand_ins
    host, layout = cluster.primary.host, cluster.primary.layout
    host.run(f"mv /var/lib/postgresql/{cluster.pg_major}/other /srv/pgdata", user="root")
    host.run(f"{layout.purge_command} $({layout.packages_command}) >/dev/null", user="root", timeout=300)
    with pytest.raises(ownership.HostNotPristine) as refused, open_cluster(InventoryTarget(inventory), runbook):
        pass
    assert "/srv/pgdata" in str(refused.value) and "server packages" not in str(refused.value)


def test_down_on_a_host_without_the_record_deletes_nothing(stand_ins):
    cluster, inventory = stand_ins
    host = cluster.primary.host
    cluster.secondary.host.run(f"touch {ownership.RECORD} && rm -f {ownership.RECORD}", user="root", check=False)
    before = host.run("ls -d /srv/pgdata /etc/postgresql* 2>/dev/null || true", user="root").stdout
    with pytest.raises(ownership.NotOwned, match="has no ownership record"):
        remove_from_inventory(inventory)
    assert host.run("ls -d /srv/pgdata /etc/postgresql* 2>/dev/null || true", user="root").stdout == before
    assert "/srv/pgdata" in before
