"""One way to get a cluster: `open_cluster(target, runbook)`, a context manager.

Every caller (the command line, the pytest plugin, bench) comes through here. Containers are
started (from step snapshots where they exist), booted and handed over as hosts reached by
`docker exec` or by SSH exactly as real instances are; inventory hosts are checked to be
reachable and free of PostgreSQL. Both end in the same Cluster. Everything started is a
context on one ExitStack, so it is removed on exit, on error and on Ctrl-C, each part even
when another part's removal fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import docker.errors

from harness import LOGIN_USER, ownership
from harness.cluster import Cluster, Node, on_each, wait_accepting
from harness.hosts.base import Host, HostError, Result
from harness.hosts.docker import (
    DockerHost,
    DockerLab,
    docker_client,
    label_filter,
    listed,
    remove_orphans,
    remove_resources,
)
from harness.hosts.ssh import SshHost
from harness.images import ImageProfile, ensure_image, image_exists
from harness.inventory import ROLES, HostEntry, Inventory
from harness.labels import LABEL, RUN_LABEL, SETUP_STATE_KIND
from harness.layout import layout_for
from harness.runbook import Block, Runbook, Skip, parse_runbook
from harness.runstate import (
    COPY_UP_LIST,
    RESTORED_NOTE,
    RUN_STATES,
    SAVED_NOTE,
    RestoredSetup,
    SetupState,
    state_key,
    state_tag,
)
from harness.snapshots import SnapshotPlan
from harness.targets import ContainerTarget, InventoryTarget, Target
from harness.waiting import Stopwatch

Log = Callable[[str], None]
# Per-user state of container runs reached by SSH (their generated keys).
STATE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pgrepl-harness" / "runs"


@contextmanager
def open_cluster(target: Target, runbook: Runbook | Path | str, *, log: Log = print) -> Iterator[Cluster]:
    """The hosts of `target` as a Cluster on which `runbook` runs; removed (or cleaned) on exit."""
    book = runbook if isinstance(runbook, Runbook) else parse_runbook(runbook)
    with ExitStack() as stack:
        if isinstance(target, InventoryTarget):
            cluster = _inventory_cluster(stack, target, book, log)
        else:
            cluster = _container_cluster(stack, target, book, log)
        stack.callback(setattr, cluster, "removed", True)  # on the way out: no evidence from its hosts after
        stack.callback(cluster.close)
        if target.kept:  # the user's cluster from now on: no superuser of the harness left in it
            stack.callback(cluster.revoke_harness_access)
        yield cluster


def _container_cluster(stack: ExitStack, target: ContainerTarget, book: Runbook, log: Log) -> Cluster:
    profile = ImageProfile.load(target.image)
    client = docker_client()
    stopwatch = Stopwatch()
    with stopwatch.phase("image check"):
        tag = ensure_image(profile, log=log)
    setup_blocks = book.select(family=profile.family, parts=("setup",), variant=profile.package_source)
    state = key = None
    if target.reuse and not target.volumes and not target.keep:
        key = state_key(profile.name, target.backend, tag, setup_blocks)
        state = RUN_STATES.claim(key, client, recurs=target.setup_recurs)
        if state is not None:
            stack.callback(RUN_STATES.release, state)
    try:
        lab = DockerLab(client, kept=target.keep or target.keep_on_failure, subnet=state.subnet if state else None)
    except docker.errors.APIError as exc:  # another session took that subnet: set up for real
        if state is None:
            raise
        log(f"set-up state not used: its subnet {state.subnet} is taken ({exc.explanation})")
        state = None  # (released with the cluster; its images stay listed for removal at exit)
        lab = DockerLab(client, kept=target.keep or target.keep_on_failure)
    if target.keep:  # kept only once up: a failed or interrupted bring-up is removed all the same
        stack.push(lambda exc_type, *_: exc_type is not None and lab.close())
    else:
        stack.enter_context(lab)
    mounts = {lab.volume(name): path for name, path in target.volumes.items()}
    plan = None
    if target.reuse:
        plan = SnapshotPlan(
            book,
            setup_blocks,
            image=profile.name,
            base_tag=tag,
            pg_major=profile.pg_major,
            exists=lambda candidate: image_exists(client, candidate),
        )
    start = {role: plan.start_image(role) if plan else tag for role in ROLES}
    restored = state is not None and bool(state.images)
    if restored:
        start = dict(state.images)
    addresses = state.addresses() if state else {}
    # the saved servers start at boot: the primary's first, or the standby waits 5 s before its retry
    secondary_after = partial(wait_accepting, timeout=90) if restored else None
    with stopwatch.phase("container start" + (" (the secondary once the primary accepts)" if restored else "")):
        hosts = _start_hosts(stack, lab, target.backend, start, mounts, addresses, secondary_after=secondary_after)
    booting = BootWait(hosts)
    stack.callback(booting.stop)
    with stopwatch.phase("boot (primary; the secondary boots on meanwhile)"):
        booting.before_role("primary")
    hooks = [booting, *([plan.hook(hosts, lab.commit, log=log)] if plan else [])]
    secrets = {}
    if restored:
        hooks.insert(1, RestoredSetup())
        secrets = dict(zip(("replication_password", "harness_password"), state.passwords, strict=True))
    cluster = Cluster(
        book,
        hosts,
        profile.family,
        profile.pg_major,
        profile.package_source,
        log=log,
        packaging=profile.packaging,
        preinstalled=profile.preinstalled_note,
        hooks=hooks,
        stopwatch=stopwatch,
        access_granted=restored,
        **secrets,
    )
    if target.keep_on_failure:
        cluster.keep_hosts = lab.keep
    if restored:
        cluster.note(RESTORED_NOTE)
    elif state is not None:
        cluster.after_setup = lambda done: _save_state(done, lab, state, key, profile.name)
    return cluster


def _save_state(cluster: Cluster, lab: DockerLab, state: SetupState, key: str, image: str) -> None:
    """Both hosts, cleanly stopped, committed for the run's later clusters; then on again."""
    started = time.monotonic()
    cluster.secondary.stop()  # first: the primary's shutdown then waits for no walsender
    cluster.primary.stop()
    tags = {role: state_tag(image, role, key, lab.run_id) for role in ROLES}

    def commit(node: Node) -> None:
        node.host.put_file(COPY_UP_LIST, f"{node.layout.data_dir}\n")  # read by the image's entry wrapper
        lab.commit(node.name, tags[node.name], kind=SETUP_STATE_KIND)
        node.host.run(f"rm -f {COPY_UP_LIST}", user="root")

    try:
        on_each(commit, cluster.nodes.values())
    finally:
        cluster.start()
    state.images, state.passwords = tags, (cluster.replication_password, cluster.harness_password)
    cluster.primary.wait_for_streaming(cluster.secondary, timeout=60)
    cluster.note(f"{SAVED_NOTE} ({time.monotonic() - started:.1f} s)")


class BootWait:
    """A step hook: each machine boots in the background and a host's first step waits for its boot,
    so the primary's steps run while the secondary is still booting. Code that uses a host before
    its first step calls `host.wait_booted()` itself."""

    def __init__(self, hosts: Mapping[str, Host]):
        self.stopped = threading.Event()
        pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="boot")
        self.booting = {role: pool.submit(host.wait_booted, hopeless=self._hopeless) for role, host in hosts.items()}
        pool.shutdown(wait=False)

    def _hopeless(self) -> str | None:
        return "the cluster is being removed" if self.stopped.is_set() else None

    def stop(self) -> None:
        """Give up the waits still running (the bring-up failed): no thread outlives the cluster."""
        self.stopped.set()

    def before_role(self, role: str) -> None:
        self.booting[role].result()  # raises the boot's WaitTimeout, if any

    def before(self, block: Block) -> Skip | None:
        self.before_role(block.host)
        return None

    def after(self, block: Block, result: Result) -> None:
        return None


def _start_hosts(
    stack: ExitStack,
    lab: DockerLab,
    backend: str,
    start: Mapping[str, str],
    mounts: Mapping[str, str],
    addresses: Mapping[str, str],
    *,
    secondary_after: Callable[[Host], None] | None = None,
) -> dict[str, Host]:
    """Both machines, reached by `docker exec` or, like real instances, by SSH with a key of this run.

    They start at once; with `secondary_after`, the secondary only once that has returned for the
    primary's host (a restored standby must not boot before its primary accepts connections)."""
    authorized_key = None
    if backend != "docker":
        state = STATE_ROOT / lab.run_id  # holds the run's private key: this user's only, and swept
        state.mkdir(mode=0o700, parents=True)
        lab.cleanups.append(lambda: shutil.rmtree(state, ignore_errors=True))
        key = state / "id_ed25519"
        authorized_key = _generate_key(key)

    def start_host(role: str) -> Host:
        machine = lab.start_machine(
            role, start[role], mounts=mounts, authorized_key=authorized_key, address=addresses.get(role)
        )
        if backend == "docker":
            return DockerHost(machine)
        entry = HostEntry(role, machine.address, machine.address, LOGIN_USER, key)
        host = SshHost.from_entry(entry, state, trust_on_first_use=True)
        host.machine_lost = machine.lost  # an SSH failure then says whether the container is gone
        stack.callback(host.close)
        return host

    if secondary_after is not None:
        primary = start_host("primary")
        secondary_after(primary)
        return {"primary": primary, "secondary": start_host("secondary")}
    with ThreadPoolExecutor(max_workers=len(ROLES), thread_name_prefix="start") as pool:
        started = {role: pool.submit(start_host, role) for role in ROLES}
    return {role: host.result() for role, host in started.items()}


def _inventory_cluster(stack: ExitStack, target: InventoryTarget, book: Runbook, log: Log) -> Cluster:
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
    if primary.os.family != secondary.os.family:
        raise HostError(f"{names} run different OS families ({primary.os.family}, {secondary.os.family})")
    return primary.os.family


def remove_from_inventory(inventory: Inventory, *, force: bool = False, log: Log = print) -> None:
    """`down --inventory`: remove what the harness's records say it created on the inventory's hosts."""
    with ExitStack() as stack:
        hosts = ssh_hosts(stack, inventory)
        check_reachable(hosts)
        for host in hosts.values():
            with ownership.held(host, "down"):
                removed = ownership.release(host, layout_for(host.os.family, inventory.pg_major), force=force, log=log)
            log(f"{host.name} ({host.url}): removed {', '.join(removed) or 'nothing (none of it was there)'}")


def check_target(target: Target) -> None:
    """Fail at once, before any cluster: no Docker engine (NoDockerEngine), or an inventory host that
    does not answer (HostUnreachable). For containers, also remove what killed runs left behind."""
    if isinstance(target, InventoryTarget):
        with ExitStack() as stack:
            check_reachable(ssh_hosts(stack, target.inventory))
    else:
        client = docker_client()
        remove_orphans(client)
        remove_stale_state(client)


def remove_stale_state(client) -> None:
    """Remove the state (private keys) of runs whose containers are gone (killed runs, `down`)."""
    if not STATE_ROOT.is_dir():
        return
    live = {c.labels.get(RUN_LABEL) for c in listed(client, "containers", label_filter(LABEL))}
    for state in STATE_ROOT.iterdir():
        if state.name not in live and state.stat().st_mtime < time.time() - 60:  # not one being set up
            shutil.rmtree(state, ignore_errors=True)


def tear_down(inventory: Path | str | None, *, force: bool = False, everyone: bool = False, log: Log = print) -> None:
    """`down`: remove what the runbook installed on an inventory's hosts, or the harness's containers:
    this user's kept clusters and killed runs on this machine (a run still going removes its own), or
    with `everyone` every harness resource on the engine."""
    if inventory is not None:
        remove_from_inventory(Inventory.load(inventory), force=force, log=log)
        return
    client = docker_client()
    removed = remove_resources(client=client) if everyone else remove_orphans(client, kept_too=True)
    remove_stale_state(client)
    log(f"removed {removed} containers, networks and volumes of pgrepl-harness ({'all' if everyone else 'yours'})")


def _generate_key(path: Path) -> str:
    """A fresh ed25519 key pair for this run; returns the public half."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgrepl-harness", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()
