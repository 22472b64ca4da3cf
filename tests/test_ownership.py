"""Removal from a real host works from the ownership record alone and takes exactly what the harness
made: a fake host answers the harness's commands as a Debian host would, and records them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

import pytest
from test_hosts_base import LocalHost

from harness import ownership
from harness.hosts.base import CommandFailed, Result
from harness.layout import layout_for

SYSID = "7312345678901234567"
DEBIAN_16 = layout_for("debian", 16)
INSTALLED_BEFORE = ["libpq5"]  # a client library the user had
INSTALLED_NOW = ["libpq5", "postgresql-16", "postgresql-client-16", "postgresql-common"]


class FakeHost:
    """Answers each script by the first rule whose pattern it contains; records every script run."""

    name, url = "primary", "ssh://ecs-user@203.0.113.10:22"

    def __init__(self, rules: dict[str, str | Result | Callable[[str], Result]]):
        self.rules, self.scripts, self.files = rules, [], {}

    def run(self, script: str, *, user: str | None = None, check: bool = True, timeout: float = 120) -> Result:
        self.scripts.append(script)
        answer: str | Result | Callable[[str], Result] = ""
        for pattern, rule in self.rules.items():
            if pattern in script:
                answer = rule
                break
        result = answer(script) if callable(answer) else answer
        result = Result(0, result, "") if isinstance(result, str) else result
        if check and not result.ok:
            raise CommandFailed(self.name, script, result)
        return result

    def put_file(self, path: str, content: str, **kwargs) -> None:
        self.files[path] = content

    def removal(self) -> str | None:
        """The script that removes things, if one ran."""
        return next((s for s in self.scripts if "systemctl stop" in s), None)


def record(**changes) -> str:
    data = {
        "run_id": "20250101-000000-abcdef",
        "pg_major": 16,
        "family": "debian",
        "packages_before": INSTALLED_BEFORE,
        "paths_before": ["/mnt/pgarchive/wal"],
        "created_at": "2025-01-01T00:00:00+0000",
        "data_dir": DEBIAN_16.data_dir,
        "system_identifier": SYSID,
    }
    return json.dumps({**data, **changes})


def paths_that_exist(script: str) -> Result:
    """The loop of existing_paths: every cluster path and parent exists (the log as one file)."""
    words = re.search(r"for p in (.*?); do", script).group(1).split()
    return Result(0, "".join(f"{w.strip(chr(39)).rstrip('*')}\n" for w in words), "")


def debian_host(**overrides) -> FakeHost:
    rules = {
        "owner.json": record(),
        "dpkg-query": "\n".join(INSTALLED_NOW),
        "pg_controldata": f"pg_control version number: 1300\nDatabase system identifier:           {SYSID}\n",
        "-mindepth 2": "",  # no other cluster
        "apt-get -s purge": "".join(f"Purg {p} [1.0]\n" for p in INSTALLED_NOW if p not in INSTALLED_BEFORE),
        "systemctl stop": lambda script: Result(0, "(removed)\n", ""),
        "for p in": paths_that_exist,
    }
    return FakeHost(overrides | {k: v for k, v in rules.items() if k not in overrides})  # overrides match first


def test_removal_takes_the_recorded_packages_and_the_clusters_own_paths_only():
    host = debian_host()
    removed = ownership.release(host, layout_for("debian", 16), log=lambda line: None)
    script = host.removal()
    assert "apt-get purge -y -q postgresql-16 postgresql-client-16 postgresql-common" in script
    assert "libpq5" not in script.split("apt-get purge")[1].splitlines()[0]
    assert "/var/lib/postgresql/16/main /etc/postgresql/16/main" in script
    # the trees are only emptied directories: rmdir, never rm -rf
    rm_line = next(line for line in script.splitlines() if "rm -rf" in line)
    assert "'/etc/postgresql'" not in rm_line and " /var/lib/postgresql " not in rm_line + " "
    assert "/mnt/pgarchive/wal" not in rm_line  # it was there before
    assert re.search(r"for p in .*/etc/postgresql.*; do if rmdir", script)
    assert removed[:3] == ["postgresql-16", "postgresql-client-16", "postgresql-common"]


def test_removal_refuses_when_the_package_manager_would_take_more():
    """Debian 12: purging libpq5 purges what depends on it (python3-psycopg2, php8.2-pgsql, ...)."""
    simulation = "Purg php8.2-pgsql [8.2.7-1]\nPurg python3-psycopg2 [2.9.5-1+b1]\nPurg postgresql-16 [16.1]\n"
    host = debian_host(**{"apt-get -s purge": simulation})
    with pytest.raises(ownership.NotOwned) as refused:
        ownership.release(host, DEBIAN_16, log=lambda line: None)
    message = str(refused.value)
    assert "would also remove php8.2-pgsql, python3-psycopg2" in message and "removes nothing" in message
    assert host.removal() is None


def test_removal_on_el_uses_rpm_which_never_takes_dependents():
    el = layout_for("el8", 16)
    assert el.purge_command == "rpm -e" and el.simulate_command == "rpm -e --test"
    output = "error: Failed dependencies:\n\tlibpq.so.5()(64bit) is needed by (installed) php-pgsql-8.0.30-1.x86_64\n"
    assert el.simulated.findall(output) == ["php-pgsql-8.0.30-1.x86_64"]


@pytest.mark.parametrize(
    "controldata",
    ["", 'pg_controldata: error: could not open file "global/pg_control"\n', "Database system identifier: 42\n"],
    ids=["prints-nothing", "another-major", "another-cluster"],
)
def test_removal_refuses_a_cluster_it_cannot_identify(controldata):
    host = debian_host(pg_controldata=Result(1 if not controldata.startswith("Database") else 0, controldata, ""))
    with pytest.raises(ownership.NotOwned, match=f"not {SYSID} that run 20250101-000000-abcdef created"):
        ownership.release(host, DEBIAN_16, log=lambda line: None)
    assert host.removal() is None


def test_removal_uses_the_records_major_and_data_directory_not_the_inventorys():
    host = debian_host()
    ownership.release(host, layout_for("debian", 17), log=lambda line: None)  # the inventory was edited since
    controldata = next(s for s in host.scripts if "pg_controldata" in s)
    assert controldata == "/usr/lib/postgresql/16/bin/pg_controldata /var/lib/postgresql/16/main"
    assert "/var/lib/postgresql/16/main" in host.removal() and "/17/" not in host.removal()


def test_a_record_without_identifier_is_refused_where_a_cluster_exists():
    host = debian_host(**{"owner.json": record(system_identifier=None), "test -e": Result(0, "", "")})
    with pytest.raises(ownership.NotOwned, match="never recorded its system identifier"):
        ownership.release(host, DEBIAN_16, log=lambda line: None)
    assert host.removal() is None


def test_a_record_without_identifier_and_no_cluster_is_removed():
    """A run that failed before its cluster existed: its packages still go."""
    host = debian_host(**{"owner.json": record(system_identifier=None), "test -e": Result(1, "", "")})
    ownership.release(host, DEBIAN_16, log=lambda line: None)
    assert "apt-get purge" in host.removal()


def test_another_cluster_of_the_major_stops_the_removal():
    host = debian_host(**{"-mindepth 2": "/var/lib/postgresql/16/main\n/var/lib/postgresql/16/users\n"})
    with pytest.raises(ownership.NotOwned, match=r"other clusters of PostgreSQL 16 .*/var/lib/postgresql/16/users"):
        ownership.release(host, DEBIAN_16, log=lambda line: None)
    assert host.removal() is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        (record()[:-1] + ', "extra": 1}', "unknown extra"),
        (json.dumps({k: v for k, v in json.loads(record()).items() if k != "family"}), "missing family"),
        (record(pg_major="16"), "pg_major"),
        (record(pg_major=True), "pg_major"),
        (record(packages_before=[1]), "lists of strings"),
        (record(data_dir="/"), "data_dir '/'"),
        (record(family="arch"), "family 'arch'"),
        (record(system_identifier="1; rm -rf /"), "is not a number"),
        ("1" * 5000, "not JSON"),
        ("[" * 100_000, "not JSON"),
    ],
    ids=[
        "not-json",
        "a-list",
        "extra-key",
        "missing-key",
        "major-string",
        "major-bool",
        "package-number",
        "data-dir",
        "family",
        "sysid",
        "long-integer",
        "deep",
    ],
)
def test_a_damaged_record_is_a_clear_refusal(text, why):
    host = debian_host(**{"owner.json": text})
    for act in (
        lambda: ownership.release(host, DEBIAN_16, log=lambda line: None),
        lambda: ownership.claim(host, DEBIAN_16, "run"),
    ):
        with pytest.raises(ownership.BadRecord) as refused:
            act()
        assert why in str(refused.value) and "ownership record /var/lib/pgrepl-harness/owner.json" in str(refused.value)
    assert host.removal() is None and host.files == {}


class RootHost(LocalHost):
    """Runs scripts on this machine as this user (no sudo here): for the lock's real shell."""

    def _transport(self, remote: list[str]) -> list[str]:
        if "sudo" in remote:
            remote = remote[: remote.index("sudo")] + remote[remote.index("--") + 1 :]
        return super()._transport(remote)


def test_two_runs_cannot_hold_one_host_and_the_second_is_told_who_holds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "LOCK", str(tmp_path / "pgrepl-harness" / "lock"))
    host = RootHost()
    with ownership.held(host, "first-run"):
        with pytest.raises(ownership.HostBusy) as busy, ownership.held(host, "second-run"):
            pass
        assert "held by another run of the harness: run first-run from" in str(busy.value)
        assert str(tmp_path / "pgrepl-harness" / "lock") in str(busy.value)
    with ownership.held(host, "third-run"):  # released at the end of the first
        pass
    assert not (tmp_path / "pgrepl-harness" / "lock").exists()


def test_an_inventory_run_takes_the_lock_before_the_survey(monkeypatch):
    from contextlib import ExitStack, contextmanager

    from harness import real_hosts

    seen: list[str] = []

    @contextmanager
    def held(host, run_id):
        seen.append(f"lock {host.name}")
        yield

    monkeypatch.setattr(ownership, "held", held)
    hosts = {"primary": FakeHost({}), "secondary": FakeHost({})}
    hosts["secondary"].name = "secondary"
    monkeypatch.setattr(real_hosts, "ssh_hosts", lambda stack, inventory: hosts)
    monkeypatch.setattr(real_hosts, "check_reachable", lambda hosts: None)
    monkeypatch.setattr(real_hosts, "check_identity", lambda hosts: "debian")

    def survey(host, layout):
        seen.append("survey")
        raise ownership.HostNotPristine("stop here")

    monkeypatch.setattr(ownership, "refuse_existing_postgresql", survey)
    target = type("Target", (), {"inventory": type("Inventory", (), {"pg_major": 16})(), "allow_existing": False})()
    with pytest.raises(ownership.HostNotPristine), ExitStack() as stack:
        real_hosts._claim(stack, target, None, log=lambda line: None)
    assert seen == ["lock primary", "lock secondary", "survey"]


def test_the_survey_searches_every_local_mount_not_only_the_roots_file_system(tmp_path):
    """A data directory on a second disk (/data) was missed by `find / -xdev`."""
    planted = ("root/var/lib/postgresql/16/main", "data disk/pg/16/main", "nfs/pg/main", "root/deep/1/2/3/4/5/6/7/x")
    for found in planted:
        (tmp_path / found).mkdir(parents=True)
        (tmp_path / found / "PG_VERSION").write_text("16\n")
    (tmp_path / "root/var/lib/postgresql/16/main/base/5").mkdir(parents=True)
    (tmp_path / "root/var/lib/postgresql/16/main/base/5/PG_VERSION").write_text("16\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "proc /proc proc rw 0 0\n"
        f"/dev/sdb1 {str(tmp_path / 'data disk').replace(' ', chr(92) + '040')} xfs rw 0 0\n"
        f"server:/export {tmp_path / 'nfs'} nfs4 rw 0 0\n"
    )
    probe = ownership.data_directories_probe(str(mounts), str(tmp_path / "root"))
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", probe], capture_output=True, text=True, check=True)
    found = done.stdout.splitlines()
    assert found == [str(tmp_path / "data disk/pg/16/main"), str(tmp_path / "root/var/lib/postgresql/16/main")]
    assert "/proc/mounts" in ownership.PROBES["data directories"]


def test_the_readme_names_every_file_system_the_survey_searches():
    from harness import project

    readme = (project.current().root / "README.md").read_text()
    safety = readme[readme.index("## Safety on real hosts") : readme.index("## What you see")]
    named = re.search(r"local file system: ([^)]*)\)", " ".join(safety.split())).group(1)
    listed = [word.strip() for word in named.replace("ext2/3/4", "ext2, ext3, ext4").split(",")]
    assert listed == list(ownership.LOCAL_FILE_SYSTEMS)
    assert f"up to {ownership.SURVEY_DEPTH} directories below" in " ".join(safety.split())
