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

    @property
    def data_dir(self) -> str:
        raise NotImplementedError

    @property
    def conf_dir(self) -> str:
        raise NotImplementedError

    @property
    def unit(self) -> str:
        """The systemd unit that runs this node's postmaster."""
        raise NotImplementedError

    @property
    def service(self) -> str:
        """The unit the runbook enables and starts."""
        raise NotImplementedError

    @property
    def package_query(self) -> str:
        """A command that prints the installed server package's version, or fails."""
        raise NotImplementedError

    @property
    def bin_dir(self) -> str:
        raise NotImplementedError

    @property
    def removal_script(self) -> str:
        """Undo what the runbook installed and created (for `down` on real hosts)."""
        raise NotImplementedError

    @property
    def log_file(self) -> str:
        """A shell expression naming the server log file."""
        raise NotImplementedError

    @property
    def postgresql_conf(self) -> str:
        return f"{self.conf_dir}/postgresql.conf"

    @property
    def pg_hba_conf(self) -> str:
        return f"{self.conf_dir}/pg_hba.conf"


class DebianLayout(Layout):
    """postgresql-common: config in /etc, data in /var/lib, one unit per cluster."""

    @property
    def data_dir(self) -> str:
        return f"/var/lib/postgresql/{self.pg_major}/main"

    @property
    def conf_dir(self) -> str:
        return f"/etc/postgresql/{self.pg_major}/main"

    @property
    def unit(self) -> str:
        return f"postgresql@{self.pg_major}-main.service"

    @property
    def service(self) -> str:
        return "postgresql.service"

    @property
    def package_query(self) -> str:
        return f"dpkg-query -W -f='${{Version}}' postgresql-{self.pg_major}"

    @property
    def bin_dir(self) -> str:
        return f"/usr/lib/postgresql/{self.pg_major}/bin"

    @property
    def log_file(self) -> str:
        return f"/var/log/postgresql/postgresql-{self.pg_major}-main.log"

    @property
    def removal_script(self) -> str:
        return (
            "systemctl stop postgresql.service || true\n"
            "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q 'postgresql-*' >/dev/null || true\n"
            "rm -rf /etc/postgresql /var/lib/postgresql /var/log/postgresql\n"
        )


class ElLayout(Layout):
    """PGDG RPMs: config inside the data directory, logs in its log/ by the logging collector."""

    @property
    def data_dir(self) -> str:
        return f"/var/lib/pgsql/{self.pg_major}/data"

    @property
    def conf_dir(self) -> str:
        return self.data_dir

    @property
    def unit(self) -> str:
        return f"postgresql-{self.pg_major}.service"

    @property
    def service(self) -> str:
        return self.unit

    @property
    def package_query(self) -> str:
        return f"rpm -q --qf '%{{VERSION}}' postgresql{self.pg_major}-server"

    @property
    def bin_dir(self) -> str:
        return f"/usr/pgsql-{self.pg_major}/bin"

    @property
    def log_file(self) -> str:
        return f"$(ls -t {self.data_dir}/log/*.log | head -1)"

    @property
    def removal_script(self) -> str:
        return (
            f"systemctl stop {self.unit} || true\n"
            f"(command -v dnf >/dev/null && dnf remove -y -q 'postgresql{self.pg_major}*' || "
            f"yum remove -y -q 'postgresql{self.pg_major}*') >/dev/null || true\n"
            f"rm -rf /var/lib/pgsql/{self.pg_major} /var/lib/pgsql/.pgpass\n"
        )


LAYOUTS: dict[str, type[Layout]] = {"debian": DebianLayout, "el8": ElLayout, "el7": ElLayout}


def layout_for(family: str, pg_major: int) -> Layout:
    try:
        return LAYOUTS[family](family, pg_major)
    except KeyError:
        raise UnsupportedOs(
            f"no PostgreSQL layout known for OS family {family!r} (known: {sorted(LAYOUTS)}): "
            "use a host of a family the runbook covers"
        ) from None
