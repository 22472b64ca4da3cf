"""`mutate` stopped by SIGTERM mid-run keeps the verdicts it has, stops its scenario runs at once, and a second
run resumes: it measures only the mutants that have no verdict. No Docker: the scenario command is a stand-in."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from harness import project
from harness.gate import module_parts
from harness.images import ImageProfile
from harness.labels import HELD_SESSION_ENV
from harness.mutate import mutants, part_modules
from harness.runstate import SESSIONS_ROOT
from harness.waiting import wait_until

# The real Mutation.run on the runbook's `slot-limit` part (its deletions on debian-12, each through the scenario
# modules of that part), one at a time; each "scenario" appends its mutant's file name to calls.txt, then does
# what BEHAVIOUR says.
RUNNER = textwrap.dedent(
    """
    import contextlib, os, sys
    from pathlib import Path
    from harness import project
    from harness.mutate import Mutation
    from harness.targets import unwind_on_sigterm

    work = Path(sys.argv[1])
    SCENARIO = '''
    import os, sys, time
    from pathlib import Path
    work, runbook = Path(sys.argv[1]), Path(sys.argv[2])
    with open(work / "calls.txt", "a") as calls:
        calls.write(runbook.name + "\\\\n")
    with open(work / "held.txt", "a") as held:
        held.write(os.environ.get("PGREPL_HELD_SESSION", "-") + "\\\\n")
    with open(work / "runs.txt", "a") as runs:
        runs.write(runbook.name + " " + sys.argv[4] + "\\\\n")
    (work / "scenario.pid").write_text(str(os.getpid()))
    if sys.argv[3] == "kill-first-then-hang" and not (work / "first").exists():
        (work / "first").touch()
        sys.exit(1)
    if sys.argv[3] == "kill-first-then-hang":
        time.sleep(600)
    if sys.argv[3] == "kill-naming-a-test":
        module, only, _ = sys.argv[4].split("|")
        if only in ("", "test_stand_in"):  # whole, or only the test that killed before
            print(f"FAILED {module}::test_stand_in[debian-12-docker] - AssertionError: boom")
            sys.exit(1)
    sys.exit(2 if sys.argv[3] == "collection-error" else 0)
    '''

    class StandIn(Mutation):
        def scenario_argv(self, module, runbook, artifacts, *, only=(), skip=()):
            run = "|".join((module, ",".join(only), ",".join(skip)))
            return [sys.executable, "-c", SCENARIO, str(work), str(runbook), sys.argv[2], run]

        def snapshots_removed(self):
            return contextlib.nullcontext()

    unwind_on_sigterm()
    book = project.current().default_runbook
    narrowed = {
        name: tuple(os.environ[variable].split(",")) for name, variable in (("steps", "STEPS"), ("modules", "MODULES"))
        if os.environ.get(variable)
    }
    part = os.environ.get("PART", "slot-limit")
    image = os.environ.get("IMAGE", "debian-12")
    result = StandIn(book, image, (part,), work / "mutate", jobs=1, ledger=work / "ledger.json", **narrowed).run()
    print("killed", result["killed"], "survived", len(result["survived"]), "errors", len(result["errors"]))
    print("not run here", result["not_run"], "of", result["mutants"])
    """
)


def start(work: Path, behaviour: str, **narrowed: str) -> subprocess.Popen:
    """The runner on debian-12's slot-limit part, or on the IMAGE, PART, STEPS and MODULES given in `narrowed`."""
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(work), behaviour],
        cwd=project.current().root,
        env={**os.environ, **narrowed},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def calls(work: Path) -> list[str]:
    path = work / "calls.txt"
    return path.read_text().splitlines() if path.is_file() else []


def slot_limit() -> tuple[int, int]:
    """(mutants, scenario modules each) of the part the runner mutates, as the runbook and scenarios are now."""
    book, root = project.current().default_runbook, project.current().root
    profile = ImageProfile.load("debian-12")
    found = mutants(book, profile.family, ("slot-limit",), profile.package_source, pg_major=profile.pg_major)
    modules = part_modules(module_parts(), str(book.resolve().relative_to(root)), "slot-limit")
    return len(found), len(modules)


def test_sigterm_mid_run_keeps_the_verdicts_and_a_second_run_resumes(tmp_path):
    count, modules = slot_limit()
    assert count >= 3 and modules >= 1, (count, modules)
    first = start(tmp_path, "kill-first-then-hang")
    # mutant 1 killed by its first module; mutant 2's first module hangs: the run is mid-way
    wait_until(
        lambda: len(calls(tmp_path)) >= 2,
        timeout=60,
        what="the second scenario run to start",
        seen=lambda: f"calls {calls(tmp_path)}",
    )
    hanging = int((tmp_path / "scenario.pid").read_text())
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=30)  # not the 600 s the hanging scenario would take
    assert first.returncode != 0, output
    assert f"interrupted: 1 of {count} verdicts kept" in output, output
    wait_until(lambda: not _alive(hanging), timeout=10, what="the hanging scenario to be stopped")
    state = json.loads((tmp_path / "mutate" / "state.json").read_text())
    assert [v["verdict"] for v in state.values()] == ["killed"], "the interrupted mutant must have no verdict"
    measured_first = calls(tmp_path)

    second = start(tmp_path, "survive")
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    again = calls(tmp_path)[len(measured_first) :]
    assert measured_first[0] not in again, "the killed mutant was measured again instead of resumed"
    assert len(again) == (count - 1) * modules, again  # every other mutant, each through every slot-limit module
    assert f"killed 1 survived {count - 1}" in output, output
    state = json.loads((tmp_path / "mutate" / "state.json").read_text())
    assert sorted(v["verdict"] for v in state.values()) == ["killed"] + ["survived"] * (count - 1)
    ledger = json.loads((tmp_path / "ledger.json").read_text())["verdicts"]  # the committed verdicts, here a copy
    assert ledger.keys() == state.keys() and all(v["image"] == "debian-12" and v["step"] for v in ledger.values())
    assert not (project.current().default_runbook.with_suffix(".mutation.json.tmp")).exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_scenario_that_exits_2_unasked_is_an_error_measured_again(tmp_path):
    """pytest exits 2 on a collection error too: without a stop that is an `error` verdict (reported, and
    measured again by the next run), not a mutant that silently has no verdict."""
    count, _ = slot_limit()
    run = start(tmp_path, "collection-error")
    output, _ = run.communicate(timeout=60)
    assert f"killed 0 survived 0 errors {count}" in output, output
    state = json.loads((tmp_path / "mutate" / "state.json").read_text())
    assert sorted(v["verdict"] for v in state.values()) == ["error"] * count
    assert not (tmp_path / "ledger.json").exists(), "an error is no verdict to commit"
    again = start(tmp_path, "survive")
    output, _ = again.communicate(timeout=60)
    assert f"killed 0 survived {count} errors 0" in output, output


def test_the_mutants_of_a_later_part_share_one_session_held_by_mutate(tmp_path):
    """Every scenario run of a later part's mutants joins one session that `mutate` holds (its set-up state is
    saved once and restored by the others, harness.runstate), labelled with mutate's PID; it goes at the end."""
    run = start(tmp_path, "survive")
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    held = set((tmp_path / "held.txt").read_text().splitlines())
    assert len(held) == 1, held
    session, pid = held.pop().split(":")
    assert pid == str(run.pid)
    assert not (SESSIONS_ROOT / session).exists(), "the held session's registry (its passwords) outlived mutate"


def test_a_setup_mutant_holds_a_session_of_its_own_from_its_second_module_on(tmp_path):
    """A setup mutant's setup is no other mutant's: its first module runs on its own (most mutants die there, and
    saving would cost them), the second saves its set-up state in a session held for this mutant alone, and the
    later ones start from it; the session goes with the mutant's verdict."""
    modules = "test_replication,test_install,test_security"
    run = start(tmp_path, "survive", PART="setup", STEPS="primary-create-slot,primary-hba", MODULES=modules)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    held = (tmp_path / "held.txt").read_text().splitlines()
    mutants = [held[i : i + 3] for i in range(0, len(held), 3)]
    assert len(mutants) >= 2 and len(held) == 3 * len(mutants), held
    for first, second, third in mutants:
        assert first == "-" and second == third != "-", held
        assert second.endswith(f":{run.pid}")
        assert not (SESSIONS_ROOT / second.split(":")[0]).exists(), "a mutant's session outlived its verdict"
    assert len({second for _, second, _ in mutants}) == len(mutants), "two mutants shared a session"


def test_a_package_step_mutant_is_not_run_on_an_image_that_skips_the_package_steps(tmp_path):
    """el8-pgdg-layout has PostgreSQL preinstalled and skips the runbook's package steps: no scenario there could see
    a mutant of theirs, so none runs (each would pass every setup module), and none is recorded as a survivor."""
    run = start(tmp_path, "survive", IMAGE="el8-pgdg-layout", PART="setup", STEPS="primary-install,secondary-install")
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    assert "killed 0 survived 0 errors 0" in output, output
    assert re.search(r"^not run here ([1-9]\d*) of \1$", output, re.M), output
    assert calls(tmp_path) == [], "a scenario ran on a mutant of a step the image skips"
    assert not (tmp_path / "ledger.json").exists()


def test_a_malformed_held_session_is_a_one_line_usage_error():
    env = {**os.environ, HELD_SESSION_ENV: "not-a-session"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "scenarios/test_replication.py"],
        cwd=project.current().root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"{HELD_SESSION_ENV}='not-a-session': not SESSION:PID" in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def runs(work: Path) -> list[tuple[str, str, str, str]]:
    """Each scenario run: (mutant file, module, only these tests, not these)."""
    path = work / "runs.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(name, *run.split("|")) for name, run in (line.split(" ", 1) for line in lines)]


def killed_naming_a_test(work: Path) -> dict:
    """A run on debian-12 whose scenario kills every mutant and names its test: the ledger it leaves."""
    work.mkdir()
    run = start(work, "kill-naming-a-test")
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    assert all(only == "" for _, _, only, _ in runs(work)), "no history yet: whole modules"
    return json.loads((work / "ledger.json").read_text())["verdicts"]


def on_el8(work: Path, behaviour: str, ledger: dict) -> tuple[str, list]:
    """The same part on el8-pgdg-layout (no verdict of its own kept) with `ledger` as history."""
    work.mkdir()
    (work / "ledger.json").write_text(json.dumps({"verdicts": ledger}))
    run = start(work, behaviour, IMAGE="el8-pgdg-layout")
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    return output, runs(work)


def test_the_test_that_killed_mutants_of_a_step_runs_first_on_its_own(tmp_path):
    """The ledger keeps which test killed a mutant; a mutant of the same step (another image here, so no verdict is
    kept) runs that test alone first, and when it kills, nothing else runs. Without a test in the ledger (a verdict
    from before), the modules run whole, as before."""
    ledger = killed_naming_a_test(tmp_path / "debian")
    assert ledger and {v["test"] for v in ledger.values()} == {"test_stand_in"}, ledger
    _, done = on_el8(tmp_path / "el8", "kill-naming-a-test", ledger)
    assert done and all(only == "test_stand_in" for _, _, only, _ in done), done  # the test alone, once a mutant
    assert len({name for name, *_ in done}) == len(done)

    for verdict in ledger.values():  # verdicts recorded before tests were: whole modules
        del verdict["test"]
    _, done = on_el8(tmp_path / "old", "kill-naming-a-test", ledger)
    assert done and all(only == "" for _, _, only, _ in done), done


def test_when_the_test_that_killed_before_passes_its_module_runs_without_it(tmp_path):
    """History is a guess: a mutant the named test does not kill goes on through every module, each whole, except
    that the test already run is deselected from its own module; the verdict is what the modules say."""
    ledger = killed_naming_a_test(tmp_path / "debian")
    killer = next(iter(ledger.values()))["by"]
    count, modules = slot_limit()
    output, done = on_el8(tmp_path / "el8", "survive", ledger)
    assert f"killed 0 survived {count}" in output, output
    assert len(done) == count * (1 + modules), done
    first_mutant = [(module, only, skip) for _, module, only, skip in done[: 1 + modules]]
    assert first_mutant[0] == (killer, "test_stand_in", "")
    book, root = project.current().default_runbook, project.current().root
    part = part_modules(module_parts(), str(book.resolve().relative_to(root)), "slot-limit")
    assert {module for module, _, _ in first_mutant[1:]} == set(part)
    assert all(only == "" and skip == ("test_stand_in" if m == killer else "") for m, only, skip in first_mutant[1:])
