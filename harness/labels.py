"""Labels on every container, network and volume the harness creates, and cleanup by them.

A resource names its run, the process that made it, and its owner: the machine, user and PID
namespace that process lives in. A PID means something only inside its own namespace, so only
resources of the same owner are ever judged orphaned by their PID; kept pairs (`up --keep`)
are never judged orphaned at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

LABEL = "io.pgrepl-harness"
RUN_LABEL = f"{LABEL}.run"
PID_LABEL = f"{LABEL}.pid"
OWNER_LABEL = f"{LABEL}.owner"
KEPT_LABEL = f"{LABEL}.kept"
# the test session (all its xdist workers) that made a resource: its controller removes what is left
SESSION_LABEL = f"{LABEL}.session"
# LABEL's value on committed images: a step snapshot (harness.snapshots, kept across runs) and a
# run's set-up state (harness.runstate, holds its secrets: removed at the run's end)
SNAPSHOT_KIND = "snapshot"
SETUP_STATE_KIND = "setup-state"


def owner() -> str:
    """This process's machine, user and PID namespace, e.g. `ci-7/0/pid:[4026531836]`."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "pid:unknown"
    return f"{socket.gethostname()}/{os.getuid()}/{namespace}"


def alive(pid: int) -> bool:
    """Whether process `pid` (of this owner's PID namespace) is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A session held by a process outside pytest (`pgrepl-harness mutate`, one pytest run per mutant):
# "SESSION:PID" in the environment of the runs it starts. They join that session and leave its set-up
# states, labelled with the holder's PID (alive as long as they serve), for the holder to remove.
HELD_SESSION_ENV = "PGREPL_HELD_SESSION"

_session: str | None = None
_holder: int | None = None


class BadHeldSession(ValueError):
    """HELD_SESSION_ENV set to something else than SESSION:PID."""


def held_session(environ: Mapping[str, str] = os.environ) -> tuple[str, int] | None:
    """The session and its holder's PID that this process's environment hands it (None: no held session)."""
    value = environ.get(HELD_SESSION_ENV)
    if value is None:
        return None
    session, _, pid = value.partition(":")
    if not session.isalnum() or not pid.isdigit():
        raise BadHeldSession(
            f"{HELD_SESSION_ENV}={value!r}: not SESSION:PID. pgrepl-harness mutate sets it for the pytest runs it "
            f"starts; unset it (`unset {HELD_SESSION_ENV}`) to run on your own"
        )
    return session, int(pid)


def join_session(session: str | None, *, holder: int | None = None) -> None:
    """Label what this process makes from now on as `session`'s (None: no session, e.g. `up`);
    `holder`: the PID of the process that holds the session (held_session), if not a test run's own."""
    global _session, _holder
    _session, _holder = session, holder


def session_holder() -> int:
    """The process whose end makes this session's set-up states orphans: the holder, or this one."""
    return _holder or os.getpid()


def resource_labels(run_id: str, *, kept: bool = False) -> dict[str, str]:
    labels = {
        LABEL: "resource",
        RUN_LABEL: run_id,
        PID_LABEL: str(os.getpid()),
        OWNER_LABEL: owner(),
        KEPT_LABEL: "true" if kept else "false",
    }
    if _session is not None:
        labels[SESSION_LABEL] = _session
    return labels
