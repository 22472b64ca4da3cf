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
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
