"""Where each OS family keeps PostgreSQL: paths, units, commands. Dispatch by family, once."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError


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
    removal_script: str  # undoes what the runbook installed and created (`down` on real hosts)

    @property
    def postgresql_conf(self) -> str:
        return f"{self.conf_dir}/postgresql.conf"

    @property
    def pg_hba_conf(self) -> str:
        return f"{self.conf_dir}/pg_hba.conf"


def _debian(family: str, major: int) -> Layout:
    """postgresql-common: config in /etc, data in /var/lib, one unit per cluster."""
    return Layout(
        family,
        major,
        data_dir=f"/var/lib/postgresql/{major}/main",
        conf_dir=f"/etc/postgresql/{major}/main",
        unit=f"postgresql@{major}-main.service",
        service="postgresql.service",
        package_query=f"dpkg-query -W -f='${{Version}}' postgresql-{major}",
        bin_dir=f"/usr/lib/postgresql/{major}/bin",
        log_file=f"/var/log/postgresql/postgresql-{major}-main.log",
        removal_script=(
            "systemctl stop postgresql.service || true\n"
            "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q 'postgresql-*' >/dev/null || true\n"
            "rm -rf /etc/postgresql /var/lib/postgresql /var/log/postgresql\n"
        ),
    )


def _el(family: str, major: int) -> Layout:
    """PGDG RPMs: config inside the data directory, logs in its log/ by the logging collector."""
    data_dir = f"/var/lib/pgsql/{major}/data"
    return Layout(
        family,
        major,
        data_dir=data_dir,
        conf_dir=data_dir,
        unit=f"postgresql-{major}.service",
        service=f"postgresql-{major}.service",
        package_query=f"rpm -q --qf '%{{VERSION}}' postgresql{major}-server",
        bin_dir=f"/usr/pgsql-{major}/bin",
        log_file=f"$(ls -t {data_dir}/log/*.log | head -1)",
        removal_script=(
            f"systemctl stop postgresql-{major}.service || true\n"
            f"(command -v dnf >/dev/null && dnf remove -y -q 'postgresql{major}*' || "
            f"yum remove -y -q 'postgresql{major}*') >/dev/null || true\n"
            f"rm -rf /var/lib/pgsql/{major} /var/lib/pgsql/.pgpass\n"
        ),
    )


LAYOUTS = {"debian": _debian, "el8": _el, "el7": _el}


def layout_for(family: str, pg_major: int) -> Layout:
    if family not in LAYOUTS:
        raise UnsupportedOs(
            f"no PostgreSQL layout known for OS family {family!r} (known: {sorted(LAYOUTS)}): "
            "use a host of a family the runbook covers"
        )
    return LAYOUTS[family](family, pg_major)
