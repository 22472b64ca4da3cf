"""Where each OS family keeps PostgreSQL: paths, units, commands. Dispatch by family, once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.hosts.base import OsInfo

# The archive directories the runbook creates (Step 2.3 and Step 5), whatever the family.
ARCHIVE_DIRS = ("/mnt/server/archivedir", "/mnt/pgarchive/wal")
# Step 12's CA, each host's key and certificates, and the public files it passes through the shared storage.
TLS_DIRS = ("/etc/postgresql-ca", "/etc/postgresql-tls", "/mnt/pgarchive/tls")


class UnsupportedOs(HarnessError, ValueError):
    """A host whose OS family the runbook has no section for."""


@dataclass(frozen=True)
class Layout:
    family: str
    pg_major: int
    data_dir: str
    conf_dir: str
    unit: str  # the systemd unit that runs this node's postmaster
    service: str  # the unit the runbook enables and starts
    package_query: str  # prints the installed server package's version, or fails
    bin_dir: str
    log_file: str  # a shell expression naming the server log file
    packages_command: str  # prints the installed PostgreSQL packages, one name per line
    purge_command: str  # removes exactly the packages named by the words that follow it
    simulate_command: str  # shows, changing nothing, what removing the packages that follow would remove
    simulated: re.Pattern[str]  # in that output: a package that would go (group 1), whatever its wording
    # What the runbook makes of one cluster of this major (data, configuration, its log files, the
    # replication password file, the archive directories, Step 12's TLS files); a path ending in '*' is
    # a shell pattern.
    cluster_paths: tuple[str, ...]
    # The directories above them, deepest first: removed only when empty (another cluster may live there).
    parent_dirs: tuple[str, ...]

    @property
    def owned_paths(self) -> tuple[str, ...]:
        """Everything the runbook may create: whether each existed before is recorded (harness.ownership)."""
        return (*self.cluster_paths, *self.parent_dirs)

    @property
    def postgresql_conf(self) -> str:
        return f"{self.conf_dir}/postgresql.conf"

    @property
    def pg_hba_conf(self) -> str:
        return f"{self.conf_dir}/pg_hba.conf"


@dataclass(frozen=True)
class Packaging:
    """How the host's package manager answers for PostgreSQL's packages."""

    package_query: str
    packages_command: str
    purge_command: str
    simulate_command: str
    simulated: re.Pattern[str]


def _dpkg(major: int) -> Packaging:
    return Packaging(
        package_query=f"dpkg-query -W -f='${{Version}}' postgresql-{major}",
        packages_command=(
            # dpkg-query exits 1 when no package matches: that is an answer, not an error
            "(dpkg-query -W -f='${Status} ${Package}\\n' 'postgresql*' 'libpq*' 2>/dev/null || [ $? -eq 1 ])"
            " | awk '$3 == \"installed\" { print $4 }'"
        ),
        purge_command="DEBIAN_FRONTEND=noninteractive apt-get purge -y -q",
        # apt also purges what depends on a package (libpq5: psycopg2, php-pgsql, pgbackrest ...)
        simulate_command="apt-get -s purge -q",
        simulated=re.compile(r"^(?:Purg|Remv) ([^\s:]+)", re.M),
    )


def _rpm(major: int) -> Packaging:
    return Packaging(
        package_query=f"rpm -q --qf '%{{VERSION}}' postgresql{major}-server",
        packages_command="rpm -qa --qf '%{NAME}\\n' 'postgresql*' 'libpq*'",
        # rpm -e removes exactly the packages named, never what depends on them (dnf remove would)
        purge_command="rpm -e",
        simulate_command="rpm -e --test",
        simulated=re.compile(r"is needed by \(installed\) (\S+)"),
    )


PACKAGINGS = {"dpkg": _dpkg, "rpm": _rpm}


def _debian(family: str, major: int, packaging: Packaging) -> Layout:
    """postgresql-common: config in /etc, data in /var/lib, one unit per cluster."""
    return Layout(
        family,
        major,
        data_dir=f"/var/lib/postgresql/{major}/main",
        conf_dir=f"/etc/postgresql/{major}/main",
        unit=f"postgresql@{major}-main.service",
        service="postgresql.service",
        bin_dir=f"/usr/lib/postgresql/{major}/bin",
        log_file=f"/var/log/postgresql/postgresql-{major}-main.log",
        cluster_paths=(
            f"/var/lib/postgresql/{major}/main",
            f"/etc/postgresql/{major}/main",
            f"/var/log/postgresql/postgresql-{major}-main.log*",
            "/var/lib/postgresql/.pgpass",
            *ARCHIVE_DIRS,
            *TLS_DIRS,
        ),
        parent_dirs=(
            f"/var/lib/postgresql/{major}",
            f"/etc/postgresql/{major}",
            "/var/lib/postgresql",
            "/etc/postgresql",
            "/var/log/postgresql",
        ),
        **vars(packaging),
    )


def _el(family: str, major: int, packaging: Packaging) -> Layout:
    """PGDG RPMs: config inside the data directory, logs in its log/ by the logging collector."""
    data_dir = f"/var/lib/pgsql/{major}/data"
    return Layout(
        family,
        major,
        data_dir=data_dir,
        conf_dir=data_dir,
        unit=f"postgresql-{major}.service",
        service=f"postgresql-{major}.service",
        bin_dir=f"/usr/pgsql-{major}/bin",
        log_file=f"$(ls -t {data_dir}/log/*.log | head -1)",
        cluster_paths=(
            data_dir,
            f"/var/lib/pgsql/{major}/initdb.log",
            f"/var/lib/pgsql/{major}/conf-before-rewind*",  # Step 8.6.3's saved configuration, if a rejoin stopped
            "/var/lib/pgsql/.pgpass",
            *ARCHIVE_DIRS,
            *TLS_DIRS,
        ),
        parent_dirs=(f"/var/lib/pgsql/{major}",),
        **vars(packaging),
    )


# family -> (layout, the packaging its systems use): the OS families the harness knows, named here only
LAYOUTS = {"debian": (_debian, "dpkg"), "el8": (_el, "rpm"), "el7": (_el, "rpm")}
FAMILIES = tuple(LAYOUTS)


def family_of(os: OsInfo) -> str:
    """`debian` (Debian, Ubuntu), `el8` (Alibaba Cloud Linux 3, CentOS 8), `el7` (ACL 2, CentOS 7);
    for another system a name in no runbook (`unknown-ID`, `el-unknown-N`)."""
    if os.id in ("debian", "ubuntu") or "debian" in os.id_like:
        return "debian"
    if os.id == "alinux":
        return {3: "el8", 2: "el7"}.get(os.major, f"el-unknown-{os.major}")
    if os.id in ("centos", "rhel", "rocky", "almalinux") or "rhel" in os.id_like:
        return f"el{os.major}"
    return f"unknown-{os.id}"


def layout_for(family: str, pg_major: int, packaging: str | None = None) -> Layout:
    """Where `family` keeps PostgreSQL `pg_major`; `packaging` overrides the family's package manager
    (the el*-pgdg-layout images: PGDG's layout, installed by dpkg)."""
    if family not in LAYOUTS:
        raise UnsupportedOs(
            f"no PostgreSQL layout known for OS family {family!r} (known: {sorted(LAYOUTS)}): "
            "use a host of a family the runbook covers"
        )
    make, default_packaging = LAYOUTS[family]
    return make(family, pg_major, PACKAGINGS[packaging or default_packaging](pg_major))
