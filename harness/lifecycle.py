"""One way to get a cluster: `open_cluster(target, runbook)`, a context manager.

Every caller (the command line, the pytest plugin, bench) comes through here. Containers are
started (from step snapshots where they exist), booted and handed over as hosts reached by
`docker exec` or by SSH exactly as real instances are; inventory hosts are checked to be
reachable and free of PostgreSQL. Both end in the same Cluster. Everything started is a
context on one ExitStack, so it is removed on exit, on error and on Ctrl-C, each part even
when another part's removal fails.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import LOGIN_USER
from harness.cluster import Cluster
from harness.hosts.base import Host, HostError
from harness.hosts.docker import DockerHost, DockerLab, docker_client, remove_orphans, remove_resources
from harness.hosts.ssh import SshHost
from harness.images import ImageProfile, ensure_image, image_exists
from harness.inventory import ROLES, HostEntry, Inventory
from harness.layout import Layout, layout_for
from harness.runbook import Runbook, parse_runbook
from harness.snapshots import SnapshotPlan
from harness.targets import ContainerTarget, InventoryTarget, Target

Log = Callable[[str], None]


class HostNotPristine(HostError):
    """A real host already runs or holds PostgreSQL; the harness will not touch it unless told to."""


@contextmanager
def open_cluster(target: Target, runbook: Runbook | Path | str, *, log: Log = print) -> Iterator[Cluster]:
    """The hosts of `target` as a Cluster on which `runbook` runs; removed (or cleaned) on exit."""
    book = runbook if isinstance(runbook, Runbook) else parse_runbook(runbook)
    with ExitStack() as stack:
        if isinstance(target, InventoryTarget):
            cluster = _inventory_cluster(stack, target, book, log)
        else:
            cluster = _container_cluster(stack, target, book, log)
        stack.callback(cluster.close)
        yield cluster


def _container_cluster(stack: ExitStack, target: ContainerTarget, book: Runbook, log: Log) -> Cluster:
    profile = ImageProfile.load(target.image)
    client = docker_client()
    tag = ensure_image(profile, log=log)
    lab = DockerLab(client)
    if target.keep:  # kept only once up: a failed or interrupted bring-up is removed all the same
        stack.push(lambda exc_type, *_: exc_type is not None and lab.close())
    else:
        stack.enter_context(lab)
    mounts = {lab.volume(name): path for name, path in target.volumes.items()}
    plan = None
    if target.reuse:
        plan = SnapshotPlan(
            book,
            book.select(family=profile.family, parts=("setup",), variant=profile.package_source),
            image=profile.name,
            base_tag=tag,
            pg_major=profile.pg_major,
            exists=lambda candidate: image_exists(client, candidate),
        )
    start = {role: plan.start_image(role) if plan else tag for role in ROLES}
    hosts: dict[str, Host]
    if target.backend == "docker":
        hosts = {role: DockerHost(lab.start_machine(role, start[role], mounts=mounts)) for role in ROLES}
    else:
        state = Path(tempfile.mkdtemp(prefix=f"pgrepl-{lab.run_id}-"))
        lab.cleanups.append(lambda: shutil.rmtree(state, ignore_errors=True))
        key = state / "id_ed25519"
        public_key = _generate_key(key)
        hosts = {}
        for role in ROLES:
            machine = lab.start_machine(role, start[role], mounts=mounts, authorized_key=public_key)
            entry = HostEntry(role, machine.address, machine.address, LOGIN_USER, key)
            hosts[role] = SshHost.from_entry(entry, state)
            stack.callback(hosts[role].close)
    for host in hosts.values():
        host.wait_booted()
    hooks = [plan.hook(hosts, lab.commit, log=log)] if plan else []
    return Cluster(book, hosts, profile.family, profile.pg_major, profile.package_source, log=log, hooks=hooks)


def _inventory_cluster(stack: ExitStack, target: InventoryTarget, book: Runbook, log: Log) -> Cluster:
    inventory = target.inventory
    hosts = ssh_hosts(stack, inventory)
    check_reachable(hosts)
    if not target.allow_existing:
        for host in hosts.values():
            refuse_existing_postgresql(host)
    family = hosts["primary"].os.family
    if target.clean_up:
        layout = layout_for(family, inventory.pg_major)
        stack.callback(lambda: [remove_postgresql(host, layout) for host in hosts.values()])
    return Cluster(book, hosts, family, inventory.pg_major, inventory.package_source, log=log)


def ssh_hosts(stack: ExitStack, inventory: Inventory) -> dict[str, Host]:
    """The inventory's hosts, their SSH connections closed when `stack` unwinds."""
    state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgrepl-ssh-")))
    hosts: dict[str, Host] = {}
    for role, entry in inventory.hosts.items():
        hosts[role] = SshHost.from_entry(entry, state)
        stack.callback(hosts[role].close)
    return hosts


def check_reachable(hosts: Mapping[str, Host]) -> None:
    """Raise HostUnreachable naming the first host that does not answer."""
    for host in hosts.values():
        host.run("true", timeout=30)


def refuse_existing_postgresql(host: Host) -> None:
    """Never set up over a PostgreSQL that the harness did not install."""
    found = host.run(
        "pgrep -a -x 'postgres|postmaster' || true; "
        "ls -d /var/lib/postgresql/*/main /var/lib/pgsql/*/data /var/lib/pgsql/data 2>/dev/null || true",
        timeout=30,
    ).stdout.strip()
    if found:
        raise HostNotPristine(
            f"{host.name} ({host.url}) already has PostgreSQL:\n{found}\n"
            "the harness sets up fresh hosts only; clean it with `pgrepl-harness down --inventory FILE` "
            "or pass --allow-existing-postgresql if you really mean to run over it"
        )


def remove_postgresql(host: Host, layout: Layout) -> None:
    """Remove what the runbook installed and created on `host` (packages, data, config, archives)."""
    host.run(layout.removal_script + "rm -rf /mnt/server/archivedir /mnt/pgarchive/wal\n", user="root", timeout=300)


def remove_from_inventory(inventory: Inventory, *, log: Log = print) -> None:
    """`down --inventory`: remove what the runbook installed on the inventory's hosts."""
    with ExitStack() as stack:
        hosts = ssh_hosts(stack, inventory)
        check_reachable(hosts)
        for host in hosts.values():
            remove_postgresql(host, layout_for(host.os.family, inventory.pg_major))
            log(f"{host.name} ({host.url}): PostgreSQL {inventory.pg_major}, its data and archives removed")


def check_target(target: Target) -> None:
    """Fail at once, before any cluster: no Docker engine (NoDockerEngine), or an inventory host that
    does not answer (HostUnreachable). For containers, also remove what killed runs left behind."""
    if isinstance(target, InventoryTarget):
        with ExitStack() as stack:
            check_reachable(ssh_hosts(stack, target.inventory))
    else:
        remove_orphans(docker_client())


def tear_down(inventory: Path | str | None, *, log: Log = print) -> None:
    """`down`: remove what the runbook installed on an inventory's hosts, or the harness's containers."""
    if inventory is not None:
        remove_from_inventory(Inventory.load(inventory), log=log)
    else:
        log(f"removed {remove_resources(client=docker_client())} containers, networks and volumes of pgrepl-harness")


def _generate_key(path: Path) -> str:
    """A fresh ed25519 key pair for this run; returns the public half."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgrepl-harness", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()
