"""Wall-time benchmark of the main job and of the scenario suite (a script, not a test).

    python bench/bench.py                          # where one warm bring-up's time goes, 3 runs
    python bench/bench.py --suite                  # and the suite: per-module wall time, bring-ups
    python bench/bench.py --suite --compare REV    # the same for git revision REV, side by side
    python bench/bench.py --cold                   # first forget the image, its snapshots and base
    python bench/bench.py --load 10                # only: pgbench write/read tps and replay lag, 10 s
    python bench/bench.py --commands 200           # only: one host command's cost, persistent shell vs per-command
    python bench/bench.py --gate                   # only: the gate's answer to four runbook edits (issue 23)
    python bench/bench.py --gate --compare REV     # the same for git revision REV, after this one
    python bench/bench.py --gate --cases 'setup, a real change'   # only that edit (names: GATE_EDITS)
    python bench/bench.py --tap                    # only: PostgreSQL's own TAP set, our suite, the TAP set again
    python bench/bench.py --mutate slot-limit      # only: mutate a part with a session per run, then one held session

A bring-up is measured in-process (phases from harness.lifecycle and ReplicationPair.setup, each runbook
step from the transcript); a revision to compare is checked out into a git worktree and measured
as a user would run it (`python -m harness up`, `pytest scenarios`), so any revision works.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import ROLES  # noqa: E402 (after the path above)
from harness.gate import WORKERS  # noqa: E402
from harness.targets import DEFAULT_IMAGE  # noqa: E402


def remove_images(image: str) -> None:
    """Forget one image profile's build, its snapshots and its base image: the next run is cold."""
    import docker

    from harness.images import ImageProfile, image_repository, snapshot_repository

    base = ImageProfile.load(image).base
    client = docker.from_env()
    client.images.prune(filters={"dangling": True})  # old snapshot layers that lost their tag
    prefixes = (*(snapshot_repository(image, role) for role in ROLES), image_repository(image))
    for prefix in (*(f"{p}:" for p in prefixes), base):  # children before parents
        for found in sorted(client.images.list(), key=lambda image: image.attrs["Created"], reverse=True):
            if any(t.startswith(prefix) for t in found.tags):
                client.images.remove(found.id, force=True)


def bring_up_phases(image: str) -> dict[str, float]:
    """One `up` in-process: seconds per phase, per runbook step, for teardown and in total."""
    from harness import project
    from harness.lifecycle import open_pair
    from harness.targets import make_target

    started = time.monotonic()
    with open_pair(make_target(image=image), project.current().default_runbook, log=lambda line: None) as pair:
        pair.setup()
        pair.verify()
        phases = dict(pair.stopwatch.phases)
        for record in pair.transcript.records:
            phases[f"  step {record.step} ({record.host}, {record.outcome})"] = record.seconds
        teardown_from = time.monotonic()
    phases["teardown"] = time.monotonic() - teardown_from
    phases["total"] = time.monotonic() - started
    return phases


def up_wall_time(tree: Path, image: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "harness", "up", "--image", image],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def suite(
    tree: Path, image: str, workers: int, modules: tuple[str, ...] = ()
) -> tuple[float, dict[str, tuple[float, int, int, int]]]:
    """`pytest scenarios -n WORKERS` in `tree` (only `modules`, if given): wall time, and per module
    (bring_ups)."""
    with tempfile.TemporaryDirectory() as out:
        junit = Path(out) / "junit.xml"
        selected = [f"scenarios/{m}.py" for m in modules] or ["scenarios"]
        argv = [sys.executable, "-m", "pytest", "-q", "-n", str(workers), "--dist", "loadgroup", *selected]
        argv += ["--image", image, f"--junit-xml={junit}", "-o", "junit_logging=all"]
        argv += ["-p", "no:pgrepl-harness"]  # an environment installed from an entry-point era tree loads it
        if "pytest_plugins" not in (tree / "conftest.py").read_text():  # that era's tree: its plugin by name
            argv += ["-p", "harness.pytest_plugin"]
        started = time.monotonic()
        subprocess.run(argv, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        return wall, bring_ups(junit)


def bring_ups(junit: Path) -> dict[str, tuple[float, int, int, int]]:
    """Per scenario module of a JUnit file written with `-o junit_logging=all`, most costly first: summed
    test time, bring-ups, of them restored from the run's set-up state, and set-up states saved."""
    from harness.runstate import RESTORED_NOTE, SAVED_NOTE

    modules: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "?").rsplit(".", 1)[-1]
        logged = "".join(e.text or "" for e in case.iter() if e.tag in ("system-out", "system-err"))
        counts = (logged.count("Container started"), logged.count(RESTORED_NOTE), logged.count(SAVED_NOTE))
        for index, value in enumerate((float(case.get("time", 0)), *counts)):
            modules[module][index] += value
    return {
        m: (t, n // 2, restored, saved)
        for m, (t, n, restored, saved) in sorted(modules.items(), key=lambda kv: -kv[1][0])
    }


# PostgreSQL's own TAP tests of the behaviours the scenarios check (streaming, archiving, a timeline
# switch, synchronous replication, slot limits, pg_rewind), as issue 23 ran them side by side; and our
# modules that check the same behaviours (like for like).
TAP_TESTS = {
    "src/test/recovery": "t/001_stream_rep.pl t/002_archiving.pl t/004_timeline_switch.pl t/007_sync_rep.pl "
    "t/019_replslot_limit.pl",
    "src/bin/pg_rewind": "t/001_basic.pl",
}
TAP_LIKE_MODULES = (
    "test_replication",
    "test_archive_recovery",
    "test_promotion",
    "test_synchronous_commit",
    "test_slot_retention",
    "test_rewind",
)


def tap_image(image: str) -> str:
    """bench/tap/Dockerfile built on `image`'s base for its PostgreSQL major (once: the tag hashes the
    Dockerfile, the base and the major). It holds no secret, so it is kept for the next bench run."""
    import hashlib

    from harness.hosts.docker import docker_client
    from harness.images import ImageProfile, ensure_base, tar_context
    from harness.labels import LABEL

    profile, client = ImageProfile.load(image), docker_client()
    dockerfile = (ROOT / "bench" / "tap" / "Dockerfile").read_bytes()
    base_id = ensure_base(profile, client)
    digest = hashlib.sha256(dockerfile + f"\0{base_id}\0{profile.pg_major}".encode()).hexdigest()[:12]
    tag = f"pgrepl-bench/tap-{image}:{digest}"
    if not client.images.list(name=tag):
        print(f"building {tag}: PostgreSQL {profile.pg_major} from Debian's source package (about 15 min)")
        client.images.build(
            fileobj=tar_context({"Dockerfile": dockerfile}),
            custom_context=True,
            tag=tag,
            buildargs={"BASE": profile.base, "PG_MAJOR": str(profile.pg_major)},
            labels={LABEL: "bench-tap"},
            rm=True,
            forcerm=True,
            pull=False,
        )
    return tag


def tap_seconds(tag: str) -> float:
    """Wall seconds of TAP_TESTS in a container of `tag` (labelled as the harness's, removed after)."""
    from harness.hosts.docker import docker_client
    from harness.labels import resource_labels

    script = " && ".join(f"make -s -C {d} check NO_TEMP_INSTALL=1 PROVE_TESTS='{t}'" for d, t in TAP_TESTS.items())
    container = docker_client().containers.run(
        tag, ["bash", "-c", script], detach=True, labels=resource_labels(f"bench-tap-{os.getpid()}")
    )
    try:
        started = time.monotonic()
        status = container.wait(timeout=1800)["StatusCode"]
        seconds = time.monotonic() - started
        if status:
            tail = container.logs().decode(errors="replace")[-2000:]
            raise SystemExit(f"PostgreSQL's TAP tests failed in {tag} (exit {status}):\n{tail}")
    finally:
        container.remove(force=True)
    return seconds


def side_by_side(image: str, workers: int) -> str:
    """The TAP set, our scenarios on `image` (all, then the modules of the same behaviours), the TAP set
    again: one run, so the machine's drift shows in the two TAP figures."""
    tag = tap_image(image)
    before = tap_seconds(tag)
    whole, _ = suite(ROOT, image, workers)
    like, _ = suite(ROOT, image, workers, TAP_LIKE_MODULES)
    after = tap_seconds(tag)
    tap = (before + after) / 2
    rows = {
        "PostgreSQL's TAP set (before)": [f"{before:.1f}", "-"],
        f"our scenarios on {image}, all": [f"{whole:.1f}", f"{whole / tap:.2f}x"],
        "our modules of the same behaviours": [f"{like:.1f}", f"{like / tap:.2f}x"],
        "PostgreSQL's TAP set (after)": [f"{after:.1f}", "-"],
    }
    title = f"== side by side (-n {workers} for ours; TAP: {'; '.join(f'{d} {t}' for d, t in TAP_TESTS.items())})"
    return f"{title}\n" + table(["wall s", "vs TAP"], rows)


def worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="pgrepl-bench-")) / rev.replace("/", "_")
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True)
    return path


class MachineCPU:
    """The whole machine's busy CPU-seconds (every process: the engine, the containers' servers, ours)
    over a `with` block, from /proc/stat; `busy` and `share` (of all cores' time) are None where there
    is no /proc/stat. Why: on our 2-core machine the gate and the suite keep the CPU busy, so their wall
    time falls only with less work, and this says how close to that floor a run is."""

    def __enter__(self) -> MachineCPU:
        self.start, self.busy, self.share = self._ticks(), None, None
        return self

    def __exit__(self, *_) -> None:
        end = self._ticks()
        if self.start and end:
            busy, total = end[0] - self.start[0], end[1] - self.start[1]
            self.busy = busy / os.sysconf("SC_CLK_TCK")
            self.share = busy / total if total else None

    @staticmethod
    def _ticks() -> tuple[int, int] | None:
        try:
            fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + fields[4]  # idle, iowait
        return sum(fields) - idle, sum(fields)

    def columns(self) -> list[str]:
        if self.busy is None:
            return ["-", "-"]
        return [f"{self.busy:.0f}", f"{100 * self.share:.0f}%" if self.share is not None else "-"]


def table(columns: list[str], rows: dict[str, list[str]]) -> str:
    width = max(len(k) for k in rows) if rows else 10
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>14}" for c in columns)]
    lines += [f"{k:<{width}}  " + "  ".join(f"{v:>14}" for v in vs) for k, vs in rows.items()]
    return "\n".join(lines)


def load_figures(image: str, seconds: int) -> str:
    """Read offloading under load on one pair: pgbench writes on the primary, -S reads on the
    secondary at once, replay lag sampled (the same as scenarios/test_read_offload.py)."""
    from harness import project
    from harness.lifecycle import open_pair
    from harness.load import init_pgbench, read_offload
    from harness.targets import make_target

    with open_pair(make_target(image=image), project.current().default_runbook, log=lambda line: None) as pair:
        pair.setup()
        init_pgbench(pair.primary)
        return read_offload(pair.primary, pair.secondary, seconds=seconds).render()


def command_costs(image: str, count: int, rounds: int = 5) -> str:
    """Milliseconds per host command through the host's persistent shell and with a transport process per
    command (PGREPL_HOST_SHELL=per-command), in alternating rounds of `count` commands on one host, so the
    machine's drift hits both alike: the median round of each, and their ratio round by round."""
    from harness import project
    from harness.hosts import shell
    from harness.lifecycle import open_pair
    from harness.targets import make_target

    modes = {"persistent shell": "", "per-command": shell.PER_COMMAND}
    costs: dict[str, dict[str, list[float]]] = {c: {m: [] for m in modes} for c in ("true", "true as postgres")}
    saved = os.environ.get(shell.MODE_VAR)
    with open_pair(make_target(image=image), project.current().default_runbook, log=lambda line: None) as pair:
        host = pair.primary.host
        host.run("true")  # the shell started, outside the figures
        try:
            for _ in range(rounds):
                for mode, value in modes.items():
                    os.environ[shell.MODE_VAR] = value
                    for command, user in (("true", None), ("true as postgres", "postgres")):
                        started = time.monotonic()
                        for _ in range(count):
                            host.run("true", user=user)
                        costs[command][mode].append((time.monotonic() - started) * 1000 / count)
        finally:
            os.environ.pop(shell.MODE_VAR, None) if saved is None else os.environ.update({shell.MODE_VAR: saved})
    rows = {}
    for command, per in costs.items():
        ratios = [a / b for a, b in zip(per["persistent shell"], per["per-command"], strict=True)]
        rows[command] = [f"{statistics.median(v):.1f}" for v in per.values()] + [f"{statistics.median(ratios):.2f}"]
    title = f"== one host command on {image}, ms, median of {rounds} rounds of {count}"
    return f"{title}\n" + table([*modes, "ratio"], rows)


RUNBOOK = "runbooks/postgresql-primary-secondary.md"
# Edits a runbook author makes, each as (old, new) in the runbook: a comment reworded and a real change,
# in a setup block (Debian's primary-configure: every module on the four Debian images) and in an optional
# part's block (Debian's sync-commit-conf).
GATE_EDITS = {
    "setup, comment only": (
        "# Write enough WAL for a streaming standby.\n",
        "# Write enough WAL for a standby that streams.\n",
    ),
    "optional part, comment only": (
        "# Confirm a commit only once this standby has it on disk.\n",
        "# Confirm a commit only once the standby has it on disk.\n",
    ),
    "optional part, a real change": (
        "synchronous_standby_names = 'secondary_node1'\n",
        "synchronous_standby_names = 'FIRST 1 (secondary_node1)'\n",
    ),
    # A superset of replica: harmless to every scenario (raising max_wal_senders is not: a hot standby
    # refuses to start with a value lower than its primary's).
    "setup, a real change": ("wal_level = replica\n", "wal_level = logical\n"),
    # The same change as a runbook author's new edit: a text no earlier run saved a step snapshot of
    # ({unique}: new for each gate run), so the prefix steps after the packages run again.
    "setup, a real change never gated before": ("wal_level = replica\n", "wal_level = logical  # {unique}\n"),
    # A change that breaks the runbook where one module alone sees it (pg_rewind needs hint bits in WAL): the
    # time to the gate's red answer, which a revision without the ledger's order gives only at that module.
    "setup, a breaking change": ("wal_log_hints = on\n", "wal_log_hints = off\n"),
}
# pytest options per edit: -x stops the gate at its first failure, so its wall time is that of the red answer
GATE_PYTEST_ARGS = {"setup, a breaking change": ("-x",)}
FIRST_FAILURE = re.compile(r"gate: first failure after (\d+) s")


def gate_answers(rev: str = "HEAD", cases: tuple[str, ...] = ()) -> str:
    """`pgrepl-harness gate --base REV` after each edit of GATE_EDITS (or those named in `cases`), in a
    worktree of REV (warm images): wall seconds, exit status and pytest's last line; then, for the
    edits that ran scenarios, where their bring-ups went (bring_ups)."""
    rows, costs = {}, {}
    for name, (old, new) in GATE_EDITS.items():
        if cases and name not in cases:
            continue
        tree = worktree(rev)
        try:
            runbook = tree / RUNBOOK
            text = runbook.read_text()
            if text.count(old) < 1:
                rows[name] = ["-", "-", "-", "-", "-", f"edit not applicable: {old.strip()!r} not in {RUNBOOK}"]
                continue
            runbook.write_text(text.replace(old, new.replace("{unique}", f"edit {time.time_ns()}"), 1))
            artifacts = tree / "artifacts"
            junit = artifacts / "junit.xml"  # the gate's own, here with the captured logs (bring_ups counts them)
            gate = [sys.executable, "-m", "harness", "gate", "--base", rev, "--artifacts", str(artifacts)]
            with MachineCPU() as cpu:
                started = time.monotonic()
                done = subprocess.run(
                    [*gate, "--", f"--junit-xml={junit}", "-o", "junit_logging=all", *GATE_PYTEST_ARGS.get(name, ())],
                    cwd=tree,
                    env={**os.environ, "PYTHONPATH": str(tree)},
                    capture_output=True,
                    text=True,
                )
                wall = time.monotonic() - started
            last = next((line for line in reversed(done.stdout.splitlines()) if " in " in line), "?")
            first = FIRST_FAILURE.search(done.stdout)
            said = first.group(1) if first else "-"
            rows[name] = [f"{wall:.1f}", *cpu.columns(), said, str(done.returncode), last.strip("= ")]
            modules = bring_ups(junit) if junit.is_file() else {}
            if any(n for _, n, _, _ in modules.values()):
                costs[name] = modules
            if done.returncode:  # the evidence outlives the worktree
                kept = Path(tempfile.mkdtemp(prefix="pgrepl-bench-gate-"))
                shutil.move(artifacts, kept / "artifacts")
                (kept / "gate.log").write_text(done.stdout + done.stderr)
                rows[name][-1] += f" (evidence: {kept})"
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    out = f"== the gate's answer to an edit (--base {rev}), seconds (CPU s: the machine's busy CPU-seconds)\n"
    out += table(["wall", "CPU s", "CPU busy", "1st failure", "exit", "pytest"], rows)
    for name, modules in costs.items():
        total = [sum(column) for column in zip(*modules.values(), strict=True)]
        out += f"\n\n== {name}: per module, summed test seconds and bring-ups (of them restored, saved)\n"
        out += table(
            ["test s", "bring-ups", "restored", "saved"],
            {m: [f"{t:.0f}", str(n), str(r), str(v)] for m, (t, n, r, v) in {**modules, "all": total}.items() if n},
        )
    return out


def mutate_costs(
    image: str,
    parts: list[str],
    operators: list[str],
    jobs: int,
    steps: tuple[str, ...] = (),
    modules: tuple[str, ...] = (),
) -> str:
    """The mutants of `parts` (of `steps`, judged by `modules`, if given) measured twice, fresh each time (a
    scratch ledger, none of the committed verdicts): with a test session per scenario run, as before the held
    session, and with the sessions `mutate` holds (a later part's runs start from one saved set-up state; a
    setup mutant's from its own, saved by its second module). Wall seconds and per-mutant medians."""
    import contextlib

    from harness import project
    from harness.mutate import Mutation

    class PerRun(Mutation):
        def held_session(self):
            return contextlib.nullcontext({})

    rows, verdicts = {}, {}
    for name, kind in (("a session per scenario run", PerRun), ("one held session", Mutation)):
        work = Path(tempfile.mkdtemp(prefix="pgrepl-bench-mutate-"))
        try:
            started = time.monotonic()
            result = kind(
                project.current().default_runbook,
                image,
                tuple(parts),
                work / "mutate",
                jobs=jobs,
                classes=tuple(operators),
                steps=steps,
                modules=modules,
                ledger=work / "ledger.json",
                log=lambda line: None,
            ).run()
            wall = time.monotonic() - started
            state = json.loads((work / "mutate" / "state.json").read_text())
            seconds = [v["seconds"] for v in state.values() if "seconds" in v]
            verdicts[name] = sorted((v["step"], v["text"], v["verdict"]) for v in state.values())
            rows[name] = [
                f"{wall:.0f}",
                str(len(seconds)),
                f"{statistics.median(seconds):.1f}" if seconds else "-",
                f"{result['killed']} killed, {len(result['survived'])} survived, {len(result['errors'])} errors",
            ]
        finally:
            shutil.rmtree(work, ignore_errors=True)
    same = len({tuple(v) for v in verdicts.values()}) == 1
    return (
        f"== mutate {' '.join(parts)} ({' '.join(operators)}{'; steps ' + ' '.join(steps) if steps else ''}"
        f"{'; modules ' + ' '.join(modules) if modules else ''}) on {image}, --jobs {jobs}, seconds\n"
        + table(["wall", "mutants run", "median per mutant", "verdicts"], rows)
        + f"\nthe same verdict for every mutant both ways: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--suite", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=int(WORKERS), help="pytest-xdist workers for --suite (the README's)"
    )
    parser.add_argument("--compare", metavar="REV", help="also measure this git revision (a worktree)")
    parser.add_argument("--load", type=int, metavar="SECONDS", help="only: pgbench read offloading figures")
    parser.add_argument("--commands", type=int, metavar="N", help="only: a host command's cost, shell vs per-command")
    parser.add_argument("--gate", action="store_true", help="only: the gate's answer to four runbook edits")
    parser.add_argument("--cases", nargs="+", default=[], choices=list(GATE_EDITS), help="with --gate: only these")
    parser.add_argument("--tap", action="store_true", help="only: PostgreSQL's TAP set side by side with ours")
    parser.add_argument("--mutate", nargs="+", metavar="PART", help="only: mutate PARTs, per-run sessions vs held")
    parser.add_argument("--operators", nargs="+", default=["delete", "value"], help="with --mutate")
    parser.add_argument("--jobs", type=int, default=1, help="with --mutate")
    parser.add_argument("--steps", nargs="+", default=[], help="with --mutate: only these steps' mutants")
    parser.add_argument("--modules", nargs="+", default=[], help="with --mutate: only these scenario modules judge")
    args = parser.parse_args()
    if args.mutate:
        print(mutate_costs(args.image, args.mutate, args.operators, args.jobs, tuple(args.steps), tuple(args.modules)))
        return
    if args.tap:
        print(side_by_side(args.image, args.workers))
        return
    if args.gate:
        for rev in ("HEAD", *([args.compare] if args.compare else [])):
            print(gate_answers(rev, tuple(args.cases)))
        return
    if args.commands:
        print(command_costs(args.image, args.commands))
        return
    if args.load:
        print(load_figures(args.image, args.load))
        return
    if args.cold:
        remove_images(args.image)
        print(f"cold bring-up (image and snapshots built): {bring_up_phases(args.image)['total']:.1f} s")
    runs = [bring_up_phases(args.image) for _ in range(args.runs)]
    print(f"\n== one bring-up ({args.image}, warm), median of {len(runs)} runs, seconds")
    print(table(["this tree"], {k: [f"{statistics.median(r.get(k, 0) for r in runs):.2f}"] for k in runs[0]}))
    trees = {"this tree": ROOT}
    if args.compare:
        trees[args.compare] = worktree(args.compare)
        ups = {name: [up_wall_time(tree, args.image) for _ in range(args.runs)] for name, tree in trees.items()}
        print(f"\n== `python -m harness up` wall time, median of {args.runs} runs, seconds")
        print(table(list(ups), {"up": [f"{statistics.median(v):.1f}" for v in ups.values()]}))
    if args.suite:
        results = {name: suite(tree, args.image, args.workers) for name, tree in trees.items()}
        print(
            f"\n== scenarios on {args.image} (-n {args.workers}): per module, summed test seconds / bring-ups "
            "(restored from the run's set-up state, set-up states saved)"
        )
        modules = dict.fromkeys(m for _, per in results.values() for m in per)
        rows = {
            m: [
                f"{per[m][0]:.1f} / {per[m][1]} ({per[m][2]}r, {per[m][3]}s)" if m in per else "-"
                for _, per in results.values()
            ]
            for m in modules
        }
        rows["wall time of the suite"] = [f"{wall:.1f}" for wall, _ in results.values()]
        print(table(list(results), rows))
    for tree in trees.values():
        if tree != ROOT:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
