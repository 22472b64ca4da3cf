"""Unit tests share their xdist worker with the scenarios: a made-up secret a test registers
("replication-pw-...") would mask every later piece of it ("replication") in that worker's
messages, so each test's secrets are forgotten when it ends (and module-level ones are generated)."""

import pytest

from harness import secrets


@pytest.fixture(autouse=True)
def _forget_made_up_secrets():
    known = set(secrets._known)
    yield
    secrets._known.intersection_update(known)
