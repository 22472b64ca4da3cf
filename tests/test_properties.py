"""Whatever the input (an inventory, a runbook, command-line arguments), the harness answers with
success or a HarnessError that says what is wrong, never another exception (a traceback is a bug).

Random and hostile inputs from hypothesis, derandomized and bounded so the whole file takes seconds.
Nothing here reaches a host or a Docker engine: both are replaced by ones that do not answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import project
from harness.errors import HarnessError, NoDockerEngine
from harness.hosts.base import HostUnreachable
from harness.inventory import FIELDS, Inventory, InventoryError, ip_address
from harness.runbook import RunbookError, parse_text, values
from harness.runbook.render import INERT

BOUNDED = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HOSTILE = [
    "fe80::1%x;sudo${IFS}id;#",
    "a;id$(x)",
    "a@b;c",
    "-oProxyCommand=id",
    "`id`",
    "x\ny",
    "~nosuchuser/id",
    "",
    " ",
    "192.168.1.10",
    "10.0.0.2",
    "ecs-user",
    "bastion.example.com:22",
    "[2001:db8::1]:22",
    "%h",
    "\x00",
    "ä",
]


class Raw(str):
    """A value written into the TOML file as it is (what no Python value serializes to)."""


RAW = [Raw("9" * 5000), Raw("[" * 5000 + "]" * 5000), Raw("{ a = 1 }"), Raw("1979-05-27T07:32:00Z")]
scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
values_ = st.one_of(
    st.sampled_from(HOSTILE),
    st.sampled_from(HOSTILE),  # twice as likely as the rest: what an attacker would write
    st.sampled_from(RAW),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
)


def toml_value(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


GOOD = {
    "postgresql": {"major": 18, "package_source": "pgdg"},
    "primary": {"ssh_address": "203.0.113.10", "private_address": "192.168.1.10", "user": "ecs-user", "key": "KEY"},
    "secondary": {"ssh_address": "203.0.113.20", "private_address": "192.168.1.20", "user": "ecs-user", "key": "KEY"},
}


@st.composite
def inventories(draw) -> str:
    """An inventory close to a good one with some fields replaced or added, or any text at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    tables = {name: dict(fields) for name, fields in GOOD.items()}
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):  # mostly one bad field in a good inventory
        table = draw(st.sampled_from(sorted(tables)))
        key = draw(st.sampled_from([*FIELDS[table], "typo"]))
        tables[table][key] = draw(values_)
    lines = []
    for name, fields in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


@BOUNDED
@given(text=inventories())
def test_any_inventory_loads_or_is_an_inventory_error(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("inventory")
    (folder / "key").write_text("not a real key")
    path = folder / "inventory.toml"
    path.write_text(text.replace('"KEY"', json.dumps(str(folder / "key"))), errors="surrogatepass")
    try:
        inventory = Inventory.load(path)
    except InventoryError as exc:
        assert str(exc).startswith(f"inventory {path}"), exc
        return
    for host in inventory.hosts.values():  # what it accepted reaches no shell as more than one plain word
        assert ip_address(host.private_address) is not None and INERT.fullmatch(host.private_address)
        assert not host.ssh_address.startswith("-") and INERT.fullmatch(host.ssh_address)


FENCES = ["```", "~~~", "````"]
attrs = st.one_of(
    st.fixed_dictionaries(
        {"step": st.sampled_from(["a", "b-1", "", "A", 1]), "host": st.sampled_from(["primary", "x"])},
        optional={"os": values_, "part": values_, "file": values_, "expect": st.sampled_from(["(", "ok", "[a-"])},
    ).map(json.dumps),
    st.text(max_size=40).map(lambda t: "{" + t),
    st.sampled_from([1, 50, 5000, 100_000]).map(lambda depth: '{"step": ' + "[" * depth + "]" * depth + "}"),
    st.just('{"step": ' + "1" * 5000 + "}"),
)


@st.composite
def runbooks(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["prose", "fence", "table"]))
        if kind == "prose":
            parts.append(draw(st.text(max_size=60)))
        elif kind == "table":
            row = draw(st.lists(st.text(alphabet="`ab| 1.", max_size=12), min_size=1, max_size=4))
            parts.append("| Example value | Meaning | Bound to |\n|---|---|---|\n| " + " | ".join(row) + " |\n")
        else:
            fence = draw(st.sampled_from(FENCES))
            lang = draw(st.sampled_from(["sh", "conf", "text", "", "sh\t", "sh "]))
            body = draw(st.text(max_size=60))
            closing = fence if draw(st.booleans()) else ""
            parts.append(f"{fence}{lang}{draw(attrs)}\n{body}\n{closing}\n")
    return "\n".join(parts)


@BOUNDED
@given(text=runbooks())
def test_any_runbook_parses_or_is_a_runbook_error(text):
    try:
        book = parse_text(text, "rb.md")
    except RunbookError as exc:
        assert str(exc), "an error with no message"
        return
    live = values.live_values({"primary": "10.0.0.1", "secondary": "10.0.0.2"}, "pw", 18)
    from harness.runbook import script

    for block in book.blocks:
        try:
            script(block, book.bindings, live)
        except RunbookError as exc:
            assert str(exc)


OPTIONS = ["--inventory", "--runbook", "--jobs", "--parts", "--image", "--artifacts", "--force", "--list", "--keep"]
ARGUMENTS = ["debian-12", "0", "-1", "3", "setup", "nosuch", "/nonexistent/file", "copy.md", "inventory.toml", "."]
ARGS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(OPTIONS), st.sampled_from(ARGUMENTS)),
        st.tuples(st.sampled_from(OPTIONS), st.text(max_size=12)),
        st.tuples(st.text(max_size=12)),
    ),
    max_size=4,
).map(lambda pairs: [word for pair in pairs for word in pair])


@pytest.fixture
def no_hosts_no_engine(monkeypatch, tmp_path):
    """No Docker engine answers, no inventory host is reachable, the artifacts go to a scratch folder."""
    from harness import containers, mutate, real_hosts
    from harness.hosts import docker

    def no_engine(*args, **kwargs):
        raise NoDockerEngine("no Docker engine answers (test)")

    def no_host(*args, **kwargs):
        raise HostUnreachable("no host answers (test)")

    monkeypatch.setattr(docker, "docker_client", no_engine)
    monkeypatch.setattr(containers, "docker_client", no_engine)
    monkeypatch.setattr(real_hosts, "ssh_hosts", no_host)
    monkeypatch.setattr(mutate, "module_parts", lambda: {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy.md").write_text(
        Path(project.current().default_runbook).read_text()
    )  # a runbook outside the project
    (tmp_path / "key").write_text("not a real key")
    good = "\n".join(f"[{n}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in f.items()) for n, f in GOOD.items())
    (tmp_path / "inventory.toml").write_text(good.replace('"KEY"', json.dumps(str(tmp_path / "key"))))


@BOUNDED
@given(command=st.sampled_from(["up", "down", "mutate"]), args=ARGS)
def test_any_command_line_succeeds_or_says_what_is_wrong(no_hosts_no_engine, capsys, command, args):
    from harness.__main__ import main

    try:
        code = main([command, *args])
    except SystemExit as exc:  # argparse's own usage error: a message naming the option, exit code 2
        assert exc.code in (0, 2)
        err = capsys.readouterr().err
        assert exc.code == 0 or "error:" in err
        return
    err = capsys.readouterr().err
    assert code in (0, 1) and (code == 0 or "FAILED: " in err) and "Traceback" not in err


def test_a_harness_error_is_what_the_properties_accept():
    """The properties above catch only HarnessError subclasses: the families they rely on are ones."""
    assert issubclass(InventoryError, HarnessError) and issubclass(RunbookError, HarnessError)
    assert Path(project.current().default_runbook).is_file()
