"""A long read on the secondary while the primary deletes and vacuums what it reads (a recovery
conflict, as PostgreSQL's 031_recovery_conflict.pl provokes one)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from harness.pair import Node
from harness.waiting import wait_until

TABLE = "pgrepl_conflict"
ROWS = 1000


@dataclass
class ReadOutcome:
    rows: int = 0  # rows the read returned once the primary's VACUUM had been replayed
    error: str | None = None  # what the secondary said instead, if it cancelled the read
    held_xmin: str | None = None  # the secondary's xmin as the primary kept it (on the slot) before VACUUM
    dead_rows_kept: int = 0  # dead rows VACUUM had to leave on the primary


def long_read_against_vacuum(primary: Node, secondary: Node) -> ReadOutcome:
    """A read of TABLE on the secondary, begun (a cursor, its first row fetched) before the primary
    deletes every row and vacuums, and finished after the secondary has replayed that VACUUM.
    Without hot standby feedback the cleanup conflicts with the read's snapshot and the secondary
    cancels the read (after max_standby_streaming_delay); with it, the read returns every row."""
    primary.query(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} AS SELECT g AS id FROM generate_series(1, {ROWS}) g"
    )
    primary.query(f"VACUUM {TABLE}")  # all-visible before the read starts: only our DELETE makes dead rows
    primary.wait_for_catchup(secondary)
    outcome = ReadOutcome()
    with secondary.connect() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"DECLARE pgrepl_read CURSOR FOR SELECT id FROM {TABLE}")
        outcome.rows = len(conn.execute("FETCH FORWARD 1 FROM pgrepl_read").fetchall())
        if secondary.scalar("SHOW hot_standby_feedback") == "on":  # the primary must know the read's xmin first
            # through a slot the feedback goes to pg_replication_slots.xmin, not pg_stat_replication.backend_xmin
            outcome.held_xmin = wait_until(
                lambda: primary.scalar(
                    "SELECT coalesce(s.xmin, r.backend_xmin)::text FROM pg_stat_replication r"
                    " LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid"
                ),
                timeout=15,
                what="the primary to receive the secondary's hot standby feedback (slot xmin or backend_xmin)",
            )
        primary.query(f"DELETE FROM {TABLE}")
        outcome.dead_rows_kept = vacuum_keeps(primary)
        primary.wait_for_catchup(secondary)  # replayed: at once, or once the conflicting read is cancelled
        try:
            outcome.rows += len(conn.execute("FETCH FORWARD ALL FROM pgrepl_read").fetchall())
        except psycopg.Error as exc:
            outcome.error = str(exc).strip()
    return outcome


def vacuum_after_delete(primary: Node, table: str = "pgrepl_dead_rows", rows: int = ROWS) -> int:
    """A fresh `table` of `rows` rows on the primary, every row deleted, then VACUUM (VERBOSE): how many
    of the dead rows VACUUM had to keep (those some xmin still holds: a slot's, a snapshot's)."""
    primary.query(
        f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} AS SELECT g AS id FROM generate_series(1, {rows}) g"
    )
    primary.query(f"DELETE FROM {table}")
    return vacuum_keeps(primary, table)


def read_against_truncation(primary: Node, secondary: Node) -> ReadOutcome:
    """A read on the secondary that holds a lock on TABLE (a transaction that counted its rows, still
    open) while VACUUM on the primary truncates TABLE's empty pages. The primary deleted every row
    before the read began, so the read's snapshot needs none of them and hot standby feedback lets
    VACUUM remove them all; truncating the emptied table takes an ACCESS EXCLUSIVE lock, which replay
    takes on the secondary too: a lock conflict, and the secondary cancels the read (after
    max_standby_streaming_delay) whatever the feedback."""
    primary.query(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} AS SELECT g AS id FROM generate_series(1, {ROWS}) g"
    )
    deleting = int(primary.scalar(f"DELETE FROM {TABLE} RETURNING txid_current()"))
    primary.wait_for_catchup(secondary)
    outcome = ReadOutcome()
    with secondary.connect() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        outcome.rows = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        if secondary.scalar("SHOW hot_standby_feedback") == "on":  # the primary must see the read's newer xmin
            outcome.held_xmin = str(
                wait_until(
                    lambda: (
                        (
                            xmin := primary.scalar(
                                "SELECT max(xmin::text::bigint) FROM pg_replication_slots WHERE active"
                            )
                        )
                        is not None
                        and xmin > deleting
                        and xmin
                    ),
                    timeout=30,
                    what="the secondary's hot standby feedback to pass the DELETE on the primary",
                )
            )
        outcome.dead_rows_kept = vacuum_keeps(primary)
        primary.wait_for_catchup(secondary)  # replayed: once the conflicting read is gone
        try:
            conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        except psycopg.Error as exc:
            outcome.error = str(exc).strip()
    return outcome


def vacuum_keeps(primary: Node, table: str = TABLE) -> int:
    """VACUUM (VERBOSE) `table` on the primary; how many dead rows it had to keep (PostgreSQL 13's wording
    and 14's on)."""
    said: list[str] = []
    with primary.connect() as conn:
        conn.add_notice_handler(lambda diag: said.append(f"{diag.message_primary} {diag.message_detail or ''}"))
        conn.execute(f"VACUUM (VERBOSE) {table}")
    text = "\n".join(said)
    match = re.search(r"(\d+) (?:dead row versions cannot be removed yet|are dead but not yet removable)", text)
    if match is None:
        raise AssertionError(f"VACUUM VERBOSE did not say how many dead rows it kept:\n{text}")
    return int(match.group(1))
