"""Runbook 3.4 (Debian): the stop returns only once the server is down, before its data directory goes.

Debian's cluster unit `postgresql@N-main` is ordered before the umbrella `postgresql.service`, so on
stop it stops after it, and `systemctl stop postgresql.service` alone returned while the server still
wrote its shutdown checkpoint (`rm: cannot remove .../pg_wal: Directory not empty`, a cold CI run).
A probe between the block's stop and its `rm` records the cluster unit's state at that moment.
"""

from __future__ import annotations

import pytest

from harness.images import ImageProfile
from harness.runbook import StepFailed, edit_block

pytestmark = [pytest.mark.parts("setup"), pytest.mark.bringups(2)]
STEP = "secondary-stop-and-empty"
PROBE_FILE = "/tmp/pgrepl-state-after-stop"
# "18" is the runbook's example major: the probe's unit is bound to the live one like the block's own
PROBE = f"systemctl is-active postgresql@18-main.service > {PROBE_FILE} || true\nsudo rm -rf"
CLUSTER_UNIT = " postgresql@18-main.service"


@pytest.fixture(scope="module", autouse=True)
def debian_only(target):
    image = getattr(target, "image", None)
    if image is not None and ImageProfile.load(image).family != "debian":
        pytest.skip(f"{image}: the EL sections stop the cluster's unit postgresql-N itself (no umbrella unit)")


def state_after_stop(make_pair, runbook) -> str:
    pair = make_pair(edit_block(runbook, STEP, "sudo rm -rf", PROBE))
    try:
        pair.setup()
    except StepFailed as failure:  # the race's other face: rm lost to the server's shutdown checkpoint
        if failure.block.step != STEP:
            raise
    try:
        return pair.secondary.host.run(f"cat {PROBE_FILE}").stdout.strip()
    finally:
        pair.secondary.host.run(f"rm -f {PROBE_FILE}", user="root")


def test_the_runbook_s_stop_returns_with_the_server_down(make_pair, runbook):
    assert state_after_stop(make_pair, runbook) == "inactive"


def test_negative_control_the_umbrella_unit_alone_returns_while_the_server_still_runs(make_pair, runbook):
    """The line as it was: systemctl returns once postgresql.service is stopped, the cluster still
    stopping (20 of 20 times on a loaded machine: 'deactivating')."""
    as_it_was = edit_block(runbook, STEP, CLUSTER_UNIT, "")
    assert state_after_stop(make_pair, as_it_was) in ("deactivating", "active")
