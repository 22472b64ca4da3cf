"""The inventory is checked, field by field, before any host is touched."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from harness.hosts.ssh import SshHost
from harness.inventory import HostEntry, Inventory, InventoryError
from harness.real_hosts import inventory_host


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


PRIMARY = 'ssh_address = "203.0.113.10"\n'
SECONDARY = 'ssh_address = "203.0.113.20"\n'


def error_of(tmp_path: Path, edit: tuple[str, str]) -> str:
    old, new = edit
    assert old in GOOD, old  # the edit must change something, or the test tests nothing
    with pytest.raises(InventoryError) as info:
        Inventory.load(write(tmp_path, GOOD.replace(old, new, 1)))
    return str(info.value)


@pytest.mark.parametrize(
    ("edit", "named", "hint"),
    [
        # a typo is not silently the default
        (("major = 18\n", "major = 18\nshared_arhive = true\n"), "[postgresql] shared_arhive = true", "shared_archive"),
        ((PRIMARY, PRIMARY + "prot = 2222\n"), "[primary] prot = 2222", "did you mean port?"),
        (("[secondary]", "[secondary]\nproxyjump = 'b'"), "[secondary] proxyjump", "proxy_jump"),
        (("[postgresql]", "[postgres]\n[postgresql]"), "unknown table [postgres]", "known tables: [postgresql]"),
        (("[postgresql]", "major = 18\n[postgresql]"), "unknown key major = 18 outside any table", "[postgresql]"),
        (("[secondary]", "[standby]"), "missing table [secondary]", "[standby] is not one of them"),
    ],
    ids=["postgresql-key", "host-key", "secondary-key", "table", "top-level-key", "renamed-table"],
)
def test_an_unknown_key_or_table_is_named_with_the_known_ones(tmp_path, edit, named, hint):
    message = error_of(tmp_path, edit)
    assert named in message and hint in message, message


def test_a_role_that_is_not_a_table_is_named(tmp_path):
    text = 'primary = "203.0.113.10"\n' + GOOD[: GOOD.index("[primary]")] + GOOD[GOOD.index("[secondary]") :]
    with pytest.raises(InventoryError, match=r"primary = '203.0.113.10' must be a table \[primary\]"):
        Inventory.load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("edit", "named", "hint"),
    [
        (("major = 18", "major = true"), "[postgresql] major = true is not a valid int", "e.g. 18"),
        ((PRIMARY, PRIMARY + "port = true\n"), "[primary] port = true is not a valid int", "e.g. 22"),
        (("port = 2222", "port = false"), "[secondary] port = false is not a valid int", "e.g. 22"),
        (("major = 18", "major = 1.8e1"), "[postgresql] major = 18.0 is not a valid int", "e.g. 18"),
    ],
    ids=["major-true", "port-true", "port-false", "major-float"],
)
def test_a_boolean_is_not_a_number(tmp_path, edit, named, hint):
    message = error_of(tmp_path, edit)
    assert named in message and hint in message, message


@pytest.mark.parametrize(
    ("edit", "named", "hint"),
    [
        (("port = 2222", "port = 0"), "[secondary] port = 0 is not a TCP port", "1 to 65535"),
        (("port = 2222", "port = 65536"), "[secondary] port = 65536 is not a TCP port", "1 to 65535"),
        (("port = 2222", "port = -22"), "[secondary] port = -22 is not a TCP port", "1 to 65535"),
        (("major = 18", "major = 9"), "[postgresql] major = 9 is not a PostgreSQL major", "from 10 to 99"),
        (("major = 18", "major = 180"), "[postgresql] major = 180 is not a PostgreSQL major", "from 10 to 99"),
    ],
    ids=["port-0", "port-65536", "port-negative", "major-9", "major-180"],
)
def test_a_number_out_of_range_is_named_with_the_range(tmp_path, edit, named, hint):
    message = error_of(tmp_path, edit)
    assert named in message and hint in message, message


@pytest.mark.parametrize("value", ["apt", "PGDG", "pgdg "])
def test_package_source_must_be_pgdg_or_distro(tmp_path, value):
    message = error_of(tmp_path, ('package_source = "pgdg"', f'package_source = "{value}"'))
    assert f"[postgresql] package_source = {value!r}" in message and '"pgdg" or "distro"' in message, message


@pytest.mark.parametrize(
    "value",
    ["-oProxyCommand=touch /tmp/x", "Root", "1st", ".hidden", "ecs user", "ecs@user", "a" * 33, "ecs;id", "ecs-user\n"],
)
def test_user_must_be_a_login_name(tmp_path, value):
    message = error_of(tmp_path, ('user = "ecs-user"', f"user = {toml_string(value)}"))
    assert f"[primary] user = {value!r} is not a login name" in message and "e.g. ecs-user" in message, message


def toml_string(value: str) -> str:
    """`value` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


# Values that would reach a shell or ssh's own parsing: each must be refused for what it is not.
HOSTILE = [
    "fe80::1%x;sudo${IFS}id;#",  # ipaddress takes any scope id
    "fe80::1%eth0",
    "a;id$(x)",
    "-oProxyCommand=touch /tmp/x",
    "203.0.113.10 -v",
    "host\tname",
    " 203.0.113.10",
    "db`id`.example.com",
    "db.example.com%h",
    "a@b",
    "203.0.113.10\n",
    "-db.example.com",
    "db-.example.com",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_ssh_address_must_be_a_host_name_or_an_ip_address(tmp_path, value):
    text = value
    message = error_of(tmp_path, ('ssh_address = "203.0.113.10"', f"ssh_address = {toml_string(text)}"))
    assert f"[primary] ssh_address = {text!r} is not a host name or an IP address" in message, message
    assert "the address the test runner SSHes to" in message


@pytest.mark.parametrize("value", [*HOSTILE, "db-2", "192.168.1.256", "192.168.1.10/24"])
def test_private_address_must_be_an_ip_address_without_a_scope_id(tmp_path, value):
    text = value
    edit = ('private_address = "192.168.1.20"', f"private_address = {toml_string(text)}")
    message = error_of(tmp_path, edit)
    assert f"[secondary] private_address = {text!r} is not an IP address" in message, message
    assert "e.g. 192.168.1.10" in message


@pytest.mark.parametrize(
    "value",
    [
        "-oProxyCommand=touch /tmp/x",
        "ecs-user@bastion -v",
        "",
        "a@b;c",
        "ecs-user@bastion:22,other",
        "ecs-user@bastion:0",
        "ecs-user@bastion:ssh",
        "Root@bastion",
        "ecs-user@2001:db8::1",
        "ecs-user@[bastion]:22",
        "ecs-user@[fe80::1%x]:22",
        "ecs-user@bastion%h",
        "ecs-user@@bastion",
    ],
)
def test_proxy_jump_must_be_one_user_at_host_colon_port(tmp_path, value):
    message = error_of(tmp_path, (PRIMARY, PRIMARY + f"proxy_jump = {toml_string(value)}\n"))
    assert f"[primary] proxy_jump = {value!r}" in message, message
    assert "e.g. ecs-user@bastion.example.com:22" in message, message


@pytest.mark.parametrize(
    "value", ["bastion", "ecs-user@bastion.example.com", "bastion:2222", "ecs-user@[2001:db8::1]:22", "10.0.0.5"]
)
def test_proxy_jump_takes_every_form_of_one_hop(tmp_path, value):
    text = GOOD.replace(PRIMARY, PRIMARY + f"proxy_jump = {toml_string(value)}\n")
    assert Inventory.load(write(tmp_path, text)).hosts["primary"].proxy_jump == value


@pytest.mark.parametrize("value", ["db1.example.com", "db_1", "2001:db8::10", "localhost"])
def test_ssh_address_takes_host_names_and_addresses(tmp_path, value):
    text = GOOD.replace(PRIMARY, f"ssh_address = {toml_string(value)}\n")
    assert Inventory.load(write(tmp_path, text)).hosts["primary"].ssh_address == value


def test_known_hosts_must_exist(tmp_path):
    message = error_of(tmp_path, (PRIMARY, PRIMARY + 'known_hosts = "nowhere/known_hosts"\n'))
    assert "[primary] known_hosts = 'nowhere/known_hosts': no such file" in message, message
    assert str(tmp_path / "nowhere" / "known_hosts") in message and "relative to the inventory's directory" in message


def test_a_missing_relative_key_names_where_it_was_looked_for(tmp_path):
    message = error_of(tmp_path, ('key = "KEY"', 'key = "keys/absent"'))
    assert "[primary] key = 'keys/absent': no such file" in message, message
    assert str(tmp_path / "keys" / "absent") in message and "relative to the inventory's directory" in message


def test_the_same_private_address_twice_is_refused(tmp_path):
    message = error_of(tmp_path, ('private_address = "192.168.1.20"', 'private_address = "192.168.1.10"'))
    assert "same private_address = '192.168.1.10'" in message and "its own VPC address" in message, message


def test_the_same_ssh_endpoint_twice_is_refused(tmp_path):
    text = GOOD.replace(SECONDARY, 'ssh_address = "203.0.113.10"\n').replace("port = 2222", "port = 22")
    with pytest.raises(InventoryError, match=r"\[primary\] and \[secondary\] are the same host .*its own host"):
        Inventory.load(write(tmp_path, text))


def test_relative_key_and_known_hosts_are_found_next_to_the_inventory(tmp_path, monkeypatch):
    here = tmp_path / "inventories"
    here.mkdir()
    (here / "ecs_key").write_text("not a real key")
    (here / "known_hosts").write_text("203.0.113.10 ssh-ed25519 AAAA\n")
    text = GOOD.replace('key = "KEY"', 'key = "ecs_key"').replace(
        PRIMARY, PRIMARY + 'known_hosts = "known_hosts"\nproxy_jump = "ecs-user@bastion.example.com:22"\n'
    )
    (here / "inventory.toml").write_text(text)
    monkeypatch.chdir(tmp_path)  # the working directory has no ecs_key: only the inventory's directory does
    inventory = Inventory.load("inventories/inventory.toml")
    primary, secondary = inventory.hosts["primary"], inventory.hosts["secondary"]
    assert primary.key == secondary.key == here / "ecs_key"
    assert primary.known_hosts == here / "known_hosts" and secondary.known_hosts is None
    assert primary.proxy_jump == "ecs-user@bastion.example.com:22" and secondary.proxy_jump is None


def test_a_key_under_home_still_expands(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "id_ed25519").write_text("not a real key")
    inventory = Inventory.load(write(tmp_path, GOOD.replace('key = "KEY"', 'key = "~/.ssh/id_ed25519"')))
    assert inventory.hosts["primary"].key == tmp_path / "home" / ".ssh" / "id_ed25519"


def test_host_entry_keeps_its_positional_fields():
    entry = HostEntry("primary", "203.0.113.10", "192.168.1.10", "ecs-user", Path("key"))
    assert (entry.port, entry.known_hosts, entry.proxy_jump) == (22, None, None)


def test_the_example_inventory_names_only_known_fields(tmp_path):
    """inventory.example.toml, with its commented-out optional fields switched on, is a valid inventory."""
    example = (Path(__file__).parent.parent / "inventory.example.toml").read_text()
    text = example.replace("# known_hosts =", "known_hosts =").replace("# proxy_jump =", "proxy_jump =")
    assert "known_hosts =" in text and "proxy_jump =" in text
    (tmp_path / "ecs_key").write_text("not a real key")
    (tmp_path / "known_hosts").write_text("")
    text = text.replace('"~/.ssh/ecs_key"', '"ecs_key"')
    (tmp_path / "inventory.toml").write_text(text)
    inventory = Inventory.load(tmp_path / "inventory.toml")
    assert inventory.hosts["primary"].known_hosts == tmp_path / "known_hosts"


def test_ssh_hosts_use_key_batch_mode_shared_connection_and_stdin(tmp_path):
    host = inventory_host(Inventory.load(write(tmp_path, GOOD)).hosts["secondary"], tmp_path)
    assert isinstance(host, SshHost)
    assert host.address == "192.168.1.20" and host.url == "ssh://ecs-user@203.0.113.20:2222"
    argv = host._transport(["bash", "-s"])
    assert argv[0] == "ssh" and "-T" in argv and argv[-1] == "bash -s"
    options = " ".join(argv)
    for option in ("BatchMode=yes", "ControlMaster=auto", "PasswordAuthentication=no", "-p 2222"):
        assert option in options


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('key = "KEY"', 'key = "~nosuchuser/id"'), "~nosuchuser names no user of this machine"),
        (("major = 18", "major = " + "9" * 5000), "a value TOML cannot hold here"),
        (("major = 18", "major = 18\nshared_archive = " + "[" * 5000 + "]" * 5000), "nested too deep"),
    ],
    ids=["unknown-user-home", "huge-integer", "deep-arrays"],
)
def test_input_python_cannot_take_is_an_inventory_error_not_a_traceback(tmp_path, edit, words):
    assert words in error_of(tmp_path, edit)


def proxy_command(argv: list[str]) -> list[str]:
    """The ProxyCommand of an ssh argv as the words /bin/sh gives the hop's ssh (after ssh's % expansion)."""
    (option,) = [a for a in argv if a.startswith("ProxyCommand=")]
    command = option.removeprefix("ProxyCommand=").replace("%h", "HOST").replace("%p", "PORT").replace("%%", "%")
    return shlex.split(command)


def test_the_bastion_hop_gets_the_hosts_key_checks_and_batch_mode(tmp_path):
    (tmp_path / "my keys").mkdir()
    (tmp_path / "my keys" / "id%1").write_text("not a real key")
    (tmp_path / "known_hosts").write_text("")
    extra = 'proxy_jump = "jump@bastion.example.com:2222"\nknown_hosts = "known_hosts"\n'
    text = GOOD.replace(PRIMARY, PRIMARY + extra)
    text = text.replace('key = "KEY"', 'key = "my keys/id%1"', 1)
    host = inventory_host(Inventory.load(write(tmp_path, text)).hosts["primary"], tmp_path / "state")
    argv = host._transport(["bash", "-s"])
    assert not any(a.startswith("ProxyJump") for a in argv)  # OpenSSH's ProxyJump starts its hop bare
    hop = proxy_command(argv)
    key = str(tmp_path / "my keys" / "id%%1")  # as the hop's ssh reads it: %% is a literal %
    assert hop[:3] == ["ssh", "-i", key]
    options = {hop[i + 1] for i, word in enumerate(hop) if word == "-o"}
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "PasswordAuthentication=no"} <= options
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in options
    assert not any(o.startswith(("ControlMaster", "ControlPath", "ProxyCommand")) for o in options)
    assert hop[-8:] == ["-l", "jump", "-p", "2222", "-W", "HOST:PORT", "--", "bastion.example.com"]
    assert argv[argv.index("-i") + 1] == key and argv[argv.index("-p") + 1] == "22"


def test_a_bastion_in_brackets_and_without_user_or_port(tmp_path):
    text = GOOD.replace(PRIMARY, PRIMARY + 'proxy_jump = "[2001:db8::1]"\n')
    host = inventory_host(Inventory.load(write(tmp_path, text)).hosts["primary"], tmp_path / "state")
    assert proxy_command(host._transport(["true"]))[-4:] == ["-W", "HOST:PORT", "--", "2001:db8::1"]
