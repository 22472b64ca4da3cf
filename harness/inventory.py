"""The inventory of real hosts (TOML): who is the primary, who the secondary, how to reach them.

    [postgresql]
    major = 18                    # the major the runbook installs on these hosts (10..99)
    package_source = "pgdg"       # which variant of the package-source step to run: "pgdg" or "distro"
    shared_archive = false        # optional: true when /mnt/pgarchive is one shared mount on both hosts

    [primary]
    ssh_address = "203.0.113.10"  # where the test runner connects with SSH
    private_address = "192.168.1.10"  # what the other host uses for replication (VPC address)
    user = "ecs-user"
    key = "~/.ssh/id_ed25519"     # relative paths are relative to this file; ~ expands
    port = 22                     # optional (1..65535)
    known_hosts = "known_hosts"   # optional: a known_hosts file holding this host's key (resolved like key)
    proxy_jump = "ecs-user@bastion.example.com:22"  # optional: an OpenSSH ProxyJump (jump host)

    [secondary]
    ...

Everything is checked before any host is touched: unknown tables and keys (a typo is not silently
a default), types (true is not a port), ranges and shapes. An error names the file, the field and
the fix. Primary and secondary must differ in both their SSH endpoint and their private address.

Each value is checked for what it is, not only for what it must not hold: private_address reaches
root shells on the hosts (the runbook's blocks, firewall rules), so it is an IP address without a
scope id (whose text after '%' Python accepts as anything); ssh_address a host name or such an IP
address; proxy_jump `[user@]host[:port]`; user a POSIX login name. None of them can hold a character
a shell or ssh (its `%` tokens) would read.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness import PACKAGE_SOURCES, ROLES
from harness.errors import HarnessError

# Every table and every key an inventory may have; anything else is a typo, not a default.
FIELDS = {
    "postgresql": ("major", "package_source", "shared_archive"),
    **{role: ("ssh_address", "private_address", "user", "key", "port", "known_hosts", "proxy_jump") for role in ROLES},
}
MAJORS = range(10, 100)
PORTS = range(1, 65536)
# a POSIX login name as useradd takes it by default (32 characters at most)
USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# an RFC 1123 host name (labels of letters, digits and '-', not first or last), or an ssh_config alias
# of the same shape; '_' is allowed since DNS and ssh_config take it
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_REQUIRED = object()


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
    known_hosts: Path | None = None
    proxy_jump: str | None = None


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
                "no inventory given: pass --inventory FILE (pytest: --pgrepl-inventory FILE) or set PGREPL_INVENTORY, "
                "a TOML file naming the primary and secondary hosts; see inventory.example.toml"
            )
        path = Path(path)
        if not path.is_file():
            raise InventoryError(f"inventory {path}: no such file (see inventory.example.toml)")
        try:
            data = tomllib.loads(path.read_text())
        except UnicodeDecodeError as exc:
            raise InventoryError(f"inventory {path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise InventoryError(f"inventory {path}: not valid TOML: {exc}") from exc
        except ValueError as exc:  # an integer of more digits than Python converts
            raise InventoryError(
                f"inventory {path}: a value TOML cannot hold here ({exc}); write the field as shown "
                "in inventory.example.toml"
            ) from None
        except RecursionError:
            raise InventoryError(
                f"inventory {path}: arrays or tables nested too deep to read; an inventory has "
                "flat tables (see inventory.example.toml)"
            ) from None
        except OSError as exc:
            raise InventoryError(f"inventory {path}: cannot be read ({exc.strerror})") from None
        _check_tables(data, path)
        pg = data["postgresql"]
        major = _field(pg, "major", int, path, "postgresql", "the PostgreSQL major the runbook installs, e.g. 18")
        if major not in MAJORS:
            raise InventoryError(
                f"inventory {path}: [postgresql] major = {major!r} is not a PostgreSQL major "
                f"(a number from {MAJORS.start} to {MAJORS.stop - 1}, e.g. 18)"
            )
        choices = " or ".join(f'"{v}"' for v in PACKAGE_SOURCES)
        source = _field(pg, "package_source", str, path, "postgresql", choices)
        if source not in PACKAGE_SOURCES:
            raise InventoryError(f"inventory {path}: [postgresql] package_source = {source!r} is not {choices}")
        shared = _field(pg, "shared_archive", bool, path, "postgresql", "true or false", default=False)
        hosts = {role: _host(role, data[role], path) for role in ROLES}
        primary, secondary = hosts["primary"], hosts["secondary"]
        if primary.ssh_address == secondary.ssh_address and primary.port == secondary.port:
            raise InventoryError(
                f"inventory {path}: [primary] and [secondary] are the same host "
                f"(ssh_address = {primary.ssh_address!r}, port = {primary.port}); give each role its own host"
            )
        if ip_address(primary.private_address) == ip_address(secondary.private_address):
            raise InventoryError(
                f"inventory {path}: [primary] and [secondary] have the same private_address = "
                f"{primary.private_address!r}; each host needs its own VPC address"
            )
        return cls(path=path, pg_major=major, package_source=source, hosts=hosts, shared_archive=shared)


def _check_tables(data: dict, path: Path) -> None:
    """Every known table is there and is a table, nothing else is, and no table has an unknown key."""
    known = ", ".join(f"[{name}]" for name in FIELDS)
    unknown = [name for name in data if name not in FIELDS]
    for name in FIELDS:
        if name not in data:
            also = f"; {', '.join(f'[{u}]' for u in unknown)} is not one of them" if unknown else ""
            raise InventoryError(f"inventory {path}: missing table [{name}] (an inventory has {known}{also})")
        if not isinstance(data[name], dict):
            raise InventoryError(
                f"inventory {path}: {name} = {_shown(data[name])} must be a table [{name}] (an inventory has {known})"
            )
    for name in unknown:
        what = (
            f"table [{name}]"
            if isinstance(data[name], dict)
            else f"key {name} = {_shown(data[name])} outside any table"
        )
        raise InventoryError(f"inventory {path}: unknown {what}{_did_you_mean(name, FIELDS)} (known tables: {known})")
    for name, keys in FIELDS.items():
        for key, value in data[name].items():
            if key not in keys:
                raise InventoryError(
                    f"inventory {path}: [{name}] {key} = {_shown(value)} is not a known field"
                    f"{_did_you_mean(key, keys)} (known: {', '.join(keys)})"
                )


def _shown(value) -> str:
    """A value as the TOML file spells it where that differs from Python (`true`, not `True`)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _field(table: dict, name: str, kind: type, path: Path, section: str, hint: str, *, default=_REQUIRED):
    if name not in table:
        if default is not _REQUIRED:
            return default
        raise InventoryError(f"inventory {path}: [{section}] {name} is missing ({hint})")
    value = table[name]
    # a TOML boolean is a Python bool, and bool is a subclass of int: `port = true` is not port 1
    wrong_bool = isinstance(value, bool) and kind is not bool
    if wrong_bool or not isinstance(value, kind) or (kind is str and not value.strip()):
        raise InventoryError(
            f"inventory {path}: [{section}] {name} = {_shown(value)} is not a valid {kind.__name__} ({hint})"
        )
    return value


def ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`value` as an IP address, or None; an IPv6 scope id (`fe80::1%eth0`) is not accepted: Python
    takes any text after the '%', `;` and `$` included."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return None if getattr(address, "scope_id", None) else address


def is_host(value: str) -> bool:
    """A host name or an IP address without a scope id (what ssh and libpq may be given)."""
    return bool(HOST_NAME.fullmatch(value)) or ip_address(value) is not None


def split_jump(value: str) -> tuple[str | None, str, int | None] | None:
    """`[user@]host[:port]`, one ProxyJump hop, as (user, host, port); None when it is not one.
    An IPv6 host is written in brackets (else its last group reads as a port)."""
    user, at, rest = value.rpartition("@")
    if at and not USER.fullmatch(user):
        return None
    port: str | None = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")) or ":" not in host or ip_address(host) is None:
            return None
        port = after[1:] if after else None
    elif rest.count(":") > 1:
        return None
    else:
        host, _, port = rest.partition(":") if ":" in rest else (rest, "", None)
        if not is_host(host):
            return None
    if port is not None and not _port_text(port):
        return None
    return (user or None), host, (int(port) if port is not None else None)


def jump_host(value: str) -> bool:
    return split_jump(value) is not None


def _port_text(port: str | None) -> bool:
    return port is None or (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) in PORTS)


def _checked(table: dict, name: str, path: Path, section: str, hint: str, valid, what: str, *, default=_REQUIRED):
    """A string field that `valid` accepts; else an error naming what it must be."""
    value = _field(table, name, str, path, section, hint, default=default)
    if value is None or valid(value):
        return value
    raise InventoryError(f"inventory {path}: [{section}] {name} = {value!r} is not {what} ({hint})")


def _file(table: dict, name: str, path: Path, section: str, hint: str, *, default=_REQUIRED) -> Path | None:
    """A path to an existing file; relative to the inventory's directory, `~` expanded."""
    value = _field(table, name, str, path, section, hint, default=default)
    if value is None:
        return None
    try:
        resolved = Path(value).expanduser()
    except RuntimeError:  # ~name of a user this machine does not know
        raise InventoryError(
            f"inventory {path}: [{section}] {name} = {value!r}: {value.split('/')[0]} names no user of this machine "
            f"({hint}; write ~/... for your own home, or a full path)"
        ) from None
    if not resolved.is_absolute():
        resolved = path.absolute().parent / resolved
    if not resolved.is_file():
        raise InventoryError(
            f"inventory {path}: [{section}] {name} = {value!r}: no such file {str(resolved)!r} "
            f"({hint}; a relative path is relative to the inventory's directory)"
        )
    return resolved


def _host(role: str, table: dict, path: Path) -> HostEntry:
    ssh_address = _checked(
        table,
        "ssh_address",
        path,
        role,
        "the address the test runner SSHes to, e.g. 203.0.113.10 or db1.example.com",
        is_host,
        "a host name or an IP address (letters, digits, '.', '-', ':'; no scope id, no whitespace, no '-' first)",
    )
    private_address = _checked(
        table,
        "private_address",
        path,
        role,
        "the VPC address the other host uses, e.g. 192.168.1.10",
        lambda value: ip_address(value) is not None,
        "an IP address (without a scope id such as %eth0)",
    )
    user = _checked(
        table,
        "user",
        path,
        role,
        "the login user, with passwordless sudo",
        USER.fullmatch,
        "a login name (lower-case letters, digits, '_', '.', '-', at most 32, not starting with a digit, "
        "'-' or '.', e.g. ecs-user)",
    )
    key = _file(table, "key", path, role, "path of the SSH private key")
    port = _field(table, "port", int, path, role, "SSH port, e.g. 22", default=22)
    if port not in PORTS:
        raise InventoryError(f"inventory {path}: [{role}] port = {port!r} is not a TCP port (1 to 65535, e.g. 22)")
    known_hosts = _file(table, "known_hosts", path, role, "a known_hosts file holding this host's key", default=None)
    proxy_jump = _checked(
        table,
        "proxy_jump",
        path,
        role,
        "an OpenSSH ProxyJump, e.g. ecs-user@bastion.example.com:22",
        jump_host,
        "one jump host as [user@]host[:port] (a login name, a host name or IP address, a TCP port)",
        default=None,
    )
    return HostEntry(
        role=role,
        ssh_address=ssh_address,
        private_address=private_address,
        user=user,
        key=key,
        port=port,
        known_hosts=known_hosts,
        proxy_jump=proxy_jump,
    )
