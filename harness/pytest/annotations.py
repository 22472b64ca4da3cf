"""On GitHub Actions, a failed runbook step becomes an error annotation on its runbook line."""

from __future__ import annotations

import os

import pytest

from harness.ci_report import annotations


class Annotations:
    """Registered as `pgrepl-annotations` on GitHub Actions only."""

    def __init__(self) -> None:
        self.seen: set[str] = set()  # runbook line and title: one broken step fails many tests

    @staticmethod
    def wanted() -> bool:
        return os.environ.get("GITHUB_ACTIONS") == "true"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.failed:
            return
        text = str(report.longrepr or "")
        lines = [line for line in annotations(dict(report.user_properties), report.nodeid, text) if self._first(line)]
        if lines:  # GitHub reads a command only at the start of a line: not after the progress dots
            print("\n" + "\n".join(lines), flush=True)

    def _first(self, annotation: str) -> bool:
        """Whether this runbook line and title were not annotated yet."""
        key = annotation.split("::", 2)[1]
        if key in self.seen:
            return False
        self.seen.add(key)
        return True
