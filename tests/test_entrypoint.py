"""The machines' entrypoint decides how systemd gets a cgroup hierarchy, for each kind of host
(images/common/ecs-entrypoint.sh --decide), and the harness adds what the engine's host needs."""

from __future__ import annotations

import subprocess

import pytest

from harness.hosts.docker import SYSTEMD_RUN_KWARGS, systemd_run_kwargs
from harness.project import current

ENTRYPOINT = current().images / "common" / "ecs-entrypoint.sh"

# What /proc/self/mounts shows at /sys/fs/cgroup in a container started with --cgroupns=private
HOSTS = {
    # a cgroup v1 host (the project's machines): a tmpfs with the v1 controllers under it
    "cgroup v1 host": ("tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
                       "cgroup /sys/fs/cgroup/memory cgroup ro,nosuid,nodev,noexec,memory 0 0\n"),
    # a cgroup v2 host (GitHub's runners, Ubuntu 22.04+, Debian 11+): Docker mounts it read-only
    "cgroup v2 host": "cgroup /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n",
    # a privileged container, or one given the host's tree read-write
    "writable cgroup2": "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n",
    "nothing mounted": "proc /proc proc rw 0 0\n",
}  # fmt: skip


def decide(tmp_path, mounts: str, systemd_version: int) -> str:
    table = tmp_path / "mounts"
    table.write_text(mounts)
    env = {"PGREPL_MOUNTS": str(table), "PGREPL_SYSTEMD_VERSION": str(systemd_version), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "--decide"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("cgroup v1 host", "cgroup2"),
        ("cgroup v2 host", "remount-rw"),
        ("writable cgroup2", "keep"),
        ("nothing mounted", "cgroup2"),
    ],
)
def test_systemd_230_and_newer_gets_a_writable_cgroup2_of_its_own(tmp_path, host, expected):
    assert decide(tmp_path, HOSTS[host], 252) == expected


def test_el7_s_systemd_gets_the_named_v1_hierarchy(tmp_path):
    assert decide(tmp_path, HOSTS["cgroup v1 host"], 219) == "v1-named"
    named = HOSTS["cgroup v1 host"] + "cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,name=systemd 0 0\n"
    assert decide(tmp_path, named, 219) == "keep"


def test_an_engine_with_apparmor_starts_machines_unconfined_by_it():
    """docker-default denies mount, which the entrypoint needs on a cgroup v2 host."""
    with_apparmor = systemd_run_kwargs(["name=apparmor", "name=seccomp,profile=default", "name=cgroupns"])
    assert with_apparmor["security_opt"] == ["seccomp=unconfined", "apparmor=unconfined"]
    assert systemd_run_kwargs(["name=seccomp,profile=default"]) == SYSTEMD_RUN_KWARGS
    assert SYSTEMD_RUN_KWARGS["security_opt"] == ["seccomp=unconfined"]  # not changed in place


def test_a_restored_machines_files_get_its_new_addresses_as_whole_words(tmp_path):
    hba, pgpass, untouched = tmp_path / "pg_hba.conf", tmp_path / ".pgpass", tmp_path / "other.conf"
    hba.write_text("host replication replicator 10.9.0.3/32 scram-sha-256\nhost all all 10.9.0.35/32 trust\n")
    pgpass.write_text("10.9.0.2:5432:replication:replicator:pw\n")
    pgpass.chmod(0o600)
    untouched.write_text("10.9.0.2\n")
    listing = tmp_path / "list"
    listing.write_text(f"{hba}\n{pgpass}\n{tmp_path / 'gone'}\n")
    # the new primary's address is the old secondary's: rewritten once, not twice
    env = {
        "PGREPL_READDRESS": "10.9.0.2=10.9.0.3 10.9.0.3=10.213.0.11",
        "PGREPL_READDRESS_LIST": str(listing),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["sh", str(ENTRYPOINT), "--readdress"], env=env, check=True)
    assert hba.read_text() == (
        "host replication replicator 10.213.0.11/32 scram-sha-256\nhost all all 10.9.0.35/32 trust\n"
    )
    assert pgpass.read_text() == "10.9.0.3:5432:replication:replicator:pw\n"
    assert pgpass.stat().st_mode & 0o777 == 0o600
    assert untouched.read_text() == "10.9.0.2\n" and not listing.exists()  # only the listed files, once
