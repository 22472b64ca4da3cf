"""Command line: `python -m harness up` brings up a primary and a secondary from a runbook."""

from __future__ import annotations

import argparse
import sys
import time

from harness import DEFAULT_RUNBOOK
from harness.hosts.docker import remove_resources
from harness.images import ImageUnavailable, available_images
from harness.provision import docker_cluster
from harness.report import render
from harness.runbook import RunbookError, StepFailed


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        with docker_cluster(args.image, args.runbook, reuse=not args.no_reuse, keep=args.keep) as cluster:
            cluster.setup()
            cluster.verify()
            print()
            print(render(cluster, kept=args.keep))
    except (StepFailed, RunbookError, ImageUnavailable) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\nup: {time.monotonic() - started:.1f} s wall time" + ("" if args.keep else ", hosts removed"))
    return 0


def _down(_args: argparse.Namespace) -> int:
    print(f"removed {remove_resources()} containers, networks and volumes labelled by pgrepl-harness")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up a primary and a secondary from a runbook, verify, show the result")
    up.add_argument("--image", default="debian-12", choices=available_images())
    up.add_argument("--runbook", default=str(DEFAULT_RUNBOOK))
    up.add_argument("--keep", action="store_true", help="leave the hosts running (remove them later with `down`)")
    up.add_argument("--no-reuse", action="store_true", help="run every step, ignoring snapshots of earlier runs")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="remove every container, network and volume the harness started")
    down.set_defaults(func=_down)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
