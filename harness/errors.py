"""The harness's own failures: each says what went wrong, where, and how to fix it.

The command line prints a HarnessError as one message (exit code 1) and pytest shows it as the
test's failure; anything else is a bug in the harness and keeps its traceback.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A failure the harness explains itself (a runbook step, a host, the user's input)."""


class WaitTimeout(HarnessError):
    """A condition did not hold in time; the message says what was last seen."""


class SetupIncomplete(HarnessError):
    """Every setup step ran, yet the pair is not replicating; the message says what is missing."""


class ImageUnavailable(HarnessError):
    """This image cannot be built on this machine; the message names what is missing."""


class NoDockerEngine(HarnessError):
    """No Docker engine answers; the message says how to start one."""


class FaultInjection(HarnessError):
    """A fault asked for (bench/soak.py --fault) cannot be injected here; the message says why."""
