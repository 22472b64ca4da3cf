"""The CI template for users (.github/workflows/runbook-gate.yml): it parses, covers pull requests
and the nightly matrix, and every harness command it calls exists with the options it passes."""

from __future__ import annotations

import shlex
import subprocess
import sys

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
