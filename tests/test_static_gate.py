"""Static gate: for every image under images/, the runbook blocks its OS family would run.

No Docker. This is the only check the Alibaba Cloud Linux and CentOS sections get on the
project's machines (their base images and the PGDG repository cannot be reached), and a cheap
first check of the Debian ones. For each image, every block of every part, for the image's
family and package-source variant, is rendered with made-up live values and must:

- leave no example value or placeholder behind, and bind every major version it names;
- be valid bash (`bash -n`) and pass `shellcheck -s bash -S warning`;
- as a `conf` block, consist of `key = value` lines (postgresql.conf) or hba records
  (pg_hba.conf), and append to the file the harness's layout for that family names.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Mapping

import pytest

from harness import project
from harness.images import ImageProfile
from harness.layout import layout_for
from harness.runbook import Block, Runbook, bind, parse_runbook, parse_text, script, values

RUNBOOK = parse_runbook(project.current().default_runbook)
PROFILES = {name: ImageProfile.load(name) for name in project.current().image_names()}
EXAMPLES = ("192.168.1.10", "192.168.1.20", "YOUR_SECURE_PASSWORD")
REQUIRED_SETUP = ("primary-install", "primary-start", "secondary-basebackup", "secondary-start")
# A major no block may contain: rendering with it shows every version the bindings missed.
SENTINEL_MAJOR = "99"

# Placeholders a runbook writer might leave in a block: template braces, <angle> words,
# YOUR_* values, xxxxx, and any address of the guide's example network.
PLACEHOLDER = re.compile(r"\{\{|\}\}|<[A-Za-z][\w.-]*(?: [\w.-]+)*>|\bYOUR_[A-Z_]+\b|\bx{4,}\b|\b192\.168\.1\.\d+\b")
# ${NAME} with nothing else in the braces: a placeholder unless the script assigns NAME or
# the environment provides it.
BRACED = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
ENVIRONMENT = {"HOME", "PATH", "USER", "LOGNAME", "PWD", "HOSTNAME", "SHELL", "LANG", "TMPDIR"}
# Where a PostgreSQL major appears: postgresql-18, postgresql18-server, postgresql@18-main,
# /etc/postgresql/18/main, /usr/pgsql-18/bin, /var/lib/pgsql/18/data, postgresql-18.service.
VERSIONED = re.compile(r"(?:postgresql[-@/]?|pgsql[-/])(\d+)(?![\d.]\d)")

CONF_LINE = re.compile(
    r"""^(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"""
    r"""(?P<value>'(?:[^'\\]|''|\\.)*'|[^\s'#]+)\s*(?:\#.*)?$"""
)
HBA_TYPES = {"local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc"}
HBA_METHODS = {
    "trust",
    "reject",
    "scram-sha-256",
    "md5",
    "password",
    "gss",
    "sspi",
    "ident",
    "peer",
    "ldap",
    "radius",
    "cert",
    "pam",
    "bsd",
    "oauth",
}
HBA_ADDRESS_WORDS = {"all", "samehost", "samenet"}


ADDRESSES = {"primary": "10.0.0.1", "secondary": "10.0.0.2"}


def live_values(profile: ImageProfile, pg_major: str | None = None) -> dict[str, str]:
    return values.live_values(ADDRESSES, "pw", int(pg_major or profile.pg_major))


def blocks_for(runbook: Runbook, profile: ImageProfile) -> list[Block]:
    """Every block an image's hosts would run, all parts, the image's package-source variant."""
    return runbook.select(family=profile.family, parts=tuple(runbook.parts()), variant=profile.package_source)


# --- the checkers -------------------------------------------------------------------------------


def leftovers(text: str) -> list[str]:
    """Example values and placeholders that binding left in `text`."""
    found = [f"example value {example!r} left" for example in EXAMPLES if example in text]
    found += [f"placeholder {m.group(0)!r} left" for m in PLACEHOLDER.finditer(text)]
    for match in BRACED.finditer(text):
        name = match.group(1)
        if name not in ENVIRONMENT and not re.search(rf"(?<![\w$]){name}=", text):
            found.append(f"placeholder {match.group(0)!r} left (nothing assigns {name})")
    return sorted(set(found))


def unbound_versions(text: str, pg_major: str) -> list[str]:
    """Major versions in package names and paths that are not the bound `pg_major`."""
    return sorted({f"unbound major in {m.group(0)!r}" for m in VERSIONED.finditer(text) if m.group(1) != pg_major})


@functools.cache
def bash_syntax(text: str) -> tuple[str, ...]:
    done = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    return () if done.returncode == 0 else (f"bash -n: {done.stderr.strip()}",)


@functools.cache
def shellcheck(text: str) -> tuple[str, ...]:
    done = subprocess.run(
        ["shellcheck", "-s", "bash", "-S", "warning", "-f", "json", "-"], input=text, text=True, capture_output=True
    )
    if done.returncode not in (0, 1) or not done.stdout.strip():
        return () if done.returncode == 0 else (f"shellcheck failed to run: {done.stderr.strip()}",)
    lines = text.splitlines()
    return tuple(
        f"shellcheck SC{c['code']} ({c['level']}) line {c['line']}: {c['message']} | "
        f"{lines[c['line'] - 1].strip() if 0 < c['line'] <= len(lines) else ''}"
        for c in json.loads(done.stdout)
    )


def postgresql_conf_problems(body: str) -> list[str]:
    problems = []
    for number, line in enumerate(body.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not CONF_LINE.match(stripped):
            problems.append(f"conf line {number} is not `key = value`: {line!r}")
    return problems


def pg_hba_problems(body: str) -> list[str]:
    """Each record: TYPE DATABASE USER [ADDRESS [MASK]] METHOD [name=value ...]."""
    problems = []
    for number, line in enumerate(body.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"pg_hba line {number} {line.strip()!r}"
        if fields[0] not in HBA_TYPES:
            problems.append(f"{where}: unknown connection type {fields[0]!r}")
            continue
        core = 4 if fields[0] == "local" else 5
        if core == 5 and len(fields) > 5 and _is_ip(fields[3]) and _is_ip(fields[4]):
            core = 6  # address and netmask in two fields
        if len(fields) < core or not all("=" in option for option in fields[core:]):
            problems.append(f"{where}: {len(fields)} fields, expected {core} (then only name=value options)")
            continue
        if fields[core - 1] not in HBA_METHODS:
            problems.append(f"{where}: unknown auth method {fields[core - 1]!r}")
        address = fields[3]
        if core == 5 and address not in HBA_ADDRESS_WORDS and not re.search(r"[A-Za-z]", address):
            try:
                if "/" not in address:
                    raise ValueError("no /mask, and no netmask field after it")
                ipaddress.ip_network(address, strict=False)
            except ValueError as exc:
                problems.append(f"{where}: bad address {address!r}: {exc}")
    return problems


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


PASSWORD = "YOUR_SECURE_PASSWORD"
HERE_DOCUMENT = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")


def password_exposures(body: str) -> list[str]:
    """Where a block shows the password to anything but its own command's stdin: on a command line
    (argv; for a builtin such as echo, the shell history), or in a here-document that bash reads with
    its history on (bash records a here-document's lines). Only `set +o history` turns it off."""
    found: list[str] = []
    history, ends = True, None
    for number, line in enumerate(body.splitlines(), 1):
        if ends is not None:  # inside a here-document
            if line == ends:
                ends = None
            elif PASSWORD in line and history:
                found.append(f"line {number}: in a here-document read with the shell history on")
            continue
        if line.strip() in ("set +o history", "set -o history"):
            history = line.strip() == "set -o history"
        if PASSWORD in line:
            found.append(f"line {number}: on a command line: {line.strip()}")
        if match := HERE_DOCUMENT.search(line):
            ends = match.group(2)
    if not history:
        found.append("the block leaves the shell history off")
    return found


def conf_problems(block: Block, body: str, path: str) -> list[str]:
    if path.endswith("pg_hba.conf"):
        return pg_hba_problems(body)
    return postgresql_conf_problems(body)


def gate(block: Block, runbook: Runbook, values: Mapping[str, str], *, lint: bool = True) -> list[str]:
    """Everything wrong with `block` as rendered with `values`; empty when it passes the gate."""
    rendered = script(block, runbook.bindings, values)
    problems = leftovers(rendered)
    problems += bash_syntax(rendered)
    if lint and shutil.which("shellcheck"):
        problems += shellcheck(rendered)
    if block.kind == "conf":
        problems += conf_problems(
            block, bind(block.body, runbook.bindings, values), bind(block.file or "", runbook.bindings, values)
        )
    return problems


# --- the real runbook, per image ----------------------------------------------------------------

CASES = [
    pytest.param(name, block, id=f"{name}-{block.step}" + (f"-{block.variant}" if block.variant else ""))
    for name, profile in PROFILES.items()
    for block in blocks_for(RUNBOOK, profile)
]
CONF_CASES = [case for case in CASES if case.values[1].kind == "conf"]
needs_shellcheck = pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")


def test_every_image_is_covered():
    assert set(PROFILES) >= {"debian-12", "alinux-3", "centos-8", "alinux-2", "centos-7"}
    assert {p.family for p in PROFILES.values()} == {"debian", "el8", "el7"}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_image_family_has_the_essential_setup_steps(name):
    profile = PROFILES[name]
    steps = {b.step for b in RUNBOOK.select(family=profile.family, variant=profile.package_source)}
    missing = [step for step in REQUIRED_SETUP if step not in steps]
    assert not missing, f"{name} ({profile.family}, {profile.package_source}): no setup block for {missing}"


@pytest.mark.parametrize(("name", "block"), CASES)
def test_block_renders_without_leftovers(name, block):
    rendered = script(block, RUNBOOK.bindings, live_values(PROFILES[name]))
    assert leftovers(rendered) == [], f"{block.where(RUNBOOK.path)}\n{rendered}"


@pytest.mark.parametrize(("name", "block"), CASES)
def test_block_binds_every_major_version(name, block):
    rendered = script(block, RUNBOOK.bindings, live_values(PROFILES[name], SENTINEL_MAJOR))
    assert unbound_versions(rendered, SENTINEL_MAJOR) == [], f"{block.where(RUNBOOK.path)}\n{rendered}"


@pytest.mark.parametrize(("name", "block"), CASES)
def test_block_is_valid_bash(name, block):
    rendered = script(block, RUNBOOK.bindings, live_values(PROFILES[name]))
    assert bash_syntax(rendered) == (), f"{block.where(RUNBOOK.path)}\n{rendered}"


@needs_shellcheck
@pytest.mark.parametrize(("name", "block"), CASES)
def test_block_passes_shellcheck(name, block):
    rendered = script(block, RUNBOOK.bindings, live_values(PROFILES[name]))
    assert shellcheck(rendered) == (), f"{block.where(RUNBOOK.path)}\n{rendered}"


@pytest.mark.parametrize(("name", "block"), [case for case in CASES if PASSWORD in case.values[1].body])
def test_the_password_is_typed_only_on_stdin_with_the_shell_history_off(name, block):
    """No argv, no sudo log and no shell history sees it (defect 17; scenarios/test_password_history.py)."""
    assert password_exposures(block.body) == [], block.where(RUNBOOK.path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"set +o history\nsudo -u postgres psql <<'SQL'\nPASSWORD '{PASSWORD}';\nSQL\nset -o history\n", None),
        (f"sudo -u postgres psql <<'SQL'\nPASSWORD '{PASSWORD}';\nSQL\n", "history on"),
        (f'echo "h:5432:*:u:{PASSWORD}" | sudo -u postgres tee f\n', "command line"),
        (f"set +o history\necho {PASSWORD} | cat\nset -o history\n", "command line"),
        (f"set +o history\ncat <<EOF\n{PASSWORD}\nEOF\n", "leaves the shell history off"),
    ],
    ids=["heredoc-history-off", "heredoc-history-on", "echo", "echo-history-off", "history-left-off"],
)
def test_password_exposures_checker(body, expected):
    problems = password_exposures(body)
    if expected is None:
        assert problems == []
    else:
        assert problems and any(expected in p for p in problems), problems


@pytest.mark.parametrize(("name", "block"), CONF_CASES)
def test_conf_block_lines_parse(name, block):
    values = live_values(PROFILES[name])
    body, path = bind(block.body, RUNBOOK.bindings, values), bind(block.file or "", RUNBOOK.bindings, values)
    assert conf_problems(block, body, path) == [], f"{block.where(RUNBOOK.path)}\n{body}"


@pytest.mark.parametrize(("name", "block"), CONF_CASES)
def test_conf_block_appends_to_the_familys_config_file(name, block):
    profile = PROFILES[name]
    layout = layout_for(profile.family, profile.pg_major)
    path = bind(block.file or "", RUNBOOK.bindings, live_values(profile))
    assert path in (layout.postgresql_conf, layout.pg_hba_conf), block.where(RUNBOOK.path)


def test_each_family_uses_one_example_major():
    """`18` and `15` both bind to pg_major: a Debian or el8 block with a stray 15 would be rebound."""
    majors = [b for b in RUNBOOK.bindings if b.target == "pg_major"]
    for family in ("debian", "el8", "el7"):
        used = {
            binding.example
            for block in RUNBOOK.blocks
            if family in block.os
            for binding in majors
            if binding.pattern.search(block.body) or binding.pattern.search(block.file or "")
        }
        assert len(used) <= 1, f"{family} blocks name the example majors {sorted(used)}"


# --- the gate catches what it should ------------------------------------------------------------

TABLE = """\
| Example value | Meaning | Bound to |
|---|---|---|
| `192.168.1.10` | primary | `primary.address` |
| `192.168.1.20` | secondary | `secondary.address` |
| `YOUR_SECURE_PASSWORD` | password | `secret.replication_password` |
| `18` | major | `pg_major` |
"""


def tiny(*blocks: str) -> Runbook:
    return parse_text(TABLE + "\n" + "\n".join(blocks), "tiny.md")


def gate_for(runbook: Runbook, family: str) -> dict[str, list[str]]:
    bound = values.live_values(ADDRESSES, "pw", 18)
    return {b.step: gate(b, runbook, bound) for b in runbook.select(family=family, parts=tuple(runbook.parts()))}


def test_gate_reports_an_unclosed_quote_in_an_el8_only_block():
    runbook = tiny(
        '```sh {"step":"primary-install","host":"primary","os":["debian"]}\n'
        "sudo apt-get install -y postgresql-18\n```\n",
        '```sh {"step":"primary-install","host":"primary","os":["el8"]}\n'
        'sudo dnf install -y "postgresql18-server\n```\n',
    )
    assert gate_for(runbook, "debian") == {"primary-install": []}
    problems = gate_for(runbook, "el8")["primary-install"]
    assert any(p.startswith("bash -n:") and "unexpected EOF" in p for p in problems), problems


def test_gate_reports_an_example_value_outside_the_binding_table():
    runbook = tiny(
        '```sh {"step":"secondary-basebackup","host":"secondary","os":["el8"]}\n'
        "sudo -u postgres pg_basebackup -h 192.168.1.100 -D /var/lib/pgsql/18/data\n```\n"
    )
    assert any("192.168.1.10" in p for p in gate_for(runbook, "el8")["secondary-basebackup"])


def test_gate_reports_placeholders_and_unbound_majors():
    assert leftovers("psql -h {{ primary }} -U <replication user> -p ${PGPORT}") == sorted(
        [
            "placeholder '{{' left",
            "placeholder '}}' left",
            "placeholder '<replication user>' left",
            "placeholder '${PGPORT}' left (nothing assigns PGPORT)",
        ]
    )
    assert leftovers('. /etc/os-release\n[ "${VERSION_ID%%.*}" = 8 ] && echo "${HOME}"') == []
    assert unbound_versions("sudo dnf install -y postgresql16-server /usr/pgsql-99/bin", "99") == [
        "unbound major in 'postgresql16'"
    ]


@needs_shellcheck
def test_gate_reports_shellcheck_warnings():
    """A warning-level finding (here SC2154, a misspelt variable) fails the gate."""
    problems = shellcheck('primary_address=10.0.0.1\npg_isready -h "$primary_adress"\n')
    assert any("SC2154" in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/x/postgresql.conf", "# comment\n\nwal_level = replica\nlisten_addresses = '*'  # all\n", None),
        ("/x/postgresql.conf", "archive_command = 'cp %p /a/%f\n", "not `key = value`"),
        ("/x/postgresql.conf", "wal_level replica\n", "not `key = value`"),
        ("/x/pg_hba.conf", "host replication replica_user 10.0.0.2/32 scram-sha-256\n", None),
        ("/x/pg_hba.conf", "local all postgres peer map=x\n", None),
        ("/x/pg_hba.conf", "host replication replica_user scram-sha-256\n", "fields"),
        ("/x/pg_hba.conf", "host replication replica_user 10.0.0.2 scram-sha-256\n", "no /mask"),
        ("/x/pg_hba.conf", "hots replication replica_user 10.0.0.2/32 scram-sha-256\n", "connection type"),
        ("/x/pg_hba.conf", "host replication replica_user 10.0.0.2/32 scram\n", "auth method"),
    ],
    ids=[
        "conf-ok",
        "conf-open-quote",
        "conf-no-equals",
        "hba-ok",
        "hba-local-ok",
        "hba-4",
        "hba-bare-ip",
        "hba-type",
        "hba-method",
    ],
)
def test_conf_checkers(path, body, expected):
    block = tiny(f'```conf {{"step":"c","host":"primary","os":["el8"],"file":"{path}"}}\n{body}```\n').blocks[0]
    problems = conf_problems(block, block.body, path)
    if expected is None:
        assert problems == []
    else:
        assert problems and all(expected in p for p in problems), problems
