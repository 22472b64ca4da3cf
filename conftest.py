"""This project's tests run with the harness's pytest plugin: loaded here, not by an entry point,
so that installing pgrepl-harness changes no other project's test runs (harness/pytest/plugin.py)."""

import pytest

from harness import project

pytest_plugins = ["harness.pytest.plugin", "pytester"]
# what a project's conftest.py holds to run its tests with the harness
PLUGIN_CONFTEST = 'pytest_plugins = ["harness.pytest.plugin"]\n'


@pytest.fixture
def harnessed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester directory whose tests run with the plugin, as a project's do (its runbooks and
    images are this checkout's: harness.project falls back to it). An in-process run chooses its
    project: this process's is restored afterwards."""
    pytester.makeconftest(PLUGIN_CONFTEST)
    monkeypatch.setattr(project, "_current", project.current())
    return pytester
