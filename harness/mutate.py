"""`pgrepl-harness mutate`: how much of the runbook the gate guards.

Two operator classes make the mutants. `delete`: each functional line of the chosen parts' blocks for an
image's OS family (a command of a shell block, with its continuation lines and here-document; a setting
or rule of a conf block) is deleted in turn. `value`: one value of such a line is changed
(harness.mutations: a setting to its default or another of its values, a name misspelt, an hba rule's
method or address, one option of a command dropped). For each mutant the scenario modules that run that
part (their `parts` marker) run on the mutated runbook until one fails: the mutant is killed. The
modules that killed mutants of the same step before (the ledger, any family or operator; mutants of the same
line first: harness.kills) run first, then the cheapest; before them, the very tests that killed them run
on their own, so a kill that history predicts costs those tests, not their module's others before them. The
order changes which module is named and how long a kill takes, never a verdict (a survivor has passed every
module, every test). A mutant no module notices survives: a line the gate is
blind to. A mutant that cannot be observed (a message, a setting equal to its default) is recorded with
its reason in `<runbook>.explained.toml` and reported as explained, not run; one of a block the image never runs
(the package steps of a preinstalled image: `not_run_here`) is reported as not run here. The scenario runs of a
later part's mutants share one test session this process holds (`Mutation.held_session`): the runbook's
setup is saved once as the session's set-up state and restored by every later run.

Verdicts are kept under a key of what can change the mutant's outcome (`MutantKeys`), not of the whole runbook:
a prose edit, or an edit of a block its scenarios never run, keeps them. They go to the committed
`runbooks/NAME.mutation.json` (`Ledger`: killed and survived, the fields the report needs), from which
`mutate --report` writes the report and a later run resumes, on any clone; `ARTIFACTS/mutate/state.json` keeps
a running job's every verdict (errors too) for the same command to resume.
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
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness import project
from harness.errors import HarnessError
from harness.gate import WITHOUT_HYPOTHESIS, block_text, module_parts, scenario_markers
from harness.kills import CHANGE_MARK, first_to_run, ledger_path, read_ledger
from harness.labels import HELD_SESSION_ENV
from harness.layout import FAMILIES
from harness.mutations import VALUE_OPERATORS, changes, runbook_names
from harness.runbook import Block, RunbookError, parse_runbook

if TYPE_CHECKING:
    from harness.images import ImageProfile

STRUCTURE = re.compile(r"^\s*(?:if|elif|else|fi|then|for|while|until|do|done|case|esac|;;|[(){}])(?:\s|;|$)")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
DEFAULT_PARTS = ("setup", "verify")
CLASSES = {"delete": ("delete",), "value": VALUE_OPERATORS}
NOT_RUN = "not run here"  # a mutant of a block the image never runs (not_run_here): neither measured nor explained


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
    block: tuple = ()  # its block's identity (step, host, os families, variant): harness.gate.block_text
    offset: int = 0  # its first line's place in the block's body (1: the body's first line)
    family: str = ""  # the OS family it is measured on (a block may serve several)
    action: str = ""  # its block's action ("packages": the package steps a preinstalled image skips)

    @property
    def headline(self) -> str:
        return self.text.splitlines()[0].strip()

    @property
    def what(self) -> str:
        """The line, and for a value mutant what changes in it: how the listing and the report name it."""
        return f"{self.headline}{CHANGE_MARK}{self.operator}: {self.change}]" if self.change else self.headline

    @property
    def key(self) -> tuple[str, str, str, str]:
        """How `<runbook>.explained.toml` names it: step, the line's text, the change ("" for a deletion), and
        the family it is measured on (an explanation may hold for some families only)."""
        return (self.step, self.headline, self.change, self.family)

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


ALL_PARTS = "all"


def chosen_parts(runbook_path: Path, parts: tuple[str, ...]) -> tuple[str, ...]:
    """`parts` as given, or every part of the runbook in its order for `all` (the nightly job's choice: a part
    added to the runbook is measured without an edit to the workflow)."""
    return tuple(parse_runbook(runbook_path).parts()) if ALL_PARTS in parts else parts


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
        raise MutateError(
            f"--parts {' '.join(unknown)}: {runbook_path} has no such part; it has {book.parts()} "
            f"({ALL_PARTS}: every part)"
        )
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
            where = {
                "block": block_identity(block),
                "offset": first - block.line,
                "family": family,
                "action": block.action or "",
            }
            if "delete" in classes:
                found.append(Mutant(block.step, block.part, first, last, unit, **where))
            if "value" in classes:
                for made in changes(block, unit, pg_major=pg_major, names=names):
                    found.append(
                        Mutant(
                            block.step,
                            block.part,
                            first,
                            last,
                            unit,
                            made.operator,
                            made.change,
                            made.replacement,
                            **where,
                        )
                    )
    return found


def explanations(runbook_path: Path) -> dict[tuple[str, str, str, str], str]:
    """(step, first line, change, family) -> why the mutant is not observable, from `<runbook>.explained.toml`:
    a [[line]] without `change` explains the line's deletion, one with it that value mutation; one with `os`
    (a list of families) holds on those families only (a default that one family's package sets already)."""
    path = runbook_path.with_suffix(".explained.toml")
    if not path.is_file():
        return {}
    try:
        entries = tomllib.loads(path.read_text()).get("line", [])
        found = {}
        for e in entries:
            families = e.get("os", list(FAMILIES))
            if not isinstance(families, list) or not set(families) <= set(FAMILIES):
                raise ValueError(f"step {e['step']!r}: os must be a list of {', '.join(FAMILIES)}, not {families!r}")
            for family in families:
                found[(e["step"], e["text"].strip(), e.get("change", ""), family)] = e["why"]
        return found
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MutateError(
            f"{path}: {exc}; each [[line]] needs step, text (the line as in the runbook) and why, for a "
            "value mutant its change (as `mutate --list` prints it), and may name its families in os"
        ) from None


def not_run_here(mutant: Mutant, profile: ImageProfile) -> str | None:
    """Why `profile`'s image never runs the mutant's block, or None. A preinstalled image (el*-pgdg-layout: PGDG
    cannot be reached) skips the runbook's package steps (harness.pair.PreinstalledPackages), so no scenario
    there can see a mutant of theirs: it is neither measured nor explained, but not run here."""
    note = profile.preinstalled_note
    return f"{profile.name} skips the package steps: {note}" if note and mutant.action == "packages" else None


def module_costs() -> dict[str, int]:
    """Pairs each scenario module brings up (its `bringups` marker): the cheapest run first."""
    return {
        module: int(getattr(calls["bringups"].args[0], "value", 99))
        for module, calls in scenario_markers().items()
        if "bringups" in calls and calls["bringups"].args
    }


def run_order(chosen: Iterable[str], costs: Mapping[str, int], first: Iterable[str]) -> list[str]:
    """The modules to run on a mutant, in order: `first` (those that killed mutants of its step before, as
    harness.kills.first_to_run orders them), then the others by cost (`module_costs`), then by name."""
    ahead = [module for module in first if module in chosen]
    return ahead + sorted(set(chosen) - set(ahead), key=lambda module: (costs.get(module, 99), module))


# pytest's short summary line of the first test that failed or errored (with -x, the only one)
FIRST_FAILED = re.compile(r"^(?:FAILED|ERROR) [^\s:]+::(\w+)", re.MULTILINE)


def failed_test(output: str) -> str | None:
    """The name of the test function a scenario run's output names as failed first (None: none named)."""
    found = FIRST_FAILED.search(output)
    return found.group(1) if found else None


def block_identity(block: Block) -> tuple:
    """What makes a block the same block across edits (step, host, OS families, variant), as harness.gate has it."""
    return (block.step, block.host, tuple(block.os), block.variant)


def as_run(block: Block) -> tuple:
    """A block as the family that runs it sees it: harness.gate.block_text without its OS list (in its identity and
    in its attributes). Which other families share a block, or get a copy of their own, changes nothing this family
    runs, so it changes no verdict of this family."""
    (step, host, _families, variant), content = block_text(block)
    attributes = {name: value for name, value in block.attrs.items() if name != "os"}
    return (step, host, variant), (*content[:-1], json.dumps(attributes, sort_keys=True))


def judged_parts(modules: dict[str, tuple[str, tuple[str, ...]]], runbook: str, part: str) -> tuple[str, ...]:
    """The parts that the scenario modules judging a mutant of `part` run (their `parts` markers), `part` included:
    a mutant's outcome can depend on any block of them."""
    return tuple(sorted({part}.union(*(modules[m][1] for m in part_modules(modules, runbook, part)))))


class MutantKeys:
    """A mutant's key: its verdict's name in the ledger and in the state.

    The key is a digest of what can change the mutant's outcome, and nothing else:

    - the image (its OS family, package source and PostgreSQL major pick the blocks and the values);
    - the mutant's identity: its block's step, host and variant, its place in the block's body, the mutated line's
      text, the operator and the change it makes (and the new text of a value mutant);
    - the runbook's binding table, each example value and what it is bound to (the values every block runs with);
    - the text and attributes (`as_run`: all but the OS list), in document order, of every block the image's family
      runs for the parts that the mutant's scenario modules run: the setup blocks of that family, the mutated
      block itself, and the blocks of the other parts those modules run after the setup.

    So an edit of one of those blocks (a setup block, a block before or after the mutated line in the part under
    test), of the bindings, or of a scenario module's `parts` marker makes every verdict that depends on it a new
    mutant, measured again: the mutated runbook runs differently. Prose, headings, the explanations file, blocks of
    other families, which families share a block, and blocks of parts those modules never run do not change it, so
    the verdict is kept: the scenarios execute exactly the same commands and settings as when it was measured.
    Neither do line numbers: a mutant is placed by its block and its line in it. What the key leaves out is checked
    elsewhere or accepted: a survival holds only while the scenario modules' text is unchanged (`Verdicts.get`,
    scenario_digest), a kill is kept when the tests change (a test only gets sharper), and an image's Dockerfile is
    not in the key (an image change runs the whole gate, but does not re-measure the mutants).
    """

    def __init__(
        self,
        runbook: Path,
        modules: dict[str, tuple[str, tuple[str, ...]]] | None = None,
        relative: str | None = None,  # the runbook's path in the project (a copy of it elsewhere: where it was)
    ) -> None:
        self.book = parse_runbook(runbook)
        self.relative = relative or str(runbook.resolve().relative_to(project.current().root))
        self.modules = module_parts() if modules is None else modules
        self._contexts: dict[tuple[str, str], str] = {}

    def context(self, image: str, part: str) -> str:
        """The digest of the bindings and of the blocks `image`'s family runs for the scenarios of `part`."""
        if (image, part) not in self._contexts:
            from harness.images import ImageProfile

            profile = ImageProfile.load(image)
            parts = judged_parts(self.modules, self.relative, part)
            runs = [
                as_run(b)
                for b in self.book.blocks
                if profile.family in b.os
                and b.part in parts
                and (b.variant is None or b.variant == profile.package_source)
            ]
            bindings = [(b.example, b.target) for b in self.book.bindings]  # not its meaning: prose
            text = json.dumps([image, parts, bindings, runs], default=list)
            self._contexts[image, part] = hashlib.sha256(text.encode()).hexdigest()
        return self._contexts[image, part]

    def key(self, image: str, mutant: Mutant) -> str:
        step, host, _families, variant = mutant.block  # which other families share its block does not count
        identity = [
            [step, host, variant],
            mutant.offset,
            mutant.last - mutant.first,
            mutant.text,
            mutant.operator,
            mutant.change,
            mutant.replacement,
        ]
        text = json.dumps([self.context(image, mutant.part), identity], default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def usable(verdict: dict | None, tests: str) -> dict | None:
    """`verdict` if it still holds: a kill, or a survival on the same scenario modules `tests` (scenario_digest; a
    sharper test may kill it now). An error, or no verdict, is none: the next run measures that mutant again."""
    verdict = verdict or {}
    if verdict.get("verdict") == "killed" or (verdict.get("verdict") == "survived" and verdict.get("tests") == tests):
        return verdict
    return None


LEDGER_ABOUT = (
    "Verdicts of `pgrepl-harness mutate` (killed or survived) by mutant key (harness.mutate.MutantKeys); "
    "`pgrepl-harness mutate --report` writes the report NAME.mutation.md from them. Written by mutate; do not edit."
)
# what the report needs of a verdict, and what names it for a reader of the diff
LEDGER_FIELDS = ("verdict", "by", "test", "tests", "image", "step", "text", "measured", "seconds", "modules")


class Ledger:
    """The committed verdicts of a runbook (`ledger_path`): key -> verdict, as sorted, indented JSON (one field a
    line, so a diff shows which mutants a run measured). `put` merges one verdict into the file as it is on disk
    (verdicts of other images or runs are kept); `prune` removes only the keys no mutant of the runbook has now.
    Both read and write under a lock of the ledger's directory, which other mutate processes take too: the file
    itself is replaced on each write, so a lock of its own would not hold across writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.verdicts = self._read()

    @contextmanager
    def _held(self) -> Iterator[None]:
        """This thread's and this machine's other processes' turn at the file (flock of its directory)."""
        import fcntl

        with self._lock:
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(directory, fcntl.LOCK_EX)
                yield
            finally:
                os.close(directory)  # releases the flock

    def _read(self) -> dict[str, dict]:
        return read_ledger(self.path)

    def get(self, key: str) -> dict | None:
        return self.verdicts.get(key)

    def put(self, key: str, verdict: dict) -> None:
        entry = {f: verdict[f] for f in LEDGER_FIELDS if verdict.get(f) not in (None, "", [], {})}
        with self._held():
            self.verdicts = {**self._read(), key: entry}
            self._write()

    def prune(self, keep: set[str]) -> list[str]:
        """Drop the verdicts whose key is not in `keep` (every key the runbook's mutants have now); the dropped keys."""
        with self._held():
            current = self._read()
            gone = sorted(set(current) - keep)
            if gone:
                self.verdicts = {k: v for k, v in current.items() if k in keep}
                self._write()
            return gone

    def _write(self) -> None:
        temporary = self.path.with_suffix(f".json.{os.getpid()}.tmp")
        temporary.write_text(
            json.dumps({"about": LEDGER_ABOUT, "verdicts": self.verdicts}, indent=1, sort_keys=True) + "\n"
        )
        os.replace(temporary, self.path)


def current_keys(runbook: Path, images: set[str], keys: MutantKeys | None = None) -> set[str]:
    """The key of every mutant (every part and operator class) of `runbook` as it is now, on each of `images` (an
    image that no longer exists has none)."""
    from harness.images import ImageProfile, ImageUnavailable

    keys = keys or MutantKeys(runbook)
    parts = tuple(keys.book.parts())
    found: set[str] = set()
    for image in sorted(images):
        try:
            profile = ImageProfile.load(image)
            made = mutants(
                runbook,
                profile.family,
                parts,
                profile.package_source,
                classes=tuple(CLASSES),
                pg_major=profile.pg_major,
            )
        except (ImageUnavailable, RunbookError):
            continue
        found.update(keys.key(image, m) for m in made)
    return found


class Verdicts:
    """`state.json` of the work directory: mutant key -> verdict (errors too, with their output), and the committed
    `ledger` (killed and survived only). The state is written whole after each verdict, through a temporary file and
    a rename, so an interruption leaves the old state or the new one, never half of one."""

    def __init__(self, path: Path, ledger: Ledger | None = None) -> None:
        self.path = path
        self.ledger = ledger
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
        found = usable(self._state.get(key), tests)
        if self.ledger is not None:
            if found is None:
                found = usable(self.ledger.get(key), tests)
            elif self.ledger.get(key) is None:  # lost by another run writing the ledger at the same moment
                self.ledger.put(key, found)
        return found

    def put(self, key: str, verdict: dict) -> None:
        with self._lock:
            self._state[key] = verdict
            temporary = self.path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(self._state, indent=1, sort_keys=True))
            os.replace(temporary, self.path)
        if self.ledger is not None and verdict.get("verdict") in ("killed", "survived"):
            self.ledger.put(key, verdict)


class Scenarios:
    """The scenario runs (pytest processes) of a mutate run. `stop()` (on an interruption) starts no more and
    sends SIGTERM to those running, which unwind and remove their pairs; their outcome is no verdict."""

    GRACE = 120.0  # seconds a stopped pytest has to remove its pair before it is killed

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, argv: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> tuple[int, str] | None:
        """(exit code, output), or None when the run was stopped meanwhile. Only `stop()` makes an outcome no
        verdict: pytest's exit 2 is also a collection error, and a scenario killed by another's signal (the OOM
        killer) an error too; either is an `error` verdict, which the next run measures again."""
        with self._lock:
            if self.stopping.is_set():
                return None
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **env} if env else None,
            )
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
    ledger: Path | None = None  # the committed verdicts; None: the runbook's own (ledger_path)

    def scenario_argv(
        self, module: str, runbook: Path, artifacts: Path, *, only: Iterable[str] = (), skip: Iterable[str] = ()
    ) -> list[str]:
        """The command that runs one scenario module on a mutated runbook (exit 1: a test failed): only the test
        functions named `only`, if any; none of those named `skip` (each with every parameter of it)."""
        targets = [f"{module}::{test}" for test in only] or [module]
        argv = [sys.executable, "-m", "pytest", *targets, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        argv += [arg for test in skip for arg in ("--deselect", f"{module}::{test}[")]  # [: not test_x_y for test_x
        argv += WITHOUT_HYPOTHESIS
        argv += ["--image", self.image, "--backend", "docker", "--runbook", str(runbook)]
        return [*argv, f"--artifacts={artifacts}"]

    @contextmanager
    def held_session(self) -> Iterator[dict[str, str]]:
        """One test session for the scenario runs of every mutant of a later part (the environment they
        get): their setup is the runbook's own, so the first run saves it as the session's set-up state
        (harness.runstate) and every later run starts from it instead of setting up again. This process
        holds the session: its set-up states (they hold the session's passwords) go at its end."""
        from harness.hosts.docker import answering_engine, remove_session
        from harness.runstate import open_registry, remove_registry

        session = uuid.uuid4().hex[:12]
        open_registry(session)  # it lives as long as this process (remove_stale_registries)
        try:
            yield {HELD_SESSION_ENV: f"{session}:{os.getpid()}"}
        finally:
            remove_registry(session)
            client = answering_engine()
            if client is not None:  # else the next run's sweep: the images carry this process's PID
                remove_session(client, session)

    @contextmanager
    def snapshots_removed(self) -> Iterator[None]:
        """A mutant of a snapshotted step leaves a snapshot of mutated steps: not a cache to keep."""
        from harness.hosts.docker import docker_client, newest_first, remove_image, snapshot_ids

        client = docker_client()
        before = snapshot_ids(client)
        try:
            yield
        finally:
            for image_id in newest_first(client, snapshot_ids(client) - before):
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
        keys = MutantKeys(self.runbook, modules)  # every module of a part: the key is not narrowed by --modules
        if self.modules:
            wanted = {m.removesuffix(".py") for m in self.modules}
            unknown = wanted - {Path(m).stem for m in modules}
            if unknown:
                raise MutateError(f"--modules {' '.join(sorted(unknown))}: no such scenario module")
            modules = {m: parts for m, parts in modules.items() if Path(m).stem in wanted}
        costs = module_costs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(self.ledger or ledger_path(self.runbook))
        verdicts = Verdicts(self.workdir / "state.json", ledger)
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
                counts = Counter(r["verdict"] for r in results)
                self.log(
                    f"[{len(results)}/{len(found)}] {verdict['verdict']:<9} {relative}:{mutant.first} "
                    f"{mutant.step}: {mutant.what[:110]}  ({counts['killed']} killed, "
                    f"{counts['survived']} survived, {counts['explained']} explained, {counts[NOT_RUN]} {NOT_RUN}; "
                    f"{time.monotonic() - started:.0f} s)"
                )

        def one(mutant: Mutant) -> None:
            why = explained.get(mutant.key)
            if why is not None:
                record(mutant, {"verdict": "explained", "why": why})
                return
            if (why := not_run_here(mutant, profile)) is not None:
                record(mutant, {"verdict": NOT_RUN, "why": why})
                return
            mutated = mutant.apply(original)
            key = keys.key(self.image, mutant)
            chosen = part_modules(modules, relative, mutant.part)
            tests = scenario_digest(root, chosen)
            if (kept := verdicts.get(key, tests)) is not None:
                record(mutant, kept)
                return
            path = self.workdir / f"{key}.md"
            path.write_text(mutated)
            verdict: dict = {"verdict": "survived", "by": None}
            clock = time.monotonic()
            own = ExitStack()  # a setup mutant's own held session
            try:
                env = held if mutant.part != "setup" else None
                history = list(ledger.verdicts.values())
                first = first_to_run(history, [mutant.step], chosen, line=mutant.headline)
                runs = [(module, tests, ()) for module, tests in first.items() if tests]
                runs += [(m, (), first.get(m, ())) for m in run_order(chosen, costs, first)]
                for number, (module, only, skip) in enumerate(runs):
                    if env is None and number == 1:
                        # a setup mutant's setup is no other mutant's: held from its second run on, which
                        # saves it for the later ones (the first does not: most mutants die there)
                        env = own.enter_context(self.held_session())
                    argv = self.scenario_argv(module, path, self.workdir / key, only=only, skip=skip)
                    done = scenarios.run(argv, root, env)
                    if done is None:
                        return  # interrupted: no verdict, the next run measures this mutant
                    code, output = done
                    if code == 1:
                        verdict = {"verdict": "killed", "by": module, "test": failed_test(output)}
                        break
                    if code == 4 and only:  # a test of the ledger's is gone (renamed): its module runs whole next
                        continue
                    if code not in (0, 5):  # 5: nothing collected (skipped image)
                        verdict = {"verdict": "error", "by": module, "output": output[-2000:]}
                        break
            finally:
                own.close()
                path.unlink(missing_ok=True)
            verdict["seconds"] = round(time.monotonic() - clock, 1)
            verdict.update(tests=tests, image=self.image, step=mutant.step, text=mutant.what)
            verdict["measured"] = {"at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit}
            if self.modules:
                verdict["modules"] = sorted(self.modules)
            verdicts.put(key, verdict)
            record(mutant, verdict)

        with self.snapshots_removed(), self.held_session() as held:
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
        if gone := ledger.prune(
            current_keys(self.runbook, {self.image} | {v.get("image", "") for v in ledger.verdicts.values()}, keys)
        ):
            self.log(f"{ledger.path}: {len(gone)} verdicts of mutants the runbook no longer has removed")
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
    not_run = sum(r["verdict"] == NOT_RUN for r in results)
    judged = len(results) - explained - not_run
    score = 100.0 * killed / judged if judged else 100.0
    return {
        "runbook": runbook,
        "mutants": len(results),
        "killed": killed,
        "explained": explained,
        "not_run": not_run,
        "judged": judged,
        "survived": [r for r in results if r["verdict"] == "survived"],
        "errors": [r for r in results if r["verdict"] == "error"],
        "score": round(score, 1),
        "seconds": round(seconds, 1),
        # the scenario time of each mutant run now (not resumed from the state, not explained)
        "per_mutant": [r["seconds"] for r in results if r.get("seconds")],
    }


def render(result: dict) -> str:
    lines = [
        f"mutation score {result['score']}%: {result['killed']} killed of {result['judged']} "
        f"({result['explained']} explained, {result['not_run']} {NOT_RUN}, {len(result['survived'])} survived, "
        f"{len(result['errors'])} errors) "
        f"in {result['seconds']:.0f} s"
        + (f" (only the modules {', '.join(result['modules'])})" if result.get("modules") else "")
    ]
    if timed := result.get("per_mutant"):
        lines.append(f"per mutant run: {sum(timed) / len(timed):.0f} s on average, {min(timed):.0f}-{max(timed):.0f} s")
    lines += [f"survived  {result['runbook']}:{r['line']}  {r['step']}: {r['text']}" for r in result["survived"]]
    lines += [f"error     {result['runbook']}:{r['line']}  {r['step']}: {r['text']}" for r in result["errors"]]
    return "\n".join(lines)
