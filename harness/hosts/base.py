"""The host contract: one method to implement (`_transport`), everything else built on it once.

A backend only says how to start a process on the host and feed it stdin (`docker exec -i`,
`ssh ... bash -s`). Running scripts as another user, timeouts, files and OS detection are
the same for every backend and live here.
"""

from __future__ import annotations

import base64
import math
import shlex
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol

import sh

from harness.errors import HarnessError
from harness.hosts import shell
from harness.secrets import redact
from harness.waiting import wait_until

DEFAULT_TIMEOUT = 120.0
# The line Host.shell_history types after a script: in the history only if the script left it on.
TYPED_AFTER = ": typed after the block"
# Seconds the host-side `timeout` gets to kill a runaway command before we give up on the pipe.
_KILL_GRACE = 5


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, lines: int = 15) -> str:
        """The last lines of stdout and stderr, for failure messages (redacted)."""
        text = "\n".join(part for part in (self.stdout.rstrip(), self.stderr.rstrip()) if part)
        return redact("\n".join(text.splitlines()[-lines:]))


class HostError(HarnessError):
    """Something went wrong on or with a host; the message names the host."""


class HostUnreachable(HostError):
    """The transport failed (container gone, SSH connection refused): not a failed command."""


class CommandFailed(HostError):
    def __init__(self, host: str, command: str, result: Result):
        self.host, self.command, self.result = host, command, result
        super().__init__(
            f"on {host}: command exited {result.rc}\n"
            f"--- command ---\n{redact(command).rstrip()}\n--- last output ---\n{result.tail()}"
        )


class CommandTimeout(HostError):
    pass


@dataclass(frozen=True)
class OsInfo:
    """What /etc/os-release says (its runbook family: harness.layout.family_of)."""

    id: str
    version_id: str
    pretty_name: str
    id_like: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return int(self.version_id.split(".")[0] or 0) if self.version_id else 0

    @classmethod
    def parse(cls, text: str) -> OsInfo:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        return cls(
            id=fields.get("ID", ""),
            version_id=fields.get("VERSION_ID", ""),
            pretty_name=fields.get("PRETTY_NAME", ""),
            id_like=tuple(fields.get("ID_LIKE", "").split()),
        )


class MachineInfo(Protocol):
    """A machine the harness started (harness.hosts.docker.Machine), as a backend sees it."""

    name: str
    address: str

    def lost(self) -> str | None:
        """Why the machine is gone (its container stopped), or None."""

    def endpoint(self, port: int) -> tuple[str, int]:
        """Where the test runner connects to reach `port` of the machine (harness.hosts.reach)."""


@dataclass(frozen=True)
class Access:
    """What a backend needs on a run's machines before they boot (`authorized_key`, for the login
    user) and keeps to reach them (the run's `private_key` and its own `state_dir`)."""

    authorized_key: str | None = None
    private_key: Path | None = None
    state_dir: Path | None = None


class Host(ABC):
    """A machine the runbook runs on, named by its identity (the harness's machines: the role they
    were set up in, as the runbook's blocks name them; real hosts: their inventory table).

    A backend is a subclass registered in harness.hosts.BACKENDS under its `backend` name."""

    name: str
    backend: ClassVar[str]

    @classmethod
    def access(cls, state_dir: Callable[[], Path]) -> Access:
        """Prepare the harness's machines of one run for this backend, before they start;
        `state_dir()` makes the run's private folder (removed with the run). Nothing by default."""
        return Access()

    @classmethod
    def for_machine(cls, machine: MachineInfo, access: Access) -> Host:
        """This backend's host for a machine the harness started."""
        raise NotImplementedError(f"the {cls.backend} backend does not reach the harness's machines")

    @property
    @abstractmethod
    def address(self) -> str:
        """The private address other hosts of the pair use to reach this one."""

    @property
    @abstractmethod
    def url(self) -> str:
        """docker://container or ssh://user@host:port - what the transcript shows."""

    @property
    @abstractmethod
    def login_command(self) -> str:
        """How a person opens a shell on this host."""

    @property
    def runner_address(self) -> str:
        """The address this host sees the test runner's connections come from."""
        return "127.0.0.1"

    def forward(self, port: int) -> tuple[str, int]:
        """Where the test runner connects to reach `port` on this host."""
        return self.address, port

    @abstractmethod
    def _transport(self, remote: list[str]) -> list[str]:
        """argv that runs `remote` (simple tokens) on the host as the login user, stdin attached."""

    def _transport_failed(self, result: Result) -> bool:
        """True when `result` comes from the transport rather than the command (e.g. ssh rc 255)."""
        return False

    # One shell per host runs its commands (harness.hosts.shell); False: a process per command.
    persistent_shell: bool = True
    _shell: shell.PersistentShell | None = None

    # what says why the machine under this host is gone (a container's engine), if anything knows
    machine_lost: Callable[[], str | None] | None = None

    def lost(self) -> str | None:
        """Why this host is gone from under the run (its container stopped, its engine does not
        answer), or None when nothing is known to be wrong: said with a failure, whatever failed."""
        return self.machine_lost() if self.machine_lost is not None else None

    def run(
        self,
        script: str,
        *,
        user: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Result:
        """Run a bash script (fed on stdin, never in argv) as the login user or, via sudo, `user`.

        The script runs with `bash -e -o pipefail`; `timeout` is enforced on the host itself,
        and again locally in case the transport hangs.
        """
        remote = ["timeout", "-k", str(_KILL_GRACE), str(max(1, math.ceil(timeout)))]
        if user is not None:
            remote += ["sudo", "-n", "-H", "-u", user, "--"]
        remote += ["bash", "-e", "-o", "pipefail", "-s"]
        # The local deadline, in case the transport hangs: the host's `timeout` plus twice its grace.
        local_deadline = math.ceil(timeout) + 2 * _KILL_GRACE
        started = time.monotonic()
        answer = self._through_shell(remote, script, started + local_deadline)
        if answer is None:
            answer = self._one_shot(remote, script, local_deadline)
        rc, stdout, stderr = answer
        result = Result(rc=rc, stdout=stdout, stderr=stderr, seconds=time.monotonic() - started)
        if result.rc in (124, 137) and result.seconds >= local_deadline:
            raise CommandTimeout(
                f"on {self.name}: no answer within {local_deadline} s\n--- command ---\n{redact(script)}"
            )
        # coreutils timeout exits 124 after TERM, 137 when it had to KILL
        if check and result.rc in (124, 137) and result.seconds >= timeout:
            raise CommandTimeout(
                f"on {self.name}: command ran past its {timeout:.0f} s deadline\n"
                f"--- command ---\n{redact(script).rstrip()}\n--- last output ---\n{result.tail()}"
            )
        if self._transport_failed(result):
            why = self.lost() or result.tail(5)
            raise HostUnreachable(f"{self.name} ({self.url}) cannot be reached: {why}")
        if check and not result.ok:
            raise CommandFailed(self.name, script, result)
        return result

    def _one_shot(self, remote: list[str], script: str, local_deadline: int) -> tuple[int, str, str]:
        """The command in a transport process of its own, under coreutils `timeout` (sh's own
        `_timeout` polls every 0.1 s and so adds about 0.05 s to every command)."""
        argv = ["timeout", "-k", str(_KILL_GRACE), str(local_deadline), *self._transport(remote)]
        proc = sh.Command(argv[0])(*argv[1:], _in=script, _ok_code=list(range(256)), _return_cmd=True)
        return proc.exit_code, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    def _through_shell(self, remote: list[str], script: str, deadline: float) -> tuple[int, str, str] | None:
        """The command through this host's persistent shell (harness.hosts.shell); None when it cannot
        take it: busy with another thread's command, not wanted, or gone before the command started
        (a host whose new shell fails so is not offered one again)."""
        if not (self.persistent_shell and shell.wanted()):
            return None
        lock = self.__dict__.setdefault("_shell_lock", threading.Lock())  # setdefault: one lock, any thread
        if not lock.acquire(blocking=False):
            return None
        try:
            if self._shell is None or not self._shell.alive():
                self._shell = None
                try:
                    self._shell = shell.PersistentShell(self._transport(["bash", "--noprofile", "--norc", "-s"]))
                except (shell.ShellGone, shell.NoAnswer, OSError):
                    self.persistent_shell = False  # no bash loop behind this transport: a process per command
                    return None
            answer = self._shell.run(remote, script.encode(), deadline)
        except shell.NoAnswer as exc:
            self._shell = None
            return 124, "", f"pgrepl-harness: {exc} on {self.name} before the deadline"
        except (shell.ShellGone, OSError) as exc:
            new = self._shell is None or self._shell.count <= 1
            self._shell = None
            if not getattr(exc, "started", False):
                self.persistent_shell = not new
                return None
            why = self.lost()
            if why is not None:
                raise HostUnreachable(f"{self.name} ({self.url}) cannot be reached: {why}") from None
            return 255, "", f"pgrepl-harness: the shell on {self.name} ended during this command ({exc})"
        finally:
            lock.release()
        return answer.rc, answer.stdout.decode(errors="replace"), answer.stderr.decode(errors="replace")

    def put_file(self, path: str, content: str | bytes, *, mode: int = 0o644, owner: str = "root") -> None:
        """Write a file as root (content goes through stdin, so secrets stay out of argv)."""
        data = content.encode() if isinstance(content, str) else content
        encoded = base64.b64encode(data).decode()
        quoted = shlex.quote(path)
        self.run(
            f"install -D -m {mode:o} -o {shlex.quote(owner)} -g {shlex.quote(owner)} /dev/null {quoted}\n"
            f"base64 -d > {quoted} <<'__PGREPL_EOF__'\n{encoded}\n__PGREPL_EOF__\n",
            user="root",
        )

    def wait_booted(self, timeout: float = 90, *, hopeless: Callable[[], str | None] | None = None) -> None:
        """Wait until the host answers and systemd has finished booting (running or degraded)."""

        def booted() -> bool:
            # --wait blocks until the boot is over: one command, not one per poll (each costs a process);
            # as root, since for other users it waits on the system bus and never returns
            script = "systemctl is-system-running --wait"
            state = self.run(script, user="root", check=False, timeout=timeout).stdout.strip()
            return state in ("running", "degraded")

        wait_until(
            booted,
            timeout=timeout,
            what=f"systemd to finish booting on {self.name} ({self.url})",
            hopeless=hopeless,
            seen=lambda: self.run("systemctl list-jobs --no-pager; systemctl --failed --no-pager", check=False).stdout,
        )

    def sudo_log(self, *, timeout: float = 30) -> str:
        """Every command line sudo logged on this host (journald), as an auditor would read it.

        By the syslog tag, not `_COMM=sudo`: journald reads a sender's command name from /proc when it
        gets to the message, and on a busy machine a short sudo has exited by then (its lines lost
        `_COMM`: the log read empty). A marker logged last, and awaited, means journald has taken in
        every message sudo sent before it (one socket, read in order)."""
        marker = f"pgrepl-log-barrier-{uuid.uuid4().hex[:12]}"
        self.run(f"sudo -n true {marker}")
        read = "journalctl --no-pager -o cat SYSLOG_IDENTIFIER=sudo"
        text = ""

        def complete() -> bool:
            nonlocal text
            text = self.run(read, user="root").stdout
            return marker in text

        wait_until(
            complete, timeout=timeout, what=f"sudo's log on {self.name} to reach {marker}", seen=lambda: text[-2000:]
        )
        return text

    def shell_history(self, script: str, *, run: bool = True, timeout: float = 60) -> str:
        """What an operator's bash history holds after `script` was typed into an interactive bash on
        this host (as the login user, line by line, as a paste reaches it), read from its HISTFILE.

        The shell starts without rc files and with HISTCONTROL and HISTIGNORE empty, so it records every
        line a default bash records. `run=False` types the lines without running their commands (an
        extdebug DEBUG trap skips every command but `set`, which the history options need): for a block
        that must not run twice, such as a CREATE ROLE. A last line, `TYPED_AFTER`, is typed after the
        script: it is in the history only if the script left the history on.
        """
        marker = "__PGREPL_TYPED__"
        if marker in script:
            raise ValueError(f"the script must not contain {marker}")
        dry = "shopt -s extdebug\ntrap '[[ $BASH_COMMAND == \"set \"* ]]' DEBUG\n" if not run else ""
        return self.run(
            "history_file=$(mktemp)\n"
            'HISTFILE="$history_file" HISTCONTROL= HISTIGNORE= bash --norc -i >/dev/null 2>&1'
            f" <<'{marker}' || true\n{dry}{script.rstrip()}\n{TYPED_AFTER}\n{marker}\n"
            'cat "$history_file"\nrm -f "$history_file"\n',
            timeout=timeout,
        ).stdout

    def close(self) -> None:
        """Release what the transport holds open: the persistent shell (and, per backend, connections
        and forwards)."""
        with self.__dict__.setdefault("_shell_lock", threading.Lock()):
            if self._shell is not None:
                self._shell.close()
                self._shell = None

    @cached_property
    def os(self) -> OsInfo:
        return OsInfo.parse(self.run("cat /etc/os-release").stdout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url}>"
