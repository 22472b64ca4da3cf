"""A persistent shell per host: one transport process (`docker exec -i`, one SSH session) that runs
every command of Host.run, instead of one transport process per command.

Why: a `docker exec` costs 65-75 ms of process start-up and engine work on our 2-core machines, an
SSH command over a shared connection about as much, and a module runs thousands (most of them short
polls). Through the shell a command costs what its own processes cost on the host.

What does not change (the host contract): the command is the same argv as a one-shot one (`timeout
-k` on the host, `sudo -n -H -u USER`, `bash -e -o pipefail -s`), its script reaches it on stdin and
never in an argv, stdout and stderr stay apart, and its exit status is its own. The shell on the host
is a loop of bash reading framed requests:

    request   ID SIZE ARGV...\n then SIZE bytes of script (fed to ARGV's stdin, nothing more)
    answer    started ID\n when it starts it, then done ID RC OUTSIZE ERRSIZE\n and that many bytes
              of stdout, then of stderr

The command's stdout and stderr go to files of its own in a private (mode 700) directory in memory
(/dev/shm where the host has it), removed once sent; the script never touches a file. A process the
command left running (a server started without a log file) may still write there: the sizes are taken
before the bytes are sent, exactly that many, so the answer stays in frame, and what it writes later
goes to the removed files, never into a later command's output. A command that stops reading its script early has
the rest read and dropped, so the next request starts in frame.

The deadline is kept as before: on the host by `timeout`, and locally by Host.run, which ends the
shell when it gets no answer in time. Whether a command ran is known from `started`: a shell that is
gone before it (the machine was paused or restarted, the SSH connection ended) runs the command in a
process of its own instead; one that ends after it leaves the command's outcome unknown, which
Host.run reports as a failure. Only one command at a time uses the shell: a host's commands from
other threads meanwhile (watchers, load) each take a process of their own, as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass

# `PGREPL_HOST_SHELL=per-command` makes every command a process of its own again (bench/bench.py run
# with it measures that way); any other value, or none, keeps one shell per host.
MODE_VAR = "PGREPL_HOST_SHELL"
PER_COMMAND = "per-command"

# argv words the loop splits on blanks (with globbing off): what Host.run builds, nothing quoted
_WORD = re.compile(r"[A-Za-z0-9_.,:/=@%+-]+")

# The loop, sent as the shell's first input. `exit` on the same line: whatever happens to the loop,
# bash never reads a request as a command of its own.
LOOP = rb"""pgrepl_shell() {
  local base dir id size argv rc out err o e
  set -f
  for base in /dev/shm "${TMPDIR:-/tmp}"; do [ -d "$base" ] && [ -w "$base" ] && break; done
  dir=$(mktemp -d "$base/pgrepl-shell.XXXXXX") || return 1
  trap 'rm -rf "$dir"' EXIT
  printf 'ready\n'
  while IFS=' ' read -r id size argv; do
    printf 'started %s\n' "$id"
    out="$dir/$id.out" err="$dir/$id.err"
    head -c "$size" | { $argv >"$out" 2>"$err"; rc=$?; cat >/dev/null; exit "$rc"; }
    rc=$?; o=$(wc -c <"$out"); e=$(wc -c <"$err")
    printf 'done %s %s %s %s\n' "$id" "$rc" "$o" "$e"
    head -c "$o" "$out"; head -c "$e" "$err"
    rm -f "$out" "$err"
  done
}
pgrepl_shell; exit
"""


def wanted() -> bool:
    return os.environ.get(MODE_VAR, "") != PER_COMMAND


class ShellGone(Exception):
    """The shell ended. `started`: whether the command it was given had started (outcome unknown)."""

    def __init__(self, started: bool, why: str):
        super().__init__(why)
        self.started = started


class NoAnswer(Exception):
    """No answer before the local deadline: the shell was ended."""


@dataclass(frozen=True)
class Answer:
    rc: int
    stdout: bytes
    stderr: bytes


class PersistentShell:
    """One bash on a host behind `argv` (the backend's transport running `bash -s`)."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.lock = threading.Lock()
        self.buffer = b""
        self.count = 0
        deadline = time.monotonic() + 30
        try:
            self._write(LOOP, deadline)
            self._expect("ready", deadline, started=False)  # a transport that runs no bash loop fails here
        except (ShellGone, NoAnswer, OSError):
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, argv: list[str], script: bytes, deadline: float) -> Answer:
        """Run `argv` with `script` on its stdin; `deadline` is a time.monotonic() value."""
        bad = [word for word in argv if not _WORD.fullmatch(word)]
        if bad:
            raise ValueError(f"argv words the host's shell would split or expand: {bad}")
        self.count += 1
        ident = f"c{self.count}"
        try:
            self._write(f"{ident} {len(script)} {' '.join(argv)}\n".encode() + script, deadline)
        except (BrokenPipeError, ShellGone) as exc:
            self.kill()
            raise ShellGone(False, f"the host's shell ended before the command started ({exc})") from None
        started = False
        try:
            # out of frame here: the loop is there and has the request, so it may well run it
            self._expect(f"started {ident}", deadline, started=True)
            started = True
            done = self._line(deadline).split()
            if len(done) != 5 or done[:2] != ["done", ident] or not all(word.isdigit() for word in done[2:]):
                raise ShellGone(True, f"the host's shell answered out of frame: {done!r}")
            rc, out_size, err_size = (int(word) for word in done[2:])
            body = self._exactly(out_size + err_size, deadline)
        except ShellGone as exc:
            self.kill()
            raise ShellGone(started, str(exc)) from None
        except NoAnswer:
            self.kill()
            raise
        return Answer(rc, body[:out_size], body[out_size:])

    def close(self) -> None:
        """End the shell: its input closed, the loop ends and cleans up; killed if it does not."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        """End the shell now (it failed or hangs); what it ran on the host ends with its input."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    # -- framing ------------------------------------------------------------------------------------

    def _why_gone(self) -> str:
        self.proc.wait()
        said = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
        return f"exit status {self.proc.returncode}" + (f": {said[-300:]}" if said else "")

    @staticmethod
    def _ready(fd: int, event: int, deadline: float, silence: str) -> None:
        """Wait until `fd` is ready for `event` (a selectors event); NoAnswer(`silence`) at `deadline`."""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, event)
            while not selector.select(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise NoAnswer(silence)

    def _write(self, data: bytes, deadline: float) -> None:
        """All of `data` to the shell's stdin, waiting for room in the pipe until `deadline`."""
        view = memoryview(data)
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        while view:
            self._ready(fd, selectors.EVENT_WRITE, deadline, "the host's shell takes no input")
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise ShellGone(False, self._why_gone()) from None

    def _fill(self, deadline: float) -> None:
        fd = self.proc.stdout.fileno()
        self._ready(fd, selectors.EVENT_READ, deadline, "no answer from the host's shell")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise ShellGone(False, self._why_gone())
        self.buffer += chunk

    def _line(self, deadline: float) -> str:
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")

    def _expect(self, line: str, deadline: float, *, started: bool) -> None:
        got = self._line(deadline)
        if got != line:
            raise ShellGone(started, f"the host's shell answered out of frame: {got[:200]!r}")

    def _exactly(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self._fill(deadline)
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body
