"""The inventory is checked, field by field, before any host is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.hosts.ssh import SshHost
from harness.inventory import Inventory, InventoryError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "key").write_text("not a real key")
    path = tmp_path / "inventory.toml"
    path.write_text(text.replace("KEY", str(tmp_path / "key")))
    return path


GOOD = """
[postgresql]
major = 18
package_source = "pgdg"

[primary]
ssh_address = "203.0.113.10"
private_address = "192.168.1.10"
user = "ecs-user"
key = "KEY"

[secondary]
ssh_address = "203.0.113.20"
private_address = "192.168.1.20"
user = "ecs-user"
key = "KEY"
port = 2222
"""


def test_a_complete_inventory_loads(tmp_path):
    inventory = Inventory.load(write(tmp_path, GOOD))
    assert inventory.pg_major == 18 and not inventory.shared_archive
    assert inventory.hosts["secondary"].port == 2222 and inventory.hosts["primary"].port == 22


def test_no_inventory_says_what_to_provide():
    with pytest.raises(InventoryError, match="--inventory FILE"):
        Inventory.load("")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('ssh_address = "203.0.113.10"\n', ""), r"\[primary\] ssh_address is missing"),
        (('private_address = "192.168.1.20"', 'private_address = "db-2"'), r"\[secondary\] private_address"),
        (("major = 18", 'major = "18"'), r"\[postgresql\] major"),
        (("[secondary]", "[standby]"), r"missing table \[secondary\]"),
        (("port = 2222", 'port = "ssh"'), r"\[secondary\] port"),
    ],
)
def test_a_wrong_field_is_named(tmp_path, edit, message):
    with pytest.raises(InventoryError, match=message):
        Inventory.load(write(tmp_path, GOOD.replace(*edit, 1)))


def test_a_missing_key_file_is_named(tmp_path):
    path = write(tmp_path, GOOD)
    (tmp_path / "key").unlink()
    with pytest.raises(InventoryError, match=r"\[primary\] key"):
        Inventory.load(path)


def test_ssh_hosts_use_key_batch_mode_shared_connection_and_stdin(tmp_path):
    host = SshHost.from_entry(Inventory.load(write(tmp_path, GOOD)).hosts["secondary"], tmp_path)
    assert isinstance(host, SshHost)
    assert host.address == "192.168.1.20" and host.url == "ssh://ecs-user@203.0.113.20:2222"
    argv = host._transport(["bash", "-s"])
    assert argv[0] == "ssh" and "-T" in argv and argv[-1] == "bash -s"
    options = " ".join(argv)
    for option in ("BatchMode=yes", "ControlMaster=auto", "PasswordAuthentication=no", "-p 2222"):
        assert option in options
