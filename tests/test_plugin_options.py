"""No option string, destination or ini name of the plugin collides with those of the plugins a
user of the harness may well have beside it: pytest-xdist (read from the installed plugin),
pytest-testinfra and pytest-ansible (recorded here from their source)."""

from __future__ import annotations

from typing import Any

import xdist.plugin

from harness.pytest import options

# pytest-testinfra 10.2.2, testinfra/plugin.py: option strings and destinations (no ini names)
TESTINFRA = {
    "options": {
        "--connection",
        "--hosts",
        "--ssh-config",
        "--ssh-extra-args",
        "--ssh-identity-file",
        "--sudo",
        "--sudo-user",
        "--ansible-inventory",
        "--force-ansible",
        "--nagios",
    },
    "dests": {
        "connection",
        "hosts",
        "ssh_config",
        "ssh_extra_args",
        "ssh_identity_file",
        "sudo",
        "sudo_user",
        "ansible_inventory",
        "force_ansible",
        "nagios",
    },
    "ini": set(),
}
# pytest-ansible 26.10.0, pytest_ansible/plugin.py: each option has a short and an --ansible- form
PYTEST_ANSIBLE = {
    "options": {
        "--inventory",
        "--ansible-inventory",
        "--extra-inventory",
        "--ansible-extra-inventory",
        "--host-pattern",
        "--ansible-host-pattern",
        "--limit",
        "--ansible-limit",
        "--ansible-connection",
        "--user",
        "--ansible-user",
        "--check",
        "--ansible-check",
        "--module-path",
        "--ansible-module-path",
        "--become",
        "--ansible-become",
        "--become-method",
        "--ansible-become-method",
        "--become-user",
        "--ansible-become-user",
        "--ask-become-pass",
        "--ansible-ask-become-pass",
        "--ansible-unit-inject-only",
        "--molecule",
        "--molecule_unavailable_driver",
        "--molecule_base_config",
        "--skip_no_git_change",
    },
    "dests": {
        "ansible_inventory",
        "ansible_extra_inventory",
        "ansible_host_pattern",
        "ansible_subset",
        "ansible_connection",
        "ansible_user",
        "ansible_check",
        "ansible_module_path",
        "ansible_become",
        "ansible_become_method",
        "ansible_become_user",
        "ansible_ask_become_pass",
        "ansible_unit_inject_only",
        "molecule",
        "molecule_unavailable_driver",
        "molecule_base_config",
        "skip_no_git_change",
    },
    "ini": {"ansible"},
}


class Recorder:
    """Stands in for pytest's Parser and its option group: records what a plugin adds."""

    def __init__(self) -> None:
        self.options: set[str] = set()
        self.dests: set[str] = set()
        self.ini: set[str] = set()

    def getgroup(self, *args: Any, **kwargs: Any) -> Recorder:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.options.update(names)
        long = next((n for n in names if n.startswith("--")), names[0])
        self.dests.add(kwargs.get("dest") or long.lstrip("-").replace("-", "_"))

    _addoption = addoption

    def addini(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.ini.add(name)


def recorded(add: Any) -> dict[str, set[str]]:
    recorder = Recorder()
    add(recorder)
    return {"options": recorder.options, "dests": recorder.dests, "ini": recorder.ini}


def test_xdist_is_read_as_it_is_installed():
    xdist_names = recorded(xdist.plugin.pytest_addoption)
    assert {"-n", "--numprocesses", "--dist", "--tx"} <= xdist_names["options"]
    assert "numprocesses" in xdist_names["dests"] and "rsyncdirs" in xdist_names["ini"]


def test_no_option_dest_or_ini_name_collides_with_xdist_testinfra_or_pytest_ansible():
    ours = recorded(options.add)
    others = {
        "pytest-xdist": recorded(xdist.plugin.pytest_addoption),
        "testinfra": TESTINFRA,
        "ansible": PYTEST_ANSIBLE,
    }
    for plugin, theirs in others.items():
        for kind in ("options", "dests", "ini"):
            assert not ours[kind] & theirs[kind], f"{kind} shared with {plugin}: {sorted(ours[kind] & theirs[kind])}"
    assert all(dest.startswith("pgrepl_") for dest in ours["dests"] | ours["ini"])
