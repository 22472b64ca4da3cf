"""The real hosts of an inventory as a pair's hosts (harness.targets.InventoryTarget.open), and `down`
for them: reached by SSH, checked to be two reachable machines of one OS family, claimed by an
ownership record (harness.ownership) for as long as the pair lives, cleaned when the target says.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from harness import ownership
from harness.hosts.base import Host, HostError
from harness.hosts.ssh import SshHost
from harness.inventory import HostEntry, Inventory
from harness.layout import family_of, layout_for
from harness.pair import ReplicationPair
from harness.runbook import Runbook

if TYPE_CHECKING:  # the targets open these modules: no import back at run time
    from harness.targets import InventoryTarget, Log


@contextmanager
def open_inventory(target: InventoryTarget, book: Runbook, *, log: Log) -> Iterator[ReplicationPair]:
    with ExitStack() as stack:
        yield _claim(stack, target, book, log)


def _claim(stack: ExitStack, target: InventoryTarget, book: Runbook, log: Log) -> ReplicationPair:
    inventory = target.inventory
    hosts = ssh_hosts(stack, inventory)
    check_reachable(hosts)
    family = check_identity(hosts)
    layout = layout_for(family, inventory.pg_major)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    for host in hosts.values():  # before the survey: survey and claim are one step for other runs
        stack.enter_context(ownership.held(host, run_id))
    if not target.allow_existing:
        for host in hosts.values():
            ownership.refuse_existing_postgresql(host, layout)
    if target.clean_up:  # registered first: runs last, after the record is sealed
        stack.callback(lambda: [ownership.release(host, layout, log=log) for host in hosts.values()])
    records = {role: ownership.claim(host, layout, run_id) for role, host in hosts.items()}
    stack.callback(lambda: [ownership.seal(hosts[role], layout, record) for role, record in records.items()])
    return ReplicationPair(book, hosts, family, inventory.pg_major, inventory.package_source, log=log)


def ssh_hosts(stack: ExitStack, inventory: Inventory) -> dict[str, Host]:
    """The inventory's hosts, their SSH connections closed when `stack` unwinds."""
    state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgrepl-ssh-")))
    hosts: dict[str, Host] = {}
    for role, entry in inventory.hosts.items():
        hosts[role] = inventory_host(entry, state)
        stack.callback(hosts[role].close)
    return hosts


def inventory_host(entry: HostEntry, state_dir: Path) -> SshHost:
    """The host an inventory entry describes, named by its table; its key must be known already."""
    return SshHost(
        entry.role,
        ssh_address=entry.ssh_address,
        private_address=entry.private_address,
        user=entry.user,
        key=entry.key,
        port=entry.port,
        state_dir=state_dir,
        known_hosts=entry.known_hosts,
        proxy_jump=entry.proxy_jump,
    )


def check_reachable(hosts: Mapping[str, Host]) -> None:
    """Raise HostUnreachable naming the first host that does not answer."""
    for host in hosts.values():
        host.run("true", timeout=30)


def check_identity(hosts: Mapping[str, Host]) -> str:
    """Two different machines, neither the runner, of one OS family (returned): else HostError naming both."""
    primary, secondary = hosts["primary"], hosts["secondary"]
    names = f"primary ({primary.url}) and secondary ({secondary.url})"
    ids = {role: host.run("cat /etc/machine-id", timeout=30).stdout.strip() for role, host in hosts.items()}
    runner = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").is_file() else None
    if ids["primary"] == ids["secondary"]:
        raise HostError(f"{names} are the same machine (/etc/machine-id {ids['primary']}): name two hosts")
    for role, machine_id in ids.items():
        if machine_id == runner:
            raise HostError(f"{role} ({hosts[role].url}) is the machine the harness runs on: name two other hosts")
    if primary.address == secondary.address:
        raise HostError(f"{names} have the same private address {primary.address}")
    families = family_of(primary.os), family_of(secondary.os)
    if families[0] != families[1]:
        raise HostError(f"{names} run different OS families ({families[0]}, {families[1]})")
    return families[0]


def remove_from_inventory(inventory: Inventory, *, force: bool = False, log: Log = print) -> None:
    """`down --inventory`: remove what the harness's records say it created on the inventory's hosts."""
    with ExitStack() as stack:
        hosts = ssh_hosts(stack, inventory)
        check_reachable(hosts)
        for host in hosts.values():
            with ownership.held(host, "down"):
                layout = layout_for(family_of(host.os), inventory.pg_major)
                removed = ownership.release(host, layout, force=force, log=log)
            log(f"{host.name} ({host.url}): removed {', '.join(removed) or 'nothing (none of it was there)'}")


def check_inventory(inventory: Inventory) -> None:
    """HostUnreachable at once, naming the first host of `inventory` that does not answer."""
    with ExitStack() as stack:
        check_reachable(ssh_hosts(stack, inventory))
