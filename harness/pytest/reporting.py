"""What each test's report carries: redacted text, a harness failure as its own message, and for
scenarios the runbook steps run, where a failure is in the runbook, and the evidence folder.

Redaction keeps the report's longrepr what pytest made it (a ExceptionChainRepr stays one: its
colours, its `AssertionError: ...` crash line for the short summary and JUnit's message); only the
strings inside are masked.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from harness.ci_report import (
    CHANGE_PROPERTY,
    STEPS_PROPERTY,
    change_property,
    collect_evidence,
    encode_steps,
    failure_properties,
    places,
    relative,
    safe_name,
)
from harness.ci_report import step_outcomes as steps_of
from harness.errors import HarnessError
from harness.gate import Plan
from harness.hosts.docker import answering_engine, engine_silent
from harness.pytest import options
from harness.pytest.fixtures import ModuleKey, Pairs, module_key
from harness.pytest.session import Session
from harness.runbook import StepFailed
from harness.runstate import RESTORED_NOTE
from harness.secrets import redact, redact_sections

# "restored/made": how many of a module's pairs started from the run's set-up state
REUSE_PROPERTY = "pgrepl_reused_setup"
KEPT_SECTION = "kept hosts (--keep-on-failure; removed by `pgrepl-harness down`)"


def redacted(value: Any) -> Any:
    """`value` with every string in it redacted, in place where it is a pytest repr (a dataclass:
    ExceptionChainRepr, ReprTraceback, ReprEntry, ReprFileLocation, ...), so its type stays."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple | list):
        return type(value)(redacted(part) for part in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            object.__setattr__(value, field.name, redacted(getattr(value, field.name)))
    return value


def harness_message(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
    """A HarnessError's report: where in the test, then its message (what and how to fix), without
    the traceback through the harness; its crash line (short summary, JUnit) is `Type: message`."""
    entry = next((e for e in reversed(excinfo.traceback) if e.path == item.path), None)
    where = f"{item.path.name}:{entry.lineno + 1}: " if entry is not None else ""
    longrepr = excinfo.getrepr(style="value", chain=False)  # one entry: the message's lines
    shown = longrepr.reprtraceback.reprentries[-1]
    shown.lines = [f"{where}{excinfo.typename}: {excinfo.value!s}"]
    if longrepr.reprcrash is not None:
        longrepr.reprcrash.message = f"{excinfo.typename}: {excinfo.value}"
    return longrepr


def lost_first(longrepr: Any, lost: str) -> Any:
    """The report says first that hosts were lost (whatever then failed), keeping its type."""
    title = "hosts lost during the test:"
    entries = getattr(getattr(longrepr, "reprtraceback", None), "reprentries", None)
    if not entries:
        return f"{title}\n{lost}\n\n{longrepr}"
    first = entries[0]
    lines = [title, *lost.splitlines(), ""]
    if first.style == "native":  # ReprEntryNative writes its lines as they are
        note = dataclasses.replace(first, lines=[line + "\n" for line in lines])
    else:
        note = dataclasses.replace(first, lines=lines, reprfuncargs=None, reprlocals=None, reprfileloc=None)
        note.style = "value"
    longrepr.reprtraceback.reprentries = [note, *entries]
    if longrepr.reprcrash is not None:
        longrepr.reprcrash.message = f"{title} {'; '.join(lost.splitlines())}; {longrepr.reprcrash.message}"
    return longrepr


class Reporting:
    """Registered as `pgrepl-reporting` in a run of the project."""

    def __init__(self, config: pytest.Config, pairs: Pairs, session: Session, gate: Plan | None = None):
        self.config, self.pairs, self.session, self.gate = config, pairs, session, gate
        self.evidence: set[ModuleKey] = set()  # collected once per module and target

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
        """Every report goes through redaction, so no generated secret reaches it."""
        report: pytest.TestReport = yield
        report.sections = redact_sections(report.sections)
        excinfo = call.excinfo
        self._report_runbook(item, report, excinfo)
        if report.failed and excinfo is not None and isinstance(excinfo.value, HarnessError):
            report.longrepr = harness_message(item, excinfo)
        if report.failed and (lost := self._hosts_lost(item)):  # whatever failed, say first what was lost
            report.longrepr = lost_first(report.longrepr, lost)
        report.longrepr = redacted(report.longrepr)
        return report

    def _report_runbook(self, item: pytest.Item, report: pytest.TestReport, excinfo: Any) -> None:
        """On the report: which runbook steps this module's pairs ran (for the step x image matrix);
        for a failure, the runbook's file, line and step, and the evidence folder (and kept hosts)."""
        key = module_key(item)
        made = self.pairs.made.get(key, [])
        if not made and not report.failed:  # unit tests, setup and teardown of passing ones: nothing to add
            return
        added: list[tuple[str, str]] = []
        if report.when == "call" and made:
            runs = [(m.pair, m.unmodified) for m in made]
            added.append((STEPS_PROPERTY, encode_steps(steps_of(runs, self.pairs.session_runbook()))))
            restored = sum(RESTORED_NOTE in m.pair.transcript.notes for m in made)
            added.append((REUSE_PROPERTY, f"{restored}/{len(made)}"))
        if report.failed:
            if excinfo is not None:
                added += failure_properties(excinfo.value)
            if self.gate is not None:
                error = excinfo.value if excinfo is not None else None
                step = error.block.step if isinstance(error, StepFailed) else None
                target = getattr(getattr(item, "callspec", None), "params", {}).get("target")
                added += change_property(self.gate.changes_behind(step, getattr(target, "image", None)))
            if made:
                folder = options.artifacts_dir(self.config) / "evidence" / safe_name(f"{key[0]}-{key[1]}")
                if key not in self.evidence:  # a failed module fixture fails every test of the module: once
                    self.evidence.add(key)
                    collect_evidence([(m.pair, m.live) for m in made], folder)
                added.append(("evidence", relative(folder)))
                if self.pairs.keep_on_failure:
                    self.pairs.kept.add(key)
                    logins = [f"{h.name}: {h.login_command}" for m in made for h in m.pair.hosts.values()]
                    report.sections.append((KEPT_SECTION, "\n".join(logins)))
        if added:
            report.user_properties = [*report.user_properties, *added]
            item.user_properties += added  # JUnit takes a test's properties from its last (teardown) report

    def _hosts_lost(self, item: pytest.Item) -> str:
        """Why hosts of this module's live pairs are gone (a stopped container, an engine that does
        not answer): one line per host, empty when none is known to be lost. A session that uses the
        engine says so when it does not answer, even with no host yet (a bring-up that failed)."""
        made = self.pairs.made.get(module_key(item), [])
        hosts = [host for m in made if m.live for host in m.pair.hosts.values()]
        lost = [f"{host.name}: {why}" for host in hosts if (why := host.lost())]
        if not lost and self.session.engine_used and answering_engine() is None:
            lost.append(engine_silent())
        return "\n".join(lost)


class FirstFailure:
    """Registered as `pgrepl-first-failure` on the process that reports a gate run's scenarios (xdist's
    controller, or the only one): the moment a test fails, one line says which, after how long, and the runbook
    line it names - the gate's answer to a breaking change, while the run goes on for the rest (`-x` stops it)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.started = time.monotonic()
        self.said = False

    @staticmethod
    def wanted(config: pytest.Config) -> bool:
        return not hasattr(config, "workerinput")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.said or not report.failed:
            return
        self.said = True
        found = dict(report.user_properties)
        where = (
            f" (runbook {found['runbook_file']}:{found['runbook_line']}, step {found['runbook_step']})"
            if {"runbook_file", "runbook_line", "runbook_step"} <= found.keys()
            else ""
        )
        changed = ", ".join(f"{file}:{line} ({step})" for file, line, step in places(found.get(CHANGE_PROPERTY, "")))
        cause = next((f"{file}:{line} ({step})" for file, line, step in places(found.get("runbook_cause", ""))), "")
        line = (
            f"gate: first failure after {time.monotonic() - self.started:.0f} s: {report.nodeid}{where}"
            + (f"; likely cause: {cause}" if cause and cause not in changed else "")
            + (f"; changed in this diff: {changed}" if changed else "")
        )
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:  # on a line of its own: progress characters may precede it on the current one
            terminal.write("\n")
            terminal.write_line(line, red=True, bold=True)
