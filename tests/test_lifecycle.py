"""The executor's hooks and stdin, the command line's errors, the pytest plugin (no Docker needed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_hosts_base import LocalHost

from harness import project
from harness.runbook import Executor, RunbookError, Skip, StepFailed, parse_text
from harness.runbook.execute import without_stdin

pytest_plugins = ["pytester"]

RUNBOOK = """
```sh {"step":"first","host":"primary","os":["debian"]}
echo one
```

```sh {"step":"second","host":"primary","os":["debian"]}
echo two
```
"""


def executor(text: str, **kwargs) -> Executor:
    book = parse_text(text)
    return Executor(book, {"primary": LocalHost()}, {}, **kwargs)


def test_a_command_reading_stdin_cannot_swallow_the_rest_of_its_block():
    swallow = '```sh {"step":"swallow","host":"primary","os":["debian"]}\ncat >/dev/null\nfalse\n```\n'
    book = parse_text(swallow)
    # the control: fed to bash as it is, `cat` eats `false` and the script "succeeds"
    assert LocalHost().run(book.blocks[0].body, check=False).ok
    with pytest.raises(StepFailed) as failure:
        executor(swallow).run(book.blocks)
    assert failure.value.block.step == "swallow"


def test_hooks_skip_steps_and_run_around_the_others():
    class ReuseFirst:
        def before(self, block):
            return Skip("reused", "from snapshot") if block.step == "first" else None

        def after(self, block, result):
            seen.append(("hook-after", block.step, result.stdout.strip()))

    seen: list[tuple] = []
    run = executor(RUNBOOK, hooks=[ReuseFirst()])
    book = run.runbook
    run.run(
        book.blocks,
        before=lambda block: seen.append(("before", block.step)),
        after=lambda block, result: seen.append(("after", block.step)),
    )
    assert [(r.step, r.outcome) for r in run.transcript.records] == [("first", "reused"), ("second", "ok")]
    assert seen == [("before", "second"), ("hook-after", "second", "two"), ("after", "second")]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=project.current().root,
        env={**os.environ, **env},
        timeout=60,
    )


def test_up_without_a_docker_engine_says_how_to_start_one_in_three_lines():
    done = cli("up", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
    assert "no Docker engine answers" in done.stderr and "dockerd" in done.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["up", "--runbook", "/missing/runbook.md"], "runbook /missing/runbook.md: cannot be read"),
        (["down", "--inventory", "/missing/inventory.toml"], "inventory /missing/inventory.toml: no such file"),
    ],
)
def test_bad_input_gets_one_message_not_a_traceback(args, words):
    done = cli(*args, DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert words in done.stderr


def test_plugin_reads_options_from_ini_and_parametrises_by_target(harnessed):
    harnessed.makeini("[pytest]\npgrepl_images = debian-11 debian-13\npgrepl_backends = docker\n")
    harnessed.makepyfile("def test_it(target):\n    pass\n")
    result = harnessed.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_it[[]debian-11-docker[]]", "*test_it[[]debian-13-docker[]]"])


def test_plugin_rejects_an_unknown_image_before_running_anything(harnessed):
    harnessed.makepyfile("def test_it(target):\n    pass\n")
    result = harnessed.runpytest("--image", "debian-99")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--image debian-99: no such image*"])


def test_plugin_shows_a_harness_failure_as_its_message(harnessed):
    harnessed.makepyfile(
        "from harness.waiting import wait_until\n"
        "def test_it():\n"
        "    wait_until(lambda: False, timeout=0.1, what='the moon')\n"
    )
    result = harnessed.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["test_plugin_shows_a_harness_failure_as_its_message.py:3: WaitTimeout: *the moon*"])
    assert "def test_it" not in result.stdout.str()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--backend", "ssh", "--pgrepl-inventory="], "no inventory given"),
        (["--backend", "docker", "--pgrepl-inventory", "x.toml"], "--pgrepl-inventory needs --backend ssh"),
        (["--backend", "telnet"], "--backend telnet: choose from docker, ssh"),
    ],
)
def test_plugin_rejects_options_that_name_no_target(harnessed, args, words):
    harnessed.makepyfile("def test_it(target):\n    pass\n")
    result = harnessed.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert words in result.stderr.str()


@pytest.mark.parametrize("dist", [["--dist", "loadgroup"], []], ids=["loadgroup", "plain-n"])
def test_one_worker_runs_a_whole_module_for_a_target(harnessed, dist):
    """A module's pairs are module fixtures: split over two workers, each would bring them up."""
    harnessed.makeini("[pytest]\npgrepl_images = debian-11 debian-12\npgrepl_backends = docker\n")
    record = harnessed.path / "ran.txt"
    body = "import os\n" + "".join(
        f"def test_{n}(target):\n"
        f"    with open({str(record)!r}, 'a') as out:\n"
        f"        out.write(f'{{__name__}} {{target.label}} {{os.environ[\"PYTEST_XDIST_WORKER\"]}}\\n')\n"
        for n in range(4)
    )
    harnessed.makepyfile(test_a=body, test_b=body)
    result = harnessed.runpytest_subprocess("-n", "2", *dist, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=16)
    workers: dict[tuple[str, str], set[str]] = {}
    for line in record.read_text().splitlines():
        module, label, worker = line.split()
        workers.setdefault((module, label), set()).add(worker)
    assert len(workers) == 4 and all(len(ran_on) == 1 for ran_on in workers.values()), workers


@pytest.mark.parametrize(
    "nodeid, group",
    [
        ("scenarios/test_a.py::test_x[debian-12-docker]", "scenarios/test_a.py@debian-12-docker"),
        ("scenarios/test_a.py::test_x[primary-debian-12-ssh]", "scenarios/test_a.py@debian-12-ssh"),
        ("tests/test_b.py::test_y", "tests/test_b.py"),
    ],
)
def test_cluster_group_is_the_module_on_one_target(nodeid, group):
    from harness.pytest.scheduling import cluster_group
    from harness.targets import make_target

    targets = [make_target(image="debian-12"), make_target(image="debian-12", backend="ssh")]
    assert cluster_group(nodeid, targets) == group


def test_a_worker_stays_on_its_target_then_takes_one_no_other_worker_runs():
    from harness.pytest.scheduling import next_unit

    queue = ["a.py@t1", "b.py@t1", "a.py@t2", "b.py@t2", "a.py@t3"]
    assert next_unit(queue, mine=[], others=[]) == "a.py@t1"  # the longest first
    assert next_unit(queue[1:], mine=[], others=["a.py@t1"]) == "a.py@t2"  # t1 is another worker's
    assert next_unit(["b.py@t1", "b.py@t2", "a.py@t3"], mine=["a.py@t2"], others=["a.py@t1"]) == "b.py@t2"
    assert next_unit(["b.py@t1", "a.py@t3"], mine=["b.py@t2"], others=["a.py@t1"]) == "a.py@t3"
    assert next_unit(["b.py@t1"], mine=["b.py@t2"], others=["a.py@t1"]) == "b.py@t1"  # all busy: the first


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["mutate", "--runbook", "/tmp/elsewhere/runbook.md"], "copy the runbook under"),
        (["mutate", "--jobs", "0"], "--jobs 0: run at least one mutant at a time"),
        (["mutate", "--jobs", "-3"], "--jobs -3: run at least one mutant at a time"),
    ],
)
def test_mutate_refuses_bad_arguments_before_any_docker(args, words, capsys, monkeypatch):
    from harness import __main__ as cli_main
    from harness.hosts import docker

    monkeypatch.setattr(docker, "docker_client", lambda: pytest.fail("mutate reached Docker"))
    assert cli_main.main(args) == 1
    err = capsys.readouterr().err
    assert "FAILED:" in err and words in err and "Traceback" not in err


@pytest.mark.parametrize(
    "body",
    ["echo one\n}\ncat\necho two\nfalse\n", "echo one\n}; cat\nfalse\n", "cat <<EOF\nfalse\n"],
    ids=["stray-brace", "brace-and-cat", "open-heredoc"],
)
def test_a_block_cannot_end_the_stdin_guard_early(body):
    book = parse_text(f'```sh {{"step":"escape","host":"primary","os":["debian"]}}\n{body}```\n')
    # the control: in the guard as it is, the block "succeeds" though its last line is `false`
    assert body.startswith("cat") or LocalHost().run(without_stdin(book.blocks[0].body), check=False).ok
    host = LocalHost()
    with pytest.raises(RunbookError, match=r"<runbook>:1: step escape: the block is not a complete script"):
        Executor(book, {"primary": host}, {}).run(book.blocks)
    assert host.remotes == []  # refused before anything ran


def test_captured_output_and_junit_never_show_a_secret(harnessed):
    harnessed.makepyfile(
        "import logging, sys\n"
        "from harness.secrets import Secret\n"
        "def test_it():\n"
        "    secret = Secret.generate()\n"
        "    print('the password is', secret, 'MARK-OUT')\n"
        "    print('the password is', secret, 'MARK-ERR', file=sys.stderr)\n"
        "    logging.getLogger('x').warning('the password is %s MARK-LOG', secret)\n"
        "    open('secret.txt', 'w').write(secret)\n"
        "    assert False\n"
    )
    result = harnessed.runpytest("--junit-xml=junit.xml", "-o", "junit_logging=all")
    result.assert_outcomes(failed=1)
    secret = (harnessed.path / "secret.txt").read_text()
    junit = (harnessed.path / "junit.xml").read_text()
    for text in (result.stdout.str(), junit):
        assert all(mark in text for mark in ("MARK-OUT", "MARK-ERR", "MARK-LOG")), text
        assert secret not in text and secret[:8] not in text


@pytest.mark.parametrize("body", ["", "# only a comment\n", "\n\n"], ids=["empty", "comment", "blank"])
def test_a_block_with_no_command_left_runs_as_nothing_and_succeeds(body):
    """A mutant that deletes a block's only line: the step runs nothing, as in a terminal; what kills
    the mutant must then be a scenario, not bash's syntax error on an empty `{ }` group."""
    book = parse_text(f'```sh {{"step":"empty","host":"primary","os":["debian"]}}\n{body}```\n')
    transcript = Executor(book, {"primary": LocalHost()}, {}).run(book.blocks)
    assert [(record.step, record.outcome) for record in transcript.records] == [("empty", "ok")]


@pytest.mark.parametrize("body", ["false\n", "true\nfalse\n"])
def test_the_guard_keeps_the_status_of_the_block_s_last_command(body):
    assert LocalHost().run(without_stdin(body), check=False).rc == 1
