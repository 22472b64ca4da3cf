"""The pytest plugin's wiring: its options, then its parts, each registered as an object only in
a run that uses it (as xdist registers its DSession only with -n); the fixtures as their module,
since pytest deprecates scoped fixtures that are methods of an object.

Loaded by the project's own conftest.py (`pytest_plugins = ["harness.pytest.plugin"]`), never by
an entry point: an environment where pgrepl-harness is installed runs other projects' tests as
if it were not. `pytest --help` works anywhere; any other run needs the project (runbooks/ and
images/ at pytest's rootdir or above, harness.project).
"""

from __future__ import annotations

import pytest

from harness import project
from harness.errors import HarnessError
from harness.gate import WORKERS, plan
from harness.pytest import fixtures, options
from harness.pytest.annotations import Annotations
from harness.pytest.fixtures import PAIRS, Pairs
from harness.pytest.reporting import FirstFailure, Reporting
from harness.pytest.scheduling import Scheduling
from harness.pytest.selection import Selection
from harness.pytest.session import Session
from harness.pytest.summary import Summary
from harness.targets import unwind_on_sigterm

MARKERS = (
    "parts(*names, runbook=FILE): the runbook parts a scenario module executes (and of which runbook)",
    "bringups(n): pairs a scenario module brings up (longest modules run first)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add(parser)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` in a run of the project: WORKERS (harness.gate), the count measured for our machines."""
    return int(WORKERS)


def pytest_configure(config: pytest.Config) -> None:
    """Find the project, check the options and build the target matrix once (a bad option stops the
    run at once, in one line), then register the parts."""
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if config.option.help:  # pytest --help lists the options, whatever the directory
        return
    try:
        project.choose(project.locate(config.rootpath))
        base = options.value(config, "--gate-base")
        gate = plan(base) if base else None
        targets = options.targets(config, gate)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    unwind_on_sigterm()
    register = config.pluginmanager.register
    session = Session(config)
    pairs = config.stash[PAIRS] = Pairs(config, session)
    register(session, "pgrepl-session")
    register(Selection(targets, gate, reverse=bool(options.value(config, "--pgrepl-reverse"))), "pgrepl-selection")
    register(fixtures, "pgrepl-fixtures")  # a module: its module- and session-scoped fixtures
    register(Reporting(config, pairs, session, gate), "pgrepl-reporting")
    register(Summary(config, targets, gate, pairs), "pgrepl-summary")
    if gate is not None and gate.pairs and FirstFailure.wanted(config):
        register(FirstFailure(config), "pgrepl-first-failure")
    if Annotations.wanted():
        register(Annotations(), "pgrepl-annotations")
    if Scheduling.wanted(config):
        register(Scheduling(targets), "pgrepl-scheduling")
