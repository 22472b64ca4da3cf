"""Where a pair is made: a Target (container machines of an image, or the real hosts of an inventory).

The one place that turns command-line arguments or pytest options into a target; cheap to
import (no Docker SDK, no psycopg), so bad options fail before anything heavy loads. A target
brings its hosts up itself (`open`, whose module is imported only then);
`harness.lifecycle.open_pair` turns any target into a running ReplicationPair. The backends that
reach the hosts are harness.hosts.BACKENDS.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness import project
from harness.errors import HarnessError
from harness.hosts import BACKENDS
from harness.inventory import Inventory

if TYPE_CHECKING:
    from harness.pair import ReplicationPair
    from harness.runbook import Runbook

DEFAULT_IMAGE = "debian-12"
Log = Callable[[str], None]


class BadTarget(HarnessError):
    """Options that name no target (an unknown image or backend, an inventory with docker)."""


class Target(Protocol):
    """Where a pair's two hosts come from, and how they are reached."""

    backend: str  # a name in harness.hosts.BACKENDS
    shared_hosts: bool  # one pair of hosts for every pair made (a new pair waits until the last is removed)

    @property
    def label(self) -> str:
        """What reports and test ids call it: `debian-12-docker`, `inventory-ssh`."""

    @property
    def image(self) -> str | None:
        """The image profile the hosts run (None: real hosts, whose OS is learned from them)."""

    @property
    def kept(self) -> bool:
        """Whether the hosts stay when the pair is done (the user's pair from then on)."""

    def open(self, runbook: Runbook, *, log: Log) -> AbstractContextManager[ReplicationPair]:
        """The two hosts as a pair for `runbook` (not yet set up); released when the context ends."""

    def check(self) -> None:
        """Fail at once, before any pair: no Docker engine (NoDockerEngine), a host that does not
        answer (HostUnreachable); clear what killed runs left behind."""

    def fresh(self) -> Target:
        """Hosts as their image has them, not started from saved steps."""

    def with_shared_archive(self, volumes: Mapping[str, str]) -> Target | None:
        """The same target with `volumes` (name -> mount path) shared by both hosts; None if it cannot."""

    def for_session(self, *, keep_if: Callable[[], bool] | None, setup_recurs: bool) -> Target:
        """As a test session uses it: hosts kept at the end when `keep_if()` says so (a failure, with
        --keep-on-failure); `setup_recurs`: the same setup is asked for again (save its state at once)."""


def known_major(target: Target) -> int | None:
    """The PostgreSQL major of `target`'s hosts when it is known before any host starts (an image's
    profile says it); None for real hosts, whose major is learned only once they are reached."""
    if target.image is None:
        return None
    from harness.images import ImageProfile  # reads the image's profile: only when asked

    return ImageProfile.load(target.image).pg_major


@dataclass(frozen=True)
class ContainerTarget:
    """Two container machines of image `image`, reached by `backend`; removed at the end unless `keep`.

    `reuse` starts them from snapshots of completed steps; `volumes` maps a volume name to a
    mount path on both machines (shared storage).
    """

    image: str = DEFAULT_IMAGE
    backend: str = "docker"
    reuse: bool = True
    keep: bool = False
    volumes: Mapping[str, str] = field(default_factory=dict)
    # labelled kept from the start (no sweep removes them), yet removed at the end unless this says keep
    keep_if: Callable[[], bool] | None = None
    # this run will ask for the same setup again (a test session's unmodified runbook): save the
    # set-up state from the first bring-up on, not from the second (harness.runstate)
    setup_recurs: bool = False

    shared_hosts = False  # every pair gets machines of its own

    @property
    def label(self) -> str:
        return f"{self.image}-{self.backend}"

    @property
    def kept(self) -> bool:
        return self.keep

    def open(self, runbook: Runbook, *, log: Log) -> AbstractContextManager[ReplicationPair]:
        from harness import containers  # the Docker SDK: only once machines are started

        return containers.open_machines(self, runbook, log=log)

    def check(self) -> None:
        from harness import containers

        containers.check_engine()

    def with_shared_archive(self, volumes: Mapping[str, str]) -> ContainerTarget:
        return replace(self, volumes=volumes)

    def fresh(self) -> ContainerTarget:
        return replace(self, reuse=False)

    def for_session(self, *, keep_if: Callable[[], bool] | None, setup_recurs: bool) -> ContainerTarget:
        return replace(self, keep_if=keep_if, setup_recurs=setup_recurs)


@dataclass(frozen=True)
class InventoryTarget:
    """The two real hosts of `inventory`, checked to be reachable and (unless `allow_existing`)
    free of PostgreSQL; `clean_up` removes what the runbook installed when the pair is done."""

    inventory: Inventory
    allow_existing: bool = False
    clean_up: bool = False
    backend: str = "ssh"

    shared_hosts = True  # one pair of hosts: a new pair must wait until the last is removed
    image = None  # the hosts' own OS

    @property
    def label(self) -> str:
        return "inventory-ssh"

    @property
    def kept(self) -> bool:
        return not self.clean_up

    def open(self, runbook: Runbook, *, log: Log) -> AbstractContextManager[ReplicationPair]:
        from harness import real_hosts  # SSH and ownership records: only once hosts are reached

        return real_hosts.open_inventory(self, runbook, log=log)

    def check(self) -> None:
        from harness import real_hosts

        real_hosts.check_inventory(self.inventory)

    def with_shared_archive(self, volumes: Mapping[str, str]) -> InventoryTarget | None:
        """The same hosts, when the inventory says they share /mnt/pgarchive; None when they do not."""
        return self if self.inventory.shared_archive else None

    def fresh(self) -> InventoryTarget:
        return self

    def for_session(self, *, keep_if: Callable[[], bool] | None, setup_recurs: bool) -> InventoryTarget:
        return self  # real hosts are the user's: kept or cleaned as `clean_up` says, whatever failed


def make_target(
    *,
    image: str = DEFAULT_IMAGE,
    backend: str = "docker",
    inventory: Path | str | None = None,
    allow_existing: bool = False,
    reuse: bool = True,
    keep: bool = False,
    clean_up: bool = False,
) -> Target:
    """Containers, or the hosts of `inventory` when one is given (loaded and checked here)."""
    if inventory is not None:
        return InventoryTarget(Inventory.load(inventory), allow_existing=allow_existing, clean_up=clean_up)
    return ContainerTarget(image=image, backend=backend, reuse=reuse, keep=keep)


def target_matrix(
    *,
    images: list[str],
    backends: list[str],
    ssh_images: list[str],
    inventory: Path | str | None = None,
    allow_existing: bool = False,
    reuse: bool = True,
) -> list[Target]:
    """The targets a test run covers: the inventory's hosts (cleaned after each pair), or each
    image (`all`: every one) through each backend, SSH only on `ssh_images`."""
    backends = list(dict.fromkeys(backends))
    if unknown := set(backends) - set(BACKENDS):
        raise BadTarget(f"--backend {', '.join(sorted(unknown))}: choose from {', '.join(BACKENDS)}")
    if inventory is not None:
        if backends != ["ssh"]:
            raise BadTarget("--pgrepl-inventory needs --backend ssh (alone): real hosts are reached by SSH only")
        return [make_target(inventory=inventory, allow_existing=allow_existing, clean_up=True)]
    images = check_images(images)
    targets = [
        make_target(image=image, backend=backend, reuse=reuse)
        for image in images
        for backend in backends
        if backend != "ssh" or "all" in ssh_images or image in ssh_images
    ]
    if not targets:
        raise BadTarget(
            f"--image {' '.join(images)} with --backend ssh only: SSH runs only on --ssh-image "
            f"({', '.join(ssh_images)}); add --ssh-image IMAGE (or all), or --backend docker"
        )
    return targets


def check_images(images: list[str]) -> list[str]:
    """`images` (`all`: every one) if each is an image profile of the project; else BadTarget naming
    the unknown ones, where they were looked for and the known ones."""
    known = project.current().image_names()
    images = known if "all" in images else list(dict.fromkeys(images))
    if unknown := set(images) - set(known):
        where = project.current().images
        raise BadTarget(f"--image {', '.join(sorted(unknown))}: no such image in {where} (known: {', '.join(known)})")
    return images


def unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every context manager removes what it started."""

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
