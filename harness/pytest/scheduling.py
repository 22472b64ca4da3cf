"""How xdist hands out tests: a pair group (a module on one target) goes whole to one worker.

Registered as `pgrepl-scheduling` only on an xdist controller distributing by `load` or
`loadgroup` (plain `-n N` is `load`), through xdist's public hook `pytest_xdist_make_scheduler`.
xdist's own loadgroup reads `xdist_group` marks through a node-id suffix that pytest 9 no longer
keeps, so every test became its own unit: a module's pairs were brought up once on each worker.

The one place that touches xdist's private members is ClusterScheduling (LoadScopeScheduling's
`_split_scope`, `_assign_work_unit`, `workqueue` and `assigned_work`);
tests/test_plugin_parts.py fails when xdist changes them.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from harness.targets import Target


def cluster_group(nodeid: str, targets: list[Target]) -> str:
    """The unit one worker runs whole: a module on one target (its module fixtures hold the pairs),
    or every module of a target whose hosts are shared (one pair of real hosts: two workers would
    install at once). Read off the node id, which ends its parameters with the target's label."""
    module, _, rest = nodeid.partition("::")
    params = rest[rest.find("[") + 1 : -1] if rest.endswith("]") else ""
    for target in sorted(targets, key=lambda t: -len(t.label)):
        if params == target.label or params.endswith(f"-{target.label}") or params.startswith(f"{target.label}-"):
            return target.label if target.shared_hosts else f"{module}@{target.label}"
    return module


def _group_target(group: str) -> str:
    return group.rpartition("@")[2]


def next_unit(queue: list[str], mine: list[str], others: list[str]) -> str:
    """The pair group (cluster_group) a worker that has run `mine` takes next from `queue` (longest
    first), while other workers run `others`: one more of its latest target, else one of a target no
    one runs, else the first. A worker that stays on a target restores the set-up state it saved
    (harness.runstate, per process) instead of saving its own."""
    latest = _group_target(mine[-1]) if mine else None
    busy = {_group_target(group) for group in others}
    return (
        next((g for g in queue if _group_target(g) == latest), None)
        or next((g for g in queue if _group_target(g) not in busy), None)
        or queue[0]
    )


class ClusterScheduling(LoadScopeScheduling):
    """LoadScopeScheduling by pair group, the next group chosen by next_unit."""

    def __init__(self, config: pytest.Config, log: Any, targets: list[Target]):
        super().__init__(config, log)
        self.targets = targets

    def _split_scope(self, nodeid: str) -> str:
        return cluster_group(nodeid, self.targets)

    def _assign_work_unit(self, node: Any) -> None:
        def unfinished(work: dict) -> list[str]:
            return [scope for scope, tests in work.items() if not all(tests.values())]

        others = [
            scope for other, work in self.assigned_work.items() if other is not node for scope in unfinished(work)
        ]
        chosen = next_unit(list(self.workqueue), list(self.assigned_work.get(node, {})), others)
        self.workqueue.move_to_end(chosen, last=False)
        super()._assign_work_unit(node)

    def remove_node(self, node: Any) -> str | None:
        """A worker that died: the test it was running is reported failed (by xdist) and not run
        again - loadscope would hand it to the next worker, which it may kill too, up to xdist's
        restart limit; the rest of its module goes back to the queue."""
        workload = self.assigned_work.get(node, {})
        crashed = next((test for unit in workload.values() for test, done in unit.items() if not done), None)
        for unit in workload.values():
            if crashed in unit:
                unit[crashed] = True
        pending = super().remove_node(node)
        return crashed if crashed is not None else pending


class Scheduling:
    """Registered as `pgrepl-scheduling` on an xdist controller with `--dist load` or `loadgroup`."""

    DISTS = ("load", "loadgroup")

    def __init__(self, targets: list[Target]):
        self.targets = targets

    @staticmethod
    def wanted(config: pytest.Config) -> bool:
        """Whether this process hands out tests to xdist workers by load or loadgroup."""
        controller = config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput")
        return controller and getattr(config.option, "dist", "no") in Scheduling.DISTS

    @pytest.hookimpl(tryfirst=True)  # before xdist's own choice
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> ClusterScheduling:
        config.option.loadscopereorder = False  # keep the longest-first order of the collection
        return ClusterScheduling(config, log, self.targets)
