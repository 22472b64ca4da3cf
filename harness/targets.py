"""Where a cluster is made: container machines or the real hosts of an inventory.

The one place that turns command-line arguments or pytest options into a target; cheap to
import (no Docker SDK, no psycopg), so bad options fail before anything heavy loads.
`harness.lifecycle.open_cluster` turns a target into a running cluster.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.inventory import Inventory

BACKENDS = ("docker", "ssh")


@dataclass(frozen=True)
class ContainerTarget:
    """Two container machines of image `image`, reached by `backend`; removed at the end unless `keep`.

    `reuse` starts them from snapshots of completed steps; `volumes` maps a volume name to a
    mount path on both machines (shared storage).
    """

    image: str = "debian-12"
    backend: str = "docker"
    reuse: bool = True
    keep: bool = False
    volumes: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.image}-{self.backend}"


@dataclass(frozen=True)
class InventoryTarget:
    """The two real hosts of `inventory`, checked to be reachable and (unless `allow_existing`)
    free of PostgreSQL; `clean_up` removes what the runbook installed when the cluster is done."""

    inventory: Inventory
    allow_existing: bool = False
    clean_up: bool = False
    backend: str = "ssh"

    @property
    def label(self) -> str:
        return "inventory-ssh"


Target = ContainerTarget | InventoryTarget


def make_target(
    *,
    image: str = "debian-12",
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


def unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every context manager removes what it started."""

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
