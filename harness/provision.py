"""Bring up a cluster of hosts for a runbook: build the image, start the hosts, hand back a Cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import DEFAULT_RUNBOOK
from harness.cluster import Cluster
from harness.hosts.docker import DockerLab
from harness.images import ImageProfile, ensure_image
from harness.runbook import Runbook, parse_runbook
from harness.snapshots import Snapshots

ROLES = ("primary", "secondary")


@contextmanager
def docker_cluster(
    image: str = "debian-12",
    runbook: Runbook | Path | str = DEFAULT_RUNBOOK,
    *,
    reuse: bool = True,
    keep: bool = False,
    volumes: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[Cluster]:
    """Two container hosts on a private network, removed on exit (also on error or Ctrl-C).

    `volumes` maps a volume name to a mount path on both hosts (shared storage); `reuse`
    starts hosts from snapshots of steps already done; `keep` leaves everything running.
    """
    profile = ImageProfile.load(image)
    book = runbook if isinstance(runbook, Runbook) else parse_runbook(runbook)
    tag = ensure_image(profile, log=log)
    lab = DockerLab()
    cluster: Cluster | None = None
    try:
        mounts = {lab.volume(name): path for name, path in (volumes or {}).items()}
        blocks = book.select(family=profile.family, parts=("setup",), variant=profile.package_source)
        snapshots = Snapshots(book, blocks, tag, profile.pg_major, log=log) if reuse else None
        hosts, reused = {}, {}
        for role in ROLES:
            start_image, reused[role] = snapshots.image_for(role) if snapshots else (tag, set())
            hosts[role] = lab.start_host(role, start_image, mounts=mounts)
        for host in hosts.values():
            host.wait_booted()
        if snapshots:
            snapshots.hosts = hosts
        cluster = Cluster(
            book,
            hosts,
            profile.pg_major,
            profile.package_source,
            log=log,
            reused=reused,
            after_block=snapshots.after_block if snapshots else None,
        )
        cluster.lab = lab
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        if not keep:
            lab.close()
