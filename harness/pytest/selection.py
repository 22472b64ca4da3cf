"""Which tests run, on which targets, in which order: scenario modules parametrised by target
(`debian-12-docker`, `inventory-ssh`, ...), the gate's selection (`--gate-base`), longest first - in a
gate run, the modules and tests that killed mutants of the changed steps before them (Plan.first);
with --pgrepl-reverse each module's tests in reverse order (a test that relies on an earlier one
then fails: the order a module needs must be in its fixtures)."""

from __future__ import annotations

import pytest

from harness.gate import STATIC_GATE, Plan
from harness.targets import Target

# on each item's report (and through xdist to the summary): the label of the target it ran on
TARGET_PROPERTY = "pgrepl_target"


def item_target(item: pytest.Item) -> Target | None:
    """The target a test is parametrised with, if any."""
    params = getattr(item, "callspec", None)
    return params.params.get("target") if params else None


def item_step(item: pytest.Item) -> str | None:
    """The runbook step a static gate test checks (its `block` parameter), if any."""
    params = getattr(item, "callspec", None)
    block = params.params.get("block") if params else None
    return getattr(block, "step", None)


def reversed_within_modules(items: list[pytest.Item]) -> list[pytest.Item]:
    """The modules in the same order, the tests of each in reverse."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    return [item for tests in modules.values() for item in reversed(tests)]


def killers_first(items: list[pytest.Item], first: dict[str, list[str]]) -> list[pytest.Item]:
    """`items` with the modules of `first` ahead of the others, in its order, and in each of them its tests
    ahead of the module's others (Plan.first); otherwise in the order they were."""
    modules = list(first)

    def rank(numbered: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        index, item = numbered
        module = item.nodeid.split("::")[0]
        if module not in first:
            return len(modules), 0, index
        tests = first[module]
        name = getattr(item, "originalname", item.name)
        return modules.index(module), tests.index(name) if name in tests else len(tests), index

    return [item for _, item in sorted(enumerate(items), key=rank)]


def bringups(item: pytest.Item) -> int:
    marker = item.get_closest_marker("bringups")
    return int(marker.args[0]) if marker else 0


class Selection:
    """Registered as `pgrepl-selection` in a run of the project."""

    def __init__(self, targets: list[Target], gate: Plan | None, *, reverse: bool = False):
        self.targets, self.gate, self.reverse = targets, gate, reverse

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "target" in metafunc.fixturenames:
            ids = [t.label for t in self.targets]
            metafunc.parametrize("target", self.targets, ids=ids, scope="module")

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Modules that bring up the most pairs come first (xdist hands them out in this order, see
        harness.pytest.scheduling), so no worker idles at the end while another works through a long
        module; each item carries its target's label to the report."""
        items.sort(key=lambda item: -bringups(item))  # stable: each module keeps its own order
        if self.reverse:
            items[:] = reversed_within_modules(items)
        if self.gate is not None and not self.gate.everything:
            kept = [item for item in items if self._gate_selects(item)]
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = killers_first(kept, self.gate.first)
        for item in items:
            if (target := item_target(item)) is not None:
                item.user_properties.append((TARGET_PROPERTY, target.label))

    def _gate_selects(self, item: pytest.Item) -> bool:
        assert self.gate is not None
        module = item.nodeid.split("::")[0]
        target = item_target(item)
        if target is None:
            return module == STATIC_GATE and self.gate.checks_statically(item_step(item))
        return self.gate.selects(module, target.image or "")

    def pytest_report_header(self) -> list[str]:
        """The gate's plan first: what runs, and why."""
        return self.gate.render().splitlines() if self.gate is not None else []
