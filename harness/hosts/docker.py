"""Docker backend: hosts are local containers booted with systemd, reached by `docker exec -i`."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

import harness
from harness import LOGIN_USER
from harness.errors import FaultInjection, NoDockerEngine
from harness.hosts.base import Access, Host, Result
from harness.hosts.reach import (
    PORTS,
    PUBLISHED,
    TUNNEL,
    Route,
    decide,
    engine_connection,
    gateway_reaches_here,
    host_override,
    publishes,
)
from harness.labels import (
    KEPT_LABEL,
    LABEL,
    OWNER_LABEL,
    PID_LABEL,
    RUN_LABEL,
    SESSION_LABEL,
    SETUP_STATE_KIND,
    SNAPSHOT_KIND,
    alive,
    owner,
    resource_labels,
    session_holder,
)
from harness.waiting import wait_until

# testcontainers' reaper image would have to be pulled, which this machine cannot do; the
# harness cleans up by its own labels instead (DockerLab.close, remove_resources).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# What systemd as PID 1 needs without --privileged (see shared/platform.md); systemd_run_kwargs adds
# what the engine's host asks for besides.
SYSTEMD_RUN_KWARGS = {
    "cap_add": ["SYS_ADMIN", "NET_ADMIN"],
    "security_opt": ["seccomp=unconfined"],
    "cgroupns": "private",
}


def systemd_run_kwargs(security_options: Iterable[str]) -> dict:
    """SYSTEMD_RUN_KWARGS for an engine whose `docker info` lists `security_options`.

    Where the engine confines containers with AppArmor (Ubuntu's and Debian's default), its
    `docker-default` profile denies `mount`, and the entrypoint must mount a writable cgroup2 over
    the read-only one Docker gives an unprivileged container on a cgroup v2 host: the machines run
    unconfined by AppArmor (loading a profile of our own would need root on the engine's host).
    """
    kwargs = dict(SYSTEMD_RUN_KWARGS)
    if any(option.split(",")[0] == "name=apparmor" for option in security_options):
        kwargs["security_opt"] = [*SYSTEMD_RUN_KWARGS["security_opt"], "apparmor=unconfined"]
    return kwargs


# Faults to inject (bench/soak.py --fault), on every machine once it starts: a `tc netem` spec for its
# network interface ("delay 50ms loss 1%": 50 ms each way between the hosts; needs a kernel with
# sch_netem), a percentage of incoming packets dropped (by nftables, in any kernel), and a size for the
# shared volumes (the WAL archive) on tmpfs ("1m": a full disk under the archive).
NETEM_VAR = "PGREPL_NETEM"
PACKET_LOSS_VAR = "PGREPL_PACKET_LOSS"
SHARED_VOLUME_SIZE_VAR = "PGREPL_SHARED_VOLUME_SIZE"

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
# how the docker CLI says that it, not the command it ran, failed (the engine's answer, or none)
DOCKER_CLI_FAILURES = ("Error response from daemon", "Cannot connect to the Docker daemon")
NO_INSTALL_VAR = "PGREPL_NO_ENGINE_INSTALL"
# what the SDK raises when the engine fails or does not answer (not a harness bug)
ENGINE_FAILURES = (docker.errors.DockerException, requests.RequestException)


def engine_script() -> Path:
    """harness/engine.sh: installs (apt-get) and starts a Docker engine; shared with .ci/run."""
    return Path(harness.__file__).resolve().parent / "engine.sh"


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


def engine_silent(failure: str = "") -> str:
    """What a failure says when the engine stops answering during a run."""
    return (
        f"the Docker engine at {engine_address()} does not answer{f' ({failure})' if failure else ''}: it stopped "
        "or is restarting; start it again (`bash harness/engine.sh` as root) and run again"
    )


def answering_engine() -> docker.DockerClient | None:
    """A client of the engine if one answers now; never installs or starts one (for clean-up)."""
    try:
        return _ping()
    except ENGINE_FAILURES:
        return None


def container_lost(client: docker.DockerClient, name: str) -> str | None:
    """Why container `name` cannot run the harness's commands any more, naming the engine; None if
    it is running. A container stops with its engine (unless the engine has live-restore)."""
    try:
        state = client.api.inspect_container(name)["State"]
    except docker.errors.NotFound:
        return f"container {name} no longer exists on the Docker engine at {engine_address()} (removed meanwhile)"
    except ENGINE_FAILURES as exc:
        return engine_silent(type(exc).__name__)
    if state.get("Running"):
        return None
    try:  # a machine whose entrypoint failed (a mount refused, say) says why as its last words
        last = client.api.logs(name, tail=3).decode(errors="replace").strip()
    except ENGINE_FAILURES:
        last = ""
    return (
        f"container {name} stopped (status {state.get('Status')}, exit code {state.get('ExitCode')}, at "
        f"{state.get('FinishedAt', '?')[:19]}{'; its last output: ' + repr(last) if last else ''}): its "
        f"entrypoint or systemd ended, the Docker engine at {engine_address()} was restarted or stopped it "
        "(containers stop with their engine), or someone ran `docker stop`; nothing the runbook did"
    )


def engine_url() -> str:
    """Where the Docker SDK, testcontainers and the docker CLI reach the engine: DOCKER_HOST, or for an
    ssh:// engine the local end of the process's one SSH connection to its host (reach.EngineConnection)."""
    engine = engine_address()
    return engine_connection(engine).socket_url() if engine.startswith("ssh://") else engine


# engine URL -> the API version its engine gave this process's first client: a client made without a version asks
# GET /version, which dockerd answers by running `runc --version` and `docker-init --version` (two processes per
# client; a bring-up makes several clients through testcontainers)
_API_VERSIONS: dict[str, str] = {}


def client_kwargs() -> dict[str, Any]:
    """What each Docker SDK client (docker.from_env, testcontainers' docker_client_kw) is made with: the
    environment with the engine at engine_url(), and that engine's API version once this process knows it."""
    url = engine_url()
    known = _API_VERSIONS.get(url)
    return {"environment": {**os.environ, "DOCKER_HOST": url}, **({"version": known} if known else {})}


def docker_cli() -> list[str]:
    """The docker CLI's argv start, at the engine the SDK uses (-H only for an ssh:// engine)."""
    engine = engine_address()
    return ["docker", "-H", engine_url()] if engine.startswith("ssh://") else ["docker"]


def from_env() -> docker.DockerClient:
    """docker.from_env at engine_url(), at the API version the engine answered first (client_kwargs)."""
    kwargs = client_kwargs()
    client = docker.from_env(**kwargs)
    _API_VERSIONS.setdefault(kwargs["environment"]["DOCKER_HOST"], client.api.api_version)
    return client


def _ping() -> docker.DockerClient:
    client = from_env()
    client.ping()
    return client


def _run_engine_script(script: Path) -> None:
    """Run engine.sh with its output passed through; its outcome is judged by pinging again."""
    subprocess.run(["bash", str(script)], check=False)


def _why_not_install(script: Path) -> str | None:
    """None when docker_client may run engine.sh, else how the user starts an engine instead."""
    if os.environ.get("DOCKER_HOST"):
        return "The engine at that address (DOCKER_HOST) does not answer: start dockerd there, or unset DOCKER_HOST."
    if shutil.which("apt-get") is None or not script.is_file():
        return "Start one as root: `dockerd &` (log somewhere), then run this again."
    if os.geteuid() != 0:
        return f"Ask an administrator to start one, or run `sudo bash {script}` (installs and starts dockerd)."
    if os.environ.get(NO_INSTALL_VAR):
        return f"Start one: `bash {script}` (installs and starts dockerd; {NO_INSTALL_VAR} stops the harness doing it)."
    return None


def docker_client() -> docker.DockerClient:
    """A client of the engine that answers. When none does at the local default address and we are
    root on an apt-based machine, engine.sh installs and starts one first (unless
    PGREPL_NO_ENGINE_INSTALL is set); otherwise NoDockerEngine, saying how to start one."""
    try:
        return _ping()
    except ENGINE_FAILURES as exc:
        failure = exc
    where = engine_address()
    script = engine_script()
    how = _why_not_install(script)
    if how is None:
        print(
            "no Docker engine answers: installing and starting one with harness/engine.sh "
            f"(set {NO_INSTALL_VAR}=1 to stop this)",
            file=sys.stderr,
            flush=True,
        )
        _run_engine_script(script)
        try:
            return _ping()
        except ENGINE_FAILURES as exc:
            failure = exc
        how = f"{script} did not start one (its output is above; dockerd's log: /var/log/pgrepl-dockerd.log)."
    raise NoDockerEngine(f"no Docker engine answers at {where} ({type(failure).__name__}).\n{how}") from None


@dataclass(frozen=True)
class Machine:
    """A started container on the lab's network, with the addresses learned once when it started."""

    name: str
    container: DockerContainer
    address: str  # on the lab's network
    gateway: str  # the engine's host's address on that network
    lab: DockerLab | None = None  # decides how the runner reaches it (harness.hosts.reach)

    @property
    def container_name(self) -> str:
        return self.container.get_wrapped_container().name

    def endpoint(self, port: int) -> tuple[str, int]:
        """Where the runner connects to reach `port` of this machine."""
        return self.lab.endpoint(self, port) if self.lab is not None else (self.address, port)

    @property
    def runner_address(self) -> str:
        """The address this machine sees the runner's connections (to endpoint()) come from."""
        return self.lab.runner_address(self) if self.lab is not None else self.gateway

    def lost(self) -> str | None:
        """Why this machine cannot run commands any more (see container_lost); None while it runs."""
        return container_lost(self.container.get_docker_client().client, self.container_name)


class DockerHost(Host):
    backend = "docker"

    @classmethod
    def for_machine(cls, machine: Machine, access: Access) -> DockerHost:
        return cls(machine)

    def __init__(self, machine: Machine, login_user: str = LOGIN_USER):
        self.name = machine.name
        self.machine = machine
        self.login_user = login_user
        self.container_name = machine.container_name
        self.machine_lost = machine.lost

    @property
    def address(self) -> str:
        return self.machine.address

    @property
    def url(self) -> str:
        return f"docker://{self.container_name}"

    @property
    def login_command(self) -> str:
        return f"docker exec -it -u {self.login_user} {self.container_name} bash"

    @property
    def runner_address(self) -> str:
        return self.machine.runner_address

    def forward(self, port: int) -> tuple[str, int]:
        return self.machine.endpoint(port)

    def _transport(self, remote: list[str]) -> list[str]:
        return [*docker_cli(), "exec", "-i", "-u", self.login_user, self.container_name, *remote]

    def _transport_failed(self, result: Result) -> bool:
        return result.rc != 0 and result.stderr.startswith(DOCKER_CLI_FAILURES)


_ROUTES: dict[tuple[str, str | None], Route] = {}  # DockerLab.route's answers, per engine and override
_ROUTES_LOCK = threading.Lock()


class DockerLab:
    """The containers, private network and volumes of one pair; leaving the context (or close())
    removes them all, then runs the extra `cleanups`, each even when an earlier one failed."""

    def __init__(
        self, client: docker.DockerClient, run_id: str | None = None, *, kept: bool = False, subnet: str | None = None
    ):
        """`subnet` fixes the network's addresses (machines then get them in start order from .2 on)."""
        self.run_id = run_id or f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.labels = resource_labels(self.run_id, kept=kept)
        self.subnet = subnet
        self.client = client
        self.machines: dict[str, Machine] = {}
        self.cleanups: list[Callable[[], object]] = []
        self.volumes: list[str] = []
        self.left_running = False  # set by keep(): close() then removes nothing (a kept failed pair)
        self.security_options: list[str] = client.info().get("SecurityOptions") or []
        self.engine, self.override = engine_address(), host_override()
        self._route: Route | None = None
        self._route_lock = threading.RLock()  # runner_address holds it while it asks endpoint
        self._runner_addresses: dict[str, str] = {}
        network_kw: dict = {"labels": self.labels}
        if subnet is not None:
            network_kw["ipam"] = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        self.network = Network(docker_client_kw=client_kwargs(), docker_network_kw=network_kw)
        self.network.name = f"pgrepl-{self.run_id}"
        self.network.create()

    def volume(self, name: str) -> str:
        """A labelled named volume (for example the shared WAL archive); removed by close()."""
        full = f"pgrepl-{self.run_id}-{name}"
        size = os.environ.get(SHARED_VOLUME_SIZE_VAR)
        options = {"type": "tmpfs", "device": "tmpfs", "o": f"size={size}"} if size else None
        self.client.volumes.create(full, labels=self.labels, driver_opts=options)
        self.volumes.append(full)
        return full

    def start_machine(
        self,
        name: str,
        image: str,
        *,
        mounts: dict[str, str] | None = None,
        authorized_key: str | None = None,
        address: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> Machine:
        """A booting container on the pair's network (at `address`, if given); `authorized_key` is
        put in the login user's authorized_keys before boot, as an ECS key pair is (no `docker exec`)."""
        endpoint = docker.types.EndpointConfig(self.client.api.api_version, ipv4_address=address)
        container = (
            DockerContainer(image, docker_client_kw=client_kwargs())
            .with_name(f"pgrepl-{self.run_id}-{name}")
            .with_tmpfs_mount("/run")
            .with_tmpfs_mount("/run/lock")
            .with_kwargs(
                hostname=name,
                labels=self.labels,
                network=self.network.name,
                networking_config={self.network.name: endpoint},
                **systemd_run_kwargs(self.security_options),
            )
        )
        for volume, path in (mounts or {}).items():
            container.with_volume_mapping(volume, path, mode="rw")
        if publishes(self.engine, self.override):
            container.with_exposed_ports(*PORTS)
        for key, value in (environment or {}).items():
            container.with_env(key, value)
        if authorized_key:
            container.with_copy_into_container(
                authorized_key.encode(), f"/home/{LOGIN_USER}/.ssh/authorized_keys", mode=0o644
            )
        container.start()
        wrapped = container.get_wrapped_container()
        _inject_network_faults(wrapped)
        wrapped.reload()
        network = wrapped.attrs["NetworkSettings"]["Networks"][self.network.name]
        self.machines[name] = Machine(name, container, network["IPAddress"], network["Gateway"], self)
        return self.machines[name]

    def route(self, machine: Machine) -> Route:
        """How the runner reaches this lab's machines: decided once per engine and process (whether its
        bridges are routable from here does not change from one network to the next), with the first
        machine that asks."""
        with self._route_lock:
            if self._route is None:
                key = (self.engine, self.override)
                with _ROUTES_LOCK:
                    if key not in _ROUTES:
                        _ROUTES[key] = decide(self.engine, self.override, lambda: _bridge_is_local(machine))
                        logging.getLogger(__name__).info("machines of %s reached by %s", self.engine, _ROUTES[key])
                self._route = _ROUTES[key]
            return self._route

    def endpoint(self, machine: Machine, port: int) -> tuple[str, int]:
        route = self.route(machine)
        if route.how == TUNNEL:
            return engine_connection(self.engine).forward(machine.address, port)
        if route.how == PUBLISHED:
            wrapped = machine.container.get_wrapped_container()
            published = self.client.api.port(wrapped.id, port)
            if not published:
                raise NoDockerEngine(f"{machine.name}: port {port} is not published by the engine at {self.engine}")
            return route.host, int(published[0]["HostPort"])
        return machine.address, port

    def runner_address(self, machine: Machine) -> str:
        """The gateway, unless the runner comes through published ports: the engine's NAT may keep the
        runner's own address, so the machine is asked whom it sees on its sshd (once per lab)."""
        if self.route(machine).how != PUBLISHED:
            return machine.gateway
        with self._route_lock:
            if "seen" not in self._runner_addresses:
                self._runner_addresses["seen"] = _seen_from_runner(machine, self.endpoint(machine, 22))
            return self._runner_addresses["seen"]

    def commit(self, name: str, tag: str, *, kind: str = SNAPSHOT_KIND) -> None:
        """Save machine `name` as image `tag` (repository:version), labelled `kind` and with this run's
        owner labels. Machines started from it must not share this one's machine id: it is blanked
        in the image (kept in /run, which is not committed, meanwhile)."""
        repository, _, version = tag.partition(":")
        wrapped = self.machines[name].container.get_wrapped_container()
        wrapped.exec_run(["sh", "-c", "cp /etc/machine-id /run/pgrepl-machine-id && : > /etc/machine-id"])
        try:
            labels = {**self.labels, LABEL: kind}
            if kind == SETUP_STATE_KIND:  # orphaned when its session's holder ends, not this process
                labels[PID_LABEL] = str(session_holder())
            changes = [f"LABEL {k}={v}" for k, v in labels.items()]
            wrapped.commit(repository=repository, tag=version, changes=changes)
        finally:
            wrapped.exec_run(["sh", "-c", "cat /run/pgrepl-machine-id > /etc/machine-id"])

    def __enter__(self) -> DockerLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def keep(self) -> None:
        """Leave this lab's machines running when it closes (they carry the kept label from the start)."""
        self.left_running = True

    def close(self) -> None:
        if self.left_running:
            return
        try:
            remove_resources({RUN_LABEL: self.run_id}, client=self.client)
        finally:
            for cleanup in self.cleanups:
                try:
                    cleanup()
                except Exception as exc:  # one failing cleanup must not keep the others from running
                    logging.getLogger(__name__).warning("cleanup %s failed: %s", cleanup, exc)


def _bridge_is_local(machine: Machine) -> bool:
    """Whether the runner is on `machine`'s network (reach.gateway_reaches_here; the machine sends)."""
    wrapped = machine.container.get_wrapped_container()

    def send(address: str, port: int, token: str) -> None:
        script = f"exec 3<>/dev/tcp/{address}/{port} && echo {token} >&3"
        wrapped.exec_run(["timeout", "5", "bash", "-c", script])

    return gateway_reaches_here(machine.gateway, send)


def _seen_from_runner(machine: Machine, endpoint: tuple[str, int]) -> str:
    """The peer address `machine`'s sshd sees for a connection the runner opens to `endpoint`."""
    wrapped = machine.container.get_wrapped_container()
    peers: list[str] = []

    def peer() -> str | None:
        listing = wrapped.exec_run(["ss", "-Htn", "state", "established", "( sport = :22 )"]).output.decode()
        peers[:] = [line.split()[-1].rsplit(":", 1)[0].strip("[]") for line in listing.splitlines() if line.strip()]
        return peers[0] if len(set(peers)) == 1 else None

    with socket.create_connection(endpoint, timeout=10):
        what = f"{machine.name} to see the runner's connection to {endpoint}"
        return wait_until(peer, timeout=30, what=what, seen=lambda: f"peers of its sshd: {peers}")


_NEIGHBOURS = itertools.count(1)


def start_neighbour(host: Host, name: str = "third") -> DockerHost:
    """A third machine on the network of `host` (a container machine reached by `docker exec`), for
    connections from an address that is neither host's: started from the image `host` started from,
    with its run's labels (its lab removes it with the rest). Only a shell that waits: no systemd,
    so nothing of the image (a PostgreSQL server of a snapshot) starts. psql comes with the image
    once the runbook's install step is in it; otherwise it is installed (Debian's postgresql-client).
    """
    if not isinstance(host, DockerHost):
        raise TypeError(f"{host.name} ({host.url}) is no container machine reached by docker exec")
    wrapped = host.machine.container.get_wrapped_container()
    wrapped.reload()
    network = next(iter(wrapped.attrs["NetworkSettings"]["Networks"]))
    labels = {k: v for k, v in wrapped.labels.items() if not k.startswith("org.testcontainers")}  # its own
    container = (
        DockerContainer(wrapped.attrs["Config"]["Image"], docker_client_kw=client_kwargs())
        .with_name(f"{wrapped.name.rsplit('-', 1)[0]}-{name}-{next(_NEIGHBOURS)}")  # a second one's name is free
        .with_kwargs(entrypoint=["sleep", "infinity"], hostname=name, labels=labels, network=network)
    )
    container.start()
    started = container.get_wrapped_container()
    started.reload()
    settings = started.attrs["NetworkSettings"]["Networks"][network]
    neighbour = DockerHost(Machine(name, container, settings["IPAddress"], settings["Gateway"], host.machine.lab))
    neighbour.run(
        "command -v psql >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null; }",
        user="root",
        timeout=300,
    )
    return neighbour


KINDS = ("containers", "networks", "volumes", "images")


@dataclass(frozen=True)
class Listed:
    """One resource as the engine's listing summarised it: no inspection, so nothing to race with."""

    kind: str  # one of KINDS
    id: str
    name: str
    labels: dict[str, str]


def listed(client: docker.DockerClient, kind: str, filters: dict | None = None) -> list[Listed]:
    """The engine's `kind` resources matching `filters`, from the listing alone.

    docker-py's model listings inspect each listed resource in a second request (images always,
    containers unless ignore_removed): a resource another worker removes in between raised 404 and
    failed the caller. The listing's own summaries carry ids, names and labels, which is all the
    harness reads; a resource gone by the time it is acted on is handled where it is removed."""
    api = client.api
    if kind == "containers":
        rows = [
            (r["Id"], (r.get("Names") or [""])[0].lstrip("/"), r.get("Labels"))
            for r in api.containers(all=True, filters=filters)
        ]
    elif kind == "networks":
        rows = [(r["Id"], r.get("Name", ""), r.get("Labels")) for r in api.networks(filters=filters)]
    elif kind == "volumes":
        rows = [(r["Name"], r["Name"], r.get("Labels")) for r in api.volumes(filters=filters).get("Volumes") or []]
    elif kind == "images":
        rows = [(r["Id"], ",".join(r.get("RepoTags") or []), r.get("Labels")) for r in api.images(filters=filters)]
    else:
        raise ValueError(f"kind {kind!r}: one of {KINDS}")
    return [Listed(kind, rid, name, dict(labels or {})) for rid, name, labels in rows]


# dockerd 20.10 answers 500, not 404, for an image another client removed between its lookup and the delete
GONE_MEANWHILE = "unrecognized image ID"


def remove_listed(client: docker.DockerClient, resource: Listed, *, force: bool = True) -> int:
    """Remove one listed resource (1), or leave it (0): gone already (404, or GONE_MEANWHILE), being removed by
    another run or still in use (409), or a network still in use by a container being started (403), left to its
    run."""
    api = client.api
    try:
        if resource.kind == "containers":
            api.remove_container(resource.id, force=True, v=True)
        elif resource.kind == "networks":
            api.remove_network(resource.id)
        elif resource.kind == "volumes":
            api.remove_volume(resource.id)
        else:
            api.remove_image(resource.id, force=force)
        return 1
    except docker.errors.APIError as exc:
        if exc.status_code in (403, 404, 409) or GONE_MEANWHILE in str(exc.explanation or ""):
            return 0
        raise


def label_filter(*labels: str) -> dict[str, list[str]]:
    return {"label": list(labels)}


def _inject_network_faults(container) -> None:
    """The faults NETEM_VAR and PACKET_LOSS_VAR ask for, on the machine's own interface (NET_ADMIN)."""
    commands = {}
    if netem := os.environ.get(NETEM_VAR):
        commands[f"{NETEM_VAR}={netem}"] = f"tc qdisc add dev eth0 root netem {netem}"
    if loss := os.environ.get(PACKET_LOSS_VAR):
        try:
            per_10000 = round(float(loss.rstrip("%")) * 100)
        except ValueError:
            raise FaultInjection(f"{PACKET_LOSS_VAR}={loss!r}: a percentage, for example 1") from None
        commands[f"{PACKET_LOSS_VAR}={loss}"] = (
            "nft add table inet pgrepl_fault && nft add chain inet pgrepl_fault input "
            "'{ type filter hook input priority -20 ; }' && nft add rule inet pgrepl_fault input "
            f'iifname "eth0" numgen random mod 10000 "<" {per_10000} drop'
        )
    for fault, command in commands.items():
        done = container.exec_run(["sh", "-c", command])
        if done.exit_code != 0:
            output = done.output.decode(errors="replace").strip()
            hint = " (this kernel has no sch_netem: CONFIG_NET_SCH_NETEM)" if "qdisc kind is unknown" in output else ""
            raise FaultInjection(f"{fault}: cannot inject on {container.name}{hint}: {output}")


def remove_resources(selector: dict[str, str] | None = None, *, client: docker.DockerClient | None = None) -> int:
    """Remove containers, then networks and volumes, carrying the harness label (and `selector`)."""
    client = client or from_env()
    filters = label_filter(LABEL, *(f"{key}={value}" for key, value in (selector or {}).items()))
    containers = listed(client, "containers", filters)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(containers))), thread_name_prefix="remove") as pool:
        removed = sum(pool.map(lambda c: remove_listed(client, c), containers))
    for kind in ("networks", "volumes"):  # after the containers that use them
        removed += sum(remove_listed(client, resource) for resource in listed(client, kind, filters))
    return removed


def ended(resource: Listed) -> bool:
    """Whether the process that made `resource` (its PID label) is gone: a killed run's leftover."""
    pid = resource.labels.get(PID_LABEL, "")
    return pid.isdigit() and not alive(int(pid))


def remove_set_up_states(client: docker.DockerClient, selector: str, *, only=lambda image: True) -> int:
    """Remove the set-up state images (they hold a run's secrets) labelled `selector` (`key=value`)."""
    states = listed(client, "images", label_filter(f"{LABEL}={SETUP_STATE_KIND}", selector))
    return sum(remove_listed(client, image) for image in states if only(image))


def remove_orphans(client: docker.DockerClient, *, kept_too: bool = False, owner_id: str | None = None) -> int:
    """Remove resources that harness processes of this owner (machine, user, PID namespace; or
    `owner_id`) left when killed: their process is gone; `kept_too`: also kept pairs (`down`).
    A live run's resources (it removes them itself) and other owners' are never touched."""
    removed = 0
    runs: dict[str, Listed] = {}
    mine = f"{OWNER_LABEL}={owner_id or owner()}"
    for resource in (
        *listed(client, "containers", label_filter(LABEL, mine)),
        *listed(client, "networks", label_filter(LABEL, mine)),
    ):
        runs.setdefault(resource.labels.get(RUN_LABEL, ""), resource)
    for run_id, resource in runs.items():
        kept = resource.labels.get(KEPT_LABEL) == "true"
        if run_id and ((kept_too and kept) or (not kept and ended(resource))):
            removed += remove_resources({RUN_LABEL: run_id}, client=client)
    return removed + remove_set_up_states(client, mine, only=ended)  # a killed run's secrets go too


def remove_session(client: docker.DockerClient, session: str) -> int:
    """Everything a test session made and its workers left (a worker that crashed, or whose end was
    cut short): its set-up state images, and its resources not kept for a person to look at."""
    removed = remove_set_up_states(client, f"{SESSION_LABEL}={session}")
    return removed + remove_resources({SESSION_LABEL: session, KEPT_LABEL: "false"}, client=client)


def snapshot_ids(client: docker.DockerClient, owner_id: str | None = None) -> set[str]:
    """The step snapshots on this engine (DockerLab.commit labels them SNAPSHOT_KIND), or `owner_id`'s."""
    labels = [f"{LABEL}={SNAPSHOT_KIND}", *([f"{OWNER_LABEL}={owner_id}"] if owner_id else [])]
    return {image.id for image in listed(client, "images", label_filter(*labels))}


def inspected_images(client: docker.DockerClient, image_ids: Iterable[str]) -> dict[str, dict]:
    """The engine's inspection of each of `image_ids` still there (another run may remove one meanwhile)."""
    found = {}
    for image_id in image_ids:
        try:
            found[image_id] = client.api.inspect_image(image_id)
        except docker.errors.NotFound:
            continue
    return found


def newest_first(client: docker.DockerClient, image_ids: set[str]) -> list[str]:
    """`image_ids` (those still there) in an order they can be removed in: a snapshot started from another
    (a prefix's later level, harness.snapshots) was made after it, and the engine keeps an image with children."""
    created = {image_id: found["Created"] for image_id, found in inspected_images(client, image_ids).items()}
    return sorted(created, key=created.__getitem__, reverse=True)


def touch_image(client: docker.DockerClient, tag: str) -> None:
    """Mark image `tag` used now: tagged again as itself, the engine sets its last tag time."""
    repository, _, version = tag.partition(":")
    try:
        client.api.tag(tag, repository, version)
    except docker.errors.NotFound:
        logging.getLogger(__name__).warning("image %s is gone (removed meanwhile)", tag)


def remove_image(client: docker.DockerClient, image_id: str, *, force: bool = True) -> int:
    """Remove image `image_id` (1) or leave it (0, see remove_listed); unforced, also one that tags of
    another repository or a container (a stopped one too) still use."""
    return remove_listed(client, Listed("images", image_id, image_id, {}), force=force)
