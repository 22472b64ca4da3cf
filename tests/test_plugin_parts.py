"""The plugin's parts: each registered only where used; the scheduler on xdist's members as they
are today (a change to them in xdist fails here first); reports that keep pytest's own repr."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from harness.pytest.fixtures import PairFactory
from harness.pytest.reporting import FirstFailure, lost_first
from harness.pytest.scheduling import ClusterScheduling
from harness.pytest.selection import killers_first
from harness.targets import make_target

pytest_plugins = ["pytester"]
ALWAYS = {"pgrepl-session", "pgrepl-selection", "pgrepl-fixtures", "pgrepl-reporting", "pgrepl-summary"}


def parts(config: pytest.Config) -> set[str]:
    return {name for name, _ in config.pluginmanager.list_name_plugin() if name.startswith("pgrepl-")}


@pytest.mark.parametrize(
    "args, env, extra",
    [
        ([], {}, set()),
        (["-n", "2", "--dist", "load"], {}, {"pgrepl-scheduling"}),
        (["-n", "2", "--dist", "loadfile"], {}, set()),
        ([], {"GITHUB_ACTIONS": "true"}, {"pgrepl-annotations"}),
    ],
    ids=["plain", "xdist-load", "xdist-loadfile", "github"],
)
def test_each_part_is_registered_only_where_it_is_used(harnessed, monkeypatch, args, env, extra):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = harnessed.parseconfigure(*args)
    assert parts(config) == ALWAYS | extra


def test_pytest_help_works_where_the_options_would_name_no_target(harnessed):
    result = harnessed.runpytest("--help", "--image", "no-such-image")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*pgrepl-harness:*", "*--pgrepl-inventory=*"])


def test_a_failed_assert_keeps_its_summary_line_and_junit_message_with_the_secret_masked(harnessed):
    harnessed.makepyfile(  # a short name: the summary line has room for the message
        test_assert="from harness.secrets import Secret\n"
        "def test_it():\n"
        "    secret = Secret.generate()\n"
        "    open('secret.txt', 'w').write(secret)\n"
        "    assert str(secret) == 'other'\n"
    )
    result = harnessed.runpytest("--junit-xml=junit.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    secret = (harnessed.path / "secret.txt").read_text()
    line = [line for line in result.stdout.lines if line.startswith("FAILED")]
    assert line == ["FAILED test_assert.py::test_it - AssertionError: assert '********' == 'other'"]
    result.stdout.fnmatch_lines(["E       AssertionError: assert '********' == 'other'"])
    failure = ET.parse(harnessed.path / "junit.xml").find(".//failure")
    assert failure is not None and failure.get("message").startswith("AssertionError: assert '********' == 'other'")
    assert secret not in result.stdout.str() and secret not in (harnessed.path / "junit.xml").read_text()


def test_a_harness_failure_is_its_message_in_the_summary_line_and_junit(harnessed):
    harnessed.makepyfile(
        test_wait="from harness.waiting import wait_until\n"
        "def test_it():\n"
        "    wait_until(lambda: False, timeout=0.1, what='the moon')\n"
    )
    result = harnessed.runpytest("--junit-xml=junit.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["test_wait.py:3: WaitTimeout: *the moon*", "FAILED test_wait.py::test_it - WaitTimeout: *"]
    )
    failure = ET.parse(harnessed.path / "junit.xml").find(".//failure")
    assert (
        failure is not None
        and failure.get("message").startswith("WaitTimeout: ")
        and "the moon" in failure.get("message")
    )


class Worker:
    """What xdist's scheduler calls on a worker (WorkerController), recorded."""

    def __init__(self, name: str):
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_cluster_scheduler_still_fits_xdists_loadscope_scheduling():
    """Through xdist's own LoadScopeScheduling (its private `_split_scope`, `_assign_work_unit`,
    `workqueue`, `assigned_work`): a whole pair group per worker, a worker stays on its
    target, and a test that killed its worker is not handed to another."""
    targets = [make_target(image="debian-11"), make_target(image="debian-12")]
    ids = [f"scenarios/test_{m}.py::test_{n}[{t.label}]" for t in targets for m in "abc" for n in range(2)]
    config = SimpleNamespace(option=SimpleNamespace(loadscopereorder=True), getvalue=lambda name: ["popen"] * 2)
    scheduler = ClusterScheduling(config, None, targets)
    first, second = Worker("gw0"), Worker("gw1")
    for worker in (first, second):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, ids)
    scheduler.schedule()  # two units each, to start with: whole modules, one target per worker
    assert [ids[i] for i in first.sent] == ids[0:4]  # test_a, test_b on debian-11
    assert [ids[i] for i in second.sent] == ids[6:10]  # test_a, test_b on debian-12: a target no one runs
    for index in first.sent[:2]:
        scheduler.mark_test_complete(first, index)
    assert [ids[i] for i in first.sent[4:]] == ids[4:6]  # test_c on its own target first
    assert scheduler.remove_node(second) == ids[6]  # the test that killed it is not run again


@pytest.mark.parametrize("style", ["long", "native"])
def test_hosts_lost_come_first_in_the_report_which_stays_pytests_repr(style):
    try:
        assert 1 == 2
    except AssertionError:
        info = pytest.ExceptionInfo.from_current()
    longrepr = lost_first(info.getrepr(style=style), "primary: container exited (137)")
    assert str(longrepr).startswith("hosts lost during the test:\nprimary: container exited (137)\n")
    assert "assert 1 == 2" in str(longrepr)
    assert longrepr.reprcrash.message.startswith("hosts lost during the test: primary: container exited (137); ")


FIGURES_TESTS = """
def test_one(figures):
    figures("sync").record("run 1: 0 lost")


def test_two(figures):
    figures("sync").record("run 2: 0 lost")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "two workers"])
def test_figures_of_every_process_go_to_the_run_s_artifacts_and_a_run_starts_them_afresh(harnessed, workers):
    """Figures are the run's, in its artifacts folder: every worker appends to one file, and the last
    run's lines go. Never a fixed /tmp path: another user's file there (sticky /tmp) failed the test."""
    stale = harnessed.path / "artifacts" / "figures" / "sync.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("a line of the last run\n")
    harnessed.makepyfile(test_figures=FIGURES_TESTS)
    harnessed.runpytest_subprocess(*workers, "-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert sorted(stale.read_text().splitlines()) == ["run 1: 0 lost", "run 2: 0 lost"]


def test_killers_first_moves_their_modules_and_then_their_tests_ahead_keeping_the_rest_in_order():
    def item(nodeid: str) -> SimpleNamespace:
        name = nodeid.split("::")[1]
        return SimpleNamespace(nodeid=nodeid, originalname=name.split("[")[0], name=name)

    items = [
        item("scenarios/test_long.py::test_a[d12]"),
        item("scenarios/test_long.py::test_b[d12]"),
        item("scenarios/test_rewind.py::test_setup[d12]"),
        item("scenarios/test_rewind.py::test_rewinds[d12]"),
        item("scenarios/test_rewind.py::test_setup[d13]"),
        item("scenarios/test_rewind.py::test_rewinds[d13]"),
        item("scenarios/test_other.py::test_c[d12]"),
    ]
    order = [i.nodeid for i in killers_first(items, {"scenarios/test_rewind.py": ["test_rewinds"]})]
    assert order == [
        "scenarios/test_rewind.py::test_rewinds[d12]",
        "scenarios/test_rewind.py::test_rewinds[d13]",
        "scenarios/test_rewind.py::test_setup[d12]",
        "scenarios/test_rewind.py::test_setup[d13]",
        "scenarios/test_long.py::test_a[d12]",
        "scenarios/test_long.py::test_b[d12]",
        "scenarios/test_other.py::test_c[d12]",
    ]
    assert killers_first(items, {}) == items


def test_the_first_failure_is_said_at_once_with_its_runbook_line_and_only_once():
    written: list[str] = []
    terminal = SimpleNamespace(write=written.append, write_line=lambda line, **_: written.append(line))
    config = SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: terminal))
    part = FirstFailure(config)
    passed = SimpleNamespace(failed=False, nodeid="scenarios/test_a.py::test_ok", user_properties=[])
    where = [("runbook_file", "runbooks/r.md"), ("runbook_line", "361"), ("runbook_step", "primary-wal-log-hints")]
    failed = SimpleNamespace(failed=True, nodeid="scenarios/test_rewind.py::test_rewinds[d12]", user_properties=where)
    for report in (passed, failed, failed):
        part.pytest_runtest_logreport(report)
    assert len(written) == 2 and written[0] == "\n" and written[1].startswith("gate: first failure after ")
    assert written[1].endswith(
        "s: scenarios/test_rewind.py::test_rewinds[d12] (runbook runbooks/r.md:361, step primary-wal-log-hints)"
    )


def test_the_first_failure_names_the_likely_cause_and_the_changed_line_once_each():
    written: list[str] = []
    terminal = SimpleNamespace(write=written.append, write_line=lambda line, **_: written.append(line))
    part = FirstFailure(SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: terminal)))
    where = [("runbook_file", "r.md"), ("runbook_line", "1972"), ("runbook_step", "rejoin-rewind")]
    same = [*where, ("runbook_cause", "r.md:363:hints"), ("runbook_change", "r.md:363:hints;r.md:400:hba")]
    part.pytest_runtest_logreport(SimpleNamespace(failed=True, nodeid="t::a", user_properties=same))
    assert written[1].endswith(
        "(runbook r.md:1972, step rejoin-rewind); changed in this diff: r.md:363 (hints), r.md:400 (hba)"
    )
    part = FirstFailure(SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: terminal)))
    other = [*where, ("runbook_cause", "r.md:300:conf"), ("runbook_change", "r.md:363:hints")]
    part.pytest_runtest_logreport(SimpleNamespace(failed=True, nodeid="t::a", user_properties=other))
    assert written[-1].endswith("; likely cause: r.md:300 (conf); changed in this diff: r.md:363 (hints)")


class FakeFactory(PairFactory):
    """PairFactory.each over pairs that are numbers: `made` records each call's `replacing`."""

    def __init__(self, shared_hosts: bool):
        self.target = SimpleNamespace(shared_hosts=shared_hosts)
        self.made: list[bool] = []

    def __call__(self, book=None, *, replacing: bool = False, **_):
        self.made.append(replacing)
        return len(self.made)


@pytest.mark.parametrize("shared_hosts, widest", [(False, 2), (True, 1)], ids=["containers", "shared-hosts"])
def test_each_runs_two_pairs_side_by_side_on_containers_and_one_on_shared_hosts(shared_hosts, widest):
    import threading
    import time

    factory, lock, busy, seen = FakeFactory(shared_hosts), threading.Lock(), [0], []

    def work(pair: int) -> int:
        with lock:
            busy[0] += 1
            seen.append(busy[0])
        time.sleep(0.05)  # long enough for a second thread of the same turn to start meanwhile
        with lock:
            busy[0] -= 1
        return pair * 10

    assert factory.each(5, work) == [10, 20, 30, 40, 50]  # in run order
    assert max(seen) == widest
    assert factory.made == ([True, False, True, False, True] if widest == 2 else [True] * 5)


def test_each_raises_a_failure_once_its_turn_is_done():
    factory, finished = FakeFactory(False), []

    def work(pair: int) -> int:
        if pair == 1:
            raise AssertionError("the first pair lost a transaction")
        finished.append(pair)
        return pair

    with pytest.raises(AssertionError, match="lost a transaction"):
        factory.each(5, work)
    assert finished == [2] and factory.made == [True, False]  # its turn's other pair ran; no later turn began
