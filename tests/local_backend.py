"""A backend in one file: hosts that are this machine, reached by running bash here.

Registered by one line in harness.hosts.BACKENDS (tests/test_backends.py adds it for a test):
everything else (scripts on stdin, timeouts, files, the runbook's steps) comes from Host.
"""

from __future__ import annotations

from harness.hosts.base import Access, Host, MachineInfo


class LocalHost(Host):
    backend = "local"

    @classmethod
    def for_machine(cls, machine: MachineInfo, access: Access) -> LocalHost:
        return cls(machine.name, machine.address)

    def __init__(self, name: str, address: str = "127.0.0.1"):
        self.name, self._address = name, address

    @property
    def address(self) -> str:
        return self._address

    @property
    def url(self) -> str:
        return f"local://{self.name}"

    @property
    def login_command(self) -> str:
        return "bash"

    def _transport(self, remote: list[str]) -> list[str]:
        return remote
