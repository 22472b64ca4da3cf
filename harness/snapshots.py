"""Reuse of completed runbook steps: a committed image of a host after its leading steps.

A host's reusable prefix is the run of its first setup blocks that bind no live value (no
address, no secret; the PostgreSQL major is fixed by the image): installing packages and
the like. Their effect depends only on the image and on their text, so an image committed
after them is keyed by a hash of both. Change a line of those steps and the key changes.

`SnapshotPlan` decides, before any host exists, which image each host starts from; its
`hook` (a StepHook) then marks restored steps `reused` and saves a snapshot after a prefix ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from harness.hosts.base import Host, Result
from harness.images import snapshot_repository
from harness.runbook import Block, Runbook, Skip, StepHook, script
from harness.runbook.values import STATIC_TARGETS, static_values


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
        self.tags = {host: self._tag(host, prefix, static, values) for host, prefix in self.prefixes.items() if prefix}
        self.restored = {host for host, tag in self.tags.items() if exists(tag)}

    def _tag(self, host: str, prefix: list[Block], static, values) -> str:
        digest = hashlib.sha256(self.base_tag.encode())
        for block in prefix:
            digest.update(script(block, static, values).encode() + b"\0")
        return f"{snapshot_repository(self.image, host)}:{digest.hexdigest()[:12]}"

    def start_image(self, host: str) -> str:
        """The image to start `host` from: its snapshot if one exists, else the image itself."""
        return self.tags[host] if host in self.restored else self.base_tag

    def hook(self, hosts: Mapping[str, Host], commit: Callable[[str, str], None], *, log=print) -> SnapshotHook:
        return SnapshotHook(self, hosts, commit, log)


class SnapshotHook(StepHook):
    """Marks the steps a restored host already has as `reused`; saves a snapshot after a prefix."""

    def __init__(self, plan: SnapshotPlan, hosts: Mapping[str, Host], commit: Callable[[str, str], None], log):
        self.plan, self.hosts, self.commit, self.log = plan, hosts, commit, log
        self.reused = {host: {b.step for b in plan.prefixes[host]} for host in plan.restored}

    def before(self, block: Block) -> Skip | None:
        if block.step in self.reused.get(block.host, ()):
            return Skip("reused", "from snapshot")
        return None

    def after(self, block: Block, result: Result) -> None:
        """Commit the host's image once the last block of its prefix has run."""
        prefix = self.plan.prefixes.get(block.host, [])
        if block.host in self.plan.restored or not prefix or block is not prefix[-1]:
            return
        host, tag = self.hosts[block.host], self.plan.tags[block.host]
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
