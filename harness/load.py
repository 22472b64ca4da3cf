"""Load and consistency on a pair: PostgreSQL's own pgbench on the hosts, table checksums, amcheck.

pgbench runs on the hosts themselves (as `postgres`, over the local socket), as a DBA would
run it, so its figures include no harness overhead. The replay lag is sampled on the primary
(`pg_stat_replication`) while the load runs.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.pair import Node

SCALE = 10  # pgbench's scale factor: 1,000,000 rows in pgbench_accounts
USER_TABLES = """
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
    ORDER BY 1
"""


class LoadFailed(HarnessError):
    """pgbench or amcheck said something went wrong."""


def pgbench(node: Node, args: str, *, timeout: float = 300) -> str:
    """Run the node's own pgbench (from its PostgreSQL's bin directory) as postgres; its output."""
    result = node.host.run(f"{node.layout.bin_dir}/pgbench {args} postgres 2>&1", user="postgres", timeout=timeout)
    return result.stdout


def tps(output: str) -> float:
    match = re.search(r"^tps = ([0-9.]+)", output, re.M)
    if match is None:
        raise LoadFailed(f"pgbench printed no tps line:\n{output[-1500:]}")
    return float(match.group(1))


def init_pgbench(primary: Node, scale: int = SCALE) -> None:
    """pgbench's tables at `scale`, and amcheck (replicated to the secondary with everything else)."""
    pgbench(primary, f"-i -q -s {scale}")
    primary.query("CREATE EXTENSION IF NOT EXISTS amcheck")


@dataclass
class LoadFigures:
    seconds: int
    clients: int
    write_tps: float = 0.0
    read_tps: float = 0.0
    samples: int = 0
    max_lag_bytes: int = 0
    max_replay_lag: float = 0.0  # seconds, pg_stat_replication.replay_lag

    def render(self) -> str:
        return (
            f"== read offloading under load ({self.seconds} s, {self.clients} clients each) ==\n"
            f"primary: pgbench TPC-B-like writes {self.write_tps:.0f} tps\n"
            f"secondary: pgbench -S reads {self.read_tps:.0f} tps at the same time\n"
            f"replay lag seen on the primary ({self.samples} samples): up to {self.max_lag_bytes} bytes, "
            f"up to {self.max_replay_lag * 1000:.0f} ms\n"
        )


def read_offload(primary: Node, secondary: Node, *, seconds: int = 5, clients: int = 2) -> LoadFigures:
    """pgbench writes on the primary while pgbench -S reads on the secondary, lag sampled meanwhile."""
    figures = LoadFigures(seconds, clients)
    done = threading.Event()

    def sample_lag() -> None:
        with primary.connect() as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
                    " coalesce(extract(epoch FROM replay_lag), 0)::float8 FROM pg_stat_replication"
                ).fetchone()
                if row is not None and row[0] is not None:
                    figures.samples += 1
                    figures.max_lag_bytes = max(figures.max_lag_bytes, int(row[0]))
                    figures.max_replay_lag = max(figures.max_replay_lag, float(row[1]))
                done.wait(0.2)

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="load") as pool:
        sampler = pool.submit(sample_lag)
        writes = pool.submit(pgbench, primary, f"-n -c {clients} -j {clients} -T {seconds}")
        reads = pool.submit(pgbench, secondary, f"-n -S -c {clients} -j {clients} -T {seconds}")
        try:
            figures.write_tps, figures.read_tps = tps(writes.result()), tps(reads.result())
        finally:
            done.set()
        sampler.result()
    return figures


def table_checksums(node: Node) -> dict[str, tuple[int, int]]:
    """Per user table: (rows, sum of a hash of every row's text): equal on two nodes only if their
    contents are (up to hash collisions), whatever order the rows are in."""
    sums = {}
    for (table,) in node.query(USER_TABLES):
        sums[table] = node.row(f"SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {table} t")
    return {table: (int(rows), int(total)) for table, (rows, total) in sums.items()}


def amcheck(node: Node) -> None:
    """Heap and every B-tree index, all index entries present in the heap (heapallindexed); raise on any
    corruption. pg_amcheck from PostgreSQL 14 on; the amcheck functions themselves before."""
    if node.scalar("SELECT current_setting('server_version_num')::int") >= 140000:
        result = node.host.run(
            f"{node.layout.bin_dir}/pg_amcheck --heapallindexed -d postgres 2>&1",
            user="postgres",
            check=False,
            timeout=300,
        )
        if not result.ok or result.stdout.strip():
            raise LoadFailed(f"pg_amcheck on {node.name} found problems:\n{result.stdout[-2000:]}")
        return
    node.query(
        "SELECT bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE am.amname = 'btree' AND c.relpersistence = 'p' AND n.nspname <> 'pg_toast'"
    )
