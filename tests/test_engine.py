"""docker_client starts an engine with harness/engine.sh only when it may; engine.sh is valid bash.

Nothing here installs or starts anything: pinging the engine and running the script are replaced.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import docker.errors
import pytest

from harness.errors import NoDockerEngine
from harness.hosts import docker as backend

SCRIPT = backend.engine_script()


class Engine:
    """Stands in for the engine: the first `down` pings fail, later ones answer."""

    def __init__(self, down: int):
        self.down = down
        self.pings = 0
        self.runs: list[str] = []

    def ping(self):
        self.pings += 1
        if self.pings <= self.down:
            raise docker.errors.DockerException("Error while fetching server API version")
        return "client"

    def run(self, script):
        self.runs.append(str(script))


@pytest.fixture
def engine(monkeypatch):
    """No engine answers (until engine.sh 'ran'); root, apt-get present, nothing opted out."""
    fake = Engine(down=1)
    monkeypatch.setattr(backend, "_ping", fake.ping)
    monkeypatch.setattr(backend, "_run_engine_script", fake.run)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv(backend.NO_INSTALL_VAR, raising=False)
    monkeypatch.setattr(backend.os, "geteuid", lambda: 0)
    monkeypatch.setattr(backend.shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


def message(exc: pytest.ExceptionInfo[NoDockerEngine]) -> list[str]:
    lines = str(exc.value).splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("no Docker engine answers at ")
    return lines


def test_with_docker_host_set_the_script_is_not_run(engine, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.9.8.7:2375")
    with pytest.raises(NoDockerEngine) as exc:
        backend.docker_client()
    assert engine.runs == [] and engine.pings == 1
    lines = message(exc)
    assert "tcp://10.9.8.7:2375" in lines[0] and "does not answer" in lines[1]


def test_not_root_the_script_is_not_run_and_the_message_says_how(engine, monkeypatch):
    monkeypatch.setattr(backend.os, "geteuid", lambda: 1000)
    with pytest.raises(NoDockerEngine) as exc:
        backend.docker_client()
    assert engine.runs == []
    lines = message(exc)
    assert backend.DEFAULT_ENGINE in lines[0]
    assert "administrator" in lines[1] and f"sudo bash {SCRIPT}" in lines[1]


def test_without_apt_get_the_script_is_not_run(engine, monkeypatch):
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    with pytest.raises(NoDockerEngine) as exc:
        backend.docker_client()
    assert engine.runs == [] and "dockerd" in message(exc)[1]


def test_opted_out_the_script_is_not_run(engine, monkeypatch):
    monkeypatch.setenv(backend.NO_INSTALL_VAR, "1")
    with pytest.raises(NoDockerEngine) as exc:
        backend.docker_client()
    assert engine.runs == [] and f"bash {SCRIPT}" in message(exc)[1]


def test_when_it_may_the_script_runs_once_and_the_engine_is_pinged_again(engine, capsys):
    assert backend.docker_client() == "client"
    assert engine.runs == [str(SCRIPT)] and engine.pings == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "no Docker engine answers: installing and starting one with harness/engine.sh "
        "(set PGREPL_NO_ENGINE_INSTALL=1 to stop this)"
    )


def test_when_the_script_does_not_start_one_the_message_says_so(engine):
    engine.down = 2
    with pytest.raises(NoDockerEngine) as exc:
        backend.docker_client()
    assert engine.runs == [str(SCRIPT)] and engine.pings == 2
    assert "did not start one" in message(exc)[1]


def test_an_answering_engine_needs_no_script(engine):
    engine.down = 0
    assert backend.docker_client() == "client"
    assert engine.runs == [] and engine.pings == 1


def test_the_script_ships_in_the_package_and_is_valid_bash():
    assert SCRIPT.is_file()
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_script_passes_shellcheck():
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def run_engine_script(tmp_path, lock) -> subprocess.CompletedProcess:
    """engine.sh with stubs first on PATH: an engine that answers, debootstrap and shellcheck present,
    `id` saying not root (no inotify limits touched). Only the lock is real."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in {"docker": "exit 0", "debootstrap": "exit 0", "shellcheck": "exit 0", "id": "echo 1000"}.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "PGREPL_ENGINE_LOCK": str(lock)}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(shutil.which("flock") is None, reason="no flock: the script takes no lock")
def test_the_lock_is_never_a_planted_link_followed_or_a_file_truncated(tmp_path):
    victim = tmp_path / "root-owned-file"
    victim.write_text("precious\n")
    link = tmp_path / "pgrepl-engine.lock"
    link.symlink_to(victim)
    done = run_engine_script(tmp_path, link)
    assert done.returncode == 1 and f"{link} is a symbolic link" in done.stderr, done.stderr
    assert victim.read_text() == "precious\n"

    fifo = tmp_path / "fifo.lock"
    os.mkfifo(fifo)
    done = run_engine_script(tmp_path, fifo)
    assert done.returncode == 1 and "not a regular file" in done.stderr

    existing = tmp_path / "existing.lock"
    existing.write_text("whatever was there\n")
    done = run_engine_script(tmp_path, existing)
    assert done.returncode == 0, done.stderr
    assert existing.read_text() == "whatever was there\n"  # opened, never truncated


def test_root_takes_its_lock_where_only_root_creates_names():
    text = SCRIPT.read_text()
    assert "/tmp/pgrepl-engine.lock" not in text and "default_lock=/run/pgrepl-engine.lock" in text


def test_a_process_asks_an_engine_its_api_version_once_then_names_it_to_each_new_client(monkeypatch):
    """A client made without a version asks GET /version, which dockerd answers by running two processes: the
    first client of an engine asks, later ones (docker.from_env, testcontainers') are given its answer."""
    from types import SimpleNamespace

    made: list[dict] = []

    def from_env(**kwargs):
        made.append(kwargs)
        return SimpleNamespace(api=SimpleNamespace(api_version=kwargs.get("version", "1.41")))

    monkeypatch.setattr(backend.docker, "from_env", from_env)
    monkeypatch.setattr(backend, "_API_VERSIONS", {})
    monkeypatch.setenv("DOCKER_HOST", "unix:///one.sock")
    backend.from_env()
    backend.from_env()
    assert "version" not in made[0] and made[1]["version"] == "1.41"
    assert backend.client_kwargs()["version"] == "1.41"
    monkeypatch.setenv("DOCKER_HOST", "unix:///another.sock")  # another engine is asked again
    assert "version" not in backend.client_kwargs()
    assert backend.client_kwargs()["environment"]["DOCKER_HOST"] == "unix:///another.sock"
