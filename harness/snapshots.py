"""Reuse of completed runbook steps: a committed image of a host after its leading steps.

A host's reusable prefix is the run of its first setup blocks that bind no live value (no
address, no secret; the PostgreSQL major is fixed by the image): installing packages and
the like. Their effect depends only on the image and on their text, so an image committed
after them is keyed by a hash of both. Change a line of those steps and the key changes.

A prefix has up to two levels: its package installation (up to its last block that runs a
package manager) and the whole prefix. A host starts from the deepest level saved, and saves
the next one: the whole prefix is then a thin layer over the packages, so an edit of a later
prefix step (a setting in `primary-configure`, a negative control's, a mutant's) installs no
package again and adds tens of megabytes, not the packages' hundreds, to the engine's images.

`SnapshotPlan` decides, before any host exists, which image each host starts from; its
`hook` (a StepHook) then marks restored steps `reused` and saves the next level after it ran.

Snapshots are a cache with a bound: a host that starts from one marks it used (the engine's
last tag time), and at the end of a run (`up`, a test session, `down`) this owner's snapshots
beyond the budget (BUDGET_VAR) go, least recently used first - never one used within the last
hour (a run may be about to start from it), nor a level under one that stays.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from harness.errors import HarnessError
from harness.hosts.base import Host, Result
from harness.images import snapshot_repository
from harness.runbook import Block, Runbook, Skip, StepHook, script
from harness.runbook.values import STATIC_TARGETS, static_values

# A block that installs packages: the prefix's first level ends with the last such block.
INSTALLS = re.compile(r"\b(?:apt-get|apt|dnf|yum)\b")


@dataclass(frozen=True)
class Level:
    """A host's state after its prefix's first `blocks` blocks, saved as image `tag`."""

    blocks: int
    tag: str


def levels_of(prefix: list[Block]) -> list[int]:
    """How many blocks each level of `prefix` holds: the packages' (if they are not the whole
    prefix), then the whole prefix."""
    installs = [i + 1 for i, block in enumerate(prefix) if INSTALLS.search(block.body)]
    return [n for n in (installs[-1] if installs else 0, len(prefix)) if 0 < n < len(prefix)] + [len(prefix)]


class SnapshotPlan:
    def __init__(
        self,
        runbook: Runbook,
        blocks: list[Block],
        *,
        image: str,
        base_tag: str,
        pg_major: int,
        exists: Callable[[str], bool],
    ):
        self.image, self.base_tag, self.exists = image, base_tag, exists
        static = tuple(b for b in runbook.bindings if b.target in STATIC_TARGETS)
        live = tuple(b for b in runbook.bindings if b.target not in STATIC_TARGETS)
        self.prefixes: dict[str, list[Block]] = {}
        for host in dict.fromkeys(b.host for b in blocks):
            prefix = []
            for block in (b for b in blocks if b.host == host):
                if any(b.pattern.search(block.body + (block.file or "")) for b in live):
                    break
                prefix.append(block)
            self.prefixes[host] = prefix
        values = static_values(pg_major)
        self.levels = {
            host: [Level(n, self._tag(host, prefix[:n], static, values)) for n in levels_of(prefix)]
            for host, prefix in self.prefixes.items()
            if prefix
        }
        # per host: the deepest level saved (the host starts from it), and the next one (the host saves it)
        self.start: dict[str, Level] = {}
        self.next: dict[str, Level] = {}
        for host, levels in self.levels.items():
            saved = [level for level in levels if exists(level.tag)]
            if saved:
                self.start[host] = saved[-1]
            following = [level for level in levels if level.blocks > (saved[-1].blocks if saved else 0)]
            if following:
                self.next[host] = following[0]

    @property
    def restored(self) -> set[str]:
        """The hosts that start from a snapshot (of some level)."""
        return set(self.start)

    def _tag(self, host: str, prefix: list[Block], static, values) -> str:
        digest = hashlib.sha256(self.base_tag.encode())
        for block in prefix:
            digest.update(script(block, static, values).encode() + b"\0")
        return f"{snapshot_repository(self.image, host)}:{digest.hexdigest()[:12]}"

    def start_image(self, host: str) -> str:
        """The image to start `host` from: its deepest saved snapshot, else the image itself."""
        return self.start[host].tag if host in self.start else self.base_tag

    def hook(self, hosts: Mapping[str, Host], commit: Callable[[str, str], None], *, log=print) -> SnapshotHook:
        return SnapshotHook(self, hosts, commit, log)


class SnapshotHook(StepHook):
    """Marks the steps a restored host already has as `reused`; saves the next level once it ran."""

    def __init__(self, plan: SnapshotPlan, hosts: Mapping[str, Host], commit: Callable[[str, str], None], log):
        self.plan, self.hosts, self.commit, self.log = plan, hosts, commit, log
        self.reused = {host: {b.step for b in plan.prefixes[host][: at.blocks]} for host, at in plan.start.items()}

    def before(self, block: Block) -> Skip | None:
        if block.step in self.reused.get(block.host, ()):
            return Skip("reused", "from snapshot")
        return None

    def after(self, block: Block, result: Result) -> None:
        """Commit the host's image once the last block of its next level has run."""
        level = self.plan.next.get(block.host)
        if level is None or block is not self.plan.prefixes[block.host][level.blocks - 1]:
            return
        host, tag = self.hosts[block.host], level.tag
        if self.plan.exists(tag):  # another run (an xdist worker) saved it meanwhile
            return
        # Stop PostgreSQL so the image holds a cleanly shut down cluster (no stale postmaster.pid).
        active = host.run(
            "systemctl list-units --state=active --plain --no-legend 'postgresql*' | awk '{print $1}'", user="root"
        ).stdout.split()
        if active:
            host.run(f"systemctl stop {' '.join(active)}", user="root")
        self.commit(block.host, tag)
        if active:
            host.run(f"systemctl start {' '.join(active)}", user="root")
        self.log(f"snapshot {tag} saved after step {block.step} on {block.host}")


# The bytes of snapshots (their own layers) an owner keeps on the engine beyond those used recently. The
# default holds what a whole run of the README's test command uses (6.5 GiB: 28 snapshots, six images and
# the negative controls' setup texts), so run after run restores them all instead of saving them again.
BUDGET_VAR = "PGREPL_SNAPSHOT_BUDGET"
DEFAULT_BUDGET = "8G"
# A snapshot used within this many seconds stays whatever the budget: a run chose it and may not have started yet.
RECENTLY_USED = 3600.0
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class BadBudget(HarnessError, ValueError):
    """BUDGET_VAR holds no size."""


def budget(environ: Mapping[str, str] = os.environ) -> int:
    """The snapshot budget in bytes, from BUDGET_VAR ("4G", "500M", "0": keep only the recently used)."""
    text = environ.get(BUDGET_VAR, "").strip() or DEFAULT_BUDGET
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if match is None:
        raise BadBudget(
            f"{BUDGET_VAR}={text!r} is not a size: set it to a number of bytes with an optional unit "
            f"(K, M, G, T), e.g. {BUDGET_VAR}=4G, or unset it for the default ({DEFAULT_BUDGET})"
        )
    return int(float(match[1]) * UNITS[match[2].upper()])


@dataclass(frozen=True)
class Cached:
    """A snapshot on the engine: `size` is what its own layer adds; times are epoch seconds."""

    id: str
    parent: str
    size: int
    used: float
    created: float


def evictions(cached: Iterable[Cached], *, budget: int, now: float) -> list[str]:
    """The snapshots to remove, in an order the engine allows (a later level before the one under it):
    the least recently used beyond `budget`, none used within RECENTLY_USED of `now`. A level counts as
    used when any level over it is, so it never goes while one over it stays."""
    by_id = {c.id: c for c in cached}
    newest_first = sorted(by_id.values(), key=lambda c: c.created, reverse=True)
    used = {c.id: c.used for c in newest_first}
    for c in newest_first:  # a level over another was made after it: the use reaches every level under it
        if c.parent in used:
            used[c.parent] = max(used[c.parent], used[c.id])
    kept_bytes, evicted = 0, set()
    for c in sorted(by_id.values(), key=lambda c: (used[c.id], -c.created), reverse=True):
        kept_bytes += c.size
        if used[c.id] < now - RECENTLY_USED and kept_bytes > budget:
            evicted.add(c.id)
    return [c.id for c in newest_first if c.id in evicted]


def cached(client, owner_id: str | None = None) -> list[Cached]:
    """This owner's (or `owner_id`'s) snapshots on the engine. An engine that keeps no last tag time
    (an API other than Docker's) has each counted as used when it was made."""
    from harness.hosts.docker import inspected_images, snapshot_ids
    from harness.labels import owner

    found = inspected_images(client, snapshot_ids(client, owner_id or owner()))
    parents = {i["Parent"] for i in found.values() if i["Parent"] and i["Parent"] not in found}  # the base images
    sizes = {image_id: image["Size"] for image_id, image in {**found, **inspected_images(client, parents)}.items()}
    return [
        Cached(
            id=image_id,
            parent=image["Parent"],
            size=image["Size"] - sizes.get(image["Parent"], 0),
            used=max(epoch(image["Created"]), epoch((image.get("Metadata") or {}).get("LastTagTime", ""))),
            created=epoch(image["Created"]),
        )
        for image_id, image in found.items()
    ]


def epoch(rfc3339: str) -> float:
    """Seconds since the epoch of the engine's RFC 3339 time (nanoseconds; the zero time, or none: 0)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    if match is None:
        return 0.0
    moment = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3]))
    return max(moment.timestamp(), 0.0) + float(f"0.{match[2] or 0}")


def remove_unused_snapshots(client, *, owner_id: str | None = None, log=print) -> int:
    """Remove this owner's snapshots beyond the budget (see `evictions`); how many went. One that a
    container still uses, or that another run removes meanwhile, is left; an engine that fails meanwhile
    leaves the rest to the next run's end (a cache's upkeep never fails the run)."""
    from harness.hosts.docker import ENGINE_FAILURES, remove_image  # the Docker SDK only when used

    limit = budget()
    removed: list[str] = []
    try:
        snapshots = {c.id: c for c in cached(client, owner_id)}
        for image_id in evictions(snapshots.values(), budget=limit, now=time.time()):
            if remove_image(client, image_id, force=False):
                removed.append(image_id)
    except ENGINE_FAILURES as exc:
        log(f"step snapshots beyond {BUDGET_VAR} are left to the next run: the engine failed ({exc})")
    if removed:
        freed = sum(snapshots[i].size for i in removed) / 2**20
        log(f"removed {len(removed)} step snapshots used least recently ({freed:.0f} MiB beyond {BUDGET_VAR})")
    return len(removed)
