"""The project (runbooks/, images/, scenarios/) is found as pytest finds its rootdir, whether the
harness is a checkout or an installed wheel; outside one, one line says what is needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import project
from harness.report import connection

CHECKOUT = project.current().root


def make_project(root: Path) -> Path:
    for marker in project.MARKERS:
        (root / marker).mkdir(parents=True)
    return root


def test_the_project_is_the_directory_or_the_nearest_parent_with_runbooks_and_images(tmp_path):
    root = make_project(tmp_path / "repo")
    (root / "scenarios" / "deep").mkdir(parents=True)
    assert project.find_root(root / "scenarios" / "deep") == root
    (tmp_path / "half" / "runbooks").mkdir(parents=True)  # runbooks/ alone is not a project
    assert project.find_root(tmp_path / "half") is None
    assert project.locate(root / "scenarios").root == root


def test_outside_a_project_one_line_says_what_is_needed(tmp_path):
    with pytest.raises(project.NoProject) as refused:
        project.locate(tmp_path, fallback=False)
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "runbooks/ and images/" in message and "--project DIR" in message and "--rootdir DIR" in message
    with pytest.raises(project.NoProject, match="--project /nonexistent: no such directory"):
        project.use("/nonexistent")


def test_up_json_names_the_hosts_and_how_to_get_in_without_a_secret():
    class Host:
        url, address, login_command = "docker://pgrepl-x-primary", "10.1.0.2", "docker exec -it x bash"
        os = type("Os", (), {"pretty_name": "Debian GNU/Linux 12 (bookworm)"})()

    pair = type("Pair", (), {})()
    pair.hosts = {"primary": Host(), "secondary": Host()}
    pair.runbook, pair.family, pair.pg_major = type("Book", (), {"path": "r.md"})(), "debian", 15
    pair.replication_password = "s3cret-replication"
    shown = json.loads(json.dumps(connection(pair, kept=True)))
    assert shown["hosts"]["primary"] == {
        "url": "docker://pgrepl-x-primary",
        "private_address": "10.1.0.2",
        "os": "Debian GNU/Linux 12 (bookworm)",
        "login": "docker exec -it x bash",
        "then": "sudo -u postgres psql",
    }
    assert shown["remove_with"] == "pgrepl-harness down" and "s3cret" not in json.dumps(shown)


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PGREPL_"))}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_wheel_install_finds_the_project_from_where_it_runs(tmp_path):
    """Built and installed as `pip install .` would (the dependencies are this environment's, seen
    through a .pth line, not installed again): no runbooks/ or images/ in the wheel, and none needed."""
    source = tmp_path / "source"  # a copy: building in the checkout would write build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(CHECKOUT / name, source / name)
    shutil.copytree(CHECKOUT / "harness", source / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)], tmp_path
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("pgrepl_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/pytest/plugin.py" in names and "harness/engine.sh" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Classifier: Framework :: Pytest" in metadata and "License-Expression: MIT" in metadata
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pytest11" not in entry_points

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path).returncode == 0
    python = venv / "bin" / "python"
    [site] = (venv / "lib").glob("python*/site-packages")
    (site / "dependencies.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], tmp_path
    )
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import harness; print(harness.__file__)"], elsewhere)
    assert where.stdout.startswith(str(site)), where
    version = run([str(python), "-m", "harness", "--version"], elsewhere)
    assert version.stdout.strip() == "pgrepl-harness 0.1.0"
    outside = run([str(python), "-m", "harness", "up"], elsewhere)
    assert outside.returncode == 1 and "Traceback" not in outside.stderr
    assert [line for line in outside.stderr.splitlines() if line.strip()] == [
        f"FAILED: no pgrepl-harness project at {elsewhere} or above: a project is a directory with runbooks/ and "
        "images/ (a checkout of pgrepl-harness, or your repository laid out like it); run from inside one, or name "
        "it (pgrepl-harness --project DIR, pytest --rootdir DIR)"
    ]
    helped = run([str(python), "-m", "pytest", "--help"], elsewhere)
    assert helped.returncode == 0 and "pgrepl" not in helped.stdout  # nothing of the harness outside a project
    listed = run([str(python), "-m", "harness", "--project", str(CHECKOUT), "mutate", "--list"], elsewhere)
    assert listed.returncode == 0 and "postgresql-primary-secondary.md:" in listed.stdout, listed.stderr

    mine = elsewhere / "my-runbooks"  # a user's repository: its own conftest.py loads the plugin
    (mine / "scenarios").mkdir(parents=True)
    for marker in ("runbooks", "images"):
        (mine / marker).symlink_to(CHECKOUT / marker)
    (mine / "conftest.py").write_text('pytest_plugins = ["harness.pytest.plugin"]\n')
    (mine / "pytest.ini").write_text("[pytest]\n")  # pytest's rootdir, from the subdirectory too
    (mine / "scenarios" / "test_mine.py").write_text("def test_it(target):\n    pass\n")
    collected = run([str(python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], mine / "scenarios")
    assert "test_mine.py::test_it[debian-12-docker]" in collected.stdout, collected.stdout + collected.stderr


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["plain", "quiet"])
def test_an_unknown_image_is_one_line_naming_where_images_are_looked_for(quiet):
    done = run([sys.executable, "-m", "harness", *quiet, "up", "--image", "debian-99", *quiet], CHECKOUT)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"FAILED: --image debian-99: no such image in {CHECKOUT / 'images'} "
        f"(known: {', '.join(project.current().image_names())})"
    ]
