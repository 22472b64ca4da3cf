"""Command line: `pgrepl-harness up` brings up a primary and a secondary from a runbook."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness import project
from harness.errors import HarnessError
from harness.hosts import BACKENDS
from harness.secrets import redact
from harness.targets import DEFAULT_IMAGE, check_images, make_target, unwind_on_sigterm


def _version() -> str:
    try:
        return version("pgrepl-harness")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _verbosity(args: argparse.Namespace) -> int:
    """-1 with -q (the result only), 0 by default (progress lines), 1 with -v (and the log: the harness's
    at DEBUG, libraries' at INFO - a markdown parser's DEBUG is thousands of lines), 2 with -vv (all DEBUG)."""
    level = args.verbose - args.quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Redacting("%(levelname)s %(name)s: %(message)s"))
    root = logging.DEBUG if level > 1 else logging.INFO if level == 1 else logging.WARNING
    logging.basicConfig(level=root, handlers=[handler], force=True)
    logging.getLogger("harness").setLevel(logging.DEBUG if level > 0 else logging.NOTSET)
    return level


def _say(args: argparse.Namespace, *, to_stderr: bool = False) -> Callable[[str], None]:
    """Where progress lines go: nowhere with -q; stderr when stdout carries JSON."""
    if args.verbosity < 0:
        return lambda line: None
    stream = sys.stderr if to_stderr else sys.stdout
    return lambda line: print(line, file=stream, flush=True)


def _up(args: argparse.Namespace) -> int:
    from harness.hosts.docker import docker_client
    from harness.lifecycle import open_pair
    from harness.report import connection, render
    from harness.snapshots import budget as snapshot_budget
    from harness.snapshots import remove_unused_snapshots

    started = time.monotonic()
    say = _say(args, to_stderr=args.json)
    if args.inventory is None:
        check_images([args.image])
        snapshot_budget()  # a bad setting fails now, not after the run
    target = make_target(
        image=args.image,
        backend=args.backend,
        inventory=args.inventory,
        allow_existing=args.allow_existing_postgresql,
        reuse=not args.no_reuse,
        keep=args.keep,
    )
    with open_pair(target, args.runbook or project.current().default_runbook, log=say) as pair:
        pair.setup()
        pair.verify()
        if args.json:
            print(redact(json.dumps(connection(pair, kept=target.kept), indent=2)), flush=True)
        else:
            print("\n" + render(pair, kept=target.kept), flush=True)
    if args.inventory is None:
        remove_unused_snapshots(docker_client(), log=say)
    removed = "" if target.kept else ", hosts removed"
    say(f"\nup: {time.monotonic() - started:.1f} s wall time{removed}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from harness.lifecycle import tear_down

    tear_down(args.inventory, force=args.force, everyone=args.all, log=_say(args))
    return 0


def _gate(args: argparse.Namespace) -> int:
    from harness.gate import plan, pytest_argv

    if args.image:
        check_images(args.image)
    chosen = plan(args.base)
    if args.image:  # the user narrows the images (a quick local check); the plan says so
        chosen.pairs = {pair: why for pair, why in chosen.pairs.items() if pair[1] in args.image}
    print(chosen.render(), flush=True)
    loudness = ["-q"] * args.quiet + ["-v"] * args.verbose
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *pytest_argv(chosen, artifacts=args.artifacts),
        *loudness,
        *args.pytest_args,
    ]
    print(f"\ngate: {' '.join(argv[1:])}\n", flush=True)
    return subprocess.run(argv, cwd=project.current().root).returncode


def _mutate(args: argparse.Namespace) -> int:
    from harness.images import ImageProfile
    from harness.mutate import NOT_RUN, MutateError, Mutation, chosen_parts, explanations, mutants, not_run_here, render

    check_images([args.image])
    runbook = Path(args.runbook or project.current().default_runbook).resolve()
    classes, steps = tuple(args.operators), tuple(args.steps or ())
    if args.report:
        if not runbook.is_relative_to(project.current().root):
            raise MutateError(
                f"--runbook {runbook}: the report is of a runbook of the project; copy it under runbooks/"
            )
        return _mutation_report(runbook, Path(args.artifacts), committed=True)
    parts = chosen_parts(runbook, tuple(args.parts))
    if args.list:
        profile = ImageProfile.load(args.image)
        explained = explanations(runbook)
        found = mutants(
            runbook,
            profile.family,
            parts,
            profile.package_source,
            classes=classes,
            pg_major=profile.pg_major,
            steps=steps,
        )
        for mutant in found:
            why = explained.get(mutant.key)
            skipped = None if why else not_run_here(mutant, profile)
            print(
                f"{runbook.name}:{mutant.first}  {mutant.step}: {mutant.what}"
                + (f"  [explained: {why}]" if why else "")
                + (f"  [{NOT_RUN}: {skipped}]" if skipped else "")
            )
        return 0
    result = Mutation(
        runbook,
        args.image,
        parts,
        Path(args.artifacts) / "mutate",
        args.jobs,
        log=_say(args),
        classes=classes,
        steps=steps,
        modules=tuple(args.modules or ()),
    ).run()
    print(render(result))
    _mutation_report(runbook, Path(args.artifacts), committed=True)  # the run added to the committed verdicts
    return 1 if result["score"] < args.fail_under or result["errors"] else 0


def _mutation_report(runbook: Path, artifacts: Path, *, committed: bool) -> int:
    """The report of every family, part and class from the committed verdicts (runbooks/NAME.mutation.json): into
    summary.md, and (`committed`) into runbooks/NAME.mutation.md, the committed one."""
    from harness.ci_report import write_summary
    from harness.mutation_report import markdown, report_path

    text = markdown(runbook, project.current().root)
    written = [write_summary(text, artifacts)]
    if committed:
        report_path(runbook).write_text(text)
        written.append(report_path(runbook))
    print("mutation report: " + ", ".join(str(p) for p in written))
    return 0


def _common(*, defaults: bool) -> argparse.ArgumentParser:
    """-q, -v and --project, taken before or after the command (`pgrepl-harness -q up`, `up -q`)."""
    common = argparse.ArgumentParser(add_help=False)
    unset = {} if defaults else {"default": argparse.SUPPRESS}  # a command's own: only when given there
    common.add_argument(
        "-q", "--quiet", action="count", help="less output: the result only", **(unset or {"default": 0})
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more output: the log, too (-vv: libraries' debug log as well)",
        **(unset or {"default": 0}),
    )
    common.add_argument(
        "--project",
        metavar="DIR",
        help="the project (runbooks/, images/, scenarios/); default: the current directory or its parents",
        **unset,
    )
    return common


def parser() -> argparse.ArgumentParser:
    """Image names are checked when a command runs, not here: --help works outside a project."""
    root = argparse.ArgumentParser(prog="pgrepl-harness", description=__doc__, parents=[_common(defaults=True)])
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = root.add_subparsers(dest="command", required=True)
    command = _common(defaults=False)
    up = sub.add_parser(
        "up", help="bring up a primary and a secondary from a runbook, verify, show the result", parents=[command]
    )
    up.add_argument("--image", default=DEFAULT_IMAGE, help=f"an image under the project's images/ ({DEFAULT_IMAGE})")
    up.add_argument("--backend", default="docker", choices=BACKENDS, help="how to reach the containers")
    up.add_argument("--inventory", help="run on the real hosts of this TOML inventory instead of containers")
    up.add_argument("--allow-existing-postgresql", action="store_true", help="run even where PostgreSQL exists")
    up.add_argument("--runbook", help="the runbook (default: the project's runbooks/postgresql-primary-secondary.md)")
    up.add_argument("--keep", action="store_true", help="leave the hosts running (remove them later with `down`)")
    up.add_argument("--json", action="store_true", help="print the hosts, addresses and how to get in as JSON")
    up.add_argument("--no-reuse", action="store_true", help="run every step, ignoring snapshots of earlier runs")
    up.set_defaults(func=_up)
    down = sub.add_parser(
        "down", help="remove the containers, networks and volumes the harness started", parents=[command]
    )
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
        parents=[command],
    )
    gate.add_argument("--base", required=True, help="the git revision to compare with (e.g. origin/main)")
    gate.add_argument("--artifacts", default="artifacts", help="where JUnit XML, the summary and evidence go")
    gate.add_argument("--image", action="append", help="only these of the plan's images")
    gate.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    gate.set_defaults(func=_gate)
    mutate = sub.add_parser(
        "mutate",
        help="delete each functional line of the runbook's parts in turn (or change one value of it: --operators "
        "value); report the mutants no scenario notices",
        parents=[command],
    )
    mutate.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"an image under the project's images/ ({DEFAULT_IMAGE})"
    )
    mutate.add_argument(
        "--parts", nargs="+", default=["setup", "verify"], help="runbook parts to mutate (all: every part)"
    )
    mutate.add_argument(
        "--runbook", help="the runbook (default: the project's runbooks/postgresql-primary-secondary.md)"
    )
    mutate.add_argument(
        "--operators",
        nargs="+",
        default=["delete"],
        choices=["delete", "value"],
        help="operator classes: delete (each functional line) and value (a setting's value, a name, an hba "
        "rule's method or address, one option of a command); default: delete",
    )
    mutate.add_argument("--steps", nargs="+", help="only the blocks of these steps (a subset of the parts)")
    mutate.add_argument(
        "--modules", nargs="+", help="only these scenario modules (e.g. test_security): a partial measure"
    )
    mutate.add_argument("--jobs", type=int, default=3, help="mutants run at once")
    mutate.add_argument(
        "--artifacts",
        default="artifacts",
        help="a run's state (resumable) goes to ARTIFACTS/mutate; its verdicts also to runbooks/NAME.mutation.json",
    )
    mutate.add_argument("--fail-under", type=float, default=0.0, help="exit 1 when the score (%%) is lower")
    mutate.add_argument("--list", action="store_true", help="only list the mutants (and which are explained)")
    mutate.add_argument(
        "--report",
        action="store_true",
        help="run nothing: write runbooks/NAME.mutation.md (and summary.md) from the verdicts committed in "
        "runbooks/NAME.mutation.json for every family, part and operator class",
    )
    mutate.set_defaults(func=_mutate)
    return root


def main(argv: list[str] | None = None) -> int:
    unwind_on_sigterm()
    args = parser().parse_args(argv)
    args.verbosity = _verbosity(args)
    try:
        if args.project is not None:  # else found when first needed: `down` needs none
            project.use(args.project)
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
