"""pytest wiring: options to pick backend, images and runbook; cluster fixtures; redaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from harness import DEFAULT_RUNBOOK
from harness.cluster import Cluster
from harness.images import available_images
from harness.runbook import Runbook, parse_runbook
from harness.secrets import redact

log = logging.getLogger("pgrepl")
logging.getLogger("sh").setLevel(logging.WARNING)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgrepl-harness")
    group.addoption("--backend", choices=["docker"], default="docker", help="how hosts are reached")
    group.addoption(
        "--image", action="append", default=[], help="image(s) under images/ to run on; 'all' for every one"
    )
    group.addoption("--runbook", default=str(DEFAULT_RUNBOOK), help="the runbook under test")
    group.addoption("--no-reuse", action="store_true", help="do not start hosts from snapshots of completed steps")


def _selected_images(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--image") or ["debian-12"]
    return available_images() if "all" in chosen else chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "image_name" in metafunc.fixturenames:
        metafunc.parametrize("image_name", _selected_images(metafunc.config), scope="module")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (with the reason) when no Docker engine answers; remove leftovers of killed runs."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine reachable ({type(exc).__name__}): start dockerd, or run .ci/run")
    from harness.hosts.docker import remove_orphans

    remove_orphans()


@pytest.fixture(scope="session")
def runbook(pytestconfig: pytest.Config) -> Runbook:
    return parse_runbook(Path(pytestconfig.getoption("--runbook")))


@pytest.fixture(scope="module")
def make_cluster(
    request: pytest.FixtureRequest, docker_engine, image_name: str, runbook: Runbook
) -> Iterator[Callable[..., Cluster]]:
    """Factory: `make_cluster(runbook=..., volumes=...)` starts hosts; all removed at module end."""
    from harness.provision import docker_cluster

    reuse = not request.config.getoption("--no-reuse")
    with ExitStack() as stack:

        def make(book: Runbook | None = None, **kwargs) -> Cluster:
            return stack.enter_context(docker_cluster(image_name, book or runbook, reuse=reuse, log=log.info, **kwargs))

        yield make


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A primary and a secondary set up and verified by the runbook (Steps 2-4)."""
    made = make_cluster()
    made.setup()
    made.verify()
    return made


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Failure messages go through redaction: no generated secret reaches a report."""
    outcome = yield
    report = outcome.get_result()
    if report.longrepr is not None:
        report.longrepr = redact(str(report.longrepr))
