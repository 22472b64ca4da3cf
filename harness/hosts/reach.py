"""How the test runner reaches a port (5432, 22) of the harness's machines on a Docker engine.

Decided once per pair's network, by checking rather than by a flag, as testcontainers-python 4.x's
`get_container_host_ip` / `get_exposed_port` would:
- `TESTCONTAINERS_HOST_OVERRIDE` (or `TC_HOST`, which testcontainers reads first) names the host
  that publishes the containers' ports: the runner connects to that host's published ports;
- the bridge is on this machine (the machine connects to its network's gateway and the runner
  receives what it sent): the runner connects to the machine's bridge address, as always;
- otherwise the engine is elsewhere: for `ssh://` engines, a tunnel over SSH to the engine's host
  (`ssh -L 127.0.0.1:LOCAL:ADDRESS:PORT` over the process's one connection, EngineConnection); for `tcp://`
  engines (docker-in-docker), the ports the engine published on its host.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from harness.errors import HarnessError
from harness.waiting import wait_until

BRIDGE, TUNNEL, PUBLISHED = "bridge", "tunnel", "published"
# The ports the runner reaches on a machine (PostgreSQL, sshd): published when the engine may need it.
PORTS = (5432, 22)
OVERRIDE_VARS = ("TC_HOST", "TESTCONTAINERS_HOST_OVERRIDE")  # testcontainers' order
PUBLISHING_SCHEMES = ("tcp", "http", "https")
CONNECT_TIMEOUT = 10
DEFAULT_ENGINE_SOCKET = "/var/run/docker.sock"  # where an engine's host has it unless its DOCKER_HOST says


class Unreachable(HarnessError):
    """The runner has no way to the machines of an engine; the message says how to give it one."""


@dataclass(frozen=True)
class Route:
    """How: BRIDGE (the machine's address), TUNNEL (over SSH to `host`, the engine's host) or
    PUBLISHED (the engine's published ports on `host`)."""

    how: str
    host: str = ""
    user: str | None = None
    port: int | None = None  # the SSH port of a TUNNEL's host


def host_override(environ: os._Environ | dict[str, str] = os.environ) -> str | None:
    """The host to reach published ports on, as testcontainers users set it; None when unset."""
    return next((environ[var] for var in OVERRIDE_VARS if environ.get(var)), None)


def publishes(engine: str, override: str | None) -> bool:
    """Whether machines must publish PORTS when they start: before the route can be checked, the
    route can only be PUBLISHED for an override or a `tcp://` engine."""
    return bool(override) or urlsplit(engine).scheme in PUBLISHING_SCHEMES


def decide(engine: str, override: str | None, bridge_is_local: Callable[[], bool]) -> Route:
    """The route to the machines of `engine` (DOCKER_HOST's form); `bridge_is_local()` is the check."""
    if override:
        return Route(PUBLISHED, override)
    if bridge_is_local():
        return Route(BRIDGE)
    url = urlsplit(engine)
    if url.scheme == "ssh" and url.hostname:
        return Route(TUNNEL, url.hostname, url.username, url.port)
    if url.scheme in PUBLISHING_SCHEMES and url.hostname:
        return Route(PUBLISHED, url.hostname)
    raise Unreachable(
        f"the bridge addresses of the Docker engine at {engine} are not reachable from this machine (an engine "
        "in a VM, or this runner in a container): set TESTCONTAINERS_HOST_OVERRIDE to the host that publishes "
        "its ports (localhost for Docker Desktop), or use an ssh:// DOCKER_HOST"
    )


def gateway_reaches_here(gateway: str, send: Callable[[str, int, str], object], timeout: float = 5) -> bool:
    """Whether the network's `gateway` is this machine: a listener on `gateway` (binding fails if no
    interface here has it) receives the token a machine on the network sends to it (`send(address,
    port, token)`, in the machine). The token tells it from another engine's network with the same subnet."""
    token = secrets.token_hex(8)
    with socket.socket() as listener:
        try:
            listener.bind((gateway, 0))
        except OSError:
            return False
        listener.listen(1)
        listener.settimeout(timeout)
        send(gateway, listener.getsockname()[1], token)
        try:
            connection, _ = listener.accept()
        except OSError:
            return False
        with connection:
            connection.settimeout(timeout)
            try:
                return connection.recv(64).decode(errors="replace").strip() == token
            except OSError:
                return False


class EngineConnection:
    """One SSH connection to an ssh:// engine's host per process, kept until the process ends (the
    user's own ssh_config, keys and known_hosts, as the docker CLI's ssh:// uses them; nothing secret in
    argv). Over it:
    - the engine's socket, forwarded to a local one that the Docker SDK, testcontainers and the docker
      CLI use as `unix://`: docker-py's own ssh transport breaks on every exec with OpenSSH (docker-py
      #3218, BrokenPipeError on close), and one connection spares an ssh per docker command;
    - local ports forwarded to the machines' addresses, when their bridge is not routable from here.
    A watchdog ends the connection when this process ends, also when it is killed."""

    def __init__(self, engine: str):
        url = urlsplit(engine)
        if url.scheme != "ssh" or not url.hostname:
            raise Unreachable(f"{engine} is no ssh:// engine address (ssh://[user@]host[:port])")
        self.engine, self.host, self.user, self.port = engine, url.hostname, url.username, url.port
        self._dir = tempfile.mkdtemp(prefix="pgrepl-eng-")  # short: a socket's path is limited
        self._control = os.path.join(self._dir, "ctl")
        self._master: subprocess.Popen | None = None
        self._socket: str | None = None
        self._forwards: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def _ssh(self, *args: str, command: tuple[str, ...] = ()) -> list[str]:
        login = ["-l", self.user] if self.user else []
        port = ["-p", str(self.port)] if self.port else []
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ExitOnForwardFailure=yes"]
        return ["ssh", *options, "-S", self._control, *login, *port, *args, self.host, *command]

    def _control_command(self, what: str, *args: str, command: tuple[str, ...] = ()) -> str:
        done = subprocess.run(
            self._ssh(*args, command=command), capture_output=True, text=True, timeout=CONNECT_TIMEOUT * 3
        )
        if done.returncode != 0:
            raise Unreachable(f"{what} over SSH to the engine's host {self.host} failed: {done.stderr.strip()}")
        return done.stdout

    def socket_url(self) -> str:
        """unix:// of a local socket that leads to the engine's socket on its host (the host's own
        DOCKER_HOST if it names a unix socket, as `docker system dial-stdio` would use, else the default)."""
        with self._lock:
            if self._socket is None:
                self._start()
                remote = self._control_command(
                    "asking for DOCKER_HOST", command=("printenv DOCKER_HOST || true",)
                ).strip()
                if remote and not remote.startswith("unix://"):
                    raise Unreachable(
                        f"the engine's host {self.host} sets DOCKER_HOST={remote}: the harness forwards a unix "
                        "socket only; point DOCKER_HOST here at that engine directly"
                    )
                local = os.path.join(self._dir, "docker.sock")
                path = remote.removeprefix("unix://") or DEFAULT_ENGINE_SOCKET
                self._control_command(f"forwarding {path}", "-O", "forward", "-L", f"{local}:{path}")
                self._socket = local
            return f"unix://{self._socket}"

    def forward(self, address: str, port: int) -> tuple[str, int]:
        """127.0.0.1 and a local port that leads to `address`:`port` as seen from the engine's host."""
        with self._lock:
            if (address, port) not in self._forwards:
                self._start()
                local = _free_port()
                self._control_command(
                    f"forwarding 127.0.0.1:{local} to {address}:{port}",
                    "-O",
                    "forward",
                    "-L",
                    f"127.0.0.1:{local}:{address}:{port}",
                )
                self._forwards[(address, port)] = local
            return "127.0.0.1", self._forwards[(address, port)]

    def _start(self) -> None:
        if self._master is not None and self._master.poll() is None:
            return
        self._forwards.clear()
        self._socket = None
        if os.path.exists(self._control):
            os.unlink(self._control)
        # sh waits for ssh; its second child ends ssh when this process's end closes sh's stdin (fd 3:
        # an asynchronous list's own stdin is /dev/null)
        watchdog = 'exec 3<&0; ssh -n "$@" & pid=$!; { read -r _ <&3; kill "$pid"; } 2>/dev/null & wait "$pid"'
        master_argv = self._ssh("-M", "-N", "-o", "ControlPersist=no", "-o", "ServerAliveInterval=5")
        self._master = subprocess.Popen(
            ["sh", "-c", watchdog, "sh", *master_argv[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        master = self._master

        def up() -> bool:
            if master.poll() is not None:
                raise Unreachable(
                    f"SSH to the engine's host {self.host} ended ({master.returncode}): "
                    f"{master.stderr.read().decode(errors='replace').strip() if master.stderr else ''}"
                )
            return os.path.exists(self._control)

        wait_until(
            up,
            timeout=CONNECT_TIMEOUT * 3,
            what=f"the SSH connection to the engine's host {self.host}",
            seen=lambda: f"no control socket {self._control} yet",
        )

    def close(self) -> None:
        """End the connection and every forward on it (at the process's end)."""
        with self._lock:
            if self._master is not None and self._master.stdin is not None:
                self._master.stdin.close()  # the watchdog ends ssh (and itself)
            if self._master is not None and self._master.poll() is None:
                try:
                    self._master.wait(timeout=CONNECT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._master.kill()
                    self._master.wait()
            self._forwards.clear()
            self._socket = None
            shutil.rmtree(self._dir, ignore_errors=True)


_connections: dict[str, EngineConnection] = {}
_connections_lock = threading.Lock()


def engine_connection(engine: str) -> EngineConnection:
    """The process's one connection to the host of ssh:// engine `engine`."""
    with _connections_lock:
        if engine not in _connections:
            if not _connections:
                atexit.register(_close_connections)
            _connections[engine] = EngineConnection(engine)
        return _connections[engine]


def _close_connections() -> None:
    with _connections_lock:
        for connection in _connections.values():
            connection.close()
        _connections.clear()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
