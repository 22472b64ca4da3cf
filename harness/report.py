"""What a run shows a person: the transcript, the replication state, how to get in; figures a
scenario measured."""

from __future__ import annotations

from pathlib import Path

from harness.pair import ReplicationPair
from harness.secrets import redact


class Figures:
    """Figures a scenario measured (RTO, RPO, rates): printed (`pytest -s` shows them) and appended to
    `path`, which every process of a run shares (the pytest fixture `figures`: the run's artifacts
    folder, emptied as the run starts; never a fixed path in /tmp that another user's run may own)."""

    def __init__(self, path: Path):
        self.path = path

    def record(self, text: str) -> None:
        print("\n" + text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(redact(text.rstrip("\n")) + "\n")


def replication_state(pair: ReplicationPair) -> str:
    """The server version and the three replication views, as rows."""
    primary, secondary = pair.primary, pair.secondary
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


def connection(pair: ReplicationPair, *, kept: bool) -> dict:
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
        for role, host in pair.hosts.items()
    }
    return {
        "runbook": str(pair.runbook.path),
        "family": pair.family,
        "pg_major": pair.pg_major,
        "kept": kept,
        "remove_with": DOWN if kept else None,
        "hosts": hosts,
    }


def render(pair: ReplicationPair, *, kept: bool) -> str:
    hosts = connection(pair, kept=kept)["hosts"]
    lines = [
        f"runbook: {pair.runbook.path}",
        f"OS family: {pair.family}   PostgreSQL major: {pair.pg_major}",
        *(
            f"{role:<9} {host['url']}  private address {host['private_address']}  ({host['os']})"
            for role, host in hosts.items()
        ),
        "",
        "== transcript",
        pair.transcript.render(),
        "",
        "== replication state",
        replication_state(pair),
        "",
        "== where the time went: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in pair.stopwatch.phases),
    ]
    if kept:
        lines += ["", f"== hosts kept running (remove them with: {DOWN}); to get in:"]
        lines += [f"{role:<9} {host['login']}   then: {host['then']}" for role, host in hosts.items()]
    return redact("\n".join(lines))
