"""What a run shows a person: the transcript, the replication state, how to get in."""

from __future__ import annotations

from harness.cluster import Cluster
from harness.secrets import redact


def replication_state(cluster: Cluster) -> str:
    """The server version and the three replication views, as rows."""
    primary, secondary = cluster.primary, cluster.secondary
    return (
        f"server: {primary.scalar('SELECT version()')}\n"
        "primary pg_stat_replication:\n"
        + primary.rows_as_text(
            "SELECT application_name, client_addr, state, sent_lsn, replay_lsn, sync_state FROM pg_stat_replication"
        )
        + "\nprimary pg_replication_slots:\n"
        + primary.rows_as_text("SELECT slot_name, active, restart_lsn, wal_status FROM pg_replication_slots")
        + "\nsecondary pg_stat_wal_receiver:\n"
        + secondary.rows_as_text("SELECT status, sender_host, slot_name, latest_end_lsn FROM pg_stat_wal_receiver")
    )


# what a person runs once logged in to a kept host
PSQL = "sudo -u postgres psql"
DOWN = "pgrepl-harness down"


def connection(cluster: Cluster, *, kept: bool) -> dict:
    """The hosts, their addresses and how to get in (`up --json`); no secret: logins are by key or
    `docker exec`, PostgreSQL by peer authentication as postgres."""
    hosts = {
        role: {
            "url": host.url,
            "private_address": host.address,
            "os": host.os.pretty_name,
            "login": host.login_command,
            "then": PSQL,
        }
        for role, host in cluster.hosts.items()
    }
    return {
        "runbook": str(cluster.runbook.path),
        "family": cluster.family,
        "pg_major": cluster.pg_major,
        "kept": kept,
        "remove_with": DOWN if kept else None,
        "hosts": hosts,
    }


def render(cluster: Cluster, *, kept: bool) -> str:
    hosts = connection(cluster, kept=kept)["hosts"]
    lines = [
        f"runbook: {cluster.runbook.path}",
        f"OS family: {cluster.family}   PostgreSQL major: {cluster.pg_major}",
        *(
            f"{role:<9} {host['url']}  private address {host['private_address']}  ({host['os']})"
            for role, host in hosts.items()
        ),
        "",
        "== transcript",
        cluster.transcript.render(),
        "",
        "== replication state",
        replication_state(cluster),
        "",
        "== where the time went: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in cluster.stopwatch.phases),
    ]
    if kept:
        lines += ["", f"== hosts kept running (remove them with: {DOWN}); to get in:"]
        lines += [f"{role:<9} {host['login']}   then: {host['then']}" for role, host in hosts.items()]
    return redact("\n".join(lines))
