"""Container machines as a pair's hosts (harness.targets.ContainerTarget.open).

Containers are started from what one StartPlan chose (the image, a snapshot of completed steps, or
this run's saved set-up state), booted and handed over as hosts of the target's backend
(harness.hosts.BACKENDS), reached exactly as real instances are. Everything started is a context on
one ExitStack, so it is removed on exit, on error and on Ctrl-C, each part even when another part's
removal fails; hosts are left running instead when the target's keep policy says so.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

from harness import CACHE_ROOT, ROLES
from harness.hosts import Access, Host, backend
from harness.hosts.docker import (
    DockerLab,
    docker_client,
    label_filter,
    listed,
    remove_orphans,
    remove_resources,
    touch_image,
)
from harness.images import ImageProfile, ensure_image, image_exists
from harness.labels import LABEL, RUN_LABEL, SETUP_STATE_KIND
from harness.pair import Node, ReplicationPair, on_each, wait_accepting
from harness.runbook import Block, Runbook, Skip, StepHook
from harness.runstate import (
    COPY_UP_LIST,
    READDRESS_LIST,
    READDRESS_VAR,
    RESTORED_NOTE,
    RUN_STATES,
    SAVED_NOTE,
    Claim,
    RestoredSetup,
    SetupState,
    readdress,
    remove_stale_registries,
    restorable_with,
    state_key,
    state_tag,
    subnet_addresses,
)
from harness.snapshots import SnapshotPlan, remove_unused_snapshots
from harness.waiting import Stopwatch

if TYPE_CHECKING:  # the targets open these modules: no import back at run time
    from harness.targets import ContainerTarget, Log

# Per-user state of container runs reached by SSH (their generated keys).
STATE_ROOT = CACHE_ROOT / "runs"
# Where a set-up pair's files may hold its addresses (pg_hba.conf, primary_conninfo, .pgpass), and the
# files there the engine writes itself (not committed: bind mounts).
ADDRESS_DIRECTORIES = ("/etc", "/var/lib/postgresql", "/var/lib/pgsql", "/home", "/root")
ENGINE_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
# The data directory's subdirectory whose own subdirectories PostgreSQL renames (a slot's, when it is
# dropped): overlayfs refuses to rename a directory of an image's layers (EXDEV), so a machine started
# from a set-up state copies it up first (images/common/ecs-entrypoint.sh). Only it: a copy of the
# whole data directory cost each restored host about 0.7 CPU-seconds, mostly the file system's inode
# allocation; files PostgreSQL renames (WAL segments, status files) overlayfs copies up itself.
RENAMED_DIRECTORIES = "pg_replslot"
SUBNET_ATTEMPTS = 5


class StartPlan:
    """What each machine starts from, decided once before any starts: the session's set-up state (both
    hosts as set up, re-addressed to a subnet of this pair's, with the same passwords), else snapshots
    of completed steps, else the image. Its hooks mark what the start already holds and save what
    later pairs can reuse."""

    def __init__(self, target: ContainerTarget, profile: ImageProfile, tag: str, book: Runbook, client, log: Log):
        self.profile, self.tag, self.log = profile, tag, log
        setup_blocks = book.select(family=profile.family, parts=("setup",), variant=profile.package_source)
        self.claim: Claim | None = None
        if target.reuse and not target.keep and restorable_with(target.volumes.values(), setup_blocks):
            key = state_key(profile.name, target.backend, tag, setup_blocks)
            self.claim = RUN_STATES.claim(
                key,
                recurs=target.setup_recurs,
                # a pair with shared storage starts from the state with its own empty volume, and saves none
                may_save=not target.volumes,
                exists=lambda image: image_exists(client, image),
            )
        self.state = self.claim.state if self.claim else None
        self.subnet = RUN_STATES.next_subnet() if self.state else None
        self.saved = False
        self.snapshots = None
        if target.reuse:
            self.snapshots = SnapshotPlan(
                book,
                setup_blocks,
                image=profile.name,
                base_tag=tag,
                pg_major=profile.pg_major,
                exists=lambda candidate: image_exists(client, candidate),
            )
            if self.state is None:  # the snapshots it starts from are used now: the last a budget evicts
                for level in self.snapshots.start.values():
                    touch_image(client, level.tag)

    def release(self) -> None:
        """The pair is gone: a state it was to save and did not is free for another process."""
        if self.claim is not None and not self.saved:
            RUN_STATES.abandon(self.claim)

    def other_subnet(self) -> None:
        self.subnet = RUN_STATES.next_subnet()

    @property
    def restored(self) -> bool:
        return self.state is not None

    def images(self) -> dict[str, str]:
        if self.state is not None:
            return dict(self.state.images)
        return {role: self.snapshots.start_image(role) if self.snapshots else self.tag for role in ROLES}

    def addresses(self) -> dict[str, str]:
        return subnet_addresses(self.subnet) if self.subnet else {}

    def environment(self) -> dict[str, str]:
        """The machines' environment: a restored pair's new addresses for the entry wrapper."""
        if self.state is None:
            return {}
        return {READDRESS_VAR: readdress(self.state.addresses, self.addresses())}

    def secrets(self) -> dict:
        if self.state is None:
            return {}
        return dict(zip(("replication_password", "harness_password"), self.state.passwords, strict=True))

    def hooks(self, hosts: Mapping[str, Host], lab: DockerLab) -> list[StepHook]:
        if self.restored:
            return [RestoredSetup()]
        hooks: list[StepHook] = [self.snapshots.hook(hosts, lab.commit, log=self.log)] if self.snapshots else []
        if self.claim is not None and self.claim.saves:  # the first to set up this key: saves it for the others
            hooks.append(SaveSetupState(lab, self, self.profile.name))
        return hooks


@contextmanager
def open_machines(target: ContainerTarget, book: Runbook, *, log: Log) -> Iterator[ReplicationPair]:
    with ExitStack() as stack:
        yield _bring_up(stack, target, book, log)


def _bring_up(stack: ExitStack, target: ContainerTarget, book: Runbook, log: Log) -> ReplicationPair:
    profile = ImageProfile.load(target.image)
    client = docker_client()
    stopwatch = Stopwatch()
    with stopwatch.phase("image check"):
        tag = ensure_image(profile, log=log)
    plan = StartPlan(target, profile, tag, book, client, log)
    stack.callback(plan.release)
    kept = target.keep or target.keep_if is not None  # labelled kept from the start: no sweep removes them
    for attempt in range(SUBNET_ATTEMPTS):
        try:
            lab = DockerLab(client, kept=kept, subnet=plan.subnet)
            break
        except docker.errors.APIError as exc:  # another pair (another session) has that subnet now
            if plan.subnet is None or attempt == SUBNET_ATTEMPTS - 1:
                raise
            log(f"subnet {plan.subnet} is taken ({exc.explanation}): trying another")
            plan.other_subnet()
    if target.keep:  # kept only once up: a failed or interrupted bring-up is removed all the same
        stack.push(lambda exc_type, *_: exc_type is not None and lab.close())
    else:
        stack.enter_context(lab)
    if target.keep_if is not None:  # runs before the lab's removal: a failure to keep leaves it running
        keep_if = target.keep_if
        stack.callback(lambda: keep_if() and lab.keep())
    mounts = {lab.volume(name): path for name, path in target.volumes.items()}
    restored = plan.restored
    # the saved servers start at boot: the primary's first, or the standby waits 5 s before its retry
    secondary_after = partial(wait_accepting, timeout=90) if restored else None
    with stopwatch.phase("container start" + (" (the secondary once the primary accepts)" if restored else "")):
        hosts = _start_hosts(stack, lab, target.backend, plan, mounts, secondary_after=secondary_after)
    booting = BootWait(hosts)
    stack.callback(booting.stop)
    with stopwatch.phase("boot (primary; the secondary boots on meanwhile)"):
        booting.before_role(ROLES[0])
    pair = ReplicationPair(
        book,
        hosts,
        profile.family,
        profile.pg_major,
        profile.package_source,
        log=log,
        packaging=profile.packaging,
        preinstalled=profile.preinstalled_note,
        hooks=[booting, *plan.hooks(hosts, lab)],
        stopwatch=stopwatch,
        access_granted=restored,
        **plan.secrets(),
    )
    if restored:
        pair.note(RESTORED_NOTE)
    return pair


class SaveSetupState(StepHook):
    """Once the pair is set up: both hosts, cleanly stopped, committed for the session's later pairs
    (with the list of files holding their addresses, which a restored pair's entry wrapper rewrites);
    then on again."""

    def __init__(self, lab: DockerLab, plan: StartPlan, image: str):
        self.lab, self.plan, self.image = lab, plan, image

    def set_up(self, pair: ReplicationPair) -> None:
        started = time.monotonic()
        claim = self.plan.claim
        pair.secondary.stop()  # first: the primary's shutdown then waits for no walsender
        pair.primary.stop()
        tags = {role: state_tag(self.image, role, claim.key, self.lab.run_id) for role in ROLES}
        machines = self.lab.machines
        addresses = {"gateway": machines[ROLES[0]].gateway, **{role: machines[role].address for role in ROLES}}
        patterns = " ".join(f"-e {address}" for address in addresses.values())

        def commit(node: Node) -> None:
            node.host.put_file(COPY_UP_LIST, f"{node.layout.data_dir}/{RENAMED_DIRECTORIES}\n")  # for the entry wrapper
            node.host.run(
                f"grep -rlIF {patterns} {' '.join(ADDRESS_DIRECTORIES)} 2>/dev/null"
                f" | grep -vxF {' '.join(f'-e {path}' for path in ENGINE_FILES)} > {READDRESS_LIST} || true",
                user="root",
            )
            self.lab.commit(node.name, tags[node.name], kind=SETUP_STATE_KIND)
            node.host.run(f"rm -f {COPY_UP_LIST} {READDRESS_LIST}", user="root")

        try:
            on_each(commit, pair.nodes.values())
        finally:
            pair.start()
        RUN_STATES.saved(claim.key, SetupState(tags, addresses, (pair.replication_password, pair.harness_password)))
        self.plan.saved = True
        pair.primary.wait_for_streaming(pair.secondary, timeout=60)
        pair.note(f"{SAVED_NOTE} ({time.monotonic() - started:.1f} s)")


class BootWait(StepHook):
    """Each machine boots in the background and a host's first step waits for its boot, so the
    primary's steps run while the secondary is still booting. Code that uses a host before its
    first step calls `host.wait_booted()` itself."""

    def __init__(self, hosts: Mapping[str, Host]):
        self.stopped = threading.Event()
        pool = ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="boot")
        self.booting = {role: pool.submit(host.wait_booted, hopeless=self._hopeless) for role, host in hosts.items()}
        pool.shutdown(wait=False)

    def _hopeless(self) -> str | None:
        return "the pair is being removed" if self.stopped.is_set() else None

    def stop(self) -> None:
        """Give up the waits still running (the bring-up failed): no thread outlives the pair."""
        self.stopped.set()

    def before_role(self, role: str) -> None:
        self.booting[role].result()  # raises the boot's WaitTimeout, if any

    def before(self, block: Block) -> Skip | None:
        self.before_role(block.host)
        return None


def _start_hosts(
    stack: ExitStack,
    lab: DockerLab,
    backend_name: str,
    plan: StartPlan,
    mounts: Mapping[str, str],
    *,
    secondary_after: Callable[[Host], None] | None = None,
) -> dict[str, Host]:
    """Both machines, as hosts of the backend named `backend_name` (by `docker exec`, or like real
    instances by SSH with a key of this run).

    They start at once; with `secondary_after`, the secondary only once that has returned for the
    primary's host (a restored standby must not boot before its primary accepts connections)."""
    transport = backend(backend_name)

    def state_dir() -> Path:  # holds the run's private key: this user's only, and swept
        state = STATE_ROOT / lab.run_id
        state.mkdir(mode=0o700, parents=True)
        lab.cleanups.append(lambda: shutil.rmtree(state, ignore_errors=True))
        return state

    access: Access = transport.access(state_dir)
    start, addresses = plan.images(), plan.addresses()

    def start_host(role: str) -> Host:
        machine = lab.start_machine(
            role,
            start[role],
            mounts=mounts,
            authorized_key=access.authorized_key,
            address=addresses.get(role),
            environment=plan.environment(),
        )
        host = transport.for_machine(machine, access)
        stack.callback(host.close)
        return host

    if secondary_after is not None:
        first = start_host(ROLES[0])
        secondary_after(first)
        return {ROLES[0]: first, ROLES[1]: start_host(ROLES[1])}
    with ThreadPoolExecutor(max_workers=len(ROLES), thread_name_prefix="start") as pool:
        started = {role: pool.submit(start_host, role) for role in ROLES}
    return {role: host.result() for role, host in started.items()}


def check_engine() -> None:
    """NoDockerEngine at once when no engine answers; else remove what killed runs left behind."""
    client = docker_client()
    remove_orphans(client)
    remove_stale_state(client)
    remove_stale_registries()


def remove_containers(*, everyone: bool, log: Log) -> None:
    """`down`: this user's kept pairs and killed runs on this machine, or with `everyone` every
    harness resource on the engine."""
    client = docker_client()
    removed = remove_resources(client=client) if everyone else remove_orphans(client, kept_too=True)
    remove_stale_state(client)
    log(f"removed {removed} containers, networks and volumes of pgrepl-harness ({'all' if everyone else 'yours'})")
    remove_unused_snapshots(client, log=log)


def remove_stale_state(client: docker.DockerClient) -> None:
    """Remove the state (private keys) of runs whose containers are gone (killed runs, `down`)."""
    if not STATE_ROOT.is_dir():
        return
    live = {c.labels.get(RUN_LABEL) for c in listed(client, "containers", label_filter(LABEL))}
    for state in STATE_ROOT.iterdir():
        if state.name not in live and state.stat().st_mtime < time.time() - 60:  # not one being set up
            shutil.rmtree(state, ignore_errors=True)
