"""Labels on every container, network and volume the harness creates, and cleanup by them."""

from __future__ import annotations

import os

LABEL = "io.pgrepl-harness"
RUN_LABEL = f"{LABEL}.run"
PID_LABEL = f"{LABEL}.pid"


def resource_labels(run_id: str) -> dict[str, str]:
    return {LABEL: "resource", RUN_LABEL: run_id, PID_LABEL: str(os.getpid())}
