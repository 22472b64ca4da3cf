"""The inventory of real hosts (TOML): who is the primary, who the secondary, how to reach them.

    [postgresql]
    major = 18                    # the major the runbook installs on these hosts
    package_source = "pgdg"       # which variant of the package-source step to run
    shared_archive = false        # optional: true when /mnt/pgarchive is one shared mount on both hosts

    [primary]
    ssh_address = "203.0.113.10"  # where the test runner connects with SSH
    private_address = "192.168.1.10"  # what the other host uses for replication (VPC address)
    user = "ecs-user"
    key = "~/.ssh/id_ed25519"
    port = 22                     # optional

    [secondary]
    ...

Everything is checked before any host is touched; an error names the file and the field.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

ROLES = ("primary", "secondary")


class InventoryError(HarnessError, ValueError):
    """The inventory file is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class HostEntry:
    role: str
    ssh_address: str
    private_address: str
    user: str
    key: Path
    port: int = 22


@dataclass(frozen=True)
class Inventory:
    path: Path
    pg_major: int
    package_source: str
    hosts: dict[str, HostEntry]
    shared_archive: bool = False

    @classmethod
    def load(cls, path: Path | str | None) -> Inventory:
        if not path:
            raise InventoryError(
                "no inventory given: pass --inventory FILE (or set PGREPL_INVENTORY), a TOML file naming the "
                "primary and secondary hosts; see inventory.example.toml"
            )
        path = Path(path)
        if not path.is_file():
            raise InventoryError(f"inventory {path}: no such file (see inventory.example.toml)")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InventoryError(f"inventory {path}: not valid TOML: {exc}") from exc
        pg = _table(data, "postgresql", path)
        major = _field(pg, "major", int, path, "postgresql", "the PostgreSQL major the runbook installs, e.g. 18")
        source = _field(pg, "package_source", str, path, "postgresql", '"pgdg" or "distro"')
        hosts = {role: _host(role, _table(data, role, path), path) for role in ROLES}
        if hosts["primary"].ssh_address == hosts["secondary"].ssh_address and (
            hosts["primary"].port == hosts["secondary"].port
        ):
            raise InventoryError(f"inventory {path}: [primary] and [secondary] are the same host")
        shared = _field(pg, "shared_archive", bool, path, "postgresql", "true or false", default=False)
        return cls(path=path, pg_major=major, package_source=source, hosts=hosts, shared_archive=shared)


def _table(data: dict, name: str, path: Path) -> dict:
    table = data.get(name)
    if not isinstance(table, dict):
        raise InventoryError(f"inventory {path}: missing table [{name}]")
    return table


def _field(table: dict, name: str, kind: type, path: Path, section: str, hint: str, *, default=None):
    if name not in table:
        if default is not None:
            return default
        raise InventoryError(f"inventory {path}: [{section}] {name} is missing ({hint})")
    value = table[name]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise InventoryError(
            f"inventory {path}: [{section}] {name} = {value!r} is not a valid {kind.__name__} ({hint})"
        )
    return value


def _host(role: str, table: dict, path: Path) -> HostEntry:
    entry = HostEntry(
        role=role,
        ssh_address=_field(table, "ssh_address", str, path, role, "the address the test runner SSHes to"),
        private_address=_field(table, "private_address", str, path, role, "the VPC address the other host uses"),
        user=_field(table, "user", str, path, role, "the login user, with passwordless sudo"),
        key=Path(_field(table, "key", str, path, role, "path of the SSH private key")).expanduser(),
        port=_field(table, "port", int, path, role, "SSH port", default=22),
    )
    try:
        ipaddress.ip_address(entry.private_address)
    except ValueError:
        raise InventoryError(
            f"inventory {path}: [{role}] private_address = {entry.private_address!r} is not an IP address"
        ) from None
    if not entry.key.is_file():
        raise InventoryError(f"inventory {path}: [{role}] key = {str(entry.key)!r}: no such file")
    return entry
