"""Run a runbook's blocks on the hosts they name, in order, stopping at the first failure.

Code that must act around a step (save a snapshot, start a probe before the promotion) does
so through hooks: a `StepHook` for every run of an executor, or `before`/`after` callables for
one run. Nothing else calls into the executor.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.hosts.base import Host, HostError, Result
from harness.runbook.parse import Block, Runbook, RunbookError
from harness.runbook.render import script
from harness.secrets import redact

STEP_TIMEOUT = 600.0


@dataclass
class StepRecord:
    step: str
    host: str
    seconds: float
    outcome: str  # ok | failed | a hook's Skip outcome (reused)
    note: str = ""


@dataclass
class Transcript:
    records: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def steps(self) -> list[str]:
        return [r.step for r in self.records]

    def render(self) -> str:
        width = max((len(r.step) for r in self.records), default=4)
        lines = [f"{'step':<{width}}  {'host':<9}  {'seconds':>7}  outcome"]
        for r in self.records:
            lines.append(
                f"{r.step:<{width}}  {r.host:<9}  {r.seconds:7.2f}  {r.outcome}{'  ' + r.note if r.note else ''}"
            )
        lines += [f"note: {n}" for n in self.notes]
        return redact("\n".join(lines))


@dataclass(frozen=True)
class Skip:
    """A hook's verdict that a step is not run here, and what the transcript says instead."""

    outcome: str  # e.g. "reused"
    note: str = ""


class StepHook:
    """Code that acts around every step an executor runs, and once a pair's setup is complete (a
    lifecycle policy: save the set-up state). Each method does nothing unless a subclass says."""

    def before(self, block: Block) -> Skip | None:
        """Called before `block` runs; a Skip records the step without running it."""
        return None

    def after(self, block: Block, result: Result) -> None:
        """Called after `block` succeeded."""
        return None

    def set_up(self, pair: Any) -> None:
        """Called once the pair (harness.pair.ReplicationPair) is set up and streams."""
        return None


Before = Callable[[Block], None]
After = Callable[[Block, Result], None]


class StepFailed(HarnessError):
    """A runbook step failed; the message names the step, the host, the line and what to fix."""

    def __init__(
        self,
        block: Block,
        where: str,
        host: Host,
        command: str,
        result: Result | None,
        why: str,
        book: Runbook | None = None,
    ):
        self.block, self.host_name = block, host.name
        self.result = result  # what the step printed and its exit status (None: it never ran to an end)
        self.book = book  # the runbook the block is in (for reports pointing at its line)
        self.runbook = book.path if book is not None else None
        output = result.tail() if result is not None else ""
        super().__init__(
            redact(
                f"runbook step {block.step!r} failed on {host.name} ({host.url}): {why}\n"
                f"  block: {where} (section: {block.heading})\n"
                f"--- command ---\n{command.rstrip()}\n"
                f"--- last output ---\n{output}\n"
                f"fix: correct the block at {where}, or the earlier step that should have prepared this one"
            )
        )


def without_stdin(script: str) -> str:
    """`script` as one `{ ... } </dev/null` group: bash reads the whole group before running it,
    so a command of the block that reads stdin (cat, read, psql) cannot swallow the lines after it.
    The script must be complete on its own (`standalone`): a stray `}` in it would end the group early.
    The group opens with `:`, so a block with no command left (every line deleted or a comment, as a
    mutant makes it) runs as nothing and succeeds, as in a terminal, instead of failing on bash's
    syntax (an empty group): its verdict is then the scenarios', not the harness's. The group's status
    is still its last command's."""
    return f"{{ :\n{script.rstrip()}\n}} </dev/null\n"


def standalone(script: str, where: str) -> None:
    """Raise RunbookError unless bash parses `script` on its own, to the end: only then can no line of it
    end the `without_stdin` group early (`}` then `cat` read the rest of the block as data, and the step
    was green). The script goes on stdin, never in argv (it holds the live password)."""
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-n"], input=script, text=True, capture_output=True, timeout=30
    )
    if done.returncode != 0 or "delimited by end-of-file" in done.stderr:
        raise RunbookError(
            redact(
                f"{where}: the block is not a complete script on its own (bash -n: {done.stderr.strip()}); "
                "a stray `}` or an unclosed here-document would end the harness's stdin guard early: fix the block"
            )
        )


class Executor:
    """Executes blocks: each on the host it names, rendered with the live values."""

    def __init__(
        self,
        runbook: Runbook,
        hosts: Mapping[str, Host],
        values: Mapping[str, str],
        *,
        log: Callable[[str], None] = lambda line: None,
        hooks: Sequence[StepHook] = (),
    ):
        self.runbook, self.hosts, self.values, self.log = runbook, hosts, values, log
        self.hooks = hooks
        self.transcript = Transcript()

    def run(self, blocks: Iterable[Block], *, before: Before | None = None, after: After | None = None) -> Transcript:
        """Run `blocks` in order; the hooks, then `before`/`after`, are called around each step."""
        for block in blocks:
            skip = next((s for s in (hook.before(block) for hook in self.hooks) if s is not None), None)
            if skip is not None:
                self._note_alternatives(block)
                self._record(block, self.hosts[block.host], time.monotonic(), skip.outcome, skip.note)
                continue
            if before is not None:
                before(block)
            result = self.run_block(block)
            for hook in self.hooks:
                hook.after(block, result)
            if after is not None:
                after(block, result)
        return self.transcript

    def note(self, text: str) -> None:
        self.transcript.notes.append(text)
        self.log(redact(f"note: {text}"))

    def run_block(self, block: Block) -> Result:
        host = self.hosts[block.host]
        where = block.where(self.runbook.path)
        command = script(block, self.runbook.bindings, self.values)
        standalone(command, f"{where}: step {block.step}")
        self._note_alternatives(block)
        started = time.monotonic()
        try:
            result = host.run(without_stdin(command), timeout=STEP_TIMEOUT, check=False)
        except HostError as exc:
            self._record(block, host, started, "failed")
            raise StepFailed(block, where, host, command, None, str(exc), self.runbook) from exc
        if result.rc in (124, 137) and result.seconds >= STEP_TIMEOUT:  # coreutils timeout's TERM / KILL
            self._record(block, host, started, "failed", "timed out")
            raise StepFailed(block, where, host, command, result, f"timed out after {STEP_TIMEOUT:.0f} s", self.runbook)
        if not result.ok:
            self._record(block, host, started, "failed", f"exit {result.rc}")
            raise StepFailed(block, where, host, command, result, f"exit code {result.rc}", self.runbook)
        if block.expect and not re.search(block.expect, result.stdout, re.M):
            self._record(block, host, started, "failed", "output mismatch")
            why = f"output does not match expected /{block.expect}/"
            raise StepFailed(block, where, host, command, result, why, self.runbook)
        self._record(block, host, started, "ok")
        return result

    def _note_alternatives(self, block: Block) -> None:
        """A deviation the user must see: this host ran another variant than the source's."""
        skipped = self.runbook.alternatives(block)
        if skipped:
            self.note(
                f"step {block.step} on {block.host}: ran variant {block.variant!r}, not {', '.join(skipped)}"
                " (the image's package_source)"
            )

    def _record(self, block: Block, host: Host, started: float, outcome: str, note: str = "") -> None:
        record = StepRecord(block.step, host.name, time.monotonic() - started, outcome, note)
        self.transcript.records.append(record)
        self.log(redact(f"{record.step:<28} {record.host:<9} {record.seconds:6.2f}s {record.outcome} {note}".rstrip()))
