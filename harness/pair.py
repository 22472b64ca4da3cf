"""A replication pair: two nodes with PostgreSQL verbs, their current roles, and the runbook run on them.

In the spirit of PostgreSQL::Test::Cluster: one object per node with verbs, every wait a poll
with a deadline that shows what it saw when it gives up.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row

from harness import ROLES
from harness.errors import SetupIncomplete
from harness.hosts.base import Host, Result
from harness.layout import Layout, layout_for
from harness.runbook import After, Before, Block, Executor, Runbook, Skip, StepHook, Transcript, script
from harness.runbook.values import live_values
from harness.secrets import Secret, redact
from harness.waiting import Stopwatch, WaitTimeout, wait_until

HARNESS_ROLE = "pgrepl_harness"
REFUSE_GRANT = "pgrepl_refuse_grant"  # Node.refusing_grants: its event trigger and function
LSN_FUNCTIONS = {
    "insert": "pg_current_wal_insert_lsn()",
    "write": "pg_current_wal_lsn()",
    "flush": "pg_current_wal_flush_lsn()",
    "receive": "pg_last_wal_receive_lsn()",
    "replay": "pg_last_wal_replay_lsn()",
}


__all__ = ["Node", "ReplicationPair", "SetupIncomplete", "on_each"]
# The startup process's title: "postgres: startup recovering ..." or, with a cluster_name (Debian),
# "postgres: 15/main: startup ...". Anchored on both sides of the cluster name: a client backend
# between authentication and ready says "postgres: 15/main: USER DB HOST startup", which a looser
# pattern (".*startup") matched, and the catcher's own shell starts with "sh".
STARTUP_TITLE = "^postgres: ([^ ]+: )?startup"
STARTUP_PROCESS = shlex.quote(STARTUP_TITLE)
# Stops (SIGSTOP) a startup process that did not exist when it began, the moment its title shows.
# Perl (perl-base in every Debian image; on EL hosts as a rule) reads /proc without forking: many
# looks per millisecond, where a `pkill` loop pays a fork and an exec per look and can lose a short
# crash recovery on a loaded machine. The pkill loop remains for a host without perl.
STARTUP_CATCHER_PERL = r"""
sub pids { opendir(my $proc, "/proc") or die "/proc: $!"; return grep { /^[0-9]+$/ } readdir $proc; }
my %before = map { $_ => 1 } pids();
while (1) {
    for my $pid (grep { !$before{$_} } pids()) {
        open(my $cmdline, "<", "/proc/$pid/cmdline") or next;
        my $title = <$cmdline> // "";
        if ($title =~ /STARTUP_TITLE/) { kill("STOP", $pid); exit 0; }
    }
}
""".replace("STARTUP_TITLE", STARTUP_TITLE)
# libpq's words for a connection the server never answered (Node.answer_to tries again)
NO_ANSWER = ("timeout expired", "Connection refused", "could not connect", "server closed the connection unexpectedly")
STATEMENT_TIMEOUT_MS = 60_000  # no harness query may hang a test: a stuck server shows as an error


class Node:
    """One PostgreSQL server on one host."""

    def __init__(self, host: Host, layout: Layout, password: Secret):
        self.host = host
        self.layout = layout
        self._password = password
        self._conn: psycopg.Connection | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def __repr__(self) -> str:
        return f"<Node {self.name} on {self.host.url}>"

    # --- SQL -------------------------------------------------------------------------------
    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        """A new autocommit connection as the harness's own role."""
        host, port = self.host.forward(5432)
        return psycopg.connect(
            host=host,
            port=port,
            dbname=dbname,
            user=HARNESS_ROLE,
            password=str(self._password),
            autocommit=True,
            connect_timeout=5,
            application_name="pgrepl-harness",
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            **kwargs,
        )

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.connect()
        return self._conn

    def query(self, sql: str, params: tuple | dict | None = None, *, row_factory=None) -> list[Any]:
        """Rows as tuples (or as `row_factory` makes them); a broken connection is dropped, not reused."""
        try:
            with self._connection().cursor(row_factory=row_factory) as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            self.close()
            raise

    def scalar(self, sql: str, params: tuple | dict | None = None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def row(self, sql: str, params: tuple | dict | None = None) -> Any:
        """The first row as a named tuple (columns as attributes), or None."""
        rows = self.query(sql, params, row_factory=namedtuple_row)
        return rows[0] if rows else None

    def rows_as_text(self, sql: str) -> str:
        """A query's rows with column names, for failure messages; never raises."""
        try:
            with self._connection().cursor() as cur:
                cur.execute(sql)
                names = [c.name for c in cur.description or []]
                return "\n".join([" | ".join(names)] + [" | ".join(map(str, r)) for r in cur.fetchall()]) or "(none)"
        except Exception as exc:
            return f"({sql!r} failed: {exc})"

    def psql(self, sql: str, *, check: bool = True) -> str:
        """Run SQL with psql as the postgres OS user over the local socket (no harness role needed)."""
        return self.host.run(
            f"psql -X -A -t -q -v ON_ERROR_STOP=1 <<'__PGREPL_SQL__'\n{sql}\n__PGREPL_SQL__\n",
            user="postgres",
            check=check,
        ).stdout.strip()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def create_login_role(self, name: str, password: Secret) -> None:
        """A role that may log in with `password` (SCRAM), made as postgres over the local socket: the
        password goes on psql's stdin, never on a command line. On a primary; a standby gets it by replay."""
        self.psql(f"SET password_encryption = 'scram-sha-256';\nCREATE ROLE {name} LOGIN PASSWORD '{password}';")

    def psql_from(self, client: Host, sql: str, *, user: str, password: Secret) -> Result:
        """`sql` sent by psql on `client` over the network to this node's address, as `user`: what an
        application on that host sees (the answer, or why it was refused). The password is in the
        script, which goes on stdin, never in an argv. A refused connection does not raise."""
        return self.answer_to(
            client,
            f"PGPASSWORD={shlex.quote(str(password))} PGCONNECT_TIMEOUT=5 psql -X -A -t -w"
            f" -h {shlex.quote(self.host.address)} -U {shlex.quote(user)} -d postgres -c {shlex.quote(sql)}\n",
        )

    def replicate_from(self, client: Host, *, user: str, password: Secret) -> Result:
        """A physical replication connection from `client` to this node's address, as `user`, asking
        IDENTIFY_SYSTEM: what a standby on that host gets (the system identifier, or why it was refused).
        The password is in the script, which goes on stdin, never in an argv. A refusal does not raise."""
        conninfo = f"host={self.host.address} port=5432 user={user} replication=true connect_timeout=5"
        return self.answer_to(
            client,
            f"PGPASSWORD={shlex.quote(str(password))} psql -X -A -t -w -d {shlex.quote(conninfo)} -c IDENTIFY_SYSTEM\n",
        )

    def answer_to(self, client: Host, script: str, *, user: str | None = None, timeout: float = 30) -> Result:
        """`script` (one psql connecting to this node) run on `client` (as `user`) until this server
        answered it, accepting or refusing: a connection that got no answer (libpq's "timeout expired",
        "could not connect") says nothing about the rules under test, and a busy machine produces one
        now and then. After `timeout` the last no-answer is returned, for the test to show."""
        last: list[Result] = []

        def answered() -> bool:
            last[:] = [client.run(script, user=user, check=False)]
            return last[0].ok or not any(marker in last[0].stderr for marker in NO_ANSWER)

        with suppress(WaitTimeout):
            wait_until(answered, timeout=timeout, what=f"an answer from {self.name}'s server", interval=0.5)
        return last[0]

    def hba_rules(self) -> list[Any]:
        """The rules of this node's pg_hba.conf as the server reads the file now (pg_hba_file_rules:
        line_number, type, database, user_name, address, netmask, auth_method, error), in file order."""
        return self.query(
            "SELECT line_number, type, database, user_name, address, netmask, auth_method, error"
            " FROM pg_hba_file_rules ORDER BY line_number",
            row_factory=namedtuple_row,
        )

    def role(self, name: str) -> Any:
        """Role `name`'s attributes (pg_roles: rolsuper, rolcreatedb, rolcreaterole, rolbypassrls,
        rolreplication, rolcanlogin, rolinherit) and `member_of`, the roles it is a member of; or None."""
        return self.row(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication, rolcanlogin, rolinherit,"
            " ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = r.oid ORDER BY 1)"
            " AS member_of FROM pg_roles r WHERE rolname = %s",
            (name,),
        )

    def privileges(self, name: str) -> set[str]:
        """What role `name` was granted or owns in this node's current database and cluster, beyond
        what PUBLIC has: `EXECUTE on pg_ls_dir(text,boolean,boolean)`, `SELECT on table t`, `owns
        schema s`... (ACL entries naming it on relations, functions, schemas, databases, tablespaces,
        languages and large objects, and the objects it owns)."""
        rows = self.query(
            "WITH acl(kind, object, acl, owner) AS ("
            " SELECT 'table', oid::regclass::text, relacl, relowner FROM pg_class"
            " UNION ALL SELECT 'function', oid::regprocedure::text, proacl, proowner FROM pg_proc"
            " UNION ALL SELECT 'schema', nspname::text, nspacl, nspowner FROM pg_namespace"
            " UNION ALL SELECT 'database', datname::text, datacl, datdba FROM pg_database"
            " UNION ALL SELECT 'tablespace', spcname::text, spcacl, spcowner FROM pg_tablespace"
            " UNION ALL SELECT 'language', lanname::text, lanacl, lanowner FROM pg_language"
            " UNION ALL SELECT 'large object', oid::text, lomacl, lomowner FROM pg_largeobject_metadata)"
            " SELECT a.privilege_type || ' on ' || acl.kind || ' ' || acl.object FROM acl, aclexplode(acl.acl) a"
            " WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)"
            " UNION SELECT 'owns ' || kind || ' ' || object FROM acl"
            " WHERE owner = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)",
            {"role": name},
        )
        return {row[0] for row in rows}

    @contextmanager
    def refusing_grants(self, naming: str) -> Iterator[None]:
        """While the body runs, a GRANT whose statement names `naming` fails on this node (an event trigger
        raises), as one of a block's statements fails where what it names differs: to see whether the block
        as a whole then fails. Dropped after, also on failure."""
        if not re.fullmatch(r"\w+", naming):
            raise ValueError(f"refusing_grants({naming!r}): a name (letters, digits, _) only")
        self.psql(
            f"CREATE FUNCTION {REFUSE_GRANT}() RETURNS event_trigger LANGUAGE plpgsql AS $f$ BEGIN\n"
            f"  IF current_query() ~ '\\m{naming}\\M' THEN\n"
            f"    RAISE EXCEPTION 'pgrepl-harness: a GRANT naming {naming} is refused here (Node.refusing_grants)';\n"
            "  END IF;\n"
            "END $f$;\n"
            f"CREATE EVENT TRIGGER {REFUSE_GRANT} ON ddl_command_start WHEN TAG IN ('GRANT')"
            f" EXECUTE FUNCTION {REFUSE_GRANT}();"
        )
        try:
            yield
        finally:
            self.psql(f"DROP EVENT TRIGGER IF EXISTS {REFUSE_GRANT}; DROP FUNCTION IF EXISTS {REFUSE_GRANT}();")

    # --- state -----------------------------------------------------------------------------
    def lsn(self, kind: str) -> str | None:
        return self.scalar(f"SELECT {LSN_FUNCTIONS[kind]}::text")

    def in_recovery(self) -> bool:
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    def system_identifier(self) -> int:
        return int(self.scalar("SELECT system_identifier FROM pg_control_system()"))

    def timeline(self) -> int:
        """The timeline this primary writes WAL on (the first 8 hex digits of its WAL file's name).

        Unlike pg_control_checkpoint(), which changes only at a promoted server's next
        checkpoint, this follows a promotion at once.
        """
        return int(self.scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)

    def slot(self, name: str) -> Any:
        """This node's replication slot `name` (pg_replication_slots: active, restart_lsn as text,
        wal_status, safe_wal_size, and xmin, the hot standby feedback it keeps, as an int or None),
        or None when there is no such slot."""
        return self.row(
            "SELECT slot_name, active, restart_lsn::text AS restart_lsn, wal_status, safe_wal_size, "
            "xmin::text::bigint AS xmin FROM pg_replication_slots WHERE slot_name = %s",
            (name,),
        )

    def archiver(self) -> Any:
        """pg_stat_archiver: archived_count, last_archived_wal, failed_count, last_failed_wal."""
        return self.row("SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")

    def runs_archiver(self) -> bool:
        """Whether this server runs an archiver: a primary with archive_mode on does, a standby only with
        archive_mode = always (it then archives all it receives, a second copy of the primary's WAL).
        pg_stat_activity lists the archiver from PostgreSQL 14; before, the postmaster's children are read."""
        if int(self.scalar("SHOW server_version_num")) >= 140000:
            return bool(self.scalar("SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'archiver'"))
        postmaster = f'"$(head -1 {shlex.quote(self.layout.data_dir)}/postmaster.pid)"'
        children = self.host.run(f"ps --ppid {postmaster} -o args=", user="postgres", check=False).stdout
        return ": archiver" in children  # its title: "postgres: 13/main: archiver last was ..."

    def archive_backlog(self) -> int:
        """How many WAL files wait for the archiver (archive_status/*.ready): what piles up in pg_wal
        while archiving fails."""
        return int(self.scalar("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"))

    def mark_unarchived(self, segment: str) -> None:
        """Make the archiver archive `segment` again, now: its archive_status/SEGMENT.done becomes .ready
        (the state a crash leaves between the archive command's success and the server recording it),
        then one more segment completes, which wakes the archiver (else it looks again within 60 s)."""
        status = shlex.quote(f"{self.layout.data_dir}/pg_wal/archive_status/{segment}")
        self.host.run(f"mv {status}.done {status}.ready", user="postgres")
        self.advance_wal(1)

    def run_wal_command(self, setting: str, segment: str, path: str, *, write_limit_kib: int | None = None) -> Result:
        """Run this server's `setting` (archive_command or restore_command) for WAL file `segment` as the
        server runs it: with sh, as postgres, in the data directory, %f replaced by `segment`, %p by
        `path` and %% by %.

        `write_limit_kib` sets a file size limit (RLIMIT_FSIZE): the first write past it kills the
        copy with SIGXFSZ, so it stops half-way as in a crash (rc 153). Returns the result; a failed
        command does not raise.
        """
        if setting not in ("archive_command", "restore_command"):
            raise ValueError(f"setting must be archive_command or restore_command, not {setting!r}")
        command = self.scalar(f"SHOW {setting}")
        rendered = re.sub(r"%([pf%])", lambda m: {"p": path, "f": segment, "%": "%"}[m.group(1)], command)
        limit = f"ulimit -f {int(write_limit_kib)}\n" if write_limit_kib else ""  # bash: units of 1024 bytes
        return self.host.run(
            f"cd {shlex.quote(self.layout.data_dir)}\n{limit}sh -c {shlex.quote(rendered)}\n",
            user="postgres",
            check=False,
        )

    def listing(self, directory: str) -> set[str]:
        """The names in `directory` on this node's host (read as root); empty when there is no such directory."""
        quoted = shlex.quote(directory)
        return set(self.host.run(f"if [ -d {quoted} ]; then ls -A {quoted}; fi", user="root").stdout.split())

    def file_digest(self, path: str) -> FileDigest | None:
        """Size and MD5 of the file `path` on this node's host (read as root), or None if there is none."""
        quoted = shlex.quote(path)
        out = self.host.run(
            f"if [ -e {quoted} ]; then stat -c %s {quoted}; md5sum < {quoted}; fi", user="root"
        ).stdout.split()
        return FileDigest(size=int(out[0]), md5=out[1]) if out else None

    def wal_retained(self) -> int:
        """Bytes of WAL pg_wal holds behind the current write position: from the start of its oldest
        segment on the current timeline or an earlier one (segments recycled for reuse already carry
        later names and do not count)."""
        return int(
            self.scalar(
                "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn) - min(('x' || substr(name, 9, 8))::bit(32)::bigint"
                " * 4294967296 + ('x' || substr(name, 17, 8))::bit(32)::bigint * (SELECT setting::bigint"
                " FROM pg_settings WHERE name = 'wal_segment_size')) FROM pg_ls_waldir()"
                " WHERE name ~ '^[0-9A-F]{24}$' AND substr(name, 9) <= substr(pg_walfile_name(pg_current_wal_lsn()), 9)"
            )
        )

    def has_wal_segment(self, lsn: str) -> bool:
        """Whether the WAL segment holding `lsn` is still in pg_wal."""
        return bool(
            self.scalar("SELECT count(*) > 0 FROM pg_ls_waldir() WHERE name = pg_walfile_name(%s::pg_lsn)", (lsn,))
        )

    def wait_for_slot(self, name: str, *, timeout: float = 60, **expected: object) -> Any:
        """Wait until slot `name` has every `column=value` of `expected` (e.g. active=False, wal_status="lost")."""
        return wait_until(
            lambda: (
                (slot := self.slot(name)) is not None
                and all(getattr(slot, key) == value for key, value in expected.items())
                and slot
            ),
            timeout=timeout,
            what=f"slot {name} on {self.name} to have {expected}",
            seen=lambda: self.rows_as_text("SELECT * FROM pg_replication_slots"),
        )

    def wait_for_archiver(self, condition: str, *, timeout: float = 60) -> None:
        """Wait until pg_stat_archiver satisfies the SQL `condition` (e.g. "failed_count > 0"); on
        timeout, say the view and what the server logged of archiving (the archive command's error)."""
        sql = f"SELECT {condition} FROM pg_stat_archiver"
        wait_until(
            lambda: self.scalar(sql) is True,
            timeout=timeout,
            what=f"{sql!r} on {self.name} (the WAL archive)",
            seen=lambda: self.rows_as_text("SELECT * FROM pg_stat_archiver") + "\n" + self._archive_log(),
        )

    def _archive_log(self) -> str:
        """The server log's last lines about archiving (the archive command's own error among them)."""
        lines = [line for line in self.log_since(0).splitlines() if "archiv" in line]
        return "server log:\n" + "\n".join(lines[-6:]) if lines else "server log: nothing about archiving"

    def wait_for_no_walsender(self, *, timeout: float = 60) -> None:
        """Wait until no standby streams from this node (after stopping or cutting it off)."""
        self.poll_query_until("SELECT count(*) FROM pg_stat_replication", 0, timeout=timeout)

    def poll_query_until(self, sql: str, expected: object = True, *, timeout: float = 60) -> None:
        wait_until(
            lambda: self.scalar(sql) == expected,
            timeout=timeout,
            what=f"{sql!r} to return {expected!r} on {self.name}",
            seen=lambda: self.rows_as_text(sql),
        )

    def wait_for_catchup(
        self, standby: Node, *, mode: str = "replay", target_lsn: str | None = None, timeout: float = 60
    ) -> None:
        """Wait until `standby`, streaming from this node, has `mode`-ed up to `target_lsn`.

        Like PostgreSQL's wait_for_catchup: target defaults to this node's current write LSN,
        and the walsender row must be in state 'streaming'.
        """
        if mode not in ("sent", "write", "flush", "replay"):
            raise ValueError(f"mode must be sent, write, flush or replay, not {mode!r}")
        target = target_lsn or self.lsn("write")
        sql = (
            f"SELECT {mode}_lsn >= %s::pg_lsn AND state = 'streaming' FROM pg_stat_replication "
            "WHERE client_addr = %s::inet"
        )
        wait_until(
            lambda: self.scalar(sql, (target, standby.host.address)),
            timeout=timeout,
            what=f"{standby.name} to {mode} up to {target} (from {self.name})",
            seen=lambda: self.rows_as_text("SELECT * FROM pg_stat_replication"),
        )

    def wait_for_streaming(
        self, standby: Node, *, timeout: float = 60, hopeless: Callable[[], str | None] | None = None
    ) -> None:
        """Wait until this node has a streaming walsender for `standby`, and it a streaming walreceiver."""
        wait_until(
            lambda: self.scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND client_addr = %s::inet",
                (standby.host.address,),
            ),
            timeout=timeout,
            hopeless=hopeless,
            what=f"{self.name} to stream to {standby.name}",
            seen=lambda: self.rows_as_text("SELECT * FROM pg_stat_replication"),
        )
        standby.poll_query_until("SELECT status FROM pg_stat_wal_receiver", "streaming", timeout=timeout)

    # --- server log ------------------------------------------------------------------------
    def log_offset(self) -> int:
        return int(self.host.run(f"stat -c %s {self.layout.log_file}", user="root").stdout.strip() or 0)

    def log_since(self, offset: int) -> str:
        return self.host.run(f"tail -c +{offset + 1} {self.layout.log_file}", user="root").stdout

    def wait_for_log(self, pattern: str, offset: int = 0, *, timeout: float = 60) -> re.Match[str]:
        """Wait until the server log, read from byte `offset`, matches `pattern`."""
        regex = re.compile(pattern)
        return wait_until(
            lambda: regex.search(self.log_since(offset)),
            timeout=timeout,
            what=f"/{pattern}/ in {self.name}'s server log",
            seen=lambda: "\n".join(self.log_since(offset).splitlines()[-20:]),
        )

    # --- files ---------------------------------------------------------------------------
    def owners_and_modes(self, *paths: str) -> dict[str, str]:
        """`user:group mode` of each path (e.g. `postgres:postgres 700`), as root sees it; `missing`
        for a path that does not exist."""
        quoted = " ".join(shlex.quote(p) for p in paths)
        listing = self.host.run(
            f"for p in {quoted}; do stat -c '%n\t%U:%G %a' \"$p\" 2>/dev/null || printf '%s\\tmissing\\n' \"$p\"; done",
            user="root",
        ).stdout
        return dict(line.split("\t", 1) for line in listing.splitlines() if "\t" in line)

    # --- service ---------------------------------------------------------------------------
    def _systemctl(self, verb: str) -> None:
        self.close()
        self.host.run(f"systemctl {verb} {shlex.quote(self.layout.unit)}", user="root")

    def start(self) -> None:
        self._systemctl("start")

    def service_enabled(self) -> str:
        """`systemctl is-enabled` of the service the runbook enables: `enabled` when it starts at boot."""
        return self.host.run(f"systemctl is-enabled {shlex.quote(self.layout.service)}", check=False).stdout.strip()

    def set_enabled(self, enabled: bool) -> None:
        """`systemctl enable` or `disable` of that service (a control's state; put it back afterwards)."""
        self.host.run(f"systemctl {'enable' if enabled else 'disable'} {shlex.quote(self.layout.service)}", user="root")

    def stop(self) -> None:
        self._systemctl("stop")

    def wait_accepting(self, *, timeout: float = 60, hopeless: Callable[[], str | None] | None = None) -> None:
        """Until the server accepts connections (the moment a standby's walreceiver can connect)."""
        wait_accepting(self.host, timeout=timeout, hopeless=hopeless)

    def kill9(self) -> None:
        """Kill the postmaster with SIGKILL, as a crash would."""
        self.close()
        self.host.run(f'kill -9 "$(head -1 {self.layout.data_dir}/postmaster.pid)"', user="root")

    def kill9_and_hold_crash_recovery(self, *, timeout: float = 60) -> None:
        """Kill the postmaster (SIGKILL) and hold the crash recovery its next start begins.

        The server starts again at once: its unit's `Restart=` does it (PGDG's), or this verb
        does (Debian's unit has none), as an operator would. A catcher started before the kill
        stops (SIGSTOP) the startup process the moment it exists, so whatever stops the server
        next meets it mid-recovery, every time; `release_crash_recovery` lets it go on.
        """
        catcher = (
            f"if command -v perl >/dev/null; then exec perl -e {shlex.quote(STARTUP_CATCHER_PERL)}; fi; "
            f"until pkill -STOP -f {STARTUP_PROCESS}; do :; done"
        )
        self.host.run(
            f"setsid -f timeout {int(timeout)} sh -c {shlex.quote(catcher)} </dev/null >/dev/null 2>&1", user="root"
        )
        self.kill9()
        unit = shlex.quote(self.layout.unit)
        if self.host.run(f"systemctl show -p Restart --value {unit}").stdout.strip() == "no":
            wait_until(
                lambda: self.unit_state() != "active",
                timeout=timeout,
                what=f"{self.layout.unit} to see its server killed",
            )
            self.host.run(f"systemctl start --no-block {unit}", user="root")
        held = f'ps -o stat= -p "$(pgrep -f {STARTUP_PROCESS})"'
        wait_until(
            lambda: self.host.run(held, check=False).stdout.startswith("T"),
            timeout=timeout,
            what=f"{self.name}'s server to start again and its crash recovery to be held",
            seen=self._catcher_status,
        )

    def _catcher_status(self) -> str:
        """The unit's status and every process with its state: whether the catcher still looks, what
        it stopped, and how far the server got (shown when the hold is not seen in time)."""
        processes = self.host.run("ps -eo pid,ppid,stat,etime,args", check=False).stdout
        return f"{self.unit_status()}\nprocesses:\n{processes}"

    def unit_state(self) -> str:
        """What `systemctl is-active` says of the unit running this node's server (active, activating, ...)."""
        return self.host.run(f"systemctl is-active {shlex.quote(self.layout.unit)}", check=False).stdout.strip()

    def unit_status(self) -> str:
        """The head of `systemctl status` for that unit (what a wait shows when it gives up)."""
        return self.host.run(
            f"systemctl status --no-pager {shlex.quote(self.layout.unit)} 2>&1 | head -12", check=False
        ).stdout

    def release_crash_recovery(self) -> None:
        """Let the startup process that `kill9_and_hold_crash_recovery` stopped go on."""
        self.host.run(f"pkill -CONT -f {STARTUP_PROCESS} || true", user="root")

    def control_state(self) -> str:
        """The stopped server's pg_controldata: cluster state and latest checkpoint."""
        out = self.host.run(f"{self.layout.bin_dir}/pg_controldata {self.layout.data_dir}", user="postgres").stdout
        keep = ("Database cluster state", "Latest checkpoint location", "Latest checkpoint's TimeLineID")
        return "; ".join(
            line.split(":", 1)[0] + ": " + line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith(keep)
        )

    def cut_from(self, peer: Node) -> None:
        """Drop every packet from `peer` to this node's PostgreSQL port (a firewall rule on this host)."""
        self._drop(f"ip saddr {shlex.quote(peer.host.address)} tcp dport 5432")

    def isolate_from(self, peer: Node) -> None:
        """Drop every packet from `peer` to this host, whatever the port (both nodes: a network split)."""
        self._drop(f"ip saddr {shlex.quote(peer.host.address)}")

    def _drop(self, match: str) -> None:
        """Add an nft rule dropping what `match` names (its words already quoted for the shell)."""
        self.host.run(
            "nft add table inet pgrepl_cut\n"
            "nft add chain inet pgrepl_cut input '{ type filter hook input priority -10 ; }'\n"
            f"nft add rule inet pgrepl_cut input {match} drop\n",
            user="root",
        )

    def heal(self) -> None:
        """Remove the rules cut_from and isolate_from added."""
        self.host.run("nft delete table inet pgrepl_cut 2>/dev/null || true", user="root")

    def append_conf(self, filename: str, lines: str, *, reload: bool = False) -> None:
        """Append lines to a file in the node's config directory (as root); `reload` the server after."""
        path = shlex.quote(f"{self.layout.conf_dir}/{filename}")
        reload_server = f"systemctl reload {shlex.quote(self.layout.unit)}\n" if reload else ""
        self.host.run(
            f"sed -i -e '$a\\' {path}\ncat >> {path} <<'__PGREPL_CONF__'\n{lines.rstrip()}\n__PGREPL_CONF__\n"
            + reload_server,
            user="root",
        )

    @contextmanager
    def restoring_conf(self, filename: str) -> Iterator[None]:
        """The body may change `filename` in the node's config directory (a control's weaker rule): it is
        put back as it was, and the server reloaded, after the body, also on failure."""
        path = shlex.quote(f"{self.layout.conf_dir}/{filename}")
        self.host.run(f"cp -p {path} {path}.pgrepl-saved", user="root")
        try:
            yield
        finally:
            self.host.run(
                f"mv {path}.pgrepl-saved {path} && systemctl reload {shlex.quote(self.layout.unit)}", user="root"
            )

    def advance_wal(self, segments: int) -> None:
        """Write and switch away from `segments` WAL segments (as Cluster.pm's advance_wal)."""
        for _ in range(segments):
            self.query("CREATE TABLE pgrepl_advance_wal (); DROP TABLE pgrepl_advance_wal")
            self.query("SELECT pg_switch_wal()")

    def checkpoint(self) -> None:
        self.query("CHECKPOINT")


@dataclass(frozen=True)
class FileDigest:
    size: int
    md5: str


class PreinstalledPackages(StepHook):
    """On an image whose PostgreSQL is preinstalled (the el*-pgdg-layout images), the runbook's
    package steps (action "packages") are recorded as skipped, saying why, not run."""

    def __init__(self, note: str):
        self.note = note

    def before(self, block: Block) -> Skip | None:
        return Skip("skipped (preinstalled)", self.note) if block.action == "packages" else None


@dataclass
class ReplicationPair:
    """Two nodes in streaming replication, the runbook that sets them up, and its transcript.

    Nodes are named by identity (their hosts' names: the harness names its machines after the
    runbook host they are set up as, an inventory its tables) and keep their names for life;
    `primary` and `secondary` are the current roles, re-bound when a runbook block with
    `"action":"promote"` succeeds (Step 7): the promoted node is primary from then on, the other
    one secondary. The runbook's blocks name hosts by the roles the procedure starts from; they
    run on the nodes those names are bound to: the set-up roles, until `rebind_runbook()`.

    Constructing one does no I/O: the lifecycle layer (harness.lifecycle) has already started
    the hosts and learned their addresses and OS family; what it does around the steps (boot
    waits, snapshots, the run's set-up state) comes as `hooks`.
    """

    runbook: Runbook
    hosts: Mapping[str, Host]  # by name, the runbook's role names at setup (ROLES) in that order
    family: str
    pg_major: int
    variant: str | None
    log: Callable[[str], None] = print
    packaging: str | None = None  # the package manager, where it is not the family's own (layout_for)
    # Why the runbook's package steps do not run here (PostgreSQL preinstalled in the image), or None.
    preinstalled: str | None = None
    hooks: Sequence[StepHook] = ()
    stopwatch: Stopwatch = field(default_factory=Stopwatch)
    # the harness's access is in place already (a restored set-up state)
    access_granted: bool = False
    replication_password: Secret = field(default_factory=Secret.generate)
    harness_password: Secret = field(default_factory=Secret.generate)
    # The runbook parts run so far: checked against a module's `parts` marker.
    parts_run: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        layout = layout_for(self.family, self.pg_major, self.packaging)
        self.nodes = {name: Node(host, layout, self.harness_password) for name, host in self.hosts.items()}
        names = dict(zip(ROLES, self.nodes, strict=True))
        self._roles = dict(names)  # current role -> node name
        hooks = [PreinstalledPackages(self.preinstalled), *self.hooks] if self.preinstalled else list(self.hooks)
        self.hooks = [*hooks, _PromotionRebinds(self)]
        self._executor = Executor(self.runbook, {}, {}, log=self.log, hooks=self.hooks)
        self._bind_runbook(names)
        if self.preinstalled:
            self.note(self.preinstalled)

    @property
    def primary(self) -> Node:
        """The node that is primary now (after Step 7: the promoted one)."""
        return self.nodes[self._roles["primary"]]

    @property
    def secondary(self) -> Node:
        """The node that is secondary now (after Step 7: the old primary)."""
        return self.nodes[self._roles["secondary"]]

    def _bind_runbook(self, names: Mapping[str, str]) -> None:
        """Run the runbook's blocks for host `role` on node `names[role]`, its addresses bound likewise."""
        self.bound = dict(names)  # the runbook's host name -> node name
        hosts = {role: self.hosts[name] for role, name in names.items()}
        self._executor.hosts = hosts
        self._executor.values = live_values(
            {role: host.address for role, host in hosts.items()}, self.replication_password, self.pg_major
        )

    def rebind_runbook(self) -> None:
        """The runbook's "primary" and "secondary" blocks name the current roles from now on: after a
        failover and rejoin, its Steps 7 and 8 then run the other way round (a switch-back)."""
        self.close()
        self._bind_runbook(self._roles)

    def promoted(self, name: str) -> None:
        """Node `name` is primary now, the other one secondary (called when a promote step succeeds)."""
        (other,) = set(self.nodes) - {name}
        self._roles = {"primary": name, "secondary": other}

    @property
    def transcript(self) -> Transcript:
        return self._executor.transcript

    def note(self, text: str) -> None:
        """A line for the transcript's notes (a deviation the reader must see)."""
        self._executor.note(text)

    def blocks(self, *parts: str) -> list[Block]:
        return self.runbook.select(family=self.family, parts=parts, variant=self.variant)

    def run(
        self,
        *parts: str,
        steps: Collection[str] | None = None,
        until: str | None = None,
        before: Before | None = None,
        after: After | None = None,
    ) -> Transcript:
        """Run the runbook's blocks of `parts` (only `steps`, if given; up to and with step `until`, if
        given) for this OS family, in order.

        `before(block)` and `after(block, result)` let a scenario act around a step.
        """
        self.parts_run.update(parts)
        blocks = [b for b in self.blocks(*parts) if steps is None or b.step in steps]
        if until is not None:
            ends = [index for index, block in enumerate(blocks) if block.step == until]
            if not ends:
                raise ValueError(f"step {until!r} is not among the {self.family} blocks of {', '.join(parts)}")
            blocks = blocks[: ends[-1] + 1]
        try:
            return self._executor.run(blocks, before=before, after=after)
        finally:
            self.close()  # the steps may have restarted servers: next query opens a fresh connection

    def block_of(self, step: str, book: Runbook | None = None) -> Block:
        """Step `step`'s one block for this pair's OS family (in `book`, by default its runbook)."""
        book = book or self.runbook
        selected = book.select(family=self.family, parts=tuple(book.parts()), variant=self.variant)
        blocks = [b for b in selected if b.step == step]
        if len(blocks) != 1:
            raise ValueError(f"step {step!r} has {len(blocks)} blocks for {self.family}, not one")
        self.parts_run.add(blocks[0].part)
        return blocks[0]

    def host_of(self, block: Block) -> Host:
        """The host a block of the runbook runs on (the runbook's role, as bound now)."""
        return self._executor.hosts[block.host]

    def run_step(self, step: str, *, book: Runbook | None = None) -> None:
        """Run step `step` (of `book`, by default this pair's runbook) on its host as the runbook has it,
        for real even on a pair restored from a set-up state (no step hook skips it)."""
        block = self.block_of(step, book)
        Executor(book or self.runbook, self._executor.hosts, self._executor.values, log=self.log).run_block(block)

    def shell_history(self, step: str, *, book: Runbook | None = None, run: bool = True) -> str:
        """What an operator's bash history holds after typing step `step` (of `book`, by default this
        pair's runbook) for this family into an interactive shell on its host: see Host.shell_history."""
        block = self.block_of(step, book)
        rendered = script(block, (book or self.runbook).bindings, self._executor.values)
        return self.host_of(block).shell_history(rendered, run=run)

    def setup(self) -> Transcript:
        """Steps 2 and 3 of the runbook, then the harness's own access, then wait for streaming."""
        with self.stopwatch.phase("runbook setup steps"):
            self.run("setup")
        if not self.access_granted:
            with self.stopwatch.phase("harness access"):
                self.grant_harness_access()
        try:
            with self.stopwatch.phase("first streaming"):
                self.primary.wait_for_streaming(self.secondary, timeout=30, hopeless=self._standby_impossible)
        except WaitTimeout as exc:
            raise SetupIncomplete(_why_not_streaming(self, exc)) from exc
        for hook in self.hooks:
            hook.set_up(self)
        return self.transcript

    def _standby_impossible(self) -> str | None:
        """Why the secondary can never stream as it is (it is no standby), or None."""
        if self.secondary.psql("SELECT pg_is_in_recovery()", check=False) == "f":
            return "the secondary runs but is not in recovery, so it will never stream"
        return None

    def verify(self) -> Transcript:
        """Step 4 of the runbook, as written."""
        return self.run("verify")

    def grant_harness_access(self, *nodes: Node) -> None:
        """A superuser for the test runner's psycopg connections, allowed from the runner only.

        Not part of the runbook: it is how the harness observes the pair, and it is printed
        as a note so the reader sees it. The role is created on the primary (a standby gets it by
        replication); `nodes` (default: both) get the pg_hba.conf rule.
        """

        def grant(node: Node) -> None:
            if node is self.primary:
                node.psql(
                    "SET password_encryption = 'scram-sha-256';\n"  # the default only from PostgreSQL 14
                    f"CREATE ROLE {HARNESS_ROLE} SUPERUSER LOGIN PASSWORD '{self.harness_password}';"
                )
            rule = f"host all {HARNESS_ROLE} {node.host.runner_address}/32 scram-sha-256"
            node.append_conf("pg_hba.conf", f"# pgrepl-harness: the test runner's own access\n{rule}", reload=True)

        on_each(grant, nodes or self.nodes.values())
        self.access_granted = True
        self.note(
            f"harness: role {HARNESS_ROLE} and one pg_hba.conf rule per node for the test runner "
            "(not part of the runbook)"
        )

    def revoke_harness_access(self) -> None:
        """Undo grant_harness_access (for pairs left to the user): drop the role, remove the rules."""
        for node in self.nodes.values():
            node.close()
            node.host.run(
                f"sed -i '/^# pgrepl-harness: the test runner/,+1d' {shlex.quote(node.layout.pg_hba_conf)}",
                user="root",
                check=False,
            )
            if node.psql("SELECT pg_is_in_recovery()", check=False) == "f":
                node.psql(f"REASSIGN OWNED BY {HARNESS_ROLE} TO postgres; DROP OWNED BY {HARNESS_ROLE};", check=False)
                node.psql(f"DROP ROLE IF EXISTS {HARNESS_ROLE};", check=False)
            node.psql("SELECT pg_reload_conf();", check=False)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    def start(self) -> None:
        """Both servers, the secondary as soon as the primary accepts connections: a standby started
        first fails its first connection and tries again only after wal_retrieve_retry_interval (5 s)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="start-primary") as pool:
            starting = pool.submit(self.primary.start)

            def failed() -> str | None:
                error = starting.exception() if starting.done() else None
                return f"systemctl start failed on the primary: {error}" if error else None

            self.primary.wait_accepting(hopeless=failed)
            self.secondary.start()
            starting.result()


class _PromotionRebinds(StepHook):
    """After a runbook block with `"action":"promote"` succeeded, the node it ran on is primary."""

    def __init__(self, pair: ReplicationPair):
        self.pair = pair

    def after(self, block: Block, result: Result) -> None:
        if block.action == "promote":
            self.pair.promoted(self.pair.bound[block.host])


def wait_accepting(host: Host, *, timeout: float = 60, hopeless: Callable[[], str | None] | None = None) -> None:
    """Until the server on `host` accepts connections: libpq's ping from the runner, as pg_isready
    does it (no credentials; a server that answers, even with an authentication error, is up)."""
    pings: list[psycopg.pq.Ping] = []

    def accepting() -> bool:
        address, port = host.forward(5432)
        pings.append(psycopg.pq.Ping(psycopg.pq.PGconn.ping(f"host={address} port={port} connect_timeout=2".encode())))
        return pings[-1] == psycopg.pq.Ping.OK

    wait_until(
        accepting,
        timeout=timeout,
        hopeless=hopeless,
        what=f"the server on {host.name} to accept connections",
        seen=lambda: f"libpq ping: {pings[-1].name if pings else 'not tried'}",
    )


def on_each(action: Callable[[Node], object], nodes: Iterable[Node]) -> None:
    """`action` on every node at once (each host works on its own); the first failure is raised."""
    nodes = list(nodes)
    with ThreadPoolExecutor(max_workers=len(nodes) or 1, thread_name_prefix="node") as pool:
        for done in [pool.submit(action, node) for node in nodes]:
            done.result()


def _why_not_streaming(pair: ReplicationPair, exc: WaitTimeout) -> str:
    """What a set-up that ran every step yet does not stream lacks, in the reader's words."""
    last = {r.host: r.step for r in pair.transcript.records}
    hints = []
    # psql over the local socket: the harness role may not exist on a secondary that never replicated
    secondary = pair.secondary
    setup = pair.blocks("setup")
    if secondary.psql("SELECT pg_is_in_recovery()", check=False) == "f":
        hint = (
            "the secondary is not in recovery (pg_is_in_recovery() = false): the steps that make it "
            "a standby (standby.signal) did not take effect"
        )
        signal = f"{secondary.layout.data_dir}/standby.signal"
        step = next((b for b in setup if b.host == "secondary" and "standby.signal" in b.body), None)
        if step is not None and not secondary.host.run(f"test -f {signal}", user="root", check=False).ok:
            hint += (
                f"; there is no {signal}: step {step.step} ({step.where(pair.runbook.path)}) did not create it there"
            )
        hints.append(hint)
    if secondary.psql("SELECT count(*) FROM pg_stat_wal_receiver", check=False) == "0":
        rule = next((b for b in setup if b.host == "primary" and (b.file or "").endswith("pg_hba.conf")), None)
        where = f" (step {rule.step}, {rule.where(pair.runbook.path)})" if rule else ""
        hints.append(
            "the secondary has no walreceiver (pg_stat_wal_receiver is empty): check primary_conninfo "
            f"and the primary's pg_hba.conf rule{where}; the secondary's log says more"
        )
    return redact(
        f"the runbook's setup steps all succeeded (last on primary: {last.get('primary')}, on secondary: "
        f"{last.get('secondary')}) but the secondary does not stream from the primary.\n"
        + "".join(f"- {hint}\n" for hint in hints)
        + str(exc)
    )
