"""Failover under write load (the runbook's Step 7), measured: RTO and RPO.

A client commits one row per transaction on the primary; the primary is fenced by the runbook's
own first failover step (a clean fast shutdown) or, with `crash`, killed with SIGKILL first; the
runbook's blocks then promote the secondary.

- RTO: from the promote call to the first write the new primary accepts (a probe retries an
  INSERT on the secondary every 10 ms from just before the `failover-promote` block starts);
- RPO: the transactions the writer saw committed that the new primary lacks, and the bytes of
  the old primary's WAL that the new primary did not replay (pg_waldump on the stopped old
  primary, from the new primary's last replayed LSN to where the old WAL ends).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

import psycopg

from harness.hosts.base import Result
from harness.pair import Node, ReplicationPair
from harness.runbook import Block
from harness.waiting import WaitTimeout, wait_until

TABLE = "promotion_rows"
MAX_ROWS = 20_000  # the writer's bound; it is meant to be cut short by the failure
ROWS_BEFORE_FAILURE = 300
PROBE_ID = 0  # the probe's row; the writer's ids start at 1


class Writer(threading.Thread):
    """Commits rows 1, 2, 3, ... on `node`, one autocommit transaction each, over its own connection.

    `committed` holds every id whose commit the server acknowledged. The thread ends at the first
    error (the server went away: `unanswered` is the id that got the error), at MAX_ROWS, or when
    `halt` is set.
    """

    def __init__(self, node: Node):
        super().__init__(name=f"writer-{node.name}", daemon=True)
        self.node = node
        self.committed: list[int] = []
        self.unanswered: int | None = None
        self.error: Exception | None = None
        self.halt = threading.Event()
        self.started_at = self.ended_at = time.monotonic()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            conn = self.node.connect()
        except psycopg.Error as exc:
            self.error, self.ended_at = exc, time.monotonic()
            return
        try:
            for row in range(1, MAX_ROWS + 1):
                if self.halt.is_set():
                    break
                try:
                    conn.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (row,))
                except psycopg.Error as exc:
                    self.unanswered, self.error = row, exc
                    break
                self.committed.append(row)
        finally:
            self.ended_at = time.monotonic()
            conn.close()

    @property
    def rate(self) -> float:
        return len(self.committed) / max(self.ended_at - self.started_at, 1e-9)


class FirstWrite(threading.Thread):
    """Tries one INSERT on `node` every 10 ms until it is accepted; `accepted_at` says when (monotonic)."""

    def __init__(self, node: Node):
        super().__init__(name=f"first-write-{node.name}", daemon=True)
        self.node = node
        self.conn = node.connect()  # connected up front, so the first attempt costs no handshake
        self.accepted_at: float | None = None
        self.error: Exception | None = None

    def _attempt(self) -> float:
        if self.conn.broken or self.conn.closed:
            self.conn = self.node.connect()
        self.conn.execute(f"INSERT INTO {TABLE} (id) VALUES ({PROBE_ID})")
        return time.monotonic()

    def run(self) -> None:
        try:
            self.accepted_at = wait_until(
                self._attempt, timeout=90, interval=0.01, what=f"a write to be accepted on {self.node.name}"
            )
        except WaitTimeout as exc:
            self.error = exc
        finally:
            self.conn.close()


@dataclass
class Failover:
    """What one failover under write load did, and its RTO/RPO figures."""

    how: str
    timeline_before: int
    timeline_after: int = 0
    replayed_before: int = 0  # the highest id the secondary had replayed just before the failure
    committed: list[int] = field(default_factory=list)
    unanswered: int | None = None
    writer_error: str = ""
    writer_rate: float = 0.0
    ids_after: set[int] = field(default_factory=set)
    rto: float | None = None
    promote_seconds: float = 0.0
    replay_lsn: str = ""
    old_wal_end: str | None = None
    old_wal_records: int = 0
    rpo_bytes: int | None = None
    old_state: str = ""
    restarts: int = 0  # times systemd started the old primary again by itself (a unit with Restart=)
    old_enabled: str = ""  # `systemctl is-enabled` of the old primary's service after the failover (the fence)

    @property
    def lost(self) -> list[int]:
        """Commits the writer saw acknowledged that the new primary does not have."""
        return sorted(set(self.committed) - self.ids_after)

    def render(self) -> str:
        unanswered = "n/a"
        if self.unanswered is not None:
            where = "present" if self.unanswered in self.ids_after else "absent"
            unanswered = f"{self.unanswered} ({where} on the new primary)"
        rto = "none (no write accepted)" if self.rto is None else f"{self.rto * 1000:.0f} ms"
        rpo_bytes = "unknown" if self.rpo_bytes is None else f"{self.rpo_bytes} bytes"
        return (
            f"== promotion after {self.how} ==\n"
            f"writes: {len(self.committed)} rows committed at {self.writer_rate:.0f}/s, one per transaction; "
            f"writer ended by: {self.writer_error or 'its bound'}; unanswered id: {unanswered}\n"
            f"secondary had replayed ids 1..{self.replayed_before} just before the failure\n"
            f"RTO: {rto} from the promote call to the first accepted write "
            f"(the failover-promote block took {self.promote_seconds * 1000:.0f} ms)\n"
            f"RPO: {len(self.lost)} committed transactions missing on the new primary {self.lost[:20]}; "
            f"{rpo_bytes} of the old primary's WAL not replayed ({self.old_wal_records} records; "
            f"old WAL ends at {self.old_wal_end}, new primary replayed up to {self.replay_lsn})\n"
            f"timeline: {self.timeline_before} -> {self.timeline_after}\n"
            f"old primary control file: {self.old_state}\n"
            + (
                f"systemd restarted the killed primary {self.restarts} time(s) by itself (its unit has Restart=) "
                "until the fence step stopped it\n"
                if self.restarts
                else ""
            )
        )


def ids_on(node: Node) -> set[int]:
    return {row[0] for row in node.query(f"SELECT id FROM {TABLE} WHERE id > 0")}


def wal_after(node: Node, start_lsn: str, timeline: int) -> tuple[str | None, int]:
    """Where the stopped `node`'s WAL on `timeline` ends, and how many records it has from `start_lsn` on.

    pg_waldump reads until the WAL runs out and names that point in its closing error
    ("invalid record length at X", or "could not find a valid record after X" when nothing follows).
    """
    out = node.host.run(
        f"{node.layout.bin_dir}/pg_waldump --timeline={timeline} --path={node.layout.data_dir}/pg_wal "
        f"--start={start_lsn} 2>&1",
        user="postgres",
        check=False,
    ).stdout
    lines = out.strip().splitlines()
    records = sum(1 for line in lines if line.startswith("rmgr:"))
    ends = re.findall(r"\b(?:at|after) ([0-9A-F]+/[0-9A-F]+)", lines[-1] if lines else "")
    return (ends[-1] if ends else None), records


class _AroundFailover:
    """What happens around the runbook's failover steps, found by their `action` attribute:
    the first-write probe starts just before the promote step; the writer must end at the fence."""

    def __init__(self, old: Node, new: Node, writer: Writer, result: Failover):
        self.old, self.new, self.writer, self.result = old, new, writer, result
        self.probe: FirstWrite | None = None
        self.promote_started = 0.0

    def before(self, block: Block) -> None:
        if block.action == "promote":
            self.probe = FirstWrite(self.new)
            self.probe.start()
            self.promote_started = time.monotonic()

    def after(self, block: Block, _result: Result) -> None:
        if block.action == "promote":
            self.result.promote_seconds = time.monotonic() - self.promote_started
        elif block.action == "fence":
            self.old.close()
            self.writer.join(timeout=60)
            if self.writer.is_alive():
                raise AssertionError("the writer still commits on the fenced primary")


def fail_over(pair: ReplicationPair, *, crash: bool = False) -> Failover:
    """With a writer committing on the primary, run the runbook's failover part; measure RTO and RPO.

    `crash`: kill the primary's postmaster with SIGKILL first; otherwise the runbook's fence
    (systemctl stop, a fast shutdown) is the failure. Afterwards `pair.primary` is the promoted node
    and `pair.secondary` the old primary (the pair re-binds its roles at the promote step).
    """
    old, new = pair.primary, pair.secondary
    old.query(f"CREATE TABLE {TABLE} (id int PRIMARY KEY)")
    old.wait_for_catchup(new)
    result = Failover(
        how="SIGKILL of the primary" if crash else "the runbook's fence (systemctl stop)",
        timeline_before=old.timeline(),
    )
    writer = Writer(old)
    writer.start()
    try:
        wait_until(
            lambda: len(writer.committed) >= ROWS_BEFORE_FAILURE or not writer.is_alive(),
            timeout=60,
            what=f"the writer to commit {ROWS_BEFORE_FAILURE} rows on the primary",
        )
        assert writer.is_alive(), f"the writer stopped before the failure: {writer.error!r}"
        # replay trails the commits (asynchronous replication on a loaded machine): the failure
        # comes once the secondary has replayed some of them, so that RPO has rows to judge
        result.replayed_before = wait_until(
            lambda: new.scalar(f"SELECT coalesce(max(id), 0) FROM {TABLE}"),
            timeout=60,
            what=f"the secondary to replay some of the writer's rows ({len(writer.committed)} committed)",
            hopeless=lambda: None if writer.is_alive() else f"the writer stopped: {writer.error!r}",
        )
        if crash:
            old.kill9()
        around = _AroundFailover(old, new, writer, result)
        pair.run("failover", before=around.before, after=around.after)
    finally:
        writer.halt.set()  # when a step failed: no writing on past the test
    probe = around.probe
    assert probe is not None, 'the failover part has no block with "action":"promote"'
    probe.join(timeout=90)
    if probe.accepted_at is not None:
        result.rto = probe.accepted_at - around.promote_started
    result.committed, result.unanswered = writer.committed, writer.unanswered
    result.writer_error = f"{type(writer.error).__name__}: {str(writer.error).strip()}" if writer.error else ""
    result.writer_rate = writer.rate
    result.timeline_after = new.timeline()
    result.ids_after = ids_on(new)
    result.replay_lsn = new.lsn("replay")  # static after promotion: the last record recovery replayed
    result.old_state = old.control_state()
    result.restarts = int(old.host.run(f"systemctl show -p NRestarts --value {old.layout.unit}").stdout or 0)
    result.old_enabled = old.service_enabled()
    result.old_wal_end, result.old_wal_records = wal_after(old, result.replay_lsn, result.timeline_before)
    if result.old_wal_end is not None:
        result.rpo_bytes = int(
            new.scalar("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (result.old_wal_end, result.replay_lsn))
        )
    return result


def fail_over_mid_crash_recovery(pair: ReplicationPair, *, timeout: float = 60) -> None:
    """Run the failover part after a crash of the primary that its next start did not recover from.

    The primary is killed and started again, its crash recovery held (`kill9_and_hold_crash_recovery`);
    the runbook's fence then stops it mid-recovery: the recovery is let go only once the fence has
    the unit stopping, so the server's shutdown meets it unfinished. The control file then says
    "shut down in recovery" with the checkpoint from before the crash.
    """
    primary = pair.primary
    unit = primary.layout.unit
    failures: list[BaseException] = []

    def release_once_stopping() -> None:
        try:
            # "activating" until the fence (the server never reports ready while its recovery is held);
            # Debian's unit (KillMode=control-group) sends SIGCONT after SIGTERM itself, so it may pass
            # "deactivating" to "inactive" between two looks
            wait_until(
                lambda: primary.unit_state() in ("deactivating", "inactive", "failed"),
                timeout=timeout,
                what=f"the fence to have {unit} stopping",
                seen=primary.unit_status,
            )
        except WaitTimeout as exc:
            failures.append(exc)
        finally:
            primary.release_crash_recovery()  # never leave it held: the fence would wait for TimeoutStopSec

    releaser = threading.Thread(target=release_once_stopping, name="release-crash-recovery", daemon=True)

    def before(block: Block) -> None:
        if block.action == "fence":
            releaser.start()

    primary.kill9_and_hold_crash_recovery(timeout=timeout)
    try:
        pair.run("failover", before=before)
    finally:
        if releaser.is_alive() or not releaser.ident:
            primary.release_crash_recovery()
        if releaser.ident:
            releaser.join(timeout=timeout)
    if failures:
        raise failures[0]


def fail_over_after_a_split(pair: ReplicationPair, *statements: str) -> None:
    """The network splits, the primary runs `statements` (SQL, on one connection) that the secondary
    never gets, and is killed (SIGKILL); Step 7 fails over, and the network heals. The old primary's
    WAL then goes past the split: a rewind has blocks to copy (PostgreSQL's 004_timeline_switch.pl).
    This is not a test: it raises if a step fails or the secondary was not promoted."""
    old, new = pair.primary, pair.secondary
    old.isolate_from(new)
    new.isolate_from(old)
    try:
        for sql in statements:
            old.query(sql)
        old.kill9()
        pair.run("failover")
    finally:
        old.heal()
        new.heal()
    if (pair.primary, pair.secondary) != (new, old):
        raise AssertionError(f"Step 7 did not promote {new.name}: the primary is {pair.primary.name}")


class RewindOutput:
    """An `after` hook for Step 8: keeps what the rewind step (`"action":"rewind"`) said, stdout and
    stderr, and prints its last lines; `str()` is all of it ("" if no rewind step ran)."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def __call__(self, block: Block, result: Result) -> None:
        if block.action == "rewind":
            self.said.append(result.stdout + result.stderr)
            print(f"\npg_rewind said:\n{result.tail(8)}")

    def __str__(self) -> str:
        return "".join(self.said)
