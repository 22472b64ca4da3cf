"""Labels on every container, network and volume the harness creates, and cleanup by them.

A resource names its run, the process that made it, and its owner: the machine, user and PID
namespace that process lives in. A PID means something only inside its own namespace, so only
resources of the same owner are ever judged orphaned by their PID; kept pairs (`up --keep`)
are never judged orphaned at all.
"""

from __future__ import annotations

import os
import socket

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


_session: str | None = None


def join_session(session: str | None) -> None:
    """Label what this process makes from now on as `session`'s (None: no session, e.g. `up`)."""
    global _session
    _session = session


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
