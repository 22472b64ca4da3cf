"""The crash-recovery catcher (`Node.kill9_and_hold_crash_recovery`) stops the startup process and
nothing else: not a client backend that reports "startup" between authentication and ready."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness.pair import STARTUP_CATCHER_PERL, STARTUP_TITLE

STARTUP = [
    "postgres: 15/main: startup recovering 000000010000000000000003",  # Debian (cluster_name)
    "postgres: startup recovering 000000010000000000000003",  # PGDG (none)
    "postgres: startup",
]
OTHERS = [
    "postgres: 15/main: pgrepl_harness postgres 172.17.0.1(40112) startup",  # a backend mid-connection
    "postgres: 15/main: walsender replicator 172.17.0.3(4455) startup",
    "postgres: checkpointer",
    "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
    "sh -c until pkill -STOP -f '^postgres: ([^ ]+: )?startup'; do :; done",
]


@pytest.mark.parametrize("title", STARTUP)
def test_the_startup_process_matches(title: str) -> None:
    assert re.search(STARTUP_TITLE, title)


@pytest.mark.parametrize("title", OTHERS)
def test_no_other_process_matches(title: str) -> None:
    assert not re.search(STARTUP_TITLE, title)


@pytest.mark.skipif(shutil.which("perl") is None, reason="no perl on this machine")
def test_the_perl_catcher_compiles() -> None:
    checked = subprocess.run(["perl", "-c", "-e", STARTUP_CATCHER_PERL], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
