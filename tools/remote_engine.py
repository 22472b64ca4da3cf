#!/usr/bin/env python3
"""A remote Docker engine, stood in on this machine: a second dockerd in a network namespace of its
own, reached only over SSH (`DOCKER_HOST=ssh://root@ADDRESS`), as an engine on another machine is.

    python3 tools/remote_engine.py run [--preload IMAGE]... -- COMMAND...   # as root

Why a namespace and not the runner-like VM (tools/runner_vm.py --engine): on hosts where nested KVM
does not run (ours: QEMU falls back to TCG), a VM's engine is too slow for a scenario. What makes an
engine remote for the harness is all here: its bridge networks live in the namespace, so the
machines' addresses are not routable from this one (the harness must find that out by checking and
reach them through the SSH connection to the engine's host), and the engine answers only on its
host's `/var/run/docker.sock`, behind sshd (the harness must forward that socket itself).

The engine's host: a veth pair (10.253.N.1 here, 10.253.N.2 there), dockerd with its own data and
exec roots, and an sshd from Debian's `openssh-server` package (downloaded and unpacked into the
cache, never installed: this machine's packages and /etc stay as they are). sshd runs in a private
mount namespace where /etc/passwd has its privilege-separation user and /run/docker.sock is the
stand-in engine's socket. The namespace reaches the Debian mirror through a MASQUERADE rule labelled
with its name. Everything - containers, dockerd, its data root, sshd, rules, links, namespace - is
removed at the end, also on failure or SIGTERM; what a killed run left is removed by the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runner_vm import VmError, log, need, preload_images, reported, run, run_against_engine  # tools/ is sys.path[0]

PREFIX = "pgrepl-eng-"  # namespace, links, rules, data root and run directory carry it
SUBNET = "10.253.{}.{}"
SSHD_PACKAGES = ("openssh-server", "libwrap0")
START_TIMEOUT = 60
TCP_PORT = 2375  # --tcp: unauthenticated, as docker-in-docker's; bound to the namespace's link address only


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pgrepl-harness" / "remote-engine"


def sshd_root() -> Path:
    """Debian's sshd unpacked (not installed) into the cache: `ROOT/usr/sbin/sshd` and its libwrap."""
    root = cache_dir() / "sshd"
    if (root / "usr/sbin/sshd").exists():
        return root
    need("apt-get", "dpkg-deb")
    with tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        run("apt-get", "download", *SSHD_PACKAGES, cwd=tmp, capture_output=True)
        staging = Path(tmp) / "root"
        for deb in Path(tmp).glob("*.deb"):
            run("dpkg-deb", "-x", str(deb), str(staging))
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return root


@dataclass
class Engine:
    """The stand-in engine's host, as runner_vm's helpers use a VM: key, ssh_config, docker_host."""

    name: str
    address: str
    key: Path
    known_hosts: Path
    tcp: bool = False  # DOCKER_HOST=tcp://ADDRESS:2375 instead of ssh:// (docker-in-docker's way)

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-F", str(self.key.parent / "ssh_config"), f"root@{self.address}"]

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.address}:{TCP_PORT}" if self.tcp else f"ssh://root@{self.address}"

    def ssh_config(self) -> str:
        return (
            f"Host {self.address}\n  User root\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        )


def _links(name: str) -> tuple[str, str]:
    """The veth pair's ends: here and in the namespace (interface names are at most 15 characters)."""
    owner = name[len(PREFIX) :]
    return f"pge{owner}h", f"pge{owner}n"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _rules(name: str, subnet: str, host_link: str) -> list[list[str]]:
    """iptables rules (table first) that let the namespace reach the mirror, labelled `name`."""
    label = ["-m", "comment", "--comment", name]
    return [
        ["-t", "nat", "POSTROUTING", "-s", subnet, "!", "-o", host_link, *label, "-j", "MASQUERADE"],
        ["-t", "filter", "FORWARD", "-i", host_link, *label, "-j", "ACCEPT"],
        ["-t", "filter", "FORWARD", "-o", host_link, *label, "-j", "ACCEPT"],
    ]


def _iptables(action: str, rule: list[str]) -> subprocess.CompletedProcess:
    table, chain, spec = rule[:2], rule[2], rule[3:]
    return subprocess.run(["iptables", *table, action, chain, *spec], capture_output=True, text=True)


def _free_index() -> int:
    used = _ip("-o", "-4", "addr").stdout
    for index in range(1, 250):
        if f" {SUBNET.format(index, 1)}/" not in used:
            return index
    raise VmError("no free 10.253.N.0/30 for the stand-in engine's link")


def _kill(pid_file: Path) -> None:
    """Stop the process whose pid `pid_file` holds (TERM, then KILL after START_TIMEOUT s)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(START_TIMEOUT * 10):
            if not Path(f"/proc/{pid}").exists():
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["sleep", "0.1"], timeout=1)  # polling a process we cannot wait() for
        os.kill(pid, signal.SIGKILL)


def _remove(name: str) -> None:
    """Remove what a stand-in engine named `name` made (idempotent: each part may be missing)."""
    run_dir, data_root = Path("/run") / name, Path("/var/lib") / name
    docker = ["docker", "-H", f"unix://{run_dir / 'docker.sock'}"]
    if (run_dir / "docker.sock").exists():
        ids = subprocess.run([*docker, "ps", "-aq"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([*docker, "rm", "-f", "-v", *ids], capture_output=True)
    _kill(run_dir / "sshd.pid")
    if (run_dir / "made-docker-sock").exists():
        Path("/run/docker.sock").unlink(missing_ok=True)
    _kill(run_dir / "docker.pid")
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    for line in saved.splitlines():
        if f"--comment {name} " in line and line.startswith("-A "):
            table = _table_of(saved, line)
            subprocess.run(["iptables", "-t", table, "-D", *line.split()[1:]], capture_output=True)
    _ip("link", "del", _links(name)[0], check=False)
    _ip("netns", "del", name, check=False)
    shutil.rmtree(data_root, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def _table_of(saved: str, line: str) -> str:
    table = "filter"
    for each in saved.splitlines():
        if each.startswith("*"):
            table = each[1:]
        if each == line:
            return table
    return table


def remove_orphans() -> None:
    """Remove stand-in engines whose starting process has ended (a killed run's)."""
    out = _ip("netns", "list", check=False).stdout
    for name in (line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)):
        owner = name[len(PREFIX) :]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            log(f"removing the stand-in engine {name} left by the ended process {owner}")
            _remove(name)


@contextlib.contextmanager
def started(*, tcp: bool = False) -> Iterator[Engine]:
    """A stand-in engine host; yields once its engine answers over SSH; removes it all at the end."""
    need("ip", "nsenter", "unshare", "iptables", "iptables-save", "dockerd", "docker", "ssh", "ssh-keygen")
    if os.geteuid() != 0:
        raise VmError("the stand-in engine needs root (a network namespace, a second dockerd)")
    remove_orphans()
    sshd = sshd_root()
    name = f"{PREFIX}{os.getpid()}"
    index = _free_index()
    here, there = SUBNET.format(index, 1), SUBNET.format(index, 2)
    run_dir, data_root = Path("/run") / name, Path("/var/lib") / name
    host_link, ns_link = _links(name)
    try:
        run_dir.mkdir(mode=0o700)
        run("ip", "netns", "add", name)
        run("ip", "link", "add", host_link, "type", "veth", "peer", "name", ns_link)
        run("ip", "link", "set", ns_link, "netns", name)
        run("ip", "addr", "add", f"{here}/30", "dev", host_link)
        run("ip", "link", "set", host_link, "up")
        inside = ["ip", "netns", "exec", name]
        run(*inside, "ip", "addr", "add", f"{there}/30", "dev", ns_link)
        run(*inside, "ip", "link", "set", ns_link, "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "route", "add", "default", "via", here)
        for rule in _rules(name, f"{SUBNET.format(index, 0)}/30", host_link):
            if _iptables("-A", rule).returncode != 0:
                raise VmError(f"iptables refused {rule}")
        net = ["nsenter", f"--net=/run/netns/{name}"]  # not `ip netns exec`: it remounts /sys, hiding cgroups
        socket = run_dir / "docker.sock"
        with open(run_dir / "dockerd.log", "w") as dockerd_log:
            subprocess.Popen(
                [*net, "dockerd", "-H", f"unix://{socket}", *(["-H", f"tcp://{there}:{TCP_PORT}"] if tcp else []),
                 "--data-root", str(data_root),
                 "--exec-root", str(run_dir / "exec"), "--pidfile", str(run_dir / "docker.pid"),
                 "--cgroup-parent", f"/{name}"],
                stdin=subprocess.DEVNULL, stdout=dockerd_log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_for(
            lambda: subprocess.run(["docker", "-H", f"unix://{socket}", "info"], capture_output=True).returncode == 0,
            f"the stand-in dockerd (log: {run_dir / 'dockerd.log'})",
        )
        engine = _start_sshd(name, there, run_dir, sshd, net, socket)
        engine.tcp = tcp
        yield engine
    finally:
        _remove(name)


def _start_sshd(name: str, address: str, run_dir: Path, sshd: Path, net: list[str], socket: Path) -> Engine:
    for key in ("host_key", "key"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(run_dir / key))
    (run_dir / "authorized_keys").write_text((run_dir / "key.pub").read_text())
    passwd = run_dir / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text() + "sshd:x:65534:65534:sshd:/run/sshd:/usr/sbin/nologin\n")
    (run_dir / "sshd_config").write_text(
        f"ListenAddress {address}\nHostKey {run_dir / 'host_key'}\nPidFile {run_dir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {run_dir / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "MaxSessions 100\nMaxStartups 100:30:200\n"
    )
    kind, host_key = (run_dir / "host_key.pub").read_text().split()[:2]
    engine = Engine(name, address, run_dir / "key", run_dir / "known_hosts")
    engine.known_hosts.write_text(f"{address} {kind} {host_key}\n")
    (run_dir / "ssh_config").write_text(engine.ssh_config())
    libs = f"{sshd}/usr/lib/x86_64-linux-gnu:{sshd}/lib/x86_64-linux-gnu"
    # sshd's privilege separation directory is compiled in; made here if missing, never removed (empty)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    private = (
        f"mount --bind {passwd} /etc/passwd && mount --bind {socket} /run/docker.sock && "
        f"exec {sshd}/usr/sbin/sshd -f {run_dir / 'sshd_config'} -E {run_dir / 'sshd.log'}"
    )
    mount_point = Path("/run/docker.sock")  # the local engine's socket, hidden in sshd's namespace only
    if not mount_point.exists():
        mount_point.touch()
        (run_dir / "made-docker-sock").touch()  # _remove deletes it again
    unshared = [*net, "unshare", "--mount", "--propagation", "private", "sh", "-c", private]
    run(*unshared, env={**os.environ, "LD_LIBRARY_PATH": libs})
    _wait_for(
        lambda: subprocess.run([*engine.ssh_argv(), "docker", "info"], capture_output=True).returncode == 0,
        f"the stand-in engine over SSH at {address} (log: {run_dir / 'sshd.log'})",
    )
    return engine


def _wait_for(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            raise VmError(f"timed out after {START_TIMEOUT} s waiting for {what}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remote_engine.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runp = sub.add_parser("run", help="start the stand-in engine and run COMMAND here against it")
    runp.add_argument("--preload", action="append", default=[], metavar="IMAGE", help="docker save/load IMAGE")
    runp.add_argument("--tcp", action="store_true", help=f"DOCKER_HOST=tcp://ADDRESS:{TCP_PORT}, not ssh://")
    runp.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    args = parser.parse_args(argv)
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        parser.error("run: give a command after --")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` removes the engine

    def body() -> int:
        with started(tcp=args.tcp) as engine:
            preload_images(engine, args.preload)
            return run_against_engine(engine, command)

    return reported("remote_engine.py", body)


if __name__ == "__main__":
    sys.exit(main())
