"""What a run shows a person: the transcript, the replication state, how to get in."""

from __future__ import annotations

from harness.cluster import Cluster
from harness.secrets import redact


def render(cluster: Cluster, *, kept: bool) -> str:
    hosts = cluster.hosts
    lines = [
        f"runbook: {cluster.runbook.path}",
        f"OS family: {cluster.family}   PostgreSQL major: {cluster.pg_major}",
        *(
            f"{role:<9} {host.url}  private address {host.address}  ({host.os.pretty_name})"
            for role, host in hosts.items()
        ),
        "",
        "== transcript",
        cluster.transcript.render(),
        "",
        "== replication state",
        cluster.summary(),
    ]
    if kept:
        lines += ["", "== hosts kept running (remove them with: python -m harness down); to get in:"]
        lines += [f"{role:<9} {host.login_command}   then: sudo -u postgres psql" for role, host in hosts.items()]
    return redact("\n".join(lines))
