"""Listings of the engine tolerate resources removed meanwhile (another worker's clean-up), and the
session's clean-up takes only its own. A fake engine API, no Docker needed."""

from __future__ import annotations

import docker
import docker.errors
import pytest
import requests

from harness.hosts.docker import listed, remove_orphans, remove_resources, remove_session
from harness.labels import KEPT_LABEL, LABEL, OWNER_LABEL, PID_LABEL, RUN_LABEL, SESSION_LABEL, SETUP_STATE_KIND


def _not_found(what: str) -> docker.errors.NotFound:
    response = requests.Response()
    response.status_code = 404
    return docker.errors.NotFound(f"No such {what}", response=response)


def _matches(labels: dict[str, str], filters: dict | None) -> bool:
    for wanted in (filters or {}).get("label", []):
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


class FakeApi:
    """Docker's low-level API over dicts; `gone` ids were removed by someone else after the listing:
    inspecting or removing them is a 404."""

    def __init__(self, resources: dict[str, list[dict]], gone: set[str] = frozenset()):
        self.resources, self.gone, self.removed = resources, set(gone), []

    def _rows(self, kind: str, filters: dict | None) -> list[dict]:
        return [r for r in self.resources.get(kind, []) if _matches(r["Labels"], filters)]

    def containers(self, all: bool = False, filters=None):
        return [
            {"Id": r["Id"], "Names": [f"/{r['Id']}"], "Labels": r["Labels"]} for r in self._rows("containers", filters)
        ]

    def networks(self, filters=None):
        return [{"Id": r["Id"], "Name": r["Id"], "Labels": r["Labels"]} for r in self._rows("networks", filters)]

    def volumes(self, filters=None):
        return {"Volumes": [{"Name": r["Id"], "Labels": r["Labels"]} for r in self._rows("volumes", filters)]}

    def images(self, name=None, all=False, filters=None):
        return [{"Id": r["Id"], "RepoTags": [], "Labels": r["Labels"]} for r in self._rows("images", filters)]

    def _inspect(self, resource_id: str, *_args, **_kwargs):
        if resource_id in self.gone:
            raise _not_found(resource_id)
        return {"Id": resource_id, "Config": {"Labels": {}}}

    inspect_image = inspect_container = inspect_network = _inspect

    def _remove(self, resource_id: str, **_kwargs):
        if resource_id in self.gone:
            raise _not_found(resource_id)
        self.removed.append(resource_id)

    remove_container = remove_network = remove_volume = remove_image = _remove


def _client(api: FakeApi) -> docker.DockerClient:
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client


def _labels(run: str, pid: int, **extra: str) -> dict[str, str]:
    return {LABEL: "resource", RUN_LABEL: run, PID_LABEL: str(pid), OWNER_LABEL: "me", KEPT_LABEL: "false", **extra}


def test_docker_py_s_own_image_listing_fails_when_an_image_goes_meanwhile():
    """The race itself (negative control): docker-py inspects each listed image."""
    api = FakeApi({"images": [{"Id": "a", "Labels": {}}, {"Id": "b", "Labels": {}}]}, gone={"b"})
    with pytest.raises(docker.errors.NotFound):  # ImageNotFound from a real engine
        _client(api).images.list()


@pytest.mark.parametrize("kind", ["containers", "networks", "volumes", "images"])
def test_a_listing_never_inspects_so_a_removal_meanwhile_does_not_fail_it(kind):
    api = FakeApi({kind: [{"Id": "a", "Labels": {LABEL: "x"}}, {"Id": "b", "Labels": {LABEL: "x"}}]}, gone={"b"})
    assert [r.id for r in listed(_client(api), kind, {"label": [LABEL]})] == ["a", "b"]


def test_removing_what_another_worker_removed_meanwhile_is_not_an_error():
    resources = {
        kind: [{"Id": f"{kind}-1", "Labels": _labels("r", 1)}, {"Id": f"{kind}-2", "Labels": _labels("r", 1)}]
        for kind in ("containers", "networks", "volumes")
    }
    api = FakeApi(resources, gone={"containers-2", "networks-1", "volumes-2"})
    assert remove_resources({RUN_LABEL: "r"}, client=_client(api)) == 3
    assert sorted(api.removed) == ["containers-1", "networks-2", "volumes-1"]


def test_orphans_sweep_survives_images_and_networks_removed_meanwhile(monkeypatch):
    monkeypatch.setattr("harness.hosts.docker.alive", lambda pid: pid != 999)
    monkeypatch.setattr("harness.hosts.docker.owner", lambda: "me")
    state = _labels("dead", 999) | {LABEL: SETUP_STATE_KIND}
    api = FakeApi(
        {
            "networks": [
                {"Id": "n-dead", "Labels": _labels("dead", 999)},
                {"Id": "n-live", "Labels": _labels("live", 1)},
            ],
            "images": [{"Id": "i-dead", "Labels": state}, {"Id": "i-gone", "Labels": state}],
        },
        gone={"n-dead", "i-gone"},
    )
    assert remove_orphans(_client(api)) == 1
    assert api.removed == ["i-dead"]


def test_a_session_s_clean_up_takes_its_own_and_leaves_kept_and_other_sessions():
    mine, other = {SESSION_LABEL: "s1"}, {SESSION_LABEL: "s2"}
    api = FakeApi(
        {
            "containers": [
                {"Id": "c-mine", "Labels": _labels("r1", 1, **mine)},
                {"Id": "c-kept", "Labels": _labels("r2", 1, **mine) | {KEPT_LABEL: "true"}},
                {"Id": "c-other", "Labels": _labels("r3", 1, **other)},
            ],
            "networks": [{"Id": "n-mine", "Labels": _labels("r1", 1, **mine)}],
            "images": [
                {"Id": "i-mine", "Labels": _labels("r1", 1, **mine) | {LABEL: SETUP_STATE_KIND}},
                {"Id": "i-other", "Labels": _labels("r3", 1, **other) | {LABEL: SETUP_STATE_KIND}},
            ],
        }
    )
    assert remove_session(_client(api), "s1") == 3
    assert sorted(api.removed) == ["c-mine", "i-mine", "n-mine"]


class InspectingApi:
    def __init__(self, answer, last_words: bytes = b""):
        self.answer, self.last_words = answer, last_words

    def inspect_container(self, name):
        if isinstance(self.answer, Exception):
            raise self.answer
        return {"State": self.answer}

    def logs(self, name, tail):
        return self.last_words


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (requests.ConnectionError("refused"), "Docker engine at .* does not answer .*ConnectionError.*restarting"),
        (_not_found("container"), "container c1 no longer exists on the Docker engine at"),
        (
            {"Running": False, "Status": "exited", "ExitCode": 255, "FinishedAt": "2026-11-29T12:00:00.1Z"},
            "container c1 stopped .*exit code 255.*2026-11-29T12:00:00.*Docker engine at .* restarted",
        ),
    ],
    ids=["engine-down", "removed", "stopped"],
)
def test_a_lost_container_is_explained_naming_the_engine(answer, said):
    import re

    from harness.hosts.docker import container_lost

    assert re.search(said, container_lost(_client(InspectingApi(answer)), "c1"))


def test_a_machine_whose_entrypoint_failed_says_its_last_words():
    from harness.hosts.docker import container_lost

    state = {"Running": False, "Status": "exited", "ExitCode": 32, "FinishedAt": "2026-11-29T16:22:07Z"}
    words = b"mount: /sys/fs/cgroup: cgroup2 already mounted or mount point busy."
    said = container_lost(_client(InspectingApi(state, words)), "c1")
    assert "exit code 32" in said and "its last output: 'mount: /sys/fs/cgroup: cgroup2 already mounted" in said


def test_a_running_container_is_not_lost():
    from harness.hosts.docker import container_lost

    assert container_lost(_client(InspectingApi({"Running": True})), "c1") is None


def test_an_image_another_worker_removed_meanwhile_is_left_though_the_engine_says_500():
    """dockerd 20.10: deleting an image another client removed after its lookup is a 500 "unrecognized image
    ID", not a 404 (seen when two workers swept a killed run's set-up states at once)."""
    from harness.hosts.docker import Listed, remove_listed

    response = requests.Response()
    response.status_code = 500
    gone = docker.errors.APIError("500", response=response, explanation="unrecognized image ID sha256:dfb4a7")

    class Api:
        def remove_image(self, image, force):
            raise gone

    client = type("Client", (), {"api": Api()})()
    assert remove_listed(client, Listed("images", "sha256:dfb4a7", "", {})) == 0
    other = docker.errors.APIError("500", response=response, explanation="driver failed")
    Api.remove_image = lambda self, image, force: (_ for _ in ()).throw(other)
    with pytest.raises(docker.errors.APIError, match="driver failed"):
        remove_listed(client, Listed("images", "sha256:dfb4a7", "", {}))
