"""The runbook gate: what a change touches since a git revision, and what runs for it (and why).

A runbook is compared block by block with its text at the base revision: a block is the same
block when its step, host, OS families and variant are; it changed when its attributes or its
meaning did (harness.runbook.meaning: a shell block as bash parses it, a conf block's settings or
rules as PostgreSQL reads them). A block whose text changed but not its meaning (comments, blank
lines, spacing) is "comment only" and runs nothing. The scenario modules that run a changed
block's part (their `parts` marker, read from the source without importing it) run on the images
of the block's families. A change to the binding table touches every block of that runbook. A
change to the harness, the images, the scenarios or the tests runs everything; prose, README and
other files run the static gate only.
"""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import project
from harness.errors import HarnessError
from harness.kills import UnreadableLedger, first_to_run, ledger_path, read_ledger
from harness.runbook import Binding, Block, Runbook, parse_text
from harness.runbook.meaning import meaning

STATIC_GATE = "tests/test_static_gate.py"
# Changed files under these run everything: they are what the gate itself executes.
EXECUTED = ("harness/", "images/", "scenarios/", "tests/", "conftest.py", "pyproject.toml")
RUNBOOKS = "runbooks/"
# how a block changed when only its comments or spacing did: no scenario runs for it
COMMENT_ONLY = "comment only"


class GateError(HarnessError):
    """The base revision cannot be read (not a git checkout, unknown revision)."""


@dataclass(frozen=True)
class BlockChange:
    runbook: str  # relative to the project
    step: str
    part: str
    families: tuple[str, ...]
    line: int  # in the changed text; for a removed block, where it was at the base
    how: str  # changed | comment only | added | removed | bindings
    note: str = ""  # why it counts as it does, when the plan should say so

    def __str__(self) -> str:
        where = f"{self.runbook}:{self.line}" + (" (at the base)" if self.how == "removed" else "")
        note = f": {self.note}" if self.note else ""
        return f"{self.how} block {self.step} (part {self.part}, {'/'.join(self.families)}) at {where}{note}"

    @property
    def runs(self) -> bool:
        """Whether the change is one a scenario can see (a comment-only one is not)."""
        return self.how != COMMENT_ONLY


@dataclass
class Plan:
    """What the gate runs for a change, and why; `pairs` are (scenario module, image)."""

    base: str
    changes: list[BlockChange] = field(default_factory=list)
    everything: list[str] = field(default_factory=list)  # the changed files that make everything run
    prose: list[str] = field(default_factory=list)  # changed files that run nothing beyond the static gate
    pairs: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # -> reasons
    # the modules to run first (each with its tests to run first): for each changed step, the one that killed
    # most of its mutants (harness.kills) - a change that breaks the runbook fails early
    first: dict[str, list[str]] = field(default_factory=dict)
    first_note: str = ""  # why there is no such order, when the plan should say so
    families: dict[str, str] = field(default_factory=dict)  # image -> OS family, of the images it selects from

    def changes_behind(self, step: str | None, image: str | None) -> list[BlockChange]:
        """The changed blocks a failure of a test on `image` (at runbook step `step`, if one failed) may come
        from: those that run on the image's family, unless the failed step is one of them - its own line then
        names the change. In runbook order, at most three."""
        family = self.families.get(image or "")
        suspects = [c for c in self.changes if c.runs and (family is None or family in c.families)]
        if step is not None and any(c.step == step for c in suspects):
            return []
        return sorted(suspects, key=lambda c: (c.runbook, c.line))[:3]

    @property
    def images(self) -> list[str]:
        return sorted({image for _, image in self.pairs})

    @property
    def modules(self) -> list[str]:
        return sorted({module for module, _ in self.pairs})

    def selects(self, module: str, image: str) -> bool:
        return bool(self.everything) or (module, image) in self.pairs

    def static_steps(self) -> frozenset[str] | None:
        """The steps of the default runbook whose blocks the static gate checks: the changed ones (a
        block's checks read only its text, the binding table and the image's profile, so an unchanged
        block's answer is the base's); None: every block (everything runs, or the bindings changed)."""
        if self.everything:
            return None
        default = str(project.current().default_runbook.relative_to(project.current().root))
        changed = [c for c in self.changes if c.runbook == default and c.how != "removed"]
        if any(c.how == "bindings" for c in changed):
            return None
        return frozenset(c.step for c in changed)

    def checks_statically(self, step: str | None) -> bool:
        """Whether the static gate runs a test of `step`'s blocks (None: a runbook-wide test, always)."""
        steps = self.static_steps()
        return step is None or steps is None or step in steps

    def render(self) -> str:
        lines = [f"gate plan against {self.base}:", f"  always: the static gate ({STATIC_GATE}){self._static_scope()}"]
        if self.everything:
            lines.append("  everything (every test, image and backend), because these changed:")
            lines += [f"    {path}" for path in self.everything]
            return "\n".join(lines)
        lines += [f"  {change}" for change in self.changes]
        if self.prose:
            lines.append(f"  prose or files the gate does not execute: {', '.join(self.prose)}")
        if not self.pairs:
            if any(not change.runs for change in self.changes):
                lines.append("  no scenario: no block runs differently (comments and spacing only)")
            else:
                lines.append("  no scenario: no executable block changed")
        by_module: dict[str, tuple[list[str], set[str]]] = {}
        for (module, image), reasons in sorted(self.pairs.items()):
            images, why = by_module.setdefault(module, ([], set()))
            images.append(image)
            why.update(reasons)
        for module, (images, why) in by_module.items():
            lines.append(f"  run {module} on {', '.join(images)} (docker): {'; '.join(sorted(why))}")
        if self.first:
            named = [module + (f" ({', '.join(tests)} first)" if tests else "") for module, tests in self.first.items()]
            lines.append(
                f"  first, as they killed most mutants of the changed steps (the mutation ledger): {', '.join(named)}"
            )
        elif self.first_note:
            lines.append(f"  in the usual order: {self.first_note}")
        return "\n".join(lines)

    def _static_scope(self) -> str:
        steps = self.static_steps()
        if steps is None:
            return ""
        checked = (
            f"the changed blocks' checks on every image ({', '.join(sorted(steps))})" if steps else "no block changed"
        )
        return f": its runbook-wide tests; {checked}; the other blocks' are as at the base"


def _git(*args: str) -> str:
    root = project.current().root
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise GateError(f"git {' '.join(args)} failed in {root}: {done.stderr.strip()}")
    return done.stdout


def changed_files(base: str) -> list[str]:
    """Files that differ between `base` and the working tree, untracked ones included."""
    _git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    tracked = _git("diff", "--name-only", base, "--").split()
    untracked = _git("ls-files", "--others", "--exclude-standard").split()
    return sorted(set(tracked) | set(untracked))


def _identity(block: Block) -> tuple:
    return (block.step, block.host, block.os, block.variant)


def _content(block: Block) -> tuple:
    return (
        block.kind,
        block.body,
        block.part,
        block.expect,
        block.file,
        block.action,
        json.dumps(block.attrs, sort_keys=True),
    )


def diff_runbooks(old: Runbook | None, new: Runbook | None, path: str) -> list[BlockChange]:
    """The blocks of `path` that changed, were added or removed between `old` and `new`."""
    before = {_identity(b): b for b in (old.blocks if old else ())}
    after = {_identity(b): b for b in (new.blocks if new else ())}
    if old and new and old.bindings != new.bindings:
        return [BlockChange(path, b.step, b.part, b.os, b.line, "bindings") for b in new.blocks]
    changes = []
    for key, block in after.items():
        if key not in before:
            changes.append(BlockChange(path, block.step, block.part, block.os, block.line, "added"))
        elif _content(before[key]) != _content(block):
            how, note = _how_changed(before[key], block, new.bindings)
            changes.append(BlockChange(path, block.step, block.part, block.os, block.line, how, note))
    for key, block in before.items():
        if key not in after:
            changes.append(BlockChange(path, block.step, block.part, block.os, block.line, "removed"))
    return sorted(changes, key=lambda c: c.line)


def _how_changed(old: Block, new: Block, bindings: tuple[Binding, ...]) -> tuple[str, str]:
    """("changed" or "comment only", what the plan says about it) for a block whose text differs."""
    if _content(replace(old, body="")) != _content(replace(new, body="")):
        return "changed", ""  # an attribute: what runs it, where, or what it must print
    before, after = meaning(old, bindings), meaning(new, bindings)
    if before.same_as(after):
        return COMMENT_ONLY, after.same
    unreadable = [f"{'at the base, ' if m is before else ''}{m.why}" for m in (before, after) if m.value is None]
    if unreadable:
        return "changed", f"counted as changed, not compared ({'; '.join(unreadable)})"
    return "changed", ""


def scenario_markers(directory: Path | None = None) -> dict[str, dict[str, ast.Call]]:
    """Per scenario module (relative path): the `pytest.mark.NAME(...)` calls of its `pytestmark` by NAME,
    read from the source without importing it (a test's own marks, such as a closer `bringups`, are not
    the module's)."""
    directory = directory or project.current().scenarios
    found: dict[str, dict[str, ast.Call]] = {}
    for path in sorted(directory.glob("test_*.py")):
        calls = found.setdefault(str(path.relative_to(project.current().root)), {})
        module_marks = [
            statement.value
            for statement in ast.parse(path.read_text(), str(path)).body
            if isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets)
        ]
        for node in (node for value in module_marks for node in ast.walk(value)):
            # pytest.mark.NAME(...) only: a module's own `runbook.parts()` is no marker
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "mark"
            ):
                calls[node.func.attr] = node
    return found


def module_parts(directory: Path | None = None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Per scenario module: (the runbook it executes, relative to the project; its parts), from its
    `pytestmark = [pytest.mark.parts("setup", ..., runbook="...")]`."""
    default = str(project.current().default_runbook.relative_to(project.current().root))
    declared = {}
    for module, calls in scenario_markers(directory).items():
        if "parts" in calls:
            node = calls["parts"]
            parts = tuple(arg.value for arg in node.args if isinstance(arg, ast.Constant))
            runbook = next((k.value.value for k in node.keywords if k.arg == "runbook"), None)
            declared[module] = (f"{RUNBOOKS}{runbook}" if runbook else default, parts)
    return declared


def block_text(block: Block) -> tuple:
    """What makes two blocks the same block with the same text (identity and content)."""
    return (_identity(block), _content(block))


def image_families() -> dict[str, str]:
    from harness.images import ImageProfile

    return {name: ImageProfile.load(name).family for name in project.current().image_names()}


def plan(base: str, files: Iterable[str] | None = None) -> Plan:
    """The gate's plan for the working tree against git revision `base`."""
    files = list(changed_files(base) if files is None else files)
    result = Plan(base)
    for path in files:
        if path.startswith(EXECUTED):
            result.everything.append(path)
        elif not (path.startswith(RUNBOOKS) and path.endswith(".md")):
            result.prose.append(path)
    if result.everything:
        return result
    for path in (p for p in files if p.startswith(RUNBOOKS) and p.endswith(".md")):
        old_text = subprocess.run(
            ["git", "show", f"{base}:{path}"], cwd=project.current().root, capture_output=True, text=True
        ).stdout
        new_file = project.current().root / path
        old = parse_text(old_text, path) if old_text else None
        new = parse_text(new_file.read_text(), path) if new_file.is_file() else None
        found = diff_runbooks(old, new, path)
        if not found:
            result.prose.append(path)
        result.changes += found
    result.families = image_families()
    result.pairs = select(result.changes, module_parts(), result.families)
    result.first, result.first_note = likely_killers(result.changes, result.modules)
    return result


def likely_killers(changes: Iterable[BlockChange], modules: list[str]) -> tuple[dict[str, list[str]], str]:
    """Of `modules` (the plan's), for each step `changes` run, the one that killed most of its mutants, per its
    runbook's ledger (harness.kills.first_to_run), with its killing tests; and why there are none, if a ledger
    cannot be read. One module a step: each goes ahead on every image, so the order stays as close as it can to
    longest first, which keeps a passing change's gate short (bench --gate: 715-740 s with killers ahead,
    659-788 s without; single runs vary that much)."""
    steps: dict[str, set[str]] = {}
    for change in (c for c in changes if c.runs):
        steps.setdefault(change.runbook, set()).add(change.step)
    counted: dict[str, list[str]] = {}
    for runbook, changed in steps.items():
        try:
            verdicts = list(read_ledger(ledger_path(project.current().root / runbook)).values())
        except UnreadableLedger as exc:
            return {}, str(exc)
        for step in sorted(changed):
            top = next(iter(first_to_run(verdicts, [step], modules).items()), None)
            if top is not None:
                tests = counted.setdefault(top[0], [])
                tests += [test for test in top[1] if test not in tests]
    return counted, ""


def select(
    changes: Iterable[BlockChange],
    modules: dict[str, tuple[str, tuple[str, ...]]],
    families: dict[str, str],
) -> dict[tuple[str, str], list[str]]:
    """(module, image) -> why: the modules that run a changed block's part of its runbook, on the
    images of the block's OS families."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for change in (c for c in changes if c.runs):
        for module, (runbook, parts) in modules.items():
            if runbook != change.runbook or change.part not in parts:
                continue
            for image, family in families.items():
                if family in change.families:
                    reason = f"{change.how} {change.step} ({change.runbook}:{change.line}, part {change.part})"
                    pairs.setdefault((module, image), []).append(reason)
    return pairs


# xdist workers for our 2-core machine: bring-ups mostly wait (pg_ctlcluster's 0.5 s polls, boots), so
# more workers than cores; the README's command measured -n 4 736 s, -n 6 575 s, -n 8 602 s.
WORKERS = "6"
# The README's test command (and .ci/run's), which "everything" means.
EVERYTHING = ["-n", WORKERS, "--dist", "loadgroup", "--image", "all", "--backend", "docker", "--backend", "ssh"]
# ... with its install step, as a newcomer types it (.ci/run runs this line of the README verbatim)
TEST_INSTALL = "pip install -e '.[test]'"
README_TEST_COMMAND = f"{TEST_INSTALL} && python -m pytest {' '.join(EVERYTHING)}"


# For a pytest run of the static gate and scenario modules only (the gate's, mutate's): no hypothesis plugin,
# which none of them uses and which imports hypothesis at every session's end (0.9 s by -X importtime; a
# comment-only gate took 9.6 s instead of 11.4 s, medians of 10 paired runs). tests/test_properties.py, in
# the README's command, keeps it.
WITHOUT_HYPOTHESIS = ("-p", "no:hypothesispytest")


def pytest_argv(chosen: Plan, *, artifacts: str) -> list[str]:
    """pytest's arguments for the plan: JUnit (xunit2) and the summary into `artifacts`."""
    report = [f"--junit-xml={artifacts}/junit.xml", "-o", "junit_family=xunit2", f"--artifacts={artifacts}"]
    if chosen.everything:
        return [*EVERYTHING, *report]
    report += WITHOUT_HYPOTHESIS
    if not chosen.pairs:
        return [STATIC_GATE, f"--gate-base={chosen.base}", *report]
    images = [arg for image in chosen.images for arg in ("--image", image)]
    selection = [STATIC_GATE, *chosen.modules, f"--gate-base={chosen.base}"]
    return [*selection, "-n", WORKERS, "--dist", "loadgroup", "--backend", "docker", *images, *report]
