"""One way to get a pair: `open_pair(target, runbook)`, a context manager; and `down`.

Every caller (the command line, the pytest plugin, bench) comes through here. The target brings
its hosts up (harness.targets: container machines or an inventory's real hosts); both end in the
same ReplicationPair, closed on exit, and left without the harness's access when the target keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness.containers import remove_containers
from harness.inventory import Inventory
from harness.pair import ReplicationPair
from harness.real_hosts import remove_from_inventory
from harness.runbook import Runbook, parse_runbook
from harness.targets import Log, Target


@contextmanager
def open_pair(target: Target, runbook: Runbook | Path | str, *, log: Log = print) -> Iterator[ReplicationPair]:
    """The hosts of `target` as a pair on which `runbook` runs; removed (or cleaned) on exit."""
    book = runbook if isinstance(runbook, Runbook) else parse_runbook(runbook)
    with ExitStack() as stack:
        pair = stack.enter_context(target.open(book, log=log))
        stack.callback(pair.close)
        if target.kept:  # the user's pair from now on: no superuser of the harness left in it
            stack.callback(pair.revoke_harness_access)
        yield pair


def tear_down(inventory: Path | str | None, *, force: bool = False, everyone: bool = False, log: Log = print) -> None:
    """`down`: remove what the runbook installed on an inventory's hosts, or the harness's containers:
    this user's kept pairs and killed runs on this machine (a run still going removes its own), or
    with `everyone` every harness resource on the engine."""
    if inventory is not None:
        remove_from_inventory(Inventory.load(inventory), force=force, log=log)
    else:
        remove_containers(everyone=everyone, log=log)
