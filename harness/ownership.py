"""What the harness may touch on a real host: only what its own record says it created.

Before the runbook's first step the harness surveys each host (as root): PostgreSQL packages,
clusters, units, a listener on 5432, running servers, data directories anywhere. A host with any
of them is refused (unless the user allows it). Then it writes an ownership record
(/var/lib/pgrepl-harness/owner.json: run id, major, what existed before); when the cluster closes
it adds the data directory's system identifier. Removal takes away exactly the packages and paths
that are there now and were not before, and refuses a host without a record, or whose data
directory is no longer the one recorded, unless forced (and then says what it deletes).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field

from harness.hosts.base import Host, HostError
from harness.layout import Layout

RECORD = "/var/lib/pgrepl-harness/owner.json"
# Packages that mean a PostgreSQL server is installed (client libraries alone do not).
SERVER_PACKAGE = re.compile(r"^postgresql-?\d+(-server)?$|^postgresql(\d+)?-server$|^postgresql-common$")
# Probes run as root; each prints what it finds (nothing when there is nothing) and fails only on error.
PROBES = {
    "clusters (pg_lsclusters)": "if command -v pg_lsclusters >/dev/null; then pg_lsclusters --no-header; fi",
    # exit code 1: no unit matches (systemd 250 and newer)
    "units": "(systemctl list-unit-files --no-legend --no-pager 'postgresql*' || [ $? -eq 1 ]) | awk '{ print $1 }'",
    "listening on port 5432": "ss -Hltn 'sport = :5432'",
    "running servers": "pgrep -a -x 'postgres|postmaster' || [ $? -eq 1 ]",
    "data directories": (
        "find / -xdev -maxdepth 7 \\( -path /proc -o -path /sys -o -path '*/base' \\) -prune"
        " -o -name PG_VERSION -printf '%h\\n'"
    ),
    "ownership record of an earlier run": f"cat {RECORD} 2>/dev/null || true",
}


class NotOwned(HostError):
    """The harness has no record of creating what it was asked to remove, or the record does not match."""


class HostNotPristine(HostError):
    """A real host already runs or holds PostgreSQL; the harness will not touch it unless told to."""


@dataclass
class Record:
    run_id: str
    pg_major: int
    family: str
    packages_before: list[str]
    paths_before: list[str]
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    data_dir: str | None = None
    system_identifier: str | None = None


def installed_packages(host: Host, layout: Layout) -> list[str]:
    return sorted(host.run(layout.packages_command, user="root", timeout=60).stdout.split())


def existing_paths(host: Host, layout: Layout) -> list[str]:
    paths = " ".join(shlex.quote(p) for p in layout.owned_paths)
    return host.run(f'for p in {paths}; do if [ -e "$p" ]; then echo "$p"; fi; done', user="root").stdout.split()


def survey(host: Host, layout: Layout) -> dict[str, str]:
    """Every sign of PostgreSQL on `host`, by kind (empty when it has none)."""
    found = {"server packages": "\n".join(p for p in installed_packages(host, layout) if SERVER_PACKAGE.match(p))}
    for what, probe in PROBES.items():
        found[what] = host.run(probe, user="root", timeout=120).stdout.strip()
    return {what: text for what, text in found.items() if text}


def refuse_existing_postgresql(host: Host, layout: Layout) -> None:
    """Never set up over a PostgreSQL that the harness did not install."""
    found = survey(host, layout)
    if found:
        shown = "".join(
            f"  {what}:\n" + "".join(f"    {line}\n" for line in text.splitlines()) for what, text in found.items()
        )
        raise HostNotPristine(
            f"{host.name} ({host.url}) already has PostgreSQL:\n{shown}"
            "the harness sets up fresh hosts only and never removes what it did not install; use a fresh host, "
            "or pass --allow-existing-postgresql to run over it (what exists now is recorded and left alone)"
        )


def claim(host: Host, layout: Layout, run_id: str) -> Record:
    """Write the ownership record before the runbook's first step: what existed before the harness
    (an earlier run's record keeps its own "before", so what that run created stays removable)."""
    earlier = _read(host)
    if earlier is not None:
        before = earlier.packages_before, earlier.paths_before
    else:
        before = installed_packages(host, layout), existing_paths(host, layout)
    record = Record(run_id, layout.pg_major, layout.family, *before)
    _write(host, record)
    return record


def seal(host: Host, layout: Layout, record: Record) -> None:
    """Add the data directory's system identifier, so removal can tell it is still the one created."""
    sysid = _system_identifier(host, layout)
    if sysid is not None:
        record.data_dir, record.system_identifier = layout.data_dir, sysid
        _write(host, record)


def release(host: Host, layout: Layout, *, force: bool = False, log=print) -> list[str]:
    """Remove what the record says the harness created (all of PostgreSQL's if `force`); return what went."""
    record = _read(host)
    if record is None and force:
        record = Record("unknown", layout.pg_major, layout.family, [], [])
        log(f"{host.name}: no ownership record; --force: removing every PostgreSQL package and {layout.owned_paths}")
    elif record is None:
        raise NotOwned(
            f"{host.name} ({host.url}) has no ownership record ({RECORD}): the harness did not set up PostgreSQL "
            "here, so it removes nothing. `down --inventory FILE --force` removes PostgreSQL's packages and "
            f"{', '.join(layout.owned_paths)} all the same."
        )
    sysid = _system_identifier(host, layout)
    if record.system_identifier and sysid not in (None, record.system_identifier) and not force:
        raise NotOwned(
            f"{host.name}: {layout.data_dir} holds cluster {sysid}, not {record.system_identifier} that run "
            f"{record.run_id} created: it was replaced since, so the harness leaves it (--force removes it)"
        )
    packages = sorted(set(installed_packages(host, layout)) - set(record.packages_before))
    paths = sorted(set(existing_paths(host, layout)) - set(record.paths_before))
    script = f"systemctl stop {shlex.quote(layout.service)} {shlex.quote(layout.unit)} || true\n"
    if packages:
        script += f"{layout.purge_command} {' '.join(map(shlex.quote, packages))} >/dev/null\n"
    if paths:
        script += f"rm -rf -- {' '.join(map(shlex.quote, paths))}\n"
    host.run(script + f"rm -f {RECORD}\n", user="root", timeout=600)
    return packages + paths


def _read(host: Host) -> Record | None:
    text = host.run(f"cat {RECORD} 2>/dev/null || true", user="root").stdout
    return Record(**json.loads(text)) if text.strip() else None


def _write(host: Host, record: Record) -> None:
    host.put_file(RECORD, json.dumps(asdict(record), indent=2) + "\n", mode=0o600)


def _system_identifier(host: Host, layout: Layout) -> str | None:
    done = host.run(f"{layout.bin_dir}/pg_controldata {layout.data_dir}", user="root", check=False)
    match = re.search(r"system identifier:\s*(\d+)", done.stdout)
    return match.group(1) if match else None
