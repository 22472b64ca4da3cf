"""The install steps: the PostgreSQL major the image promises, run by systemd, where the runbook says."""

from __future__ import annotations

import pytest

from harness.runbook import StepFailed, drop_step

pytestmark = [pytest.mark.parts("setup", "verify"), pytest.mark.bringups(2)]


@pytest.fixture(scope="module", params=["primary", "secondary"])
def node(request, cluster):
    return cluster.nodes[request.param]


def test_the_expected_major_is_installed(cluster, node):
    assert node.host.run(node.layout.package_query).stdout.startswith(f"{cluster.pg_major}")
    assert int(node.scalar("SELECT current_setting('server_version_num')::int / 10000")) == cluster.pg_major


def test_the_service_is_enabled_and_active(node):
    assert node.host.run(f"systemctl is-enabled {node.layout.service}").stdout.strip() == "enabled"
    assert node.host.run(f"systemctl is-active {node.layout.unit}").stdout.strip() == "active"


def test_data_and_config_are_where_the_runbook_says(node):
    assert node.scalar("SHOW data_directory") == node.layout.data_dir
    assert node.scalar("SHOW config_file") == node.layout.postgresql_conf
    assert node.scalar("SHOW hba_file") == node.layout.pg_hba_conf


def test_data_checksums_reported_and_pg_rewind_possible(cluster, node):
    """pg_rewind (Step 8) needs data checksums (initdb's default from 18 on) or wal_log_hints."""
    checksums, hints = node.scalar("SHOW data_checksums"), node.scalar("SHOW wal_log_hints")
    print(f"{node.name}: PostgreSQL {cluster.pg_major}, data_checksums={checksums}, wal_log_hints={hints}")
    assert "on" in (checksums, hints)


def test_without_the_install_step_the_first_step_needing_postgresql_fails(make_cluster, runbook):
    with pytest.raises(StepFailed) as failure:
        make_cluster(drop_step(runbook, "primary-install")).setup()
    assert failure.value.block.step == "primary-archive-dir"
