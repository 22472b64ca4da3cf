"""The fixtures scenarios use: `runbook`, `make_pair`, `pair`, `harness_log`; every pair
comes from harness.lifecycle.open_pair, on the test's `target` (harness.pytest.selection).

Registered as a module (`pgrepl-fixtures`): pytest deprecates module- and session-scoped fixtures
defined as methods of an object. Their shared state is a Pairs object in the config's stash."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest

from harness import project
from harness.errors import ImageUnavailable, NoDockerEngine
from harness.hosts.base import HostError
from harness.lifecycle import open_pair
from harness.pair import ReplicationPair
from harness.pytest import options
from harness.pytest.session import Session
from harness.report import Figures
from harness.runbook import Runbook, parse_runbook
from harness.runstate import same_setup
from harness.targets import Target

log = logging.getLogger("pgrepl")
logging.getLogger("sh").setLevel(logging.WARNING)
T = TypeVar("T")
# a module (node id) on a target (label): the unit whose pairs live and are reported together
ModuleKey = tuple[str, str]


def module_key(node: pytest.Item | pytest.Module, target: Target | None = None) -> ModuleKey:
    module = node if isinstance(node, pytest.Module) else node.getparent(pytest.Module)
    if target is None:
        params = getattr(node, "callspec", None)
        target = params.params.get("target") if params else None
    return (module.nodeid if module else "", target.label if target is not None else "")


@dataclass
class Made:
    """A pair a module made: whether from the session's runbook unmodified, and whether its hosts
    are still there (evidence is then the transcript alone)."""

    pair: ReplicationPair
    unmodified: bool
    live: bool = True


class PairFactory:
    """`make_pair(runbook, volumes=..., fresh=..., replacing=...)`: new hosts, set up by the caller.

    A pair made in a module fixture lives until the module ends; one made in a test (or in a
    function fixture) until the test ends, so its set-up state is free again for the next test.
    On containers every call gets new machines. On inventory hosts there is one pair: a new
    pair first removes the previous one (so negative controls come last in a module).
    """

    def __init__(self, pairs: Pairs, target: Target, runbook: Runbook, module: ExitStack, key: ModuleKey):
        self.pairs, self.target, self.runbook = pairs, target, runbook
        self.module, self.test = module, None
        # --keep-on-failure: a module's pairs stay running when one of its tests failed
        self.keep_if = (lambda: key in pairs.kept) if pairs.keep_on_failure else None
        self.made: list[Made] = []

    def __call__(
        self,
        book: Runbook | None = None,
        *,
        volumes: dict[str, str] | None = None,
        fresh: bool = False,
        replacing: bool = False,
    ) -> ReplicationPair:
        """`replacing`: remove the pairs made before first (a loop keeps one alive at a time)."""
        target = self.target
        chosen = target.fresh() if fresh else target
        chosen = chosen.with_shared_archive(volumes) if volumes else chosen
        if chosen is None:
            pytest.skip(f"{target.label}: the hosts share no archive (inventory: shared_archive = true)")
        # the session runbook's setup (unmodified, or a later part edited): every module asks for it, so it
        # is saved at once, and a save in progress elsewhere is waited for
        recurs = book is None or same_setup(book, self.runbook)
        chosen = chosen.for_session(keep_if=self.keep_if, setup_recurs=recurs)
        if chosen.shared_hosts or replacing:
            self.module.close()
            if self.test is not None:
                self.test.close()
        stack = self.test if self.test is not None else self.module
        try:
            pair = stack.enter_context(open_pair(chosen, book or self.runbook, log=log.info))
        except ImageUnavailable as exc:  # the same for every later module: they skip at check
            self.pairs.checked[target.label] = str(exc).splitlines()[0]
            pytest.skip(str(exc).splitlines()[0])
        # the proof that an SSH run uses no `docker exec`: every host is of the target's backend
        assert {host.backend for host in pair.hosts.values()} == {chosen.backend}, pair.hosts
        made = Made(pair, unmodified=book is None)
        stack.callback(setattr, made, "live", False)  # on the way out: no evidence from its hosts after
        self.made.append(made)
        return pair

    def each(self, runs: int, work: Callable[[ReplicationPair], T], *, at_once: int = 2) -> list[T]:
        """`work` on each of `runs` new pairs (made as `make_pair(replacing=True)` makes them), its results in
        run order. On containers `at_once` pairs live and work side by side, each in a thread of its own: much
        of a bring-up and a failover is waiting on the hosts (test_synchronous_commit alone on debian-12, -n 2:
        52.0 s against 57.1 s one at a time). On shared hosts one pair at a time. A failure is raised once the
        other pairs of its turn are done."""
        width = 1 if self.target.shared_hosts else max(1, at_once)
        results: list[T] = []
        for start in range(0, runs, width):
            turn = [self(replacing=index == 0) for index in range(min(width, runs - start))]
            with ThreadPoolExecutor(len(turn), thread_name_prefix="pair") as pool:
                done = [pool.submit(work, pair) for pair in turn]
            results += [future.result() for future in done]
        return results

    @contextmanager
    def test_scope(self, kept: Callable[[], bool]) -> Iterator[None]:
        """Pairs made meanwhile are removed at the end, unless `kept()` (a failure to keep): those
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


class Pairs:
    """What each module made, and which targets were checked: the state the fixtures below share
    with reporting (in the config's stash under PAIRS, made by harness.pytest.plugin)."""

    def __init__(self, config: pytest.Config, session: Session):
        self.config, self.session = config, session
        self.keep_on_failure = bool(options.value(config, "--keep-on-failure"))
        self.made: dict[ModuleKey, list[Made]] = {}
        self.kept: set[ModuleKey] = set()  # modules whose pairs stay running (a failure, --keep-on-failure)
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
                target.check()
            except NoDockerEngine as exc:
                self.checked[target.label] = str(exc).splitlines()[0] + " Start dockerd, or run .ci/run."
            except HostError as exc:
                pytest.exit(f"inventory host unreachable: {exc}", returncode=3)
        if self.checked[target.label] is not None:
            pytest.skip(self.checked[target.label])


PAIRS = pytest.StashKey[Pairs]()


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
    return pytestconfig.stash[PAIRS].session_runbook()


@pytest.fixture(scope="module")
def make_pair(request: pytest.FixtureRequest, target: Target, runbook: Runbook) -> Iterator[PairFactory]:
    """The module's PairFactory; all its pairs are removed by the end of the module."""
    pairs = request.config.stash[PAIRS]
    request.getfixturevalue("harness_log")
    pairs.check(target)
    key = module_key(request.node, target)
    with ExitStack() as stack:  # a kept module's pairs are left running, labelled kept: `down` removes them
        factory = PairFactory(pairs, target, runbook, stack, key)
        pairs.made[key] = factory.made
        yield factory
    _check_declared_parts(request, [made.pair for made in factory.made])


@pytest.fixture(autouse=True)
def _pairs_of_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Pairs a test makes for itself are removed when it ends (module fixtures are set up before
    this one, so theirs stay for the module)."""
    if "make_pair" not in request.fixturenames:
        yield
        return
    factory: PairFactory = request.getfixturevalue("make_pair")
    key = module_key(request.node)
    with factory.test_scope(kept=lambda: key in request.config.stash[PAIRS].kept):
        yield


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Callable[[str], Figures]:
    """`figures(NAME)`: where a scenario records what it measured, the run's figures/NAME.txt in the
    artifacts folder (every worker appends to it; the run's start empties the folder)."""
    folder = options.figures_dir(request.config)
    return lambda name: Figures(folder / f"{name}.txt")


@pytest.fixture(scope="module")
def pair(make_pair: Callable[..., ReplicationPair]) -> ReplicationPair:
    """A primary and a secondary set up and verified by the runbook (Steps 2-4)."""
    made = make_pair()
    made.setup()
    made.verify()
    return made


def _check_declared_parts(request: pytest.FixtureRequest, pairs: list[ReplicationPair]) -> None:
    """The gate selects modules by their `parts` marker: a module running an undeclared part is an error."""
    ran = set().union(*(pair.parts_run for pair in pairs))
    marker = request.node.get_closest_marker("parts")
    undeclared = sorted(ran - set(marker.args if marker else ()))
    if undeclared:
        pytest.fail(
            f"{request.node.name} runs runbook parts {undeclared} its `parts` marker does not declare: "
            "add them to its pytestmark, or the gate will not run it when those blocks change",
            pytrace=False,
        )
