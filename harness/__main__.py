"""Command line: `python -m harness up` brings up a primary and a secondary from a runbook."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from harness import DEFAULT_RUNBOOK, available_images


def _up(args: argparse.Namespace) -> int:
    from harness.hosts.base import HostError
    from harness.images import ImageUnavailable
    from harness.inventory import Inventory, InventoryError
    from harness.provision import docker_cluster, inventory_cluster
    from harness.report import render
    from harness.runbook import RunbookError, StepFailed

    started = time.monotonic()
    try:
        if args.inventory:
            hosts = inventory_cluster(
                Inventory.load(args.inventory), args.runbook, allow_existing=args.allow_existing_postgresql
            )
        else:
            hosts = docker_cluster(
                args.image, args.runbook, backend=args.backend, reuse=not args.no_reuse, keep=args.keep
            )
        with hosts as cluster:
            cluster.setup()
            cluster.verify()
            print()
            print(render(cluster, kept=args.keep or bool(args.inventory)))
    except (StepFailed, RunbookError, ImageUnavailable, InventoryError, HostError, AssertionError) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    removed = "" if args.keep or args.inventory else ", hosts removed"
    print(f"\nup: {time.monotonic() - started:.1f} s wall time{removed}")
    return 0


def _down(args: argparse.Namespace) -> int:
    if args.inventory:
        import tempfile
        from pathlib import Path

        from harness.inventory import Inventory
        from harness.layout import layout_for
        from harness.provision import remove_postgresql, ssh_hosts

        inventory = Inventory.load(args.inventory)
        with tempfile.TemporaryDirectory(prefix="pgrepl-ssh-") as state:
            for host in ssh_hosts(inventory, Path(state)).values():
                remove_postgresql(host, layout_for(host.os.family, inventory.pg_major))
                host.close()
                print(f"{host.name} ({host.url}): PostgreSQL {inventory.pg_major}, its data and archives removed")
        return 0
    from harness.hosts.docker import remove_resources

    print(f"removed {remove_resources()} containers, networks and volumes labelled by pgrepl-harness")
    return 0


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every context manager removes what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up a primary and a secondary from a runbook, verify, show the result")
    up.add_argument("--image", default="debian-12", choices=available_images())
    up.add_argument("--backend", default="docker", choices=["docker", "ssh"], help="how to reach the containers")
    up.add_argument("--inventory", help="run on the real hosts of this TOML inventory instead of containers")
    up.add_argument("--allow-existing-postgresql", action="store_true", help="run even where PostgreSQL exists")
    up.add_argument("--runbook", default=str(DEFAULT_RUNBOOK))
    up.add_argument("--keep", action="store_true", help="leave the hosts running (remove them later with `down`)")
    up.add_argument("--no-reuse", action="store_true", help="run every step, ignoring snapshots of earlier runs")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="remove the containers, networks and volumes the harness started")
    down.add_argument("--inventory", help="instead: remove what the runbook installed on these real hosts")
    down.set_defaults(func=_down)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: everything this run started has been removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
