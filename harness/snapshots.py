"""Reuse of completed runbook steps: a committed image of a host after its leading steps.

A host's reusable prefix is the run of its first setup blocks that bind no live value (no
address, no secret; the PostgreSQL major is fixed by the image): installing packages and
the like. Their effect depends only on the image and on their text, so an image committed
after them is keyed by a hash of both. Change a line of those steps and the key changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import docker
import docker.errors

from harness.hosts.base import Host
from harness.runbook import Block, Runbook, script

STATIC_TARGETS = frozenset({"pg_major"})


class Snapshots:
    def __init__(
        self,
        runbook: Runbook,
        blocks: list[Block],
        base_tag: str,
        pg_major: int,
        commit: Callable[[str, str], None],
        *,
        log=print,
    ):
        self.runbook, self.base_tag, self.commit, self.log = runbook, base_tag, commit, log
        self.client = docker.from_env()
        self.values = {"pg_major": str(pg_major)}
        self.static = tuple(b for b in runbook.bindings if b.target in STATIC_TARGETS)
        self.live = tuple(b for b in runbook.bindings if b.target not in STATIC_TARGETS)
        self.prefixes = {host: self._prefix([b for b in blocks if b.host == host]) for host in {b.host for b in blocks}}
        self.hosts: Mapping[str, Host] = {}
        self.restored: set[str] = set()

    def _binds_live_value(self, block: Block) -> bool:
        text = block.body + (block.file or "")
        return any(b.pattern.search(text) for b in self.live)

    def _prefix(self, blocks: list[Block]) -> list[Block]:
        prefix = []
        for block in blocks:
            if self._binds_live_value(block):
                break
            prefix.append(block)
        return prefix

    def tag(self, host: str) -> str | None:
        prefix = self.prefixes.get(host, [])
        if not prefix:
            return None
        digest = hashlib.sha256(self.base_tag.encode())
        for block in prefix:
            digest.update(script(block, self.static, self.values).encode() + b"\0")
        image = self.base_tag.split(":")[0].split("/")[-1]
        return f"pgrepl-snapshot/{image}-{host}:{digest.hexdigest()[:12]}"

    def image_for(self, host: str) -> tuple[str, set[str]]:
        """The image to start `host` from, and the steps it already contains."""
        tag = self.tag(host)
        if tag is not None and self._exists(tag):
            self.restored.add(host)
            return tag, {b.step for b in self.prefixes[host]}
        return self.base_tag, set()

    def _exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def after_block(self, block: Block) -> None:
        """Commit the host's image once the last block of its prefix has run."""
        prefix = self.prefixes.get(block.host, [])
        if block.host in self.restored or not prefix or block is not prefix[-1]:
            return
        host, tag = self.hosts[block.host], self.tag(block.host)
        if self._exists(tag):  # another run (an xdist worker) saved it meanwhile
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
