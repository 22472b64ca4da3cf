"""`pgrepl-harness mutate`: how much of the runbook the gate guards.

Two operator classes make the mutants. `delete`: each functional line of the chosen parts' blocks
for an image's OS family (a command of a shell block, with its continuation lines and
here-document; a setting or rule of a conf block) is deleted in turn. `value`: one value of such a
line is changed (harness.mutations: a setting to its default or another of its values, a name
misspelt, an hba rule's method or address, one option of a command dropped). For each mutant the
scenario modules that run that part (their `parts` marker) run on the mutated runbook, cheapest
first, until one fails: the mutant is killed. A mutant no module notices survives: a line the gate
is blind to. A mutant that cannot be observed (a message, a setting equal to its default) is
recorded with its reason in `<runbook>.explained.toml` and reported as explained, not run. Verdicts
are kept (keyed by the mutated text), so a second run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import project
from harness.errors import HarnessError
from harness.gate import module_parts, scenario_markers
from harness.mutations import VALUE_OPERATORS, changes, runbook_names
from harness.runbook import Block, parse_runbook

STRUCTURE = re.compile(r"^\s*(?:if|elif|else|fi|then|for|while|until|do|done|case|esac|;;|[(){}])(?:\s|;|$)")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
DEFAULT_PARTS = ("setup", "verify")
CLASSES = {"delete": ("delete",), "value": VALUE_OPERATORS}


class MutateError(HarnessError):
    """Bad input to mutate (an unknown part, a malformed explanations file)."""


@dataclass(frozen=True)
class Mutant:
    step: str
    part: str
    first: int  # file lines removed or replaced, 1-based and inclusive
    last: int
    text: str
    operator: str = "delete"  # or one of harness.mutations.VALUE_OPERATORS
    change: str = ""  # what a value mutant changes ("method scram-sha-256 -> trust"); "" for a deletion
    replacement: str | None = None  # the lines' new text (a value mutant); None: deleted

    @property
    def headline(self) -> str:
        return self.text.splitlines()[0].strip()

    @property
    def what(self) -> str:
        """The line, and for a value mutant what changes in it: how the listing and the report name it."""
        return f"{self.headline}  [{self.operator}: {self.change}]" if self.change else self.headline

    @property
    def key(self) -> tuple[str, str, str]:
        """How `<runbook>.explained.toml` names it: step, the line's text, and the change ("" for a deletion)."""
        return (self.step, self.headline, self.change)

    def apply(self, lines: list[str]) -> str:
        """The runbook's `lines` (with their line ends) with this mutation made."""
        new = [] if self.replacement is None else [self.replacement.rstrip("\n") + "\n"]
        return "".join(lines[: self.first - 1] + new + lines[self.last :])


def units(block: Block) -> list[tuple[int, int]]:
    """The functional line ranges of a block (file line numbers; the body starts after the fence)."""
    lines = block.body.splitlines()
    start = block.line + 1
    found, index = [], 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        first = index
        if not stripped or stripped.startswith("#") or (block.kind == "sh" and STRUCTURE.match(line)):
            index += 1
            continue
        if block.kind == "sh":
            while lines[index].rstrip().endswith("\\") and index + 1 < len(lines):
                index += 1
            heredoc = HEREDOC.search(line)
            if heredoc:
                while index + 1 < len(lines) and lines[index].strip() != heredoc.group(1):
                    index += 1
        found.append((start + first, start + index))
        index += 1
    return found


def mutants(
    runbook_path: Path,
    family: str,
    parts: tuple[str, ...],
    variant: str | None,
    *,
    classes: tuple[str, ...] = ("delete",),
    pg_major: int = 18,
    steps: tuple[str, ...] = (),
) -> list[Mutant]:
    """The mutants of `classes` (`delete`, `value`) of the blocks of `parts` (only `steps`, if given)
    that `family` runs; `pg_major` picks the defaults value mutants set."""
    book = parse_runbook(runbook_path)
    unknown = sorted(set(parts) - set(book.parts()))
    if unknown:
        raise MutateError(f"--parts {' '.join(unknown)}: {runbook_path} has no such part; it has {book.parts()}")
    if bad := sorted(set(classes) - set(CLASSES)):
        raise MutateError(f"--operators {' '.join(bad)}: choose from {' '.join(CLASSES)}")
    text = runbook_path.read_text().splitlines()
    names = runbook_names(list(book.blocks))
    found = []
    for block in book.select(family=family, parts=parts, variant=variant):
        if steps and block.step not in steps:
            continue
        for first, last in units(block):
            unit = "\n".join(text[first - 1 : last])
            if "delete" in classes:
                found.append(Mutant(block.step, block.part, first, last, unit))
            if "value" in classes:
                for made in changes(block, unit, pg_major=pg_major, names=names):
                    found.append(
                        Mutant(block.step, block.part, first, last, unit, made.operator, made.change, made.replacement)
                    )
    return found


def explanations(runbook_path: Path) -> dict[tuple[str, str, str], str]:
    """(step, first line, change) -> why the mutant is not observable, from `<runbook>.explained.toml`:
    a [[line]] without `change` explains the line's deletion, one with it that value mutation."""
    path = runbook_path.with_suffix(".explained.toml")
    if not path.is_file():
        return {}
    try:
        entries = tomllib.loads(path.read_text()).get("line", [])
        return {(e["step"], e["text"].strip(), e.get("change", "")): e["why"] for e in entries}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MutateError(
            f"{path}: {exc}; each [[line]] needs step, text (the line as in the runbook) and why, and for a "
            "value mutant its change (as `mutate --list` prints it)"
        ) from None


def module_costs() -> dict[str, int]:
    """Pairs each scenario module brings up (its `bringups` marker): the cheapest run first."""
    return {
        module: int(getattr(calls["bringups"].args[0], "value", 99))
        for module, calls in scenario_markers().items()
        if "bringups" in calls and calls["bringups"].args
    }


def mutant_key(image: str, mutated: str) -> str:
    """The verdict's name in the state: the image and the whole mutated runbook, so any other edit of the
    runbook (which may change what a mutant does) makes it a new mutant, measured again."""
    return hashlib.sha256(f"{image}\0{mutated}".encode()).hexdigest()[:16]


class Verdicts:
    """`state.json` of the work directory: mutant key -> verdict. Written whole after each verdict, through a
    temporary file and a rename, so an interruption leaves the old state or the new one, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._state: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError as exc:
            raise MutateError(
                f"{path}: not a verdict file ({exc}); move it away to measure again, or pass another --artifacts"
            ) from None

    def get(self, key: str, tests: str) -> dict | None:
        """A verdict to resume from. An error is none (the next run measures that mutant again), and neither is a
        survival on other scenario modules than `tests` (scenario_digest): a sharper test may kill it now."""
        verdict = self._state.get(key) or {}
        if verdict.get("verdict") == "killed" or (
            verdict.get("verdict") == "survived" and verdict.get("tests") == tests
        ):
            return verdict
        return None

    def put(self, key: str, verdict: dict) -> None:
        with self._lock:
            self._state[key] = verdict
            temporary = self.path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(self._state, indent=1, sort_keys=True))
            os.replace(temporary, self.path)


class Scenarios:
    """The scenario runs (pytest processes) of a mutate run. `stop()` (on an interruption) starts no more and
    sends SIGTERM to those running, which unwind and remove their pairs; their outcome is no verdict."""

    GRACE = 120.0  # seconds a stopped pytest has to remove its pair before it is killed

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, argv: list[str], cwd: Path) -> tuple[int, str] | None:
        """(exit code, output), or None when the run was stopped meanwhile. Only `stop()` makes an outcome no
        verdict: pytest's exit 2 is also a collection error, and a scenario killed by another's signal (the OOM
        killer) an error too; either is an `error` verdict, which the next run measures again."""
        with self._lock:
            if self.stopping.is_set():
                return None
            process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self._running.add(process)
        try:
            output, _ = process.communicate()
        finally:
            with self._lock:
                self._running.discard(process)
        return None if self.stopping.is_set() else (process.returncode, output)

    def stop(self) -> None:
        with self._lock:
            self.stopping.set()
            running = list(self._running)
        for process in running:
            process.terminate()
        deadline = time.monotonic() + self.GRACE
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Mutation:
    runbook: Path
    image: str
    parts: tuple[str, ...]
    workdir: Path
    jobs: int = 3
    log: Callable[[str], None] = print
    classes: tuple[str, ...] = ("delete",)
    steps: tuple[str, ...] = ()
    # only these scenario modules (file names, with or without .py): a partial measure, said in the report
    modules: tuple[str, ...] = ()

    def scenario_argv(self, module: str, runbook: Path, artifacts: Path) -> list[str]:
        """The command that runs one scenario module on a mutated runbook (exit 1: a test failed)."""
        argv = [sys.executable, "-m", "pytest", module, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        argv += ["--image", self.image, "--backend", "docker", "--runbook", str(runbook)]
        return [*argv, f"--artifacts={artifacts}"]

    @contextmanager
    def snapshots_removed(self) -> Iterator[None]:
        """A mutant of a snapshotted step leaves a snapshot of mutated steps: not a cache to keep."""
        from harness.hosts.docker import docker_client, remove_image, snapshot_ids

        client = docker_client()
        before = snapshot_ids(client)
        try:
            yield
        finally:
            for image_id in snapshot_ids(client) - before:
                try:
                    remove_image(client, image_id)
                except Exception as exc:  # best effort: say so, go on
                    print(f"could not remove snapshot {image_id}: {exc}", file=sys.stderr)

    def run(self) -> dict:
        from harness.images import ImageProfile

        if self.jobs < 1:
            raise MutateError(f"--jobs {self.jobs}: run at least one mutant at a time (--jobs 1 or more)")
        root = project.current().root
        if not self.runbook.resolve().is_relative_to(root):
            raise MutateError(
                f"--runbook {self.runbook}: mutate runs the scenario modules that name their runbook inside the "
                f"project ({root}); copy the runbook under {project.current().runbooks} and mutate it there"
            )
        profile = ImageProfile.load(self.image)
        found = mutants(
            self.runbook,
            profile.family,
            self.parts,
            profile.package_source,
            classes=self.classes,
            pg_major=profile.pg_major,
            steps=self.steps,
        )
        explained = explanations(self.runbook)
        relative = str(self.runbook.resolve().relative_to(root))
        modules = module_parts()
        if self.modules:
            wanted = {m.removesuffix(".py") for m in self.modules}
            unknown = wanted - {Path(m).stem for m in modules}
            if unknown:
                raise MutateError(f"--modules {' '.join(sorted(unknown))}: no such scenario module")
            modules = {m: parts for m, parts in modules.items() if Path(m).stem in wanted}
        costs = module_costs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        verdicts = Verdicts(self.workdir / "state.json")
        scenarios = Scenarios()
        lock = threading.Lock()
        original = self.runbook.read_text().splitlines(keepends=True)
        commit = head_commit(root)
        results: list[dict] = []
        started = time.monotonic()

        def record(mutant: Mutant, verdict: dict) -> None:
            with lock:
                results.append(
                    {
                        **verdict,
                        "line": mutant.first,
                        "step": mutant.step,
                        "text": mutant.what,
                        "operator": mutant.operator,
                    }
                )
                counts = {v: sum(r["verdict"] == v for r in results) for v in ("killed", "survived", "explained")}
                self.log(
                    f"[{len(results)}/{len(found)}] {verdict['verdict']:<9} {relative}:{mutant.first} "
                    f"{mutant.step}: {mutant.what[:110]}  ({counts['killed']} killed, "
                    f"{counts['survived']} survived, {counts['explained']} explained; "
                    f"{time.monotonic() - started:.0f} s)"
                )

        def one(mutant: Mutant) -> None:
            why = explained.get(mutant.key)
            if why is not None:
                record(mutant, {"verdict": "explained", "why": why})
                return
            mutated = mutant.apply(original)
            key = mutant_key(self.image, mutated)
            chosen = part_modules(modules, relative, mutant.part)
            tests = scenario_digest(root, chosen)
            if (kept := verdicts.get(key, tests)) is not None:
                record(mutant, kept)
                return
            path = self.workdir / f"{key}.md"
            path.write_text(mutated)
            verdict: dict = {"verdict": "survived", "by": None}
            clock = time.monotonic()
            try:
                for module in sorted(chosen, key=lambda m: costs.get(m, 99)):
                    done = scenarios.run(self.scenario_argv(module, path, self.workdir / key), root)
                    if done is None:
                        return  # interrupted: no verdict, the next run measures this mutant
                    code, output = done
                    if code == 1:
                        verdict = {"verdict": "killed", "by": module}
                        break
                    if code not in (0, 5):  # 5: nothing collected (skipped image)
                        verdict = {"verdict": "error", "by": module, "output": output[-2000:]}
                        break
            finally:
                path.unlink(missing_ok=True)
            verdict["seconds"] = round(time.monotonic() - clock, 1)
            verdict["tests"] = tests
            verdict["measured"] = {"at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit}
            if self.modules:
                verdict["modules"] = sorted(self.modules)
            verdicts.put(key, verdict)
            record(mutant, verdict)

        with self.snapshots_removed():
            pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mutant")
            futures = [pool.submit(one, m) for m in found]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # Ctrl-C, SIGTERM (harness.targets.unwind_on_sigterm) or a bug: stop at once
                scenarios.stop()
                pool.shutdown(wait=True, cancel_futures=True)
                self.log(
                    f"interrupted: {len(results)} of {len(found)} verdicts kept in {verdicts.path}; "
                    "the same command resumes from them"
                )
                raise
            pool.shutdown()
        result = report(relative, sorted(results, key=lambda r: r["line"]), time.monotonic() - started)
        if self.modules:
            result["modules"] = sorted(self.modules)
        return result


def part_modules(modules: dict[str, tuple[str, tuple[str, ...]]], runbook: str, part: str) -> list[str]:
    """The scenario modules (of harness.gate.module_parts) that run `part` of `runbook`: a mutant's judges."""
    return [m for m, (book, parts) in modules.items() if book == runbook and part in parts]


def scenario_digest(root: Path, chosen: list[str]) -> str:
    """The text of the scenario modules a mutant runs: a survival holds only while they are unchanged."""
    digest = hashlib.sha256()
    for module in sorted(chosen):
        digest.update(f"{module}\0".encode() + (root / module).read_bytes())
    return digest.hexdigest()[:16]


def head_commit(root: Path) -> str:
    """The project's commit (with `+` when its tree has changes), or "" outside git: what was measured."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    except OSError:
        return ""
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "") if head.returncode == 0 else ""


def report(runbook: str, results: list[dict], seconds: float) -> dict:
    killed = sum(r["verdict"] == "killed" for r in results)
    explained = sum(r["verdict"] == "explained" for r in results)
    judged = len(results) - explained
    score = 100.0 * killed / judged if judged else 100.0
    return {
        "runbook": runbook,
        "mutants": len(results),
        "killed": killed,
        "explained": explained,
        "survived": [r for r in results if r["verdict"] == "survived"],
        "errors": [r for r in results if r["verdict"] == "error"],
        "score": round(score, 1),
        "seconds": round(seconds, 1),
        # the scenario time of each mutant run now (not resumed from the state, not explained)
        "per_mutant": [r["seconds"] for r in results if r.get("seconds")],
    }


def render(result: dict) -> str:
    lines = [
        f"mutation score {result['score']}%: {result['killed']} killed of {result['mutants'] - result['explained']} "
        f"({result['explained']} explained, {len(result['survived'])} survived, {len(result['errors'])} errors) "
        f"in {result['seconds']:.0f} s"
        + (f" (only the modules {', '.join(result['modules'])})" if result.get("modules") else "")
    ]
    if timed := result.get("per_mutant"):
        lines.append(f"per mutant run: {sum(timed) / len(timed):.0f} s on average, {min(timed):.0f}-{max(timed):.0f} s")
    lines += [f"survived  {result['runbook']}:{r['line']}  {r['step']}: {r['text']}" for r in result["survived"]]
    lines += [f"error     {result['runbook']}:{r['line']}  {r['step']}: {r['text']}" for r in result["errors"]]
    return "\n".join(lines)
