"""Cleanup by labels: a killed run's resources go, a kept cluster and another owner's never do."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from harness.errors import NoDockerEngine
from harness.labels import OWNER_LABEL, PID_LABEL, RUN_LABEL, resource_labels


@pytest.fixture
def client():
    from harness.hosts.docker import docker_client

    try:
        return docker_client()
    except NoDockerEngine as exc:
        pytest.skip(str(exc).splitlines()[0])


def test_orphans_are_judged_only_among_this_owner_s_unkept_runs(client):
    from harness.hosts.docker import remove_orphans, remove_resources

    dead = subprocess.Popen(["true"])
    dead.wait()  # its PID is now free: the run that "owned" it was killed
    tag = uuid.uuid4().hex[:6]
    runs = {
        "killed": resource_labels(f"killed-{tag}") | {PID_LABEL: str(dead.pid)},
        "kept": resource_labels(f"kept-{tag}", kept=True) | {PID_LABEL: str(dead.pid)},
        "elsewhere": resource_labels(f"elsewhere-{tag}") | {PID_LABEL: str(dead.pid), OWNER_LABEL: "ci-9/0/pid:[1]"},
        "alive": resource_labels(f"alive-{tag}"),
    }
    for name, labels in runs.items():
        client.networks.create(f"pgrepl-test-{name}-{tag}", labels=labels)
    try:
        remove_orphans(client)
        left = {n.name for n in client.networks.list(names=["pgrepl-test-"])}
        assert f"pgrepl-test-killed-{tag}" not in left
        assert {f"pgrepl-test-{name}-{tag}" for name in ("kept", "elsewhere", "alive")} <= left
        remove_orphans(client, kept_too=True)  # what `down` does: kept clusters go too, live runs stay
        left = {n.name for n in client.networks.list(names=["pgrepl-test-"])}
        assert f"pgrepl-test-kept-{tag}" not in left
        assert {f"pgrepl-test-{name}-{tag}" for name in ("elsewhere", "alive")} <= left
    finally:
        for labels in runs.values():
            remove_resources({RUN_LABEL: labels[RUN_LABEL]}, client=client)
