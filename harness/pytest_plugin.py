"""The pytest plugin (entry point `pytest11`): options, the target matrix, cluster fixtures, redaction.

Options are read from the command line or, failing that, from the ini file (`pgrepl_images =
debian-12 debian-13`, ...). Scenario modules are parametrised by target (`debian-12-docker`,
`inventory-ssh`, ...); every cluster comes from `harness.lifecycle.open_cluster`.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import project
from harness.errors import HarnessError
from harness.labels import join_session
from harness.secrets import redact, redact_sections
from harness.targets import Target, target_matrix, unwind_on_sigterm

if TYPE_CHECKING:  # heavy imports (docker, psycopg) wait until a test needs them: bad options fail fast
    from harness.cluster import Cluster
    from harness.gate import Plan
    from harness.runbook import Runbook

log = logging.getLogger("pgrepl")
logging.getLogger("sh").setLevel(logging.WARNING)
TARGETS = pytest.StashKey[list[Target]]()
GATE_PLAN = pytest.StashKey["Plan"]()
# "restored/made": how many of a module's clusters started from the run's set-up state
REUSE_PROPERTY = "pgrepl_reused_setup"
# per (module, target): the clusters its make_cluster made; the keys whose evidence is collected or hosts kept
MADE = pytest.StashKey[dict[tuple[str, str], list]]()
EVIDENCE = pytest.StashKey[set[tuple[str, str]]]()
KEEP = pytest.StashKey[set[tuple[str, str]]]()
TARGET_PROPERTY = "pgrepl_target"
# The session's id, labelled on everything its processes make (harness.labels.SESSION_LABEL); the
# controller hands it to its xdist workers under this workerinput key
SESSION = pytest.StashKey[str]()
SESSION_INPUT = "pgrepl_session"
# whether this process (workeroutput key: a worker) used the Docker engine, so its end cleans it
ENGINE_USED = pytest.StashKey[bool]()
ENGINE_USED_OUTPUT = "pgrepl_engine_used"
# option -> (ini name, ini type, help)
OPTIONS = {
    "--image": ("pgrepl_images", "args", "image(s) under images/ to run on; 'all' for every one (default debian-12)"),
    "--backend": ("pgrepl_backends", "args", "reach hosts by docker exec (default) or by SSH only; repeat for both"),
    "--ssh-image": ("pgrepl_ssh_images", "args", "images the ssh backend runs on (default: debian-12; 'all')"),
    "--inventory": ("pgrepl_inventory", "string", "TOML inventory of real hosts (with --backend ssh)"),
    "--allow-existing-postgresql": ("pgrepl_allow_existing_postgresql", "bool", "run over PostgreSQL found there"),
    "--runbook": ("pgrepl_runbook", "string", "the runbook under test"),
    "--no-reuse": ("pgrepl_no_reuse", "bool", "do not start hosts from snapshots of completed steps"),
    "--artifacts": ("pgrepl_artifacts", "string", "folder for the summary and failures' evidence (default: artifacts)"),
    "--keep-on-failure": ("pgrepl_keep_on_failure", "bool", "keep the hosts of a failed scenario; print how to log in"),
    "--gate-base": ("pgrepl_gate_base", "string", "run only what changed since this git revision touches (the gate)"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgrepl-harness")
    for option, (ini, kind, help_text) in OPTIONS.items():
        if kind == "bool":
            group.addoption(option, action="store_true", default=None, help=help_text)
        elif kind == "args":
            group.addoption(option, action="append", default=None, help=help_text)
        else:
            default = os.environ.get("PGREPL_INVENTORY") if ini == "pgrepl_inventory" else None
            group.addoption(option, default=default, help=help_text)
        parser.addini(ini, help_text, type=kind)


def _option(config: pytest.Config, option: str):
    value = config.getoption(option)
    return config.getini(OPTIONS[option][0]) if value is None else value


def pytest_configure(config: pytest.Config) -> None:
    """Check the options and build the target matrix once (a bad option stops the run at once)."""
    unwind_on_sigterm()
    workerinput = getattr(config, "workerinput", None)
    config.stash[SESSION] = workerinput[SESSION_INPUT] if workerinput else uuid.uuid4().hex[:12]
    join_session(config.stash[SESSION])
    config.addinivalue_line(
        "markers", "parts(*names, runbook=FILE): the runbook parts a scenario module executes (and of which runbook)"
    )
    config.addinivalue_line("markers", "bringups(n): clusters a scenario module brings up (longest modules run first)")
    try:
        base = _option(config, "--gate-base")
        if base:
            from harness.gate import plan

            config.stash[GATE_PLAN] = plan(base)
        config.stash[TARGETS] = _targets(config)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def _targets(config: pytest.Config) -> list[Target]:
    inventory = config.getoption("--inventory")  # "" (tox -e ecs without PGREPL_INVENTORY) is an error too
    gate = config.stash.get(GATE_PLAN, None)
    planned = gate.images if gate is not None and not gate.everything else None  # the gate's images by default
    return target_matrix(
        images=_option(config, "--image") or planned or ["debian-12"],
        backends=_option(config, "--backend") or ["docker"],
        ssh_images=_option(config, "--ssh-image") or ["debian-12"],
        inventory=inventory if inventory is not None else _option(config, "--inventory") or None,
        allow_existing=bool(_option(config, "--allow-existing-postgresql")),
        reuse=not _option(config, "--no-reuse"),
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = metafunc.config.stash[TARGETS]
        metafunc.parametrize("target", targets, ids=[t.label for t in targets], scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules that bring up the most clusters come first (xdist hands them out in this order, see
    ClusterScheduling), so no worker idles at the end while another works through a long module;
    each item carries its target's label to the report (and through xdist to the summary)."""
    items.sort(key=lambda item: -_bringups(item))  # stable: each module keeps its own order
    gate = config.stash.get(GATE_PLAN, None)
    if gate is not None and not gate.everything:
        kept = [item for item in items if _gate_selects(gate, item)]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    for item in items:
        params = getattr(item, "callspec", None)
        if params and "target" in params.params:
            item.user_properties.append((TARGET_PROPERTY, params.params["target"].label))


def _gate_selects(gate: Plan, item: pytest.Item) -> bool:
    from harness.gate import STATIC_GATE

    module = item.nodeid.split("::")[0]
    params = getattr(item, "callspec", None)
    target = params.params.get("target") if params else None
    if target is None:
        return module == STATIC_GATE
    return gate.selects(module, getattr(target, "image", ""))


def cluster_group(nodeid: str, targets: list[Target]) -> str:
    """The unit one worker runs whole: a module on one target (its module fixtures hold the clusters),
    or every module of a target whose hosts are shared (one pair of real hosts: two workers would
    install at once). Read off the node id, which ends its parameters with the target's label."""
    module, _, rest = nodeid.partition("::")
    params = rest[rest.find("[") + 1 : -1] if rest.endswith("]") else ""
    for target in sorted(targets, key=lambda t: -len(t.label)):
        if params == target.label or params.endswith(f"-{target.label}") or params.startswith(f"{target.label}-"):
            return target.label if target.shared_hosts else f"{module}@{target.label}"
    return module


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own choice (absent without xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` (and plain `-n N`, whose `load` would split modules too) with cluster
    groups (cluster_group) handed out in collection order.

    xdist's own loadgroup reads `xdist_group` marks through a node-id suffix that pytest 9 no
    longer keeps, so every test became its own unit: a module's clusters were brought up once
    on each worker."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    targets = config.stash[TARGETS]

    class ClusterScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return cluster_group(nodeid, targets)

        def _assign_work_unit(self, node) -> None:
            def unfinished(work: dict) -> list[str]:
                return [scope for scope, tests in work.items() if not all(tests.values())]

            others = [
                scope for other, work in self.assigned_work.items() if other is not node for scope in unfinished(work)
            ]
            chosen = next_unit(list(self.workqueue), list(self.assigned_work.get(node, {})), others)
            self.workqueue.move_to_end(chosen, last=False)
            super()._assign_work_unit(node)

        def remove_node(self, node) -> str | None:
            """A worker that died: the test it was running is reported failed (by xdist) and not run
            again - loadscope would hand it to the next worker, which it may kill too, up to xdist's
            restart limit; the rest of its module goes back to the queue."""
            workload = self.assigned_work.get(node, {})
            crashed = next((test for unit in workload.values() for test, done in unit.items() if not done), None)
            for unit in workload.values():
                if crashed in unit:
                    unit[crashed] = True
            pending = super().remove_node(node)
            return crashed if crashed is not None else pending

    config.option.loadscopereorder = False  # keep the longest-first order of the collection
    return ClusterScheduling(config, log)


def _group_target(group: str) -> str:
    return group.rpartition("@")[2]


def next_unit(queue: list[str], mine: list[str], others: list[str]) -> str:
    """The cluster group (cluster_group) a worker that has run `mine` takes next from `queue` (longest
    first), while other workers run `others`: one more of its latest target, else one of a target no
    one runs, else the first. A worker that stays on a target restores the set-up state it saved
    (harness.runstate, per process) instead of saving its own."""
    latest = _group_target(mine[-1]) if mine else None
    busy = {_group_target(group) for group in others}
    return (
        next((g for g in queue if _group_target(g) == latest), None)
        or next((g for g in queue if _group_target(g) not in busy), None)
        or queue[0]
    )


def _bringups(item: pytest.Item) -> int:
    marker = item.get_closest_marker("bringups")
    return int(marker.args[0]) if marker else 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A harness failure shows as its own message (where in the test, then what and how to fix);
    every report goes through redaction, so no generated secret reaches it."""
    outcome = yield
    report = outcome.get_result()
    report.sections = redact_sections(report.sections)
    excinfo = call.excinfo
    _report_runbook(item, report, excinfo)
    if report.failed and excinfo is not None and isinstance(excinfo.value, HarnessError):
        entry = next((e for e in reversed(excinfo.traceback) if e.path == item.path), None)
        where = f"{item.path.name}:{entry.lineno + 1}: " if entry is not None else ""
        report.longrepr = f"{where}{excinfo.typename}: {excinfo.value}"
    if report.failed and (lost := _hosts_lost(item)):  # whatever failed, say first what was lost
        report.longrepr = f"hosts lost during the test:\n{lost}\n\n{report.longrepr}"
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        path, line, reason = report.longrepr
        report.longrepr = (path, line, redact(reason))
    elif report.longrepr is not None:
        report.longrepr = redact(str(report.longrepr))


def _report_runbook(item: pytest.Item, report: pytest.TestReport, excinfo) -> None:
    """On the report: which runbook steps this module's clusters ran (for the step x image matrix);
    for a failure, the runbook's file, line and step, and the evidence folder (and kept hosts)."""
    key = _module_key(item)
    made = item.config.stash.get(MADE, {}).get(key, [])
    if not made and not report.failed:  # unit tests, setup and teardown of passing ones: nothing to add
        return
    from harness.ci_report import (
        STEPS_PROPERTY,
        collect_evidence,
        encode_steps,
        failure_properties,
        relative,
        safe_name,
        step_outcomes,
    )
    from harness.runstate import RESTORED_NOTE

    added: list[tuple[str, str]] = []
    if report.when == "call" and made:
        added.append((STEPS_PROPERTY, encode_steps(step_outcomes(made, session_runbook(item.config)))))
        restored = sum(RESTORED_NOTE in c.transcript.notes for c, _ in made)
        added.append((REUSE_PROPERTY, f"{restored}/{len(made)}"))
    if report.failed:
        if excinfo is not None:
            added += failure_properties(excinfo.value)
        if made:
            folder = artifacts_dir(item.config) / "evidence" / safe_name(f"{key[0]}-{key[1]}")
            collected = item.config.stash.setdefault(EVIDENCE, set())
            if key not in collected:  # a failed module fixture fails every test of the module: once
                collected.add(key)
                collect_evidence([cluster for cluster, _ in made], folder)
            added.append(("evidence", relative(folder)))
            if _option(item.config, "--keep-on-failure"):
                item.config.stash.setdefault(KEEP, set()).add(key)
                logins = [f"{h.name}: {h.login_command}" for c, _ in made for h in c.hosts.values()]
                report.sections.append(
                    ("kept hosts (--keep-on-failure; removed by `pgrepl-harness down`)", "\n".join(logins))
                )
    if added:
        report.user_properties = [*report.user_properties, *added]
        item.user_properties += added  # JUnit takes a test's properties from its last (teardown) report


def _hosts_lost(item: pytest.Item) -> str:
    """Why hosts of this module's live clusters are gone (a stopped container, an engine that does
    not answer): one line per host, empty when none is known to be lost. A session that uses the
    engine says so when it does not answer, even with no host yet (a bring-up that failed)."""
    made = item.config.stash.get(MADE, {}).get(_module_key(item), [])
    hosts = [host for cluster, _ in made if not cluster.removed for host in cluster.hosts.values()]
    lost = [f"{host.name}: {why}" for host in hosts if (why := host.lost())]
    if not lost and item.config.stash.get(ENGINE_USED, False):
        from harness.hosts.docker import answering_engine, engine_silent

        if answering_engine() is None:
            lost.append(engine_silent())
    return "\n".join(lost)


def _module_key(item_or_module: pytest.Item | pytest.Module, target: Target | None = None) -> tuple[str, str]:
    module = item_or_module if isinstance(item_or_module, pytest.Module) else item_or_module.getparent(pytest.Module)
    if target is None:
        params = getattr(item_or_module, "callspec", None)
        target = params.params.get("target") if params else None
    return (module.nodeid if module else "", target.label if target is not None else "")


def artifacts_dir(config: pytest.Config) -> Path:
    return config.rootpath / (_option(config, "--artifacts") or "artifacts")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On GitHub Actions, a failed runbook step becomes an error annotation on its runbook line."""
    if os.environ.get("GITHUB_ACTIONS") != "true" or not report.failed:
        return
    from harness.ci_report import annotations

    text = report.longrepr if isinstance(report.longrepr, str) else str(report.longrepr or "")
    lines = [line for line in annotations(dict(report.user_properties), report.nodeid, text) if _first(line)]
    if lines:  # GitHub reads a command only at the start of a line: not after the progress dots
        print("\n" + "\n".join(lines), flush=True)


_ANNOTATED: set[str] = set()


def _first(annotation: str) -> bool:
    """Whether this runbook line and title were not annotated yet (one broken step fails many tests)."""
    key = annotation.split("::", 2)[1]
    if key in _ANNOTATED:
        return False
    _ANNOTATED.add(key)
    return True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: each worker labels its resources with the controller's session id."""
    node.workerinput[SESSION_INPUT] = node.config.stash[SESSION]


def _engine_used(config: pytest.Config) -> None:
    """Called when a test first needs the engine: from then on the run keeps set-up states, and the
    session's end removes them and what else is left there."""
    from harness.runstate import RUN_STATES

    RUN_STATES.open()
    config.stash[ENGINE_USED] = True
    if hasattr(config, "workeroutput"):  # reaches the controller with the worker's end
        config.workeroutput[ENGINE_USED_OUTPUT] = True


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error: object | None) -> None:
    """xdist, on the controller: a worker that used the engine, or died (it may have), leaves its
    clean-up to the session's end; a dead worker's containers and set-up states go at once."""
    if error is None and not getattr(node, "workeroutput", {}).get(ENGINE_USED_OUTPUT):
        return
    node.config.stash[ENGINE_USED] = True
    if error is not None:
        from harness.hosts.docker import answering_engine, remove_orphans

        client = answering_engine()
        if client is not None:  # its process is gone: remove_orphans judges it killed
            removed = remove_orphans(client)
            log.warning("worker %s died (%s): removed %d of its resources", node.gateway.id, error, removed)


@pytest.hookimpl(tryfirst=True)  # on a worker: before xdist reports the worker finished
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Nothing holding a secret outlives the session: each process removes its set-up state images
    (harness.runstate), and the controller (or a run without xdist) whatever of the session is left
    on the engine, a crashed worker's included. Kept clusters (--keep-on-failure) stay."""
    config = session.config
    if not config.stash.get(ENGINE_USED, False):
        return
    from harness.hosts.docker import answering_engine, remove_session
    from harness.runstate import RUN_STATES

    RUN_STATES.remove_images()
    if hasattr(config, "workerinput"):
        return
    client = answering_engine()
    if client is None:
        log.warning("the Docker engine does not answer: the session's resources are left to the next run's sweep")
        return
    remove_session(client, config.stash[SESSION])


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The gate's plan first: what runs, and why."""
    gate = config.stash.get(GATE_PLAN, None)
    return gate.render().splitlines() if gate is not None else []


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The gate's plan again; which targets (image and backend) ran, and which did not and why."""
    gate = config.stash.get(GATE_PLAN, None)
    if gate is not None:
        terminalreporter.section("gate plan")
        for line in gate.render().splitlines():
            terminalreporter.line(line)
    ran: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            target = dict(getattr(report, "user_properties", ())).get(TARGET_PROPERTY)
            if target and outcome == "skipped" and isinstance(report.longrepr, tuple):
                skipped.setdefault(target, report.longrepr[2].removeprefix("Skipped: "))
            elif target and outcome != "skipped":
                ran[target] = ran.get(target, 0) + 1
    if not ran and not skipped:
        return
    terminalreporter.section("images")
    for target in sorted(set(ran) | set(skipped)):
        if target in ran:
            terminalreporter.line(f"ran      {target}: {ran[target]} tests")
        else:
            terminalreporter.line(f"skipped  {target}: {skipped[target]}")
    if not hasattr(config, "workerinput"):
        written = _write_summary(terminalreporter, config, {t: r for t, r in skipped.items() if t not in ran})
        terminalreporter.line(f"summary (step x image matrix, failures): {written}")


def _write_summary(terminalreporter, config: pytest.Config, skipped_targets: dict[str, str]) -> Path:
    """The Markdown summary of the run (harness.ci_report.summary), from every test's report."""
    from harness.ci_report import STEPS_PROPERTY, decode_steps, merge_steps, summary, write_summary
    from harness.images import ImageProfile

    results: dict[str, dict[str, int]] = {}
    steps: dict[str, dict[str, str]] = {}
    reuse: dict[str, dict[str, str]] = {}
    failures = []
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            props = dict(getattr(report, "user_properties", ()))
            target = props.get(TARGET_PROPERTY)
            if not target or (outcome == "passed" and report.when != "call"):
                continue
            counted = "failed" if outcome == "error" else outcome
            results.setdefault(target, {}).setdefault(counted, 0)
            results[target][counted] += 1
            merge_steps(steps.setdefault(target, {}), decode_steps(props.get(STEPS_PROPERTY, "")))
            if props.get(REUSE_PROPERTY):  # the module's latest count wins (clusters are made as it goes)
                reuse.setdefault(target, {})[report.nodeid.split("::")[0]] = props[REUSE_PROPERTY]
            if counted == "failed":
                message = report.longrepr if isinstance(report.longrepr, str) else str(report.longrepr)
                failures.append({"test": report.nodeid, "target": target, "message": message, **props})
    families = {t.label: ImageProfile.load(t.image).family for t in config.stash[TARGETS] if hasattr(t, "image")}
    gate = config.stash.get(GATE_PLAN, None)
    plan = gate.render() if gate else None
    text = summary(session_runbook(config), families, results, skipped_targets, steps, failures, plan, reuse)
    return write_summary(text, artifacts_dir(config))


CHECKED = pytest.StashKey[dict[str, str | None]]()


def _check(config: pytest.Config, target: Target) -> None:
    """Once per target and session: skip when no Docker engine answers; stop the whole run, naming
    the host, when an inventory host cannot be reached."""
    from harness.errors import NoDockerEngine
    from harness.hosts.base import HostError
    from harness.lifecycle import check_target

    checked = config.stash.setdefault(CHECKED, {})
    if target.label not in checked:
        checked[target.label] = None
        if not target.shared_hosts:  # container machines: the engine
            _engine_used(config)
        try:
            check_target(target)
        except NoDockerEngine as exc:
            checked[target.label] = str(exc).splitlines()[0] + " Start dockerd, or run .ci/run."
        except HostError as exc:
            pytest.exit(f"inventory host unreachable: {exc}", returncode=3)
    if checked[target.label] is not None:
        pytest.skip(checked[target.label])


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


RUNBOOK = pytest.StashKey["Runbook"]()


def session_runbook(config: pytest.Config) -> Runbook:
    """The runbook under test (--runbook), parsed once per session."""
    from harness.runbook import parse_runbook

    if RUNBOOK not in config.stash:
        config.stash[RUNBOOK] = parse_runbook(_option(config, "--runbook") or project.current().default_runbook)
    return config.stash[RUNBOOK]


@pytest.fixture(scope="session")
def runbook(pytestconfig: pytest.Config) -> Runbook:
    return session_runbook(pytestconfig)


class ClusterFactory:
    """`make_cluster(runbook, volumes=..., fresh=..., replacing=...)`: new hosts, set up by the caller.

    A cluster made in a module fixture lives until the module ends; one made in a test (or in a
    function fixture) until the test ends, so its set-up state is free again for the next test.
    On containers every call gets new machines. On inventory hosts there is one pair: a new
    cluster first removes the previous one (so negative controls come last in a module).
    """

    def __init__(self, request: pytest.FixtureRequest, target: Target, runbook: Runbook, module: ExitStack):
        self.request, self.target, self.runbook = request, target, runbook
        self.module, self.test = module, None
        self.keep_on_failure = bool(_option(request.config, "--keep-on-failure"))
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
        from harness.errors import ImageUnavailable
        from harness.hosts.docker import DockerHost
        from harness.lifecycle import open_cluster

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
        except ImageUnavailable as exc:  # the same for every later module: they skip at _check
            self.request.config.stash[CHECKED][target.label] = str(exc).splitlines()[0]
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


@pytest.fixture(scope="module")
def make_cluster(request: pytest.FixtureRequest, target: Target, runbook: Runbook) -> Iterator[ClusterFactory]:
    """The module's ClusterFactory; all its clusters are removed by the end of the module."""
    request.getfixturevalue("harness_log")
    _check(request.config, target)
    key = _module_key(request.node, target)
    with ExitStack() as stack:
        factory = ClusterFactory(request, target, runbook, stack)
        request.config.stash.setdefault(MADE, {})[key] = factory.made
        yield factory
        if key in request.config.stash.get(KEEP, set()):  # left running, labelled kept: `down` removes them
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
    key = _module_key(request.node)
    with factory.test_scope(kept=lambda: key in request.config.stash.get(KEEP, set())):
        yield


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


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A primary and a secondary set up and verified by the runbook (Steps 2-4)."""
    made = make_cluster()
    made.setup()
    made.verify()
    return made
