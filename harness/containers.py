"""Container machines as a pair's hosts (harness.targets.ContainerTarget.open).

Containers are started from what one StartPlan chose (the image, a snapshot of completed steps, or
this run's saved set-up state), booted and handed over as hosts of the target's backend
(harness.hosts.BACKENDS), reached exactly as real instances are. Everything started is a context on
one ExitStack, so it is removed on exit, on error and on Ctrl-C, each part even when another part's
removal fails; hosts are left running instead when the target's keep policy says so.
"""

from __future__ import annotations

import os
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

from harness import ROLES
from harness.hosts import Access, Host, backend
from harness.hosts.docker import DockerLab, docker_client, label_filter, listed, remove_orphans, remove_resources
from harness.images import ImageProfile, ensure_image, image_exists
from harness.labels import LABEL, RUN_LABEL, SETUP_STATE_KIND
from harness.pair import Node, ReplicationPair, on_each, wait_accepting
from harness.runbook import Block, Runbook, Skip, StepHook
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
from harness.waiting import Stopwatch

if TYPE_CHECKING:  # the targets open these modules: no import back at run time
    from harness.targets import ContainerTarget, Log

# Per-user state of container runs reached by SSH (their generated keys).
STATE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pgrepl-harness" / "runs"


class StartPlan:
    """What each machine starts from, decided once before any starts: this run's set-up state (both
    hosts as set up, with their addresses and passwords), else snapshots of completed steps, else
    the image. Its hooks mark what the start already holds and save what later pairs can reuse."""

    def __init__(self, target: ContainerTarget, profile: ImageProfile, tag: str, book: Runbook, client, log: Log):
        self.profile, self.tag, self.log = profile, tag, log
        setup_blocks = book.select(family=profile.family, parts=("setup",), variant=profile.package_source)
        self.state: SetupState | None = None
        self.key = None
        if target.reuse and not target.volumes and not target.keep:
            self.key = state_key(profile.name, target.backend, tag, setup_blocks)
            self.state = RUN_STATES.claim(self.key, client, recurs=target.setup_recurs)
        self.claimed = self.state  # released with the pair, even when not used
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

    def release(self) -> None:
        if self.claimed is not None:
            RUN_STATES.release(self.claimed)

    def drop_state(self, why: str) -> None:
        """Set up for real after all (the state is released with the pair; its images stay listed for
        removal at the run's end)."""
        self.log(f"set-up state not used: {why}")
        self.state = None

    @property
    def subnet(self) -> str | None:
        return self.state.subnet if self.state else None

    @property
    def restored(self) -> bool:
        return self.state is not None and bool(self.state.images)

    def images(self) -> dict[str, str]:
        if self.restored:
            return dict(self.state.images)
        return {role: self.snapshots.start_image(role) if self.snapshots else self.tag for role in ROLES}

    def addresses(self) -> dict[str, str]:
        return self.state.addresses() if self.state else {}

    def secrets(self) -> dict:
        if not self.restored:
            return {}
        return dict(zip(("replication_password", "harness_password"), self.state.passwords, strict=True))

    def hooks(self, hosts: Mapping[str, Host], lab: DockerLab) -> list[StepHook]:
        if self.restored:
            return [RestoredSetup()]
        hooks: list[StepHook] = [self.snapshots.hook(hosts, lab.commit, log=self.log)] if self.snapshots else []
        if self.state is not None:  # the first to set up this key: saves it for the later ones
            hooks.append(SaveSetupState(lab, self.state, self.key, self.profile.name))
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
    try:
        lab = DockerLab(client, kept=kept, subnet=plan.subnet)
    except docker.errors.APIError as exc:  # another session took that subnet: set up for real
        if plan.state is None:
            raise
        plan.drop_state(f"its subnet {plan.subnet} is taken ({exc.explanation})")
        lab = DockerLab(client, kept=kept)
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
    """Once the pair is set up: both hosts, cleanly stopped, committed for the run's later pairs;
    then on again."""

    def __init__(self, lab: DockerLab, state: SetupState, key: str, image: str):
        self.lab, self.state, self.key, self.image = lab, state, key, image

    def set_up(self, pair: ReplicationPair) -> None:
        started = time.monotonic()
        pair.secondary.stop()  # first: the primary's shutdown then waits for no walsender
        pair.primary.stop()
        tags = {role: state_tag(self.image, role, self.key, self.lab.run_id) for role in ROLES}

        def commit(node: Node) -> None:
            node.host.put_file(COPY_UP_LIST, f"{node.layout.data_dir}\n")  # read by the image's entry wrapper
            self.lab.commit(node.name, tags[node.name], kind=SETUP_STATE_KIND)
            node.host.run(f"rm -f {COPY_UP_LIST}", user="root")

        try:
            on_each(commit, pair.nodes.values())
        finally:
            pair.start()
        self.state.images, self.state.passwords = tags, (pair.replication_password, pair.harness_password)
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
            role, start[role], mounts=mounts, authorized_key=access.authorized_key, address=addresses.get(role)
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


def remove_containers(*, everyone: bool, log: Log) -> None:
    """`down`: this user's kept pairs and killed runs on this machine, or with `everyone` every
    harness resource on the engine."""
    client = docker_client()
    removed = remove_resources(client=client) if everyone else remove_orphans(client, kept_too=True)
    remove_stale_state(client)
    log(f"removed {removed} containers, networks and volumes of pgrepl-harness ({'all' if everyone else 'yours'})")


def remove_stale_state(client: docker.DockerClient) -> None:
    """Remove the state (private keys) of runs whose containers are gone (killed runs, `down`)."""
    if not STATE_ROOT.is_dir():
        return
    live = {c.labels.get(RUN_LABEL) for c in listed(client, "containers", label_filter(LABEL))}
    for state in STATE_ROOT.iterdir():
        if state.name not in live and state.stat().st_mtime < time.time() - 60:  # not one being set up
            shutil.rmtree(state, ignore_errors=True)
