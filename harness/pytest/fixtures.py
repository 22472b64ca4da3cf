"""The fixtures scenarios use: `runbook`, `make_cluster`, `cluster`, `harness_log`; every cluster
comes from harness.lifecycle.open_cluster, on the test's `target` (harness.pytest.selection).

Registered as a module (`pgrepl-fixtures`): pytest deprecates module- and session-scoped fixtures
defined as methods of an object. Their shared state is a Clusters object in the config's stash."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import pytest

from harness import project
from harness.cluster import Cluster
from harness.errors import ImageUnavailable, NoDockerEngine
from harness.hosts.base import HostError
from harness.hosts.docker import DockerHost
from harness.lifecycle import check_target, open_cluster
from harness.pytest import options
from harness.pytest.session import Session
from harness.runbook import Runbook, parse_runbook
from harness.targets import Target

log = logging.getLogger("pgrepl")
logging.getLogger("sh").setLevel(logging.WARNING)
# a module (node id) on a target (label): the unit whose clusters live and are reported together
ModuleKey = tuple[str, str]


def module_key(node: pytest.Item | pytest.Module, target: Target | None = None) -> ModuleKey:
    module = node if isinstance(node, pytest.Module) else node.getparent(pytest.Module)
    if target is None:
        params = getattr(node, "callspec", None)
        target = params.params.get("target") if params else None
    return (module.nodeid if module else "", target.label if target is not None else "")


class ClusterFactory:
    """`make_cluster(runbook, volumes=..., fresh=..., replacing=...)`: new hosts, set up by the caller.

    A cluster made in a module fixture lives until the module ends; one made in a test (or in a
    function fixture) until the test ends, so its set-up state is free again for the next test.
    On containers every call gets new machines. On inventory hosts there is one pair: a new
    cluster first removes the previous one (so negative controls come last in a module).
    """

    def __init__(self, clusters: Clusters, target: Target, runbook: Runbook, module: ExitStack):
        self.clusters, self.target, self.runbook = clusters, target, runbook
        self.module, self.test = module, None
        self.keep_on_failure = clusters.keep_on_failure
        self.made: list[tuple[Cluster, bool]] = []  # with: made from the session's runbook, unmodified

    def __call__(
        self,
        book: Runbook | None = None,
        *,
        volumes: dict[str, str] | None = None,
        fresh: bool = False,
        replacing: bool = False,
    ) -> Cluster:
        """`replacing`: remove the clusters made before first (a loop keeps one alive at a time)."""
        target = self.target
        chosen = target.fresh() if fresh else target
        chosen = chosen.with_shared_archive(volumes) if volumes else chosen
        if chosen is None:
            pytest.skip(f"{target.label}: the hosts share no archive (inventory: shared_archive = true)")
        if hasattr(chosen, "keep_on_failure"):
            # an unmodified runbook: every module asks for its setup, which is saved at once
            chosen = replace(chosen, keep_on_failure=self.keep_on_failure, setup_recurs=book is None)
        if chosen.shared_hosts or replacing:
            self.module.close()
            if self.test is not None:
                self.test.close()
        stack = self.test if self.test is not None else self.module
        try:
            made = stack.enter_context(open_cluster(chosen, book or self.runbook, log=log.info))
        except ImageUnavailable as exc:  # the same for every later module: they skip at check
            self.clusters.checked[target.label] = str(exc).splitlines()[0]
            pytest.skip(str(exc).splitlines()[0])
        # the proof that an SSH run uses no `docker exec`: only DockerHost does that
        assert chosen.backend == "docker" or not any(isinstance(h, DockerHost) for h in made.hosts.values())
        self.made.append((made, book is None))
        return made

    @contextmanager
    def test_scope(self, kept: Callable[[], bool]) -> Iterator[None]:
        """Clusters made meanwhile are removed at the end, unless `kept()` (a failure to keep): those
        are handed to the module, which leaves them running."""
        self.test = ExitStack()
        try:
            yield
        finally:
            test, self.test = self.test, None
            if kept():
                self.module.enter_context(test.pop_all())
            else:
                test.close()


class Clusters:
    """What each module made, and which targets were checked: the state the fixtures below share
    with reporting (in the config's stash under CLUSTERS, made by harness.pytest.plugin)."""

    def __init__(self, config: pytest.Config, session: Session):
        self.config, self.session = config, session
        self.keep_on_failure = bool(options.value(config, "--keep-on-failure"))
        self.made: dict[ModuleKey, list[tuple[Cluster, bool]]] = {}
        self.kept: set[ModuleKey] = set()  # modules whose clusters stay running (a failure, --keep-on-failure)
        self.checked: dict[str, str | None] = {}  # target label -> why its tests skip, or None
        self._runbook: Runbook | None = None

    def session_runbook(self) -> Runbook:
        """The runbook under test (--runbook), parsed once per session."""
        if self._runbook is None:
            self._runbook = parse_runbook(options.value(self.config, "--runbook") or project.current().default_runbook)
        return self._runbook

    def check(self, target: Target) -> None:
        """Once per target and session: skip when no Docker engine answers; stop the whole run, naming
        the host, when an inventory host cannot be reached."""
        if target.label not in self.checked:
            self.checked[target.label] = None
            if not target.shared_hosts:  # container machines: the engine
                self.session.use_engine()
            try:
                check_target(target)
            except NoDockerEngine as exc:
                self.checked[target.label] = str(exc).splitlines()[0] + " Start dockerd, or run .ci/run."
            except HostError as exc:
                pytest.exit(f"inventory host unreachable: {exc}", returncode=3)
        if self.checked[target.label] is not None:
            pytest.skip(self.checked[target.label])


CLUSTERS = pytest.StashKey[Clusters]()


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
def runbook(pytestconfig: pytest.Config) -> Runbook:
    return pytestconfig.stash[CLUSTERS].session_runbook()


@pytest.fixture(scope="module")
def make_cluster(request: pytest.FixtureRequest, target: Target, runbook: Runbook) -> Iterator[ClusterFactory]:
    """The module's ClusterFactory; all its clusters are removed by the end of the module."""
    clusters = request.config.stash[CLUSTERS]
    request.getfixturevalue("harness_log")
    clusters.check(target)
    key = module_key(request.node, target)
    with ExitStack() as stack:
        factory = ClusterFactory(clusters, target, runbook, stack)
        clusters.made[key] = factory.made
        yield factory
        if key in clusters.kept:  # left running, labelled kept: `down` removes them
            for cluster, _ in factory.made:
                if cluster.keep_hosts is not None:
                    cluster.keep_hosts()
    _check_declared_parts(request, [cluster for cluster, _ in factory.made])


@pytest.fixture(autouse=True)
def _clusters_of_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Clusters a test makes for itself are removed when it ends (module fixtures are set up before
    this one, so theirs stay for the module)."""
    if "make_cluster" not in request.fixturenames:
        yield
        return
    factory: ClusterFactory = request.getfixturevalue("make_cluster")
    key = module_key(request.node)
    with factory.test_scope(kept=lambda: key in request.config.stash[CLUSTERS].kept):
        yield


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A primary and a secondary set up and verified by the runbook (Steps 2-4)."""
    made = make_cluster()
    made.setup()
    made.verify()
    return made


def _check_declared_parts(request: pytest.FixtureRequest, clusters: list[Cluster]) -> None:
    """The gate selects modules by their `parts` marker: a module running an undeclared part is an error."""
    ran = set().union(*(cluster.parts_run for cluster in clusters))
    marker = request.node.get_closest_marker("parts")
    undeclared = sorted(ran - set(marker.args if marker else ()))
    if undeclared:
        pytest.fail(
            f"{request.node.name} runs runbook parts {undeclared} its `parts` marker does not declare: "
            "add them to its pytestmark, or the gate will not run it when those blocks change",
            pytrace=False,
        )
