"""Bring up the hosts of a cluster and hand back a Cluster.

Two ways in, one way on: `docker_cluster` starts container machines (reached by `docker exec`,
or by SSH exactly as real instances are, through a generated key and inventory);
`inventory_cluster` takes real hosts from an inventory. Both end in the same Cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from harness import DEFAULT_RUNBOOK
from harness.cluster import Cluster
from harness.hosts.base import Host, HostError
from harness.hosts.docker import DockerLab
from harness.hosts.ssh import SshHost
from harness.images import ImageProfile, ensure_image
from harness.inventory import ROLES, Inventory
from harness.layout import Layout
from harness.runbook import Runbook, parse_runbook
from harness.snapshots import Snapshots

BACKENDS = ("docker", "ssh")


class HostNotPristine(HostError):
    """A real host already runs or holds PostgreSQL; the harness will not touch it unless told to."""


def _runbook(runbook: Runbook | Path | str) -> Runbook:
    return runbook if isinstance(runbook, Runbook) else parse_runbook(runbook)


@contextmanager
def docker_cluster(
    image: str = "debian-12",
    runbook: Runbook | Path | str = DEFAULT_RUNBOOK,
    *,
    backend: str = "docker",
    reuse: bool = True,
    keep: bool = False,
    volumes: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[Cluster]:
    """Two container machines on a private network, removed on exit (also on error or Ctrl-C).

    `backend` "ssh" reaches them only over SSH, through an inventory written for them;
    `volumes` maps a volume name to a mount path on both (shared storage); `reuse` starts them
    from snapshots of steps already done; `keep` leaves everything running.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    profile = ImageProfile.load(image)
    book = _runbook(runbook)
    tag = ensure_image(profile, log=log)
    lab = DockerLab()
    cluster: Cluster | None = None
    try:
        mounts = {lab.volume(name): path for name, path in (volumes or {}).items()}
        blocks = book.select(family=profile.family, parts=("setup",), variant=profile.package_source)
        snapshots = Snapshots(book, blocks, tag, profile.pg_major, lab.commit, log=log) if reuse else None
        reused: dict[str, set[str]] = {}
        start_images: dict[str, str] = {}
        for role in ROLES:
            start_images[role], reused[role] = snapshots.image_for(role) if snapshots else (tag, set())
        if backend == "docker":
            hosts: dict[str, Host] = {role: lab.start_host(role, start_images[role], mounts=mounts) for role in ROLES}
        else:
            state = Path(tempfile.mkdtemp(prefix=f"pgrepl-{lab.run_id}-"))
            lab.cleanups.append(partial(shutil.rmtree, state, ignore_errors=True))
            public_key = _generate_key(state / "id_ed25519")
            for role in ROLES:
                lab.start_machine(role, start_images[role], mounts=mounts, authorized_key=public_key)
            inventory = _write_inventory(lab, state, profile, volumes)
            hosts = ssh_hosts(Inventory.load(inventory), state)
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
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        if not keep:
            lab.close()


@contextmanager
def inventory_cluster(
    inventory: Inventory,
    runbook: Runbook | Path | str = DEFAULT_RUNBOOK,
    *,
    allow_existing: bool = False,
    clean_up: bool = False,
    log: Callable[[str], None] = print,
) -> Iterator[Cluster]:
    """The inventory's real hosts, checked to be reachable and free of PostgreSQL first.

    `clean_up` removes what the runbook installed when the cluster is done, so the same hosts
    serve the next cluster (tests); without it the cluster stays for the user.
    """
    book = _runbook(runbook)
    with tempfile.TemporaryDirectory(prefix="pgrepl-ssh-") as state:
        hosts = ssh_hosts(inventory, Path(state))
        try:
            for host in hosts.values():
                host.run("true", timeout=30)
            if not allow_existing:
                for host in hosts.values():
                    refuse_existing_postgresql(host)
            cluster = Cluster(book, hosts, inventory.pg_major, inventory.package_source, log=log)
            try:
                yield cluster
            finally:
                cluster.close()
                if clean_up:
                    for host in hosts.values():
                        remove_postgresql(host, cluster.nodes[host.name].layout)
        finally:
            for host in hosts.values():
                host.close()


def ssh_hosts(inventory: Inventory, state_dir: Path) -> dict[str, Host]:
    return {
        role: SshHost(
            role,
            ssh_address=entry.ssh_address,
            private_address=entry.private_address,
            user=entry.user,
            key=entry.key,
            port=entry.port,
            state_dir=state_dir,
        )
        for role, entry in inventory.hosts.items()
    }


def refuse_existing_postgresql(host: Host) -> None:
    """Never set up over a PostgreSQL that the harness did not install."""
    found = host.run(
        "pgrep -a -x 'postgres|postmaster' || true; "
        "ls -d /var/lib/postgresql/*/main /var/lib/pgsql/*/data /var/lib/pgsql/data 2>/dev/null || true",
        timeout=30,
    ).stdout.strip()
    if found:
        raise HostNotPristine(
            f"{host.name} ({host.url}) already has PostgreSQL:\n{found}\n"
            "the harness sets up fresh hosts only; clean it with `python -m harness down --inventory FILE` "
            "or pass --allow-existing-postgresql if you really mean to run over it"
        )


def remove_postgresql(host: Host, layout: Layout) -> None:
    """Remove what the runbook installed and created on `host` (packages, data, config, archives)."""
    host.run(layout.removal_script + "rm -rf /mnt/server/archivedir /mnt/pgarchive/wal\n", user="root", timeout=300)


def _generate_key(path: Path) -> str:
    """A fresh ed25519 key pair for this run; returns the public half."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgrepl-harness", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


def _write_inventory(lab: DockerLab, state: Path, profile: ImageProfile, volumes: Mapping[str, str] | None) -> Path:
    lines = [
        "[postgresql]",
        f"major = {profile.pg_major}",
        f"package_source = {json.dumps(profile.package_source)}",
        f"shared_archive = {'true' if volumes else 'false'}",
    ]
    for role in ROLES:
        address = lab.private_address(role)
        lines += [
            "",
            f"[{role}]",
            f"ssh_address = {json.dumps(address)}",
            f"private_address = {json.dumps(address)}",
            'user = "ecs-user"',
            f"key = {json.dumps(str(state / 'id_ed25519'))}",
        ]
    path = state / "inventory.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
