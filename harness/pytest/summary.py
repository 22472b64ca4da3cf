"""The artifacts folder of a run: its figures emptied at the start; at the end, the gate's plan again,
which targets ran and which did not (and why), and the Markdown summary (harness.ci_report.summary)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.ci_report import STEPS_PROPERTY, decode_steps, merge_steps, summary, write_summary
from harness.gate import Plan
from harness.images import ImageProfile
from harness.pytest import options
from harness.pytest.fixtures import Pairs
from harness.pytest.reporting import REUSE_PROPERTY
from harness.pytest.selection import TARGET_PROPERTY
from harness.targets import Target

OUTCOMES = ("passed", "failed", "error", "skipped")


class Summary:
    """Registered as `pgrepl-summary` in a run of the project."""

    def __init__(self, config: pytest.Config, targets: list[Target], gate: Plan | None, pairs: Pairs):
        self.config, self.targets, self.gate, self.pairs = config, targets, gate, pairs

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """The run's figures start empty: the controller (or a run without xdist) removes the last run's."""
        if not hasattr(self.config, "workerinput"):
            shutil.rmtree(options.figures_dir(self.config), ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.gate is not None:
            terminalreporter.section("gate plan")
            for line in self.gate.render().splitlines():
                terminalreporter.line(line)
        ran: dict[str, int] = {}
        skipped: dict[str, str] = {}
        for outcome in OUTCOMES:
            for report in terminalreporter.stats.get(outcome, []):
                target = dict(getattr(report, "user_properties", ())).get(TARGET_PROPERTY)
                if target and outcome == "skipped" and isinstance(report.longrepr, tuple):
                    skipped.setdefault(target, report.longrepr[2].removeprefix("Skipped: "))
                elif target and outcome != "skipped":
                    ran[target] = ran.get(target, 0) + 1
        if not ran and not skipped:
            return
        terminalreporter.section("images")
        for target in sorted(set(ran) | set(skipped)):
            if target in ran:
                terminalreporter.line(f"ran      {target}: {ran[target]} tests")
            else:
                terminalreporter.line(f"skipped  {target}: {skipped[target]}")
        if not hasattr(self.config, "workerinput"):
            written = self._write(terminalreporter, {t: r for t, r in skipped.items() if t not in ran})
            terminalreporter.line(f"summary (step x image matrix, failures): {written}")

    def _write(self, terminalreporter: Any, skipped_targets: dict[str, str]) -> Path:
        """The Markdown summary of the run, from every test's report."""
        results: dict[str, dict[str, int]] = {}
        steps: dict[str, dict[str, str]] = {}
        reuse: dict[str, dict[str, str]] = {}
        failures = []
        for outcome in OUTCOMES:
            for report in terminalreporter.stats.get(outcome, []):
                props = dict(getattr(report, "user_properties", ()))
                target = props.get(TARGET_PROPERTY)
                if not target or (outcome == "passed" and report.when != "call"):
                    continue
                counted = "failed" if outcome == "error" else outcome
                results.setdefault(target, {}).setdefault(counted, 0)
                results[target][counted] += 1
                merge_steps(steps.setdefault(target, {}), decode_steps(props.get(STEPS_PROPERTY, "")))
                if props.get(REUSE_PROPERTY):  # the module's latest count wins (pairs are made as it goes)
                    reuse.setdefault(target, {})[report.nodeid.split("::")[0]] = props[REUSE_PROPERTY]
                if counted == "failed":
                    failures.append({"test": report.nodeid, "target": target, "message": str(report.longrepr), **props})
        families = {t.label: ImageProfile.load(t.image).family for t in self.targets if t.image is not None}
        plan = self.gate.render() if self.gate else None
        runbook = self.pairs.session_runbook()
        text = summary(runbook, families, results, skipped_targets, steps, failures, plan, reuse)
        return write_summary(text, options.artifacts_dir(self.config))
