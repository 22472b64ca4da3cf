"""Step 12 of the runbook as tests (issue 25, item 6): replication encrypted and authenticated with TLS.

After the part `tls` ran (its public files passing through the shared storage of Step 5, a volume
mounted at /mnt/pgarchive on both hosts):

- the secondary streams over TLS: its walsender's row in pg_stat_ssl on the primary says ssl, the
  walreceiver streams with sslmode=verify-full, and a row written on the primary arrives;
- no pg_hba.conf rule of the primary lets replica_user replicate without TLS (pg_hba_file_rules);
- the files of 12.2 to 12.5 are postgres's with the modes their lines give (directories 700, keys
  600, certificates 644), and the CA's key root's with mode 600 on the primary;
- each certificate names its host's address (subjectAltName IP) and lasts 825 days;
- the secondary serves its own certificate, which a verify-full client holding the CA's accepts.

Negative controls, each refused for the reason the runbook gives:

- a replication connection from the secondary with sslmode=disable is refused by the primary's
  pg_hba.conf (`no encryption`), while the same connection with verify-full gets in;
- a connection with verify-full to the primary's address under a name its certificate does not hold
  (the secondary's address, a host name; libpq's `hostaddr` keeps the address) is refused by the
  client (`does not match host name`).

And on the runbook's text: with 12.2's certificate signed without -days and -extfile and installed
without -m 644 and -g postgres, the two checks above name exactly those deviations; with 12.6's
`hostssl` edited back to `host`, the runbook's own check of the rules fails, and a connection
without TLS gets in, so the refusal above comes from that word.
All connections are made as postgres on the secondary, with the password of its ~postgres/.pgpass
(3.3), as the walreceiver makes them: no password in any argv or script.
"""

from __future__ import annotations

import re
import shlex

import pytest

from harness.hosts.base import Result
from harness.pair import ReplicationPair
from harness.runbook import StepFailed, edit_block

pytestmark = [pytest.mark.parts("setup", "verify", "tls"), pytest.mark.bringups(2)]
SHARED_ARCHIVE = {"archive": "/mnt/pgarchive"}  # Step 12 passes its public files through it
USER = "replica_user"
ROOT_CERT = "/etc/postgresql-tls/root.crt"
VERIFY_FULL = f"sslmode=verify-full sslrootcert={ROOT_CERT}"
NO_RULE = "no pg_hba.conf entry for replication connection from host"
NO_ENCRYPTION = (", no encryption", ", SSL off")  # PostgreSQL 14 and later; 13
WRONG_NAME = "does not match host name"
HBA_STEP = "tls-primary-hba"
TLS_DIR, SHARED_TLS_DIR = "/etc/postgresql-tls", "/mnt/pgarchive/tls"
CERTIFICATE, KEY, DIRECTORY = "644", "600", "700"
TLS_FILES = {
    TLS_DIR: DIRECTORY,
    f"{TLS_DIR}/server.key": KEY,
    f"{TLS_DIR}/server.crt": CERTIFICATE,
    f"{TLS_DIR}/root.crt": CERTIFICATE,
}
SHARED_TLS_FILES = {  # seen from the secondary, which made the directory; the request's mode is not promised
    SHARED_TLS_DIR: DIRECTORY,
    f"{SHARED_TLS_DIR}/secondary.csr": None,
    f"{SHARED_TLS_DIR}/secondary.crt": CERTIFICATE,
    f"{SHARED_TLS_DIR}/root.crt": CERTIFICATE,
}


def replicate(pair: ReplicationPair, options: str, *, host: str | None = None) -> Result:
    """A physical replication connection from the secondary to the primary's address, as postgres
    with its .pgpass (as the walreceiver connects), asking IDENTIFY_SYSTEM; `options` are more
    conninfo settings, `host` the name libpq checks the certificate against (the address itself by
    default; otherwise the address is given as hostaddr). A refusal does not raise."""
    address = pair.primary.host.address
    target = f"host={address}" if host is None else f"host={host} hostaddr={address}"
    # dbname=replication: the database field of the .pgpass line, as pg_basebackup and the walreceiver use it
    conninfo = f"{target} port=5432 user={USER} dbname=replication replication=true connect_timeout=5 {options}"
    script = f"psql -X -A -t -w -d {shlex.quote(conninfo)} -c IDENTIFY_SYSTEM\n"
    return pair.primary.answer_to(pair.secondary.host, script, user="postgres")


def tls_files_deviations(pair: ReplicationPair) -> list[str]:
    """Where 12.2 to 12.5's files differ from what their lines give them: every file in each host's
    /etc/postgresql-tls and in the shared storage's tls directory is postgres's (owner and group), the
    directories have mode 700, the keys 600 and the certificates 644 (install's default is 755)."""
    expected = {pair.primary: TLS_FILES, pair.secondary: {**TLS_FILES, **SHARED_TLS_FILES}}
    deviations = []
    for node, modes in expected.items():
        seen = node.owners_and_modes(*modes)
        for path, mode in modes.items():
            owner, _, actual = seen[path].partition(" ")
            if owner != "postgres:postgres" or (mode is not None and actual != mode):
                deviations.append(f"{node.name}: {path} is {seen[path]}, not postgres:postgres {mode or ''}".rstrip())
    return deviations


def certificate_deviations(pair: ReplicationPair) -> list[str]:
    """Where each host's certificate differs from 12.2's and 12.4's promise: valid for 825 days (at
    least 824 from now) and naming the host's address as subjectAltName IP."""
    deviations = []
    for node in pair.nodes.values():
        certificate = f"{TLS_DIR}/server.crt"
        read = f"openssl x509 -noout -ext subjectAltName -checkend {824 * 86400} -in {certificate}"
        said = node.host.run(read, user="root", check=False)  # exit 1: it expires within that time
        if "Certificate will expire" in said.stdout:
            deviations.append(f"{node.name}: {certificate} expires within 824 days")
        elif not said.ok:
            raise AssertionError(f"{node.name}: {read} failed: {said.stdout}{said.stderr}")
        names = [name.strip() for name in re.split(r"[,\n]", said.stdout)]  # "IP Address:10.0.0.2, DNS:x"
        if f"IP Address:{node.host.address}" not in names:
            deviations.append(f"{node.name}: {certificate} does not name IP Address:{node.host.address}")
    return deviations


@pytest.fixture(scope="module")
def pair(make_pair):
    made = make_pair(volumes=SHARED_ARCHIVE)
    made.setup()
    made.verify()
    made.run("tls")
    return made


def test_the_secondary_streams_over_tls_with_verify_full(pair):
    primary, secondary = pair.primary, pair.secondary
    primary.wait_for_streaming(secondary)
    sql = (
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid"
        " WHERE r.client_addr = %s::inet AND r.state = 'streaming'"
    )
    assert primary.query(sql, (secondary.host.address,)) == [(True,)], primary.rows_as_text(
        "SELECT * FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
    )
    conninfo = secondary.scalar("SELECT conninfo FROM pg_stat_wal_receiver WHERE status = 'streaming'")
    assert conninfo is not None and "sslmode=verify-full" in conninfo, conninfo
    primary.query("CREATE TABLE tls_rows AS SELECT 42 AS answer")
    primary.wait_for_catchup(secondary)
    assert secondary.scalar("SELECT answer FROM tls_rows") == 42


def test_no_rule_lets_replica_user_replicate_without_tls(pair):
    rules = [r for r in pair.primary.hba_rules() if "replication" in r.database and USER in r.user_name]
    assert rules and {r.type for r in rules} == {"hostssl"}, rules


def test_the_tls_files_have_the_owners_and_modes_the_runbook_gives_them(pair):
    assert tls_files_deviations(pair) == []
    ca = pair.primary.owners_and_modes("/etc/postgresql-ca", "/etc/postgresql-ca/ca.key")
    assert list(ca.values()) == ["root:root 700", "root:root 600"], ca


def test_each_certificate_names_its_host_address_and_lasts_825_days(pair):
    assert certificate_deviations(pair) == []


def test_control_signed_without_days_and_extfile_and_installed_without_modes(make_pair, runbook):
    """The checks above fail when 12.2 signs the primary's certificate without -days (OpenSSL's 30)
    and -extfile (no subjectAltName: verify-full falls back to the common name, and still
    passes), and installs it without -m 644 and -g postgres (install's 755, root's group)."""
    book = edit_block(runbook, "tls-primary-certificate", "-days 825 ", "")
    book = edit_block(book, "tls-primary-certificate", "-extfile /etc/postgresql-ca/primary.ext ", "")
    book = edit_block(
        book,
        "tls-primary-certificate",
        "-o postgres -g postgres -m 644 /etc/postgresql-ca/primary.crt",
        "-o postgres /etc/postgresql-ca/primary.crt",
    )
    weak = make_pair(book, volumes=SHARED_ARCHIVE)
    weak.setup()
    weak.run("tls")
    assert tls_files_deviations(weak) == [
        f"primary: {TLS_DIR}/server.crt is postgres:root 755, not postgres:postgres 644"
    ]
    address = weak.primary.host.address
    assert certificate_deviations(weak) == [
        f"primary: {TLS_DIR}/server.crt expires within 824 days",
        f"primary: {TLS_DIR}/server.crt does not name IP Address:{address}",
    ]


def test_with_verify_full_the_secondary_gets_in(pair):
    """The positive control of the two refusals below: same connection, TLS, the right name."""
    done = replicate(pair, VERIFY_FULL)
    assert done.ok, done.tail()
    assert str(pair.primary.system_identifier()) in done.stdout


def test_a_replication_connection_without_tls_is_refused_by_pg_hba(pair):
    done = replicate(pair, "sslmode=disable")
    assert not done.ok
    assert NO_RULE in done.stderr and any(reason in done.stderr for reason in NO_ENCRYPTION), done.tail()


def test_the_secondary_serves_its_own_certificate_to_verify_full_clients(pair):
    """Its clients (Step 9) and, after a failover, the old primary's walreceiver check the secondary as the
    secondary checks the primary. From the primary, with the CA's certificate: the handshake and the check
    of the certificate pass, and what refuses is the secondary's pg_hba.conf, over TLS (no rule admits this
    client; a certificate the CA did not sign, Debian's snakeoil, is refused by the client first)."""
    conninfo = (
        f"host={pair.secondary.host.address} port=5432 user={USER} dbname=postgres connect_timeout=5 {VERIFY_FULL}"
    )
    script = f"psql -X -w -d {shlex.quote(conninfo)} -c 'SELECT 1'\n"
    done = pair.secondary.answer_to(pair.primary.host, script, user="postgres")
    over_tls = ("SSL encryption", "SSL on")  # PostgreSQL 14 and later; 13
    assert done.ok or ("no pg_hba.conf entry" in done.stderr and any(t in done.stderr for t in over_tls)), done.tail()


@pytest.mark.parametrize("name", ["secondary-address", "host-name"])
def test_verify_full_refuses_a_name_the_certificate_does_not_hold(pair, name):
    wrong = pair.secondary.host.address if name == "secondary-address" else "pgrepl-not-the-primary.invalid"
    done = replicate(pair, VERIFY_FULL, host=wrong)
    assert not done.ok
    assert WRONG_NAME in done.stderr and f'"{wrong}"' in done.stderr, done.tail()


def test_control_with_host_left_in_12_6_a_connection_without_tls_gets_in(make_pair, runbook):
    weak = make_pair(edit_block(runbook, HBA_STEP, "/hostssl\\1/", "/host\\1/"), volumes=SHARED_ARCHIVE)
    weak.setup()
    with pytest.raises(StepFailed) as failed:
        weak.run("tls")
    assert failed.value.block.step == "tls-check-hba", str(failed.value)
    done = replicate(weak, "sslmode=disable")
    assert done.ok, "with host, a connection without TLS should get in: the refusal above would not be seen"


def test_when_the_secondary_does_not_stream_over_tls_the_check_fails_and_says_so(make_pair, runbook):
    """12.8's check must fail by its exit status, naming the standby, when the walreceiver cannot stream
    over TLS (here: 12.7 with sslmode=disable, which hostssl refuses); its deadline is cut from 30 s to 3 s
    for the test, and the transcript says so."""
    book = edit_block(runbook, "tls-secondary-conf", "sslmode=verify-full", "sslmode=disable")
    book = edit_block(book, "tls-check-primary", "SECONDS + 30", "SECONDS + 3")
    weak = make_pair(book, volumes=SHARED_ARCHIVE)
    weak.setup()
    weak.note("test: tls-check-primary's deadline cut from 30 s to 3 s (its failure path is under test)")
    with pytest.raises(StepFailed) as failure:
        weak.run("tls")
    assert failure.value.block.step == "tls-check-primary", str(failure.value)
    assert "exit code 1" in str(failure.value), "the step must fail by its exit status, not only by its output"
    assert "secondary_node1 does not stream over TLS" in str(failure.value)
