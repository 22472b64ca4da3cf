"""Safety on real hosts, with SSH containers standing in for ECS instances named in an inventory.

The harness refuses hosts that already have PostgreSQL in any of its forms, removes exactly what
its ownership record says it created, and removes nothing from a host it has no record for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import ownership
from harness.images import ImageProfile
from harness.inventory import Inventory
from harness.lifecycle import open_pair
from harness.real_hosts import remove_from_inventory
from harness.targets import InventoryTarget

pytestmark = [pytest.mark.parts("setup"), pytest.mark.bringups(2)]
USERS_OWN = "/mnt/pgarchive/wal/users-own-file"  # something of the user's where the runbook writes too


def inventory_for(pair, path: Path) -> Inventory:
    """An inventory naming the stand-ins as real hosts (their key, their host keys as already seen)."""
    lines = ["[postgresql]", f"major = {pair.pg_major}", f"package_source = {json.dumps(pair.variant)}"]
    for role, host in pair.hosts.items():
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


@pytest.fixture
def stand_ins(make_pair, target, tmp_path_factory):
    """Two fresh machines reached only over SSH, and an inventory naming them."""
    if target.shared_hosts or target.backend != "ssh":
        pytest.skip("stand-ins are SSH containers (--backend ssh); real inventory hosts are never dirtied on purpose")
    if ImageProfile.load(target.image).preinstalled:
        pytest.skip(
            f"{target.image} has PostgreSQL preinstalled: no fresh host to stand in (tested on the Debian images)"
        )
    pair = make_pair(fresh=True)
    for node in pair.nodes.values():  # reach them once, so their host keys are known
        node.host.wait_booted()
        node.host.run(f"mkdir -p {Path(USERS_OWN).parent} && touch {USERS_OWN}", user="root")
    return pair, inventory_for(pair, tmp_path_factory.mktemp("inventory") / "inventory.toml")


def test_the_harness_removes_exactly_what_it_created(stand_ins, runbook):
    pair, inventory = stand_ins
    with open_pair(InventoryTarget(inventory, clean_up=True), runbook) as real:
        real.setup()
        record = json.loads(real.primary.host.run(f"cat {ownership.RECORD}", user="root").stdout)
        assert USERS_OWN.rsplit("/", 1)[0] in record["paths_before"]
    for node in pair.nodes.values():
        assert ownership.survey(node.host, node.layout) == {}, "PostgreSQL is left behind"
        assert node.host.run(f"test -f {USERS_OWN}", check=False).ok, "the user's own file was removed"


def refusal(inventory: Inventory, runbook) -> str:
    """What the harness says when asked to set up on the inventory's hosts (it must refuse)."""
    with pytest.raises(ownership.HostNotPristine) as refused, open_pair(InventoryTarget(inventory), runbook):
        pass
    return str(refused.value)


def test_every_form_of_an_existing_postgresql_is_refused_and_nothing_is_removed(stand_ins, runbook):
    pair, inventory = stand_ins
    host, layout, major = pair.primary.host, pair.primary.layout, pair.pg_major
    pair.run("setup", steps={"primary-package-source", "primary-install"})
    said = refusal(inventory, runbook)
    for sign in ("server packages", "running servers", "listening on port 5432", "clusters"):
        assert sign in said

    # stopped, and not named main
    host.run(f"pg_ctlcluster {major} main stop && pg_renamecluster {major} main other", user="root")
    said = refusal(inventory, runbook)
    assert f"{major}  other" in said or f"{major} other" in said
    assert "running servers" not in said

    # the data moved elsewhere, the packages gone
    host.run(f"mv /var/lib/postgresql/{major}/other /srv/pgdata", user="root")
    host.run(f"{layout.purge_command} $({layout.packages_command}) >/dev/null", user="root", timeout=300)
    said = refusal(inventory, runbook)
    assert "/srv/pgdata" in said and "server packages" not in said

    # no ownership record: `down` deletes nothing
    before = host.run("ls -d /srv/pgdata /etc/postgresql* 2>/dev/null || true", user="root").stdout
    with pytest.raises(ownership.NotOwned, match="has no ownership record"):
        remove_from_inventory(inventory)
    assert host.run("ls -d /srv/pgdata /etc/postgresql* 2>/dev/null || true", user="root").stdout == before
