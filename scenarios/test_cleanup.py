"""Cleanup by labels: a killed run's resources go, a kept pair and another owner's never do."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from harness.errors import NoDockerEngine
from harness.labels import LABEL, OWNER_LABEL, PID_LABEL, RUN_LABEL, resource_labels

pytest_plugins = ["pytester"]


@pytest.fixture
def client():
    from harness.hosts.docker import docker_client

    try:
        return docker_client()
    except NoDockerEngine as exc:
        pytest.skip(str(exc).splitlines()[0])


def test_orphans_are_judged_only_among_this_owner_s_unkept_runs(client):
    from harness.hosts.docker import label_filter, listed, remove_orphans, remove_resources

    dead = subprocess.Popen(["true"])
    dead.wait()  # its PID is now free: the run that "owned" it was killed
    tag = uuid.uuid4().hex[:6]
    # an owner of this test's own: the sweeps of other workers on this engine (owner()) never judge
    # these networks, so what is left is this test's verdict alone
    me = f"test-{tag}/0/pid:[0]"
    runs = {
        "killed": resource_labels(f"killed-{tag}") | {PID_LABEL: str(dead.pid), OWNER_LABEL: me},
        "kept": resource_labels(f"kept-{tag}", kept=True) | {PID_LABEL: str(dead.pid), OWNER_LABEL: me},
        "elsewhere": resource_labels(f"elsewhere-{tag}") | {PID_LABEL: str(dead.pid), OWNER_LABEL: f"other-{tag}"},
        "alive": resource_labels(f"alive-{tag}") | {OWNER_LABEL: me},
    }
    for name, labels in runs.items():
        client.networks.create(f"pgrepl-test-{name}-{tag}", labels=labels)

    def left() -> set[str]:
        return {n.name for n in listed(client, "networks", label_filter(RUN_LABEL)) if n.name.endswith(tag)}

    try:
        remove_orphans(client, owner_id=me)
        assert f"pgrepl-test-killed-{tag}" not in left()
        assert {f"pgrepl-test-{name}-{tag}" for name in ("kept", "elsewhere", "alive")} <= left()
        remove_orphans(client, kept_too=True, owner_id=me)  # what `down` does: kept pairs go too, live runs stay
        left_now = left()
        assert f"pgrepl-test-kept-{tag}" not in left_now
        assert {f"pgrepl-test-{name}-{tag}" for name in ("elsewhere", "alive")} <= left_now
    finally:
        for labels in runs.values():
            remove_resources({RUN_LABEL: labels[RUN_LABEL]}, client=client)


CRASHING_SESSION = """
import os

import docker

from harness.labels import LABEL, SETUP_STATE_KIND, resource_labels


def test_makes_a_network_and_a_set_up_state_then_its_worker_dies():
    client = docker.from_env()
    labels = resource_labels("crash-TAG")
    client.networks.create("pgrepl-test-crash-TAG", labels=labels)
    # a set-up state image as harness.runstate commits one (it would hold the run's secrets)
    container = client.containers.create("BASE", command="true", labels=labels)
    changes = [f"LABEL {LABEL}={SETUP_STATE_KIND}"] + [f"LABEL {k}={v}" for k, v in labels.items() if k != LABEL]
    container.commit(repository="pgrepl-test-crash", tag="TAG", changes=changes)
    container.remove()
    os.kill(os.getpid(), 9)  # the worker dies: no fixture, no atexit, no session end of its own


def test_the_other_worker_goes_on():
    pass
"""


def test_a_crashed_worker_leaves_nothing_once_its_session_ends(client, harnessed):
    """kill -9 of an xdist worker: its test fails, the other worker finishes, and the session's end
    removes the dead worker's network and set-up state image (the controller's clean-up)."""
    from harness.hosts.docker import label_filter, listed
    from harness.images import ImageProfile
    from harness.targets import DEFAULT_IMAGE

    tag = uuid.uuid4().hex[:6]
    base = ImageProfile.load(DEFAULT_IMAGE).base
    harnessed.makepyfile(
        test_crash=CRASHING_SESSION.replace("TAG", tag).replace("BASE", base),
        test_other="def test_the_other_worker_goes_on():\n    pass\n",
    )
    result = harnessed.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*crashed while running*test_makes_a_network*", "*1 failed, * passed*"])
    assert not [n.name for n in listed(client, "networks", label_filter(RUN_LABEL)) if n.name.endswith(tag)]
    assert not [i.name for i in listed(client, "images", label_filter(LABEL)) if f"pgrepl-test-crash:{tag}" in i.name]


def test_step_snapshots_beyond_the_budget_go_least_recently_used_first(client, monkeypatch):
    """The bound on step snapshots (harness.snapshots): beyond the budget the least recently used go,
    and a host starting from one (touch_image) makes it the most recently used. Negative control: the
    same snapshots untouched, and the newest made stays instead. Another owner's, and one a container
    still uses, always stay."""
    from harness import snapshots
    from harness.hosts.docker import inspected_images, remove_image, touch_image
    from harness.images import tar_context
    from harness.labels import SNAPSHOT_KIND

    tag = uuid.uuid4().hex[:6]
    me, other = f"test-{tag}/0/pid:[0]", f"other-{tag}/0/pid:[0]"
    repository = f"pgrepl-test-snapshot-{tag}"
    monkeypatch.setattr(snapshots, "RECENTLY_USED", 0.0)  # else nothing made just now may go
    made: list[str] = []

    def make(name: str, owner: str = me) -> str:
        labels = [f"LABEL {LABEL}={SNAPSHOT_KIND}", f"LABEL {OWNER_LABEL}={owner}"]
        root = tar_context({"payload": b"x" * 1000}).getvalue()
        client.api.import_image_from_data(root, repository=repository, tag=name, changes=labels)
        made.append(f"{repository}:{name}")
        return made[-1]

    def left() -> set[str]:
        return {t.rpartition(":")[2] for i in inspected_images(client, made).values() for t in i["RepoTags"]}

    def one_fits() -> None:
        monkeypatch.setenv(snapshots.BUDGET_VAR, str(client.api.inspect_image(made[0])["Size"] + 100))

    containers = []
    try:
        for name in ("a", "b", "c"):
            make(name)
        make("theirs", owner=other)
        one_fits()
        assert snapshots.remove_unused_snapshots(client, owner_id=me, log=lambda line: None) == 2
        assert left() == {"c", "theirs"}, "untouched, the newest made is the most recently used"

        first = make("restored")
        for name in ("d", "e"):
            make(name)
        touch_image(client, first)  # a host starts from it
        assert snapshots.remove_unused_snapshots(client, owner_id=me, log=lambda line: None) == 3  # c, d, e
        assert left() == {"restored", "theirs"}

        containers.append(client.api.create_container(make("in-use"), command="true", labels={LABEL: "test"}))
        monkeypatch.setenv(snapshots.BUDGET_VAR, "0")
        snapshots.remove_unused_snapshots(client, owner_id=me, log=lambda line: None)
        assert left() == {"in-use", "theirs"}, "one a container uses stays (the engine refuses), the others go"
    finally:
        for container in containers:
            client.api.remove_container(container["Id"], force=True)
        for image in made:
            remove_image(client, image)
