"""SSH backend: real hosts (or containers) reached with the OpenSSH client.

Key authentication only, BatchMode, no TTY, scripts on stdin (`bash -s`), one shared
connection per host (ControlMaster), exit code 255 reported as a connection error.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import LOGIN_USER
from harness.hosts.base import Access, Host, HostUnreachable, MachineInfo, Result
from harness.inventory import split_jump

CONNECT_TIMEOUT = 10


class SshHost(Host):
    backend = "ssh"

    @classmethod
    def access(cls, state_dir: Callable[[], Path]) -> Access:
        """A fresh ed25519 key pair for the run's machines, its public half for their authorized_keys."""
        key = state_dir() / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgrepl-harness", "-f", str(key)], check=True
        )
        return Access(authorized_key=key.with_suffix(".pub").read_text(), private_key=key, state_dir=key.parent)

    @classmethod
    def for_machine(cls, machine: MachineInfo, access: Access) -> SshHost:
        """A machine of this run, reached like a real instance; its key is trusted on first use."""
        assert access.private_key is not None and access.state_dir is not None, "made by SshHost.access"
        ssh_address, port = machine.endpoint(22)  # its bridge address, or a tunnel or published port to it
        host = cls(
            machine.name,
            ssh_address=ssh_address,
            private_address=machine.address,
            user=LOGIN_USER,
            key=access.private_key,
            port=port,
            state_dir=access.state_dir,
            trust_on_first_use=True,
        )
        host.machine_lost = machine.lost  # an SSH failure then says whether the container is gone
        return host

    def __init__(
        self,
        name: str,
        *,
        ssh_address: str,
        private_address: str,
        user: str,
        key: Path,
        port: int = 22,
        state_dir: Path,
        share_connection: bool = True,
        known_hosts: Path | None = None,
        proxy_jump: str | None = None,
        trust_on_first_use: bool = False,
    ):
        """A real host's key must be known already (`known_hosts`, else the user's own known_hosts) and
        the user's ssh_config applies; `trust_on_first_use` is for the run's own containers only, whose
        keys are new on every run: any key is accepted once and ssh_config is ignored."""
        self.name = name
        self.ssh_address, self.private_address = ssh_address, private_address
        self.user, self.key, self.port = user, Path(key).expanduser(), port
        self.state_dir = state_dir
        self.share_connection = share_connection
        self._forwards: dict[int, int] = {}
        self.known_hosts, self.proxy_jump, self.trust_on_first_use = known_hosts, proxy_jump, trust_on_first_use

    @property
    def address(self) -> str:
        return self.private_address

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.ssh_address}:{self.port}"

    @property
    def login_command(self) -> str:
        return f"ssh -i {self.key} -p {self.port} {self.user}@{self.ssh_address}"

    def _options(self, shared: bool | None = None) -> list[str]:
        options = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "PasswordAuthentication": "no",
            "StrictHostKeyChecking": "accept-new" if self.trust_on_first_use else "yes",
            "ConnectTimeout": str(CONNECT_TIMEOUT),
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
        }
        known_hosts = self.state_dir / "known_hosts" if self.trust_on_first_use else self.known_hosts
        if known_hosts is not None:
            options["UserKnownHostsFile"] = _literal(str(known_hosts))
        common = self._argv(options)
        if self.proxy_jump:
            options["ProxyCommand"] = self._proxy_command(common)
        if self.share_connection if shared is None else shared:
            options |= {"ControlMaster": "auto", "ControlPath": str(self.state_dir / "%C"), "ControlPersist": "300"}
        return [*self._argv(options), "-p", str(self.port)]

    def _argv(self, options: dict[str, str]) -> list[str]:
        argv = ["ssh", "-i", _literal(str(self.key))]
        if self.trust_on_first_use:
            argv += ["-F", "/dev/null"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return argv

    def _proxy_command(self, common: list[str]) -> str:
        """The bastion hop as an explicit ProxyCommand with the same key, host-key checking, known_hosts
        and BatchMode as the host itself (OpenSSH's ProxyJump starts its hop with none of the command
        line's options). ssh runs it with /bin/sh and expands `%` tokens: each word is quoted for both."""
        user, host, port = split_jump(self.proxy_jump or "") or (None, self.proxy_jump, None)
        hop = [*common, *(["-l", user] if user else []), *(["-p", str(port)] if port else []), "-W", "%h:%p", "--"]
        words = [shlex.quote(word).replace("%", "%%") if word != "%h:%p" else word for word in [*hop, host]]
        return " ".join(words)

    def _transport(self, remote: list[str]) -> list[str]:
        return [*self._options(), "-T", f"{self.user}@{self.ssh_address}", shlex.join(remote)]

    def _transport_failed(self, result: Result) -> bool:
        return result.rc == 255

    @property
    def runner_address(self) -> str:
        return "127.0.0.1"  # connections arrive through the SSH forward, from the host itself

    def forward(self, port: int) -> tuple[str, int]:
        """A local port forwarded to `port` on the host's loopback, through the shared connection.

        A forward lives as long as the master connection that holds it. When that connection ended
        (ssh's keepalive gives up after 15 s, e.g. while `docker commit` pauses a container), nothing
        listens on the local port any more and a new forward is made on the connection that replaced it.
        """
        if port in self._forwards and not _listening(self._forwards[port]):
            del self._forwards[port]
        if port not in self._forwards:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                local = probe.getsockname()[1]
            target = f"{self.user}@{self.ssh_address}"
            # Forwards always ride on a master connection, so close() ends them with it.
            master = [*self._options(shared=True), target]
            subprocess.run([*master[:-1], "-f", "-N", target], capture_output=True, timeout=CONNECT_TIMEOUT * 3)
            argv = [*self._options(shared=True), "-O", "forward", "-L", f"127.0.0.1:{local}:127.0.0.1:{port}", target]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CONNECT_TIMEOUT * 3)
            if done.returncode != 0:
                raise HostUnreachable(f"{self.name} ({self.url}): cannot forward port {port}: {done.stderr.strip()}")
            self._forwards[port] = local
        return "127.0.0.1", self._forwards[port]

    def close(self) -> None:
        """End the shared connection (and with it every forward)."""
        if self.share_connection or self._forwards:
            subprocess.run(
                [*self._options(shared=True), "-O", "exit", f"{self.user}@{self.ssh_address}"],
                capture_output=True,
                timeout=CONNECT_TIMEOUT,
            )
        self._forwards.clear()


def _listening(local_port: int) -> bool:
    """Whether a socket (our forward) still listens on the runner's `local_port`: binding it fails then.
    A bind sends nothing (a test connection would reach the server and log an incomplete startup);
    SO_REUSEADDR keeps connections left in TIME_WAIT from counting."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", local_port))
        except OSError:
            return True
    return False


def _literal(path: str) -> str:
    """A path as ssh reads it literally in an option that expands `%` tokens (IdentityFile, UserKnownHostsFile)."""
    return path.replace("%", "%%")
