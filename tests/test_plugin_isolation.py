"""Installing pgrepl-harness changes no other project's test run: its pytest plugin is loaded by a
project's conftest.py, never by an entry point. An unrelated project (its own `target` fixture, a
failing assert, a SIGTERM handler check, four sleeping tests on two xdist workers) runs the same in
this environment as with every entry-point plugin but xdist left out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path

import pytest

UNRELATED = {
    "pytest.ini": "[pytest]\n",
    "conftest.py": ("import pytest\n\n@pytest.fixture\ndef target():\n    return 'https://example.invalid/'\n"),
    "test_unrelated.py": (
        "import os, signal, time\n"
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(4))\n"
        "def test_sleeps(n):\n"
        "    with open('workers.txt', 'a') as out:\n"
        "        out.write(os.environ.get('PYTEST_XDIST_WORKER', '-') + '\\n')\n"
        "    time.sleep(1.5)  # the work itself: how xdist spreads it is what is compared\n\n"
        "def test_url(target):\n"
        "    assert target.startswith('https://')\n\n"
        "def test_fail():\n"
        "    assert 1 == 2\n\n"
        "def test_sigterm_handler_is_untouched():\n"
        "    handler = signal.getsignal(signal.SIGTERM)\n"
        "    with open('sigterm.txt', 'w') as out:\n"
        "        out.write(getattr(handler, '__module__', None) or repr(handler))\n"
        "    assert not (getattr(handler, '__module__', None) or '').startswith('harness')\n"
    ),
}
# written by the runs themselves (JUnit, the tests' own records); anything else would be the plugin's
OWN_FILES = {"junit.xml", "workers.txt", "sigterm.txt"}


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if "__pycache__" not in p.parts}


def start(directory: Path, env: dict[str, str], *plugins: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "--junit-xml=junit.xml", *plugins]
    return subprocess.Popen(argv, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def outcome(directory: Path, output: str) -> dict:
    cases = {}
    for case in ET.parse(directory / "junit.xml").iter("testcase"):
        failure = case.find("failure")
        cases[case.get("name")] = "passed" if failure is None else f"failed: {failure.get('message')}"
    return {
        "cases": cases,
        "summary": [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))],
        "sections": re.findall(r"^=+ (.+?) =+$", output, flags=re.M)[:-1],  # the last one is the timing line
        "workers": Counter((directory / "workers.txt").read_text().split()),
        "sigterm": (directory / "sigterm.txt").read_text(),
        "files": files(directory) - set(UNRELATED) - OWN_FILES,
    }


def test_no_pytest11_entry_point_is_installed_by_the_harness():
    assert not [ep for ep in entry_points(group="pytest11") if ep.value.startswith("harness")]


def test_an_unrelated_project_runs_as_if_the_harness_were_not_installed(tmp_path):
    runs = {}
    for name in ("with", "without"):
        (tmp_path / name).mkdir()
        for file, text in UNRELATED.items():
            (tmp_path / name / file).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PGREPL_"))}
    bare = {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    started = {
        "with": start(tmp_path / "with", env),  # this environment as it is: the harness installed
        "without": start(tmp_path / "without", bare, "-p", "xdist.plugin", "-p", "xdist.looponfail"),
    }
    for name, process in started.items():
        output, _ = process.communicate(timeout=60)
        assert process.returncode == pytest.ExitCode.TESTS_FAILED, output
        runs[name] = outcome(tmp_path / name, output)
    with_harness, without = runs["with"], runs["without"]
    assert with_harness == without
    assert with_harness["cases"]["test_url"] == "passed"  # the project's own `target`, not parametrised
    assert with_harness["cases"]["test_fail"] == "failed: assert 1 == 2"
    assert with_harness["summary"] == ["FAILED test_unrelated.py::test_fail - assert 1 == 2"]
    assert with_harness["workers"] == Counter({"gw0": 2, "gw1": 2})
    assert "images" not in with_harness["sections"] and not with_harness["files"]
