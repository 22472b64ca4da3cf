"""What the harness may touch on a real host: only what its own record says it created.

Before anything else a run takes each host's lock (one run at a time: survey and claim are one step),
then surveys each host (as root): PostgreSQL packages, clusters, units, a listener on 5432, running
servers, data directories on every local file system. A host with any of them is refused (unless the
user allows it). Then it writes an ownership record
(/var/lib/pgrepl-harness/owner.json: run id, major, its cluster's data directory, what existed
before); when the cluster closes it adds the data directory's system identifier.

Removal works from the record alone (its family, major and data directory, not the inventory's): it
refuses unless the data directory's system identifier is read and is the recorded one (a cluster that
never got one: unless there is no cluster there), or when another cluster of that major lives next to
it; it removes the packages that are there now and were not before only if the package manager's
simulation removes nothing else, and of the paths only the recorded cluster's own (directories above
them only when empty). It says exactly what went. `force` removes PostgreSQL without a record.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields

from harness.hosts.base import Host, HostError
from harness.inventory import MAJORS
from harness.layout import LAYOUTS, Layout, layout_for

RECORD = "/var/lib/pgrepl-harness/owner.json"
# Held by one run at a time from before the survey to the end: mkdir is atomic, and root's alone here.
LOCK = "/var/lib/pgrepl-harness/lock"
# Packages that mean a PostgreSQL server is installed (client libraries alone do not).
SERVER_PACKAGE = re.compile(r"^postgresql-?\d+(-server)?$|^postgresql(\d+)?-server$|^postgresql-common$")
# The file systems the survey looks for data directories on, besides the root's: local disks, a
# container's root (overlay) and memory (tmpfs). Network file systems (NFS, CIFS, ...) are not searched.
LOCAL_FILE_SYSTEMS = (
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "zfs",
    "f2fs",
    "jfs",
    "reiserfs",
    "bcachefs",
    "overlay",
    "tmpfs",
)
SURVEY_DEPTH = 7  # directories below each mount point


def data_directories_probe(mounts: str = "/proc/mounts", root: str = "/") -> str:
    """A script printing the directory of every PG_VERSION file (not of a database inside a data
    directory, base/N) on `root` and every mount of a LOCAL_FILE_SYSTEMS type in `mounts`, each searched
    SURVEY_DEPTH deep without crossing into other mounts (which are searched from their own point)."""
    types = "|".join(LOCAL_FILE_SYSTEMS)
    return (
        f"{{ echo {shlex.quote(root)}; awk '$3 ~ /^({types})$/ {{ print $2 }}' {shlex.quote(mounts)}; }} | sort -u |"
        ' while IFS= read -r point; do point=$(printf "%b" "$point");'  # /proc/mounts writes a space as \040
        f' find "$point" -xdev -maxdepth {SURVEY_DEPTH} \\( -path /proc -o -path /sys -o -path "*/base" \\) -prune'
        " -o -name PG_VERSION -printf '%h\\n' 2>/dev/null || true; done | sort -u"
    )


# Probes run as root; each prints what it finds (nothing when there is nothing) and fails only on error.
PROBES = {
    "clusters (pg_lsclusters)": "if command -v pg_lsclusters >/dev/null; then pg_lsclusters --no-header; fi",
    # exit code 1: no unit matches (systemd 250 and newer)
    "units": "(systemctl list-unit-files --no-legend --no-pager 'postgresql*' || [ $? -eq 1 ]) | awk '{ print $1 }'",
    "listening on port 5432": "ss -Hltn 'sport = :5432'",
    "running servers": "pgrep -a -x 'postgres|postmaster' || [ $? -eq 1 ]",
    "data directories": data_directories_probe(),
    "ownership record of an earlier run": f"cat {RECORD} 2>/dev/null || true",
}


class NotOwned(HostError):
    """The harness has no record of creating what it was asked to remove, or the record does not match."""


class HostBusy(HostError):
    """Another run of the harness holds the host (its survey, set-up or removal is under way)."""


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


# what each field of a record must be (a JSON value of this type; None only where the field allows it)
_TYPES = {
    "run_id": str,
    "pg_major": int,
    "family": str,
    "packages_before": list,
    "paths_before": list,
    "created_at": str,
    "data_dir": (str, type(None)),
    "system_identifier": (str, type(None)),
}


class BadRecord(NotOwned):
    """The ownership record is there but unreadable: the harness cannot tell what it created."""


@contextmanager
def held(host: Host, run_id: str) -> Iterator[None]:
    """The host's run lock, taken before the survey and held until the run is done with the host: two
    runs on one host could otherwise both find it fresh and install at once. HostBusy names the holder."""
    holder = f"run {run_id} from {socket.gethostname()} (uid {os.getuid()}, pid {os.getpid()}), since {time.ctime()}"
    lock, parent = shlex.quote(LOCK), shlex.quote(posixpath.dirname(LOCK))
    taken = host.run(
        f"mkdir -p -m 700 {parent}\n"
        f"if mkdir -m 700 {lock} 2>/dev/null; then printf '%s\\n' {shlex.quote(holder)} > {lock}/holder; echo taken\n"
        f"else cat {lock}/holder 2>/dev/null || echo 'a run that has not written its name yet'; fi\n",
        user="root",
    ).stdout.strip()
    if taken != "taken":
        raise HostBusy(
            f"{host.name} ({host.url}) is held by another run of the harness: {taken}. Wait for it to end; if that "
            f"run is gone (killed), remove {LOCK} on the host and try again"
        )
    try:
        yield
    finally:  # only our own lock: never one another run took after ours was removed by hand
        host.run(
            f'if [ "$(cat {lock}/holder 2>/dev/null)" = {shlex.quote(holder)} ]; then rm -rf -- {lock}; fi',
            user="root",
            check=False,
        )


def installed_packages(host: Host, layout: Layout) -> list[str]:
    return sorted(host.run(layout.packages_command, user="root", timeout=60).stdout.split())


def _words(paths) -> str:
    """Paths for a shell command line, each quoted; a trailing '*' stays a pattern."""
    return " ".join(shlex.quote(p[:-1]) + "*" if p.endswith("*") else shlex.quote(p) for p in paths)


def existing_paths(host: Host, layout: Layout, paths: tuple[str, ...] | None = None) -> list[str]:
    """Which of `paths` (default: every path the runbook may create) exist; patterns expanded."""
    words = _words(layout.owned_paths if paths is None else paths)
    script = f'for p in {words}; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
    return host.run(script, user="root").stdout.splitlines()


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
    record = Record(run_id, layout.pg_major, layout.family, *before, data_dir=layout.data_dir)
    _write(host, record)
    return record


def seal(host: Host, layout: Layout, record: Record) -> None:
    """Add the data directory's system identifier, so removal can tell it is still the one created."""
    sysid = _system_identifier(host, layout)
    if sysid is not None:
        record.data_dir, record.system_identifier = layout.data_dir, sysid
        _write(host, record)


def release(host: Host, layout: Layout, *, force: bool = False, log=print) -> list[str]:
    """Remove what the record says the harness created (all of PostgreSQL's if `force` and there is no
    readable record); return exactly what went."""
    try:
        record = _read(host)
    except BadRecord as exc:
        if not force:
            raise
        log(f"{exc}\n--force: going on as if there were no record")
        record = None
    if record is None and not force:
        raise NotOwned(
            f"{host.name} ({host.url}) has no ownership record ({RECORD}): the harness did not set up PostgreSQL "
            "here, so it removes nothing. `down --inventory FILE --force` removes PostgreSQL's packages and "
            f"{', '.join(layout.owned_paths)} all the same."
        )
    if record is None:
        log(f"{host.name}: no ownership record; --force: removing every PostgreSQL package and {layout.owned_paths}")
        record = Record("unknown", layout.pg_major, layout.family, [], [], data_dir=layout.data_dir)
        own, paths = layout, layout.owned_paths  # every one of them, whole
    else:
        own = layout if (layout.family, layout.pg_major) == (record.family, record.pg_major) else None
        own = own or layout_for(record.family, record.pg_major)
        _check_cluster(host, own, record, force=force, log=log)
        paths = own.cluster_paths
    packages = sorted(set(installed_packages(host, own)) - set(record.packages_before))
    packages = _check_simulation(host, own, packages, force=force, log=log)
    removable = [p for p in existing_paths(host, own, paths) if p not in record.paths_before]
    parents = [d for d in own.parent_dirs if d not in record.paths_before and d not in paths]
    script = f"systemctl stop {shlex.quote(own.service)} {shlex.quote(own.unit)} || true\n"
    if removable:  # first the cluster, so a package's purge finds no cluster of its own to drop
        script += f'for p in {_words(removable)}; do rm -rf -- "$p"; echo "$p"; done\n'
    if packages:
        script += f"{own.purge_command} {' '.join(map(shlex.quote, packages))} >/dev/null\n"
    if parents:
        script += f'for p in {_words(parents)}; do if rmdir -- "$p" 2>/dev/null; then echo "$p"; fi; done\n'
    removed = host.run(script + f"rm -f {RECORD}\n", user="root", timeout=600).stdout.splitlines()
    return packages + removed


def _check_cluster(host: Host, layout: Layout, record: Record, *, force: bool, log) -> None:
    """Refuse (NotOwned) unless the recorded cluster is the one there, alone of its major."""
    data_dir = layout.data_dir
    if record.system_identifier is not None:
        sysid = _system_identifier(host, layout)
        if sysid != record.system_identifier:
            seen = (
                f"holds cluster {sysid}"
                if sysid is not None
                else f"has no system identifier that {layout.bin_dir}/pg_controldata can read "
                "(no cluster, or one of another major, or binaries of another major)"
            )
            problem = (
                f"{host.name} ({host.url}): {data_dir} {seen}, not {record.system_identifier} that run "
                f"{record.run_id} created: the harness cannot tell it is its own, so it removes nothing"
            )
            if not force:
                raise NotOwned(f"{problem} (--force removes it all the same)")
            log(f"{problem}; --force: removing it all the same")
    elif _has_cluster(host, data_dir):
        problem = (
            f"{host.name} ({host.url}): {data_dir} holds a cluster, but run {record.run_id} never recorded "
            "its system identifier (the run ended before the cluster closed): the harness cannot tell it is its own"
        )
        if not force:
            raise NotOwned(f"{problem}, so it removes nothing (--force removes it all the same)")
        log(f"{problem}; --force: removing it all the same")
    others = _other_clusters(host, layout)
    if others:
        problem = (
            f"{host.name} ({host.url}): other clusters of PostgreSQL {layout.pg_major} live next to the harness's: "
            f"{', '.join(others)}; removing the packages would take their server away"
        )
        if not force:
            raise NotOwned(f"{problem}, so the harness removes nothing (remove them first, or --force)")
        log(f"{problem}; --force: removing it all the same")


def _has_cluster(host: Host, data_dir: str) -> bool:
    return host.run(f"test -e {shlex.quote(data_dir + '/PG_VERSION')}", user="root", check=False).ok


def _other_clusters(host: Host, layout: Layout) -> list[str]:
    """Data or configuration directories of this major's clusters other than the recorded one."""
    own = {layout.data_dir, layout.conf_dir}
    roots = _words(sorted({posixpath.dirname(d) for d in own}))  # where this major's clusters live
    script = (
        f'for d in {roots}; do if [ -d "$d" ]; then find "$d" -mindepth 2 -maxdepth 2 '
        "\\( -name PG_VERSION -o -name postgresql.conf \\) -printf '%h\\n'; fi; done"
    )
    found = host.run(script, user="root").stdout.split()
    return sorted(set(found) - own)


def _check_simulation(host: Host, layout: Layout, packages: list[str], *, force: bool, log) -> list[str]:
    """The packages to remove, once the package manager's dry run says it removes those and nothing else."""
    if not packages:
        return packages
    names = " ".join(map(shlex.quote, packages))
    done = host.run(f"{layout.simulate_command} {names} 2>&1", user="root", check=False, timeout=120)
    extra = sorted(set(layout.simulated.findall(done.stdout)) - set(packages))
    if not done.ok and not extra:
        raise NotOwned(
            f"{host.name} ({host.url}): `{layout.simulate_command} {names}` failed (exit {done.rc}), so the harness "
            f"cannot tell what removing its packages would take with them; it removes nothing:\n{done.tail(10)}"
        )
    if extra and not force:
        raise NotOwned(
            f"{host.name} ({host.url}): removing the packages the harness installed ({', '.join(packages)}) would "
            f"also remove {', '.join(extra)}, which it did not install (they depend on them): it removes nothing. "
            "Remove those yourself first if you no longer need them, or remove the harness's packages by hand."
        )
    if extra:
        log(f"{host.name}: --force: also removing {', '.join(extra)}, which depend on them")
        return sorted({*packages, *extra})
    return packages


def _read(host: Host) -> Record | None:
    """The host's record, None when there is none; BadRecord when it cannot be read as one."""
    text = host.run(f"cat {RECORD} 2>/dev/null || true", user="root").stdout
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an integer too long, nesting too deep
        raise BadRecord(_damaged(host, f"not JSON: {str(exc)[:200]}")) from None
    if not isinstance(data, dict):
        raise BadRecord(_damaged(host, f"a JSON {type(data).__name__}, not an object"))
    required = [f.name for f in fields(Record) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    unknown = sorted(set(data) - set(_TYPES))
    if missing or unknown:
        what = [f"missing {', '.join(missing)}"] if missing else []
        what += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise BadRecord(_damaged(host, "; ".join(what)))
    for name, value in data.items():
        kind = _TYPES[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BadRecord(_damaged(host, f"{name} = {json.dumps(value)[:80]} is not of its kind"))
    if not all(isinstance(item, str) for item in (*data["packages_before"], *data["paths_before"])):
        raise BadRecord(_damaged(host, "packages_before and paths_before must be lists of strings"))
    record = Record(**data)
    if record.family not in LAYOUTS or record.pg_major not in MAJORS:
        raise BadRecord(
            _damaged(host, f"family {record.family!r}, major {record.pg_major}: not what the harness writes")
        )
    expected = layout_for(record.family, record.pg_major).data_dir
    if record.data_dir not in (None, expected):
        raise BadRecord(_damaged(host, f"data_dir {record.data_dir!r} is not {expected!r}, which the harness writes"))
    if record.system_identifier is not None and not record.system_identifier.isdigit():
        raise BadRecord(_damaged(host, f"system_identifier {record.system_identifier!r} is not a number"))
    return record


def _damaged(host: Host, why: str) -> str:
    return (
        f"{host.name} ({host.url}): the ownership record {RECORD} is damaged ({why}): the harness cannot tell what "
        "it created there, so it touches nothing. Read the file and mend or remove it, or use "
        "`down --inventory FILE --force` to remove PostgreSQL without a record."
    )


def _write(host: Host, record: Record) -> None:
    host.put_file(RECORD, json.dumps(asdict(record), indent=2) + "\n", mode=0o600)


def _system_identifier(host: Host, layout: Layout) -> str | None:
    command = f"{shlex.quote(layout.bin_dir + '/pg_controldata')} {shlex.quote(layout.data_dir)}"
    done = host.run(command, user="root", check=False)
    match = re.search(r"system identifier:\s*(\d+)", done.stdout)
    return match.group(1) if match else None
