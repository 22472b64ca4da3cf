"""Flakiness measured, not hoped about: run one pytest selection N times back to back (a script, not a test).

    python bench/soak.py 3 -- scenarios --image debian-12 -n 6 --dist loadgroup
    python bench/soak.py 2 --readme                 # the README's whole test command
    python bench/soak.py 3 --fault netem -- scenarios/test_replication.py    # under a fault (below)

After each run it prints what the run left on the engine: containers, networks and volumes labelled
by the harness, and set-up state images (they hold a run's secrets); at the end, per test that failed
in any run, how many runs it failed in and the first failure's message (each run's JUnit report is
kept in artifacts/soak/). What is left counts only resources of processes that have ended: another
run going on meanwhile is not a leftover. Exit status 1 when any run failed or left anything.
`--out FILE` also writes the tables as Markdown.

Faults (`--fault`), applied to every run (variables read by harness.hosts.docker): `netem` (50 ms
delay and 1% loss on each host's interface, PGREPL_NETEM; needs sch_netem in the kernel), `loss`
(1% of each host's incoming packets dropped by nftables, PGREPL_PACKET_LOSS), `archive-full` (the
shared WAL archive on a 1 MiB tmpfs, PGREPL_SHARED_VOLUME_SIZE). Engine restarts and killed workers
are done by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.gate import EVERYTHING  # noqa: E402 (after the path above)

FAULTS = {
    "netem": {"PGREPL_NETEM": "delay 50ms loss 1%"},  # needs a kernel with sch_netem
    "loss": {"PGREPL_PACKET_LOSS": "1"},  # 1% of incoming packets dropped by nftables, any kernel
    "archive-full": {"PGREPL_SHARED_VOLUME_SIZE": "1m"},
}


@dataclass
class Run:
    seconds: float
    counts: dict[str, int]
    failures: dict[str, str]  # test id -> first line of its message
    left: dict[str, list[str]] = field(default_factory=dict)


def leftovers() -> dict[str, list[str]]:
    """What runs that have ended left on the engine: resources and set-up state images labelled by a
    process of this machine that no longer exists (a live run's, another session's, is not counted)."""
    from harness.hosts.docker import answering_engine, ended, label_filter, listed
    from harness.labels import LABEL, SETUP_STATE_KIND

    client = answering_engine()
    if client is None:
        return {"engine": ["does not answer"]}
    left = {
        kind: [r.name for r in listed(client, kind, label_filter(LABEL)) if ended(r)]
        for kind in ("containers", "networks", "volumes")
    }
    states = listed(client, "images", label_filter(f"{LABEL}={SETUP_STATE_KIND}"))
    left["set-up state images"] = [r.name for r in states if ended(r)]
    return left


def first_line(element: ET.Element) -> str:
    """The line that says what failed: pytest's `E   ` line, else the report's first line."""
    text = element.text or ""
    said = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    lines = said or (element.get("message") or text).strip().splitlines()
    return lines[0][:240] if lines else element.tag


def one_run(argv: list[str], env: dict[str, str], junit: Path) -> Run:
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv, f"--junit-xml={junit}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failures: dict[str, str] = {}
    if not junit.exists():
        return Run(seconds, counts, {"(session)": "pytest wrote no report"})
    for case in ET.parse(junit).iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        counts["failed" if outcome == "failure" else outcome] += 1
        if outcome in ("failure", "error"):
            failures.setdefault(test, first_line(case.find(outcome)))
    return Run(seconds, counts, failures)


def render(runs: list[Run], title: str) -> str:
    lines = [f"## {title}", "", "| run | seconds | passed | failed | errors | skipped | left on the engine |"]
    lines.append("|---|---|---|---|---|---|---|")
    for index, run in enumerate(runs, 1):
        left = ", ".join(f"{len(v)} {k}" for k, v in run.left.items() if v) or "nothing"
        c = run.counts
        lines.append(
            f"| {index} | {run.seconds:.0f} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} | {left} |"
        )
    failed: dict[str, list[int]] = {}
    for index, run in enumerate(runs, 1):
        for test in run.failures:
            failed.setdefault(test, []).append(index)
    lines += ["", f"tests that failed in any run: {len(failed)}"]
    if failed:
        lines += ["", "| test | failed in runs | first failure |", "|---|---|---|"]
        for test, indexes in sorted(failed.items()):
            first = runs[indexes[0] - 1].failures[test].replace("|", "\\|")
            lines.append(f"| {test} | {len(indexes)}/{len(runs)} ({', '.join(map(str, indexes))}) | {first} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s RUNS [options] [-- PYTEST ARGS]",
    )
    parser.add_argument("runs", type=int, help="how many runs, back to back")
    parser.add_argument("--readme", action="store_true", help="the README's test command (everything)")
    parser.add_argument("--fault", choices=sorted(FAULTS), action="append", default=[], help="inject into every run")
    parser.add_argument("--out", type=Path, help="also write the tables here (Markdown)")
    parser.add_argument(
        "--junit-dir", type=Path, default=ROOT / "artifacts" / "soak", help="each run's JUnit report (run-N.xml)"
    )
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.runs < 1:
        parser.error("runs: at least 1")
    argv = list(EVERYTHING) if args.readme else pytest_args
    if not argv:
        parser.error("give a selection after -- (for example: -- scenarios --image debian-12 -n 6), or --readme")
    env = dict(os.environ)
    for fault in args.fault:
        env.update(FAULTS[fault])
    title = f"soak: `pytest {' '.join(argv)}` x {args.runs}" + (
        f", faults: {', '.join(args.fault)}" if args.fault else ""
    )
    print(title, flush=True)
    runs = []
    for index in range(1, args.runs + 1):
        run = one_run(argv, env, args.junit_dir / f"run-{index}.xml")
        run.left = leftovers()
        runs.append(run)
        left = sum(len(v) for v in run.left.values())
        print(f"run {index}: {run.seconds:.0f} s, {run.counts}, {left} resources left", flush=True)
        for test, message in run.failures.items():
            print(f"  failed: {test}: {message}", flush=True)
    text = render(runs, title)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 1 if any(r.failures or any(r.left.values()) for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
