"""The plugin's options: each on the command line, or failing that in the ini file (`pgrepl_images =
debian-12 debian-13`, ...), and what they make: the targets (image and backend) a run covers.

Every ini name and option destination starts with `pgrepl_`; an option whose plain name another
plugin already takes (pytest-ansible's `--inventory`) carries the prefix too (`--pgrepl-inventory`).
tests/test_plugin_options.py checks them against pytest-xdist's, testinfra's and pytest-ansible's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness.gate import Plan
from harness.targets import DEFAULT_IMAGE, Target, target_matrix

# option -> (ini name, which is also its destination; ini type; help)
OPTIONS = {
    "--image": ("pgrepl_images", "args", f"image(s) under images/ to run on; 'all' for every one ({DEFAULT_IMAGE})"),
    "--backend": ("pgrepl_backends", "args", "reach hosts by docker exec (default) or by SSH only; repeat for both"),
    "--ssh-image": ("pgrepl_ssh_images", "args", f"images the ssh backend runs on ({DEFAULT_IMAGE}; 'all')"),
    "--pgrepl-inventory": ("pgrepl_inventory", "string", "TOML inventory of real hosts (with --backend ssh)"),
    "--allow-existing-postgresql": ("pgrepl_allow_existing_postgresql", "bool", "run over PostgreSQL found there"),
    "--runbook": ("pgrepl_runbook", "string", "the runbook under test"),
    "--no-reuse": ("pgrepl_no_reuse", "bool", "do not start hosts from snapshots of completed steps"),
    "--artifacts": ("pgrepl_artifacts", "string", "folder for the summary and failures' evidence (default: artifacts)"),
    "--keep-on-failure": ("pgrepl_keep_on_failure", "bool", "keep the hosts of a failed scenario; print how to log in"),
    "--gate-base": ("pgrepl_gate_base", "string", "run only what changed since this git revision touches (the gate)"),
    "--pgrepl-reverse": ("pgrepl_reverse", "bool", "run each module's tests in reverse order (no hidden order)"),
}
INVENTORY_ENV = "PGREPL_INVENTORY"  # the inventory's default (tox -e ecs)


def add(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgrepl-harness")
    for option, (ini, kind, help_text) in OPTIONS.items():
        metavar = option.removeprefix("--pgrepl-").removeprefix("--").replace("-", "_").upper()
        if kind == "bool":
            group.addoption(option, action="store_true", default=None, dest=ini, help=help_text)
        elif kind == "args":
            group.addoption(option, action="append", default=None, dest=ini, metavar=metavar, help=help_text)
        else:
            default = os.environ.get(INVENTORY_ENV) if ini == "pgrepl_inventory" else None
            group.addoption(option, default=default, dest=ini, metavar=metavar, help=help_text)
        parser.addini(ini, help_text, type=kind)


def value(config: pytest.Config, option: str) -> Any:
    """The option's value from the command line, else from the ini file."""
    ini = OPTIONS[option][0]
    given = config.getoption(ini)
    return config.getini(ini) if given is None else given


def targets(config: pytest.Config, gate: Plan | None) -> list[Target]:
    """The targets of this run (a bad option raises harness.targets.BadTarget)."""
    inventory = config.getoption("pgrepl_inventory")  # "" (tox -e ecs without PGREPL_INVENTORY) is an error too
    planned = gate.images if gate is not None and not gate.everything else None  # the gate's images by default
    return target_matrix(
        images=value(config, "--image") or planned or [DEFAULT_IMAGE],
        backends=value(config, "--backend") or ["docker"],
        ssh_images=value(config, "--ssh-image") or [DEFAULT_IMAGE],
        inventory=inventory if inventory is not None else value(config, "--pgrepl-inventory") or None,
        allow_existing=bool(value(config, "--allow-existing-postgresql")),
        reuse=not value(config, "--no-reuse"),
    )


def artifacts_dir(config: pytest.Config) -> Path:
    return config.rootpath / (value(config, "--artifacts") or "artifacts")


def figures_dir(config: pytest.Config) -> Path:
    """Where the run's scenarios record what they measured (harness.report.Figures), one file per name."""
    return artifacts_dir(config) / "figures"
