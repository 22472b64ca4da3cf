"""pytest wiring: options to pick backend, images and runbook; cluster fixtures; redaction."""

from __future__ import annotations

import io
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import DEFAULT_RUNBOOK, available_images
from harness.secrets import redact

if TYPE_CHECKING:  # heavy imports (docker, psycopg) wait until a test needs them: bad options fail fast
    from harness.cluster import Cluster
    from harness.runbook import Runbook

log = logging.getLogger("pgrepl")
logging.getLogger("sh").setLevel(logging.WARNING)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgrepl-harness")
    group.addoption(
        "--backend",
        action="append",
        choices=["docker", "ssh"],
        default=[],
        help="reach hosts by docker exec (default) or by SSH only; repeat for both",
    )
    group.addoption(
        "--ssh-image",
        action="append",
        default=[],
        help="images the ssh backend runs on, among the selected ones (default: debian-12; 'all')",
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


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then tears fixtures down: clusters removed


def pytest_configure(config: pytest.Config) -> None:
    """Fail fast on a bad inventory; in an SSH run, make any `docker exec` an error; SIGTERM unwinds."""
    signal.signal(signal.SIGTERM, _terminate)
    backends = _backends(config)
    if config.getoption("--inventory") is not None and backends != ["ssh"]:
        raise pytest.UsageError("--inventory needs --backend ssh (alone)")
    if backends == ["ssh"]:
        from harness.hosts.docker import DockerHost

        def forbidden(self, remote):
            raise RuntimeError(f"docker exec into {self.name} attempted in an SSH-backend run")

        DockerHost._transport = forbidden
    if config.getoption("--inventory") is not None:  # "" (tox -e ecs without one) is an error too
        from harness.inventory import Inventory, InventoryError

        try:
            config.pgrepl_inventory = Inventory.load(config.getoption("--inventory"))
        except InventoryError as exc:
            raise pytest.UsageError(str(exc)) from None


def _inventory(config: pytest.Config):
    return getattr(config, "pgrepl_inventory", None)


def _backends(config: pytest.Config) -> list[str]:
    return list(dict.fromkeys(config.getoption("--backend") or ["docker"]))


def _selected_images(config: pytest.Config) -> list[str]:
    if _inventory(config) is not None:
        return ["inventory"]
    chosen = config.getoption("--image") or ["debian-12"]
    return available_images() if "all" in chosen else chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "image_name" in metafunc.fixturenames:
        config = metafunc.config
        ssh_images = config.getoption("--ssh-image") or ["debian-12"]
        targets = [
            (image, backend)
            for image in _selected_images(config)
            for backend in _backends(config)
            if backend == "docker" or "all" in ssh_images or image in ssh_images or _inventory(config)
        ]
        metafunc.parametrize(("image_name", "backend"), targets, ids=[f"{i}-{b}" for i, b in targets], scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, one xdist worker owns each (module, image, backend) cluster set."""
    for item in items:
        params = getattr(item, "callspec", None)
        if params and "image_name" in params.params:
            group = f"{item.module.__name__}-{params.params['image_name']}-{params.params.get('backend', '')}"
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Which images (and backends) ran, and which did not and why."""
    ran: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            target = _target_of(getattr(report, "nodeid", ""))
            if not target:
                continue
            if outcome == "skipped" and isinstance(report.longrepr, tuple):
                skipped.setdefault(target, report.longrepr[2].removeprefix("Skipped: "))
            elif outcome != "skipped":
                ran[target] = ran.get(target, 0) + 1
    if not ran and not skipped:
        return
    terminalreporter.section("images")
    for target in sorted(set(ran) | set(skipped)):
        if target in ran:
            terminalreporter.line(f"ran      {target}: {ran[target]} tests")
        else:
            terminalreporter.line(f"skipped  {target}: {skipped[target]}")


def _target_of(nodeid: str) -> str:
    """`image-backend` from a scenario's node id parameters, e.g. debian-12-ssh."""
    if not nodeid.startswith("scenarios/") or "[" not in nodeid:
        return ""
    params = nodeid.rsplit("[", 1)[1].rstrip("]").split("-")
    for index in range(len(params)):
        candidate = "-".join(params[index:])
        for backend in ("docker", "ssh"):
            if candidate.endswith(backend) and "-".join(params[index:]).removesuffix("-" + backend) in (
                *available_images(),
                "inventory",
            ):
                return candidate
    return ""


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
def harness_log() -> Iterator[io.StringIO]:
    """Everything any logger says during the session (DEBUG and up), for the no-secret check."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)


@pytest.fixture(scope="session")
def inventory_reachable(pytestconfig: pytest.Config) -> None:
    """Stop the whole run at once, naming the host, when an inventory host cannot be reached."""
    import tempfile

    from harness.hosts.base import HostError
    from harness.provision import ssh_hosts

    with tempfile.TemporaryDirectory(prefix="pgrepl-ssh-check-") as state:
        for host in ssh_hosts(_inventory(pytestconfig), Path(state)).values():
            try:
                host.run("true", timeout=30)
            except HostError as exc:
                pytest.exit(f"inventory host unreachable: {exc}", returncode=3)
            finally:
                host.close()


@pytest.fixture(scope="session")
def runbook(pytestconfig: pytest.Config) -> Runbook:
    from harness.runbook import parse_runbook

    return parse_runbook(Path(pytestconfig.getoption("--runbook")))


@pytest.fixture(scope="module")
def make_cluster(
    request: pytest.FixtureRequest, image_name: str, backend: str, runbook: Runbook
) -> Iterator[Callable[..., Cluster]]:
    """Factory: `make_cluster(runbook=..., volumes=...)` brings up hosts; all removed at module end.

    On containers every call gets new machines. On inventory hosts there is one pair: a new
    cluster first removes the previous one (so negative controls come last in a module).
    """
    from harness.hosts.docker import DockerHost
    from harness.images import ImageUnavailable
    from harness.provision import docker_cluster, inventory_cluster

    config = request.config
    inventory = _inventory(config)
    request.getfixturevalue("harness_log")
    request.getfixturevalue("docker_engine" if inventory is None else "inventory_reachable")
    with ExitStack() as stack:

        def make(book: Runbook | None = None, *, volumes: dict[str, str] | None = None) -> Cluster:
            book = book or runbook
            if inventory is None:
                try:
                    made = stack.enter_context(
                        docker_cluster(
                            image_name,
                            book,
                            backend=backend,
                            reuse=not config.getoption("--no-reuse"),
                            volumes=volumes,
                            log=log.info,
                        )
                    )
                except ImageUnavailable as exc:
                    pytest.skip(str(exc).splitlines()[0])
                # the proof that an SSH run uses no `docker exec`: only DockerHost does that
                assert backend == "docker" or not any(isinstance(h, DockerHost) for h in made.hosts.values())
                return made
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
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        path, line, reason = report.longrepr
        report.longrepr = (path, line, redact(reason))
    elif report.longrepr is not None:
        report.longrepr = redact(str(report.longrepr))
