"""pytest wiring: options to pick backend, images and runbook; cluster fixtures; redaction."""

from __future__ import annotations

import logging
import os
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
    group.addoption(
        "--backend", choices=["docker", "ssh"], default="docker", help="reach hosts by docker exec or by SSH only"
    )
    group.addoption(
        "--inventory",
        default=os.environ.get("PGREPL_INVENTORY") or None,
        help="TOML inventory of real hosts (with --backend ssh); without it, SSH goes to local containers",
    )
    group.addoption(
        "--allow-existing-postgresql",
        action="store_true",
        help="run on inventory hosts that already have PostgreSQL (it will be removed afterwards!)",
    )
    group.addoption(
        "--image", action="append", default=[], help="image(s) under images/ to run on; 'all' for every one"
    )
    group.addoption("--runbook", default=str(DEFAULT_RUNBOOK), help="the runbook under test")
    group.addoption("--no-reuse", action="store_true", help="do not start hosts from snapshots of completed steps")


def pytest_configure(config: pytest.Config) -> None:
    """Fail fast on a bad inventory; in an SSH run, make any `docker exec` an error."""
    if config.getoption("--backend") != "ssh":
        if config.getoption("--inventory"):
            raise pytest.UsageError("--inventory needs --backend ssh")
        return
    from harness.hosts.docker import DockerHost
    from harness.inventory import Inventory, InventoryError

    def forbidden(self, remote):
        raise RuntimeError(f"docker exec into {self.name} attempted in an SSH-backend run")

    DockerHost._transport = forbidden
    if config.getoption("--inventory"):
        try:
            config.pgrepl_inventory = Inventory.load(config.getoption("--inventory"))
        except InventoryError as exc:
            raise pytest.UsageError(str(exc)) from None


def _inventory(config: pytest.Config):
    return getattr(config, "pgrepl_inventory", None)


def _selected_images(config: pytest.Config) -> list[str]:
    if _inventory(config) is not None:
        return ["inventory"]
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
def make_cluster(request: pytest.FixtureRequest, image_name: str, runbook: Runbook) -> Iterator[Callable[..., Cluster]]:
    """Factory: `make_cluster(runbook=..., volumes=...)` brings up hosts; all removed at module end.

    On containers every call gets new machines. On inventory hosts there is one pair: a new
    cluster first removes the previous one (so negative controls come last in a module).
    """
    from harness.provision import docker_cluster, inventory_cluster

    config = request.config
    inventory = _inventory(config)
    if inventory is None:
        request.getfixturevalue("docker_engine")
    with ExitStack() as stack:

        def make(book: Runbook | None = None, *, volumes: dict[str, str] | None = None) -> Cluster:
            book = book or runbook
            if inventory is None:
                return stack.enter_context(
                    docker_cluster(
                        image_name,
                        book,
                        backend=config.getoption("--backend"),
                        reuse=not config.getoption("--no-reuse"),
                        volumes=volumes,
                        log=log.info,
                    )
                )
            if volumes and not inventory.shared_archive:
                pytest.skip(f"inventory {inventory.path} has no shared archive ([postgresql] shared_archive = true)")
            stack.close()
            allow = config.getoption("--allow-existing-postgresql")
            return stack.enter_context(
                inventory_cluster(inventory, book, allow_existing=allow, clean_up=True, log=log.info)
            )

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
