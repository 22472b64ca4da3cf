"""Command line: `pgrepl-harness up` brings up a primary and a secondary from a runbook."""

from __future__ import annotations

import argparse
import sys
import time

from harness import DEFAULT_RUNBOOK, available_images
from harness.errors import HarnessError
from harness.targets import BACKENDS, make_target, unwind_on_sigterm


def _up(args: argparse.Namespace) -> int:
    from harness.lifecycle import open_cluster
    from harness.report import render

    started = time.monotonic()
    target = make_target(
        image=args.image,
        backend=args.backend,
        inventory=args.inventory,
        allow_existing=args.allow_existing_postgresql,
        reuse=not args.no_reuse,
        keep=args.keep,
    )
    with open_cluster(target, args.runbook) as cluster:
        cluster.setup()
        cluster.verify()
        print()
        print(render(cluster, kept=target.kept))
    removed = "" if target.kept else ", hosts removed"
    print(f"\nup: {time.monotonic() - started:.1f} s wall time{removed}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from harness.lifecycle import tear_down

    tear_down(args.inventory, force=args.force, everyone=args.all)
    return 0


def _gate(args: argparse.Namespace) -> int:
    import subprocess

    from harness import PROJECT_ROOT
    from harness.gate import plan, pytest_argv

    chosen = plan(args.base)
    if args.image:  # the user narrows the images (a quick local check); the plan says so
        chosen.pairs = {pair: why for pair, why in chosen.pairs.items() if pair[1] in args.image}
    print(chosen.render(), flush=True)
    argv = [sys.executable, "-m", "pytest", *pytest_argv(chosen, artifacts=args.artifacts), *args.pytest_args]
    print(f"\ngate: {' '.join(argv[1:])}\n", flush=True)
    return subprocess.run(argv, cwd=PROJECT_ROOT).returncode


def _mutate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.images import ImageProfile
    from harness.mutate import Mutation, explanations, mutants, render

    runbook = Path(args.runbook).resolve()
    parts = tuple(args.parts)
    if args.list:
        profile = ImageProfile.load(args.image)
        explained = explanations(runbook)
        for mutant in mutants(runbook, profile.family, parts, profile.package_source):
            why = explained.get((mutant.step, mutant.headline))
            print(
                f"{runbook.name}:{mutant.first}  {mutant.step}: {mutant.headline}"
                + (f"  [explained: {why}]" if why else "")
            )
        return 0
    result = Mutation(runbook, args.image, parts, Path(args.artifacts) / "mutate", args.jobs).run()
    print(render(result))
    return 1 if result["score"] < args.fail_under or result["errors"] else 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pgrepl-harness", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up a primary and a secondary from a runbook, verify, show the result")
    up.add_argument("--image", default="debian-12", choices=available_images())
    up.add_argument("--backend", default="docker", choices=BACKENDS, help="how to reach the containers")
    up.add_argument("--inventory", help="run on the real hosts of this TOML inventory instead of containers")
    up.add_argument("--allow-existing-postgresql", action="store_true", help="run even where PostgreSQL exists")
    up.add_argument("--runbook", default=str(DEFAULT_RUNBOOK))
    up.add_argument("--keep", action="store_true", help="leave the hosts running (remove them later with `down`)")
    up.add_argument("--no-reuse", action="store_true", help="run every step, ignoring snapshots of earlier runs")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="remove the containers, networks and volumes the harness started")
    down.add_argument("--inventory", help="instead: remove what the harness installed on these real hosts")
    down.add_argument("--all", action="store_true", help="remove every harness container on the engine, not only yours")
    down.add_argument(
        "--force", action="store_true", help="with --inventory: remove PostgreSQL even where the harness has no record"
    )
    down.set_defaults(func=_down)
    gate = sub.add_parser(
        "gate",
        help="run what a change to the runbooks touches since a git revision: the static gate, then the "
        "scenarios that execute the changed blocks' parts on their OS families' images",
    )
    gate.add_argument("--base", required=True, help="the git revision to compare with (e.g. origin/main)")
    gate.add_argument("--artifacts", default="artifacts", help="where JUnit XML, the summary and evidence go")
    gate.add_argument("--image", action="append", choices=available_images(), help="only these of the plan's images")
    gate.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    gate.set_defaults(func=_gate)
    mutate = sub.add_parser(
        "mutate",
        help="delete each functional line of the runbook's parts in turn; report the deletions no scenario notices",
    )
    mutate.add_argument("--image", default="debian-12", choices=available_images())
    mutate.add_argument("--parts", nargs="+", default=["setup", "verify"], help="runbook parts to mutate")
    mutate.add_argument("--runbook", default=str(DEFAULT_RUNBOOK))
    mutate.add_argument("--jobs", type=int, default=3, help="mutants run at once")
    mutate.add_argument("--artifacts", default="artifacts", help="verdicts (resumable) go to ARTIFACTS/mutate")
    mutate.add_argument("--fail-under", type=float, default=0.0, help="exit 1 when the score (%%) is lower")
    mutate.add_argument("--list", action="store_true", help="only list the mutants (and which are explained)")
    mutate.set_defaults(func=_mutate)
    return root


def main(argv: list[str] | None = None) -> int:
    unwind_on_sigterm()
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:  # the harness's own verdict; anything else is a bug and keeps its traceback
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "harness":
            raise  # a bug, not the user's setup
        print(
            f"\nFAILED: the harness's dependencies are not installed here (no module {exc.name!r}): "
            "run `pip install -e .` in this Python first",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        if getattr(args, "inventory", None):
            what = f"the inventory's hosts are left as they are (`pgrepl-harness down --inventory {args.inventory}`)"
        else:
            what = "every container, network and volume this run started has been removed"
        print(f"\ninterrupted: {what}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
