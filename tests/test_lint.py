"""The code is ruff clean, and .ci/run runs the README's test command as written (no extra install)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness import project
from harness.gate import README_TEST_COMMAND, TEST_INSTALL


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=project.current().root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_has_one_test_command_and_ci_runs_that_line_and_installs_nothing_else():
    readme = (project.current().root / "README.md").read_text()
    ci = (project.current().root / ".ci" / "run").read_text()
    found = re.findall(r"^    pip install .* && python -m pytest .*$", readme, flags=re.M)
    assert found == [f"    {README_TEST_COMMAND}"]
    extracted = re.search(r"grep -E '(.*)' README.md", ci)
    assert extracted and [line for line in readme.splitlines() if re.search(extracted.group(1), line)] == found
    installs = [line for line in ci.splitlines() if re.match(r"\s*(\S*/)?pip3? install\b", line)]
    assert installs == ["pip install -q --upgrade pip"], "only the README's command may install the project"
    assert TEST_INSTALL in found[0]
