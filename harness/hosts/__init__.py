"""Hosts: one contract (`Host`), two backends (docker exec, SSH)."""

from harness.hosts.base import CommandFailed, CommandTimeout, Host, HostError, HostUnreachable, OsInfo, Result

__all__ = ["CommandFailed", "CommandTimeout", "Host", "HostError", "HostUnreachable", "OsInfo", "Result"]
