"""Hosts: one contract (`Host`), a backend (transport class) per way of reaching a machine.

BACKENDS is the registry, as testinfra's: a backend's name (`--backend NAME`) to its class, named by
`module:Class` and imported only when a run uses it (the Docker backend pulls in the Docker SDK).
Adding a backend is one file with a Host subclass and one line here.
"""

from importlib import import_module

from harness.hosts.base import (
    Access,
    CommandFailed,
    CommandTimeout,
    Host,
    HostError,
    HostUnreachable,
    MachineInfo,
    OsInfo,
    Result,
)

BACKENDS = {
    "docker": "harness.hosts.docker:DockerHost",
    "ssh": "harness.hosts.ssh:SshHost",
}


def backend(name: str) -> type[Host]:
    """The transport class registered as `name` (KeyError for a name not in BACKENDS)."""
    module, _, attribute = BACKENDS[name].partition(":")
    return getattr(import_module(module), attribute)


__all__ = [
    "BACKENDS",
    "Access",
    "CommandFailed",
    "CommandTimeout",
    "Host",
    "HostError",
    "HostUnreachable",
    "MachineInfo",
    "OsInfo",
    "Result",
    "backend",
]
