"""Parsing runbooks: block attributes, binding tables, patterns, selection, edits, the real runbook."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from harness import project
from harness.runbook.parse import (
    Binding,
    RunbookError,
    drop_step,
    edit_block,
    parse_runbook,
    parse_text,
)
from harness.runbook.render import bind, script
from harness.runbook.values import TARGETS
from harness.secrets import Secret

FENCE = "```"


def fence(lang: str, attrs: dict | str | None, body: str = "echo hi\n") -> str:
    """A fenced block; `attrs` as a dict is JSON-encoded, as a str is used verbatim."""
    info = lang
    if attrs is not None:
        info += " " + (attrs if isinstance(attrs, str) else json.dumps(attrs))
    return f"{FENCE}{info}\n{body}{FENCE}\n"


def sh(step: str = "s1", host: str = "primary", os=("debian",), **extra) -> str:
    return fence("sh", {"step": step, "host": host, "os": list(os), **extra})


def parse(*chunks: str):
    return parse_text("\n".join(chunks), "rb.md")


def error_of(*chunks: str) -> str:
    with pytest.raises(RunbookError) as info:
        parse(*chunks)
    return str(info.value)


# --- block attributes -------------------------------------------------------------------------


def test_required_attrs_are_read_and_part_defaults_to_setup():
    (block,) = parse(sh("install", "secondary", ("debian", "el8"))).blocks
    assert (block.step, block.host, block.os, block.kind) == ("install", "secondary", ("debian", "el8"), "sh")
    assert block.part == "setup"
    assert block.variant is None and block.expect is None and block.file is None
    assert block.body == "echo hi\n"


def test_os_may_be_a_single_string():
    (block,) = parse(fence("sh", {"step": "a", "host": "primary", "os": "el7"})).blocks
    assert block.os == ("el7",)


def test_optional_attrs_and_unknown_keys_are_kept():
    (block,) = parse(sh(part="verify", variant="pgdg", expect="^ok$", owner="me")).blocks
    assert (block.part, block.variant, block.expect) == ("verify", "pgdg", "^ok$")
    assert block.attrs["owner"] == "me"


def test_conf_block_reads_file():
    text = fence("conf", {"step": "c", "host": "primary", "os": ["debian"], "file": "/etc/x.conf"}, "a = 1\n")
    (block,) = parse(text).blocks
    assert (block.kind, block.file, block.body) == ("conf", "/etc/x.conf", "a = 1\n")


def test_fences_without_json_are_prose():
    runbook = parse(fence("text", None, "output\n"), fence("sh", None, "rm -rf /\n"), fence("", None), sh())
    assert [b.step for b in runbook.blocks] == ["s1"]


def test_block_line_is_the_one_based_fence_line_and_heading_is_recorded():
    text = "# Title\n\nprose\n\n## Install it\n\n" + sh("a") + "\n### Next\n\n" + sh("b")
    first, second = parse_text(text, "rb.md").blocks
    lines = text.splitlines()
    assert lines[first.line - 1].startswith("```sh") and '"a"' in lines[first.line - 1]
    assert lines[second.line - 1].startswith("```sh") and '"b"' in lines[second.line - 1]
    assert first.line == 7
    assert (first.heading, second.heading) == ("Install it", "Next")
    assert first.where("rb.md") == "rb.md:7"


# --- block errors name path:line --------------------------------------------------------------


def test_invalid_json_is_an_error_with_path_and_line():
    message = error_of("intro\n", fence("sh", '{"step": "a",}'))
    assert "rb.md:3" in message and "not valid JSON" in message


@pytest.mark.parametrize("missing", ["step", "host", "os"])
def test_missing_required_attr_is_an_error(missing):
    attrs = {"step": "a", "host": "primary", "os": ["debian"]}
    del attrs[missing]
    message = error_of(fence("sh", attrs))
    assert "rb.md:1" in message and missing in message


def test_unknown_host_is_an_error():
    message = error_of(sh(host="tertiary"))
    assert "rb.md:1" in message and "tertiary" in message


def test_unknown_os_family_is_an_error():
    message = error_of(sh(os=("debian", "arch")))
    assert "rb.md:1" in message and "arch" in message


def test_unknown_language_is_an_error():
    message = error_of(fence("python", {"step": "a", "host": "primary", "os": ["debian"]}))
    assert "rb.md:1" in message and "python" in message


def test_conf_block_without_file_is_an_error():
    message = error_of(fence("conf", {"step": "a", "host": "primary", "os": ["debian"]}))
    assert "rb.md:1" in message and "file" in message


def test_sh_block_with_file_is_an_error():
    message = error_of(sh(file="/etc/x.conf"))
    assert "rb.md:1" in message and "file" in message


def test_bad_expect_regex_is_an_error():
    message = error_of(sh(expect="(unclosed"))
    assert "rb.md:1" in message and "expect" in message


@pytest.mark.parametrize("step", [12, "", None, True, ["a"], "Primary-install", "-a", "a b", "a_b", "é"])
def test_step_must_be_a_lower_case_id(step):
    message = error_of("intro\n", fence("sh", {"step": step, "host": "primary", "os": ["debian"]}))
    assert message.startswith(f"rb.md:3: step {json.dumps(step)}: not a step id"), message
    assert 'lower-case letters, digits and "-"' in message and '"primary-install"' in message


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("host", 1, "one of ('primary', 'secondary')"),
        ("host", ["primary"], "one of ('primary', 'secondary')"),
        ("expect", 0, "a regex on the step's stdout"),
        ("expect", ["ok"], "a regex on the step's stdout"),
        ("expect", "", "a regex on the step's stdout"),
        ("file", True, "the file a `conf` block appends to"),
        ("part", 2, 'e.g. "verify"'),
        ("variant", None, "one of ('pgdg', 'distro')"),
        ("action", {"promote": True}, "one of ('fence', 'promote', 'rewind', 'packages')"),
    ],
)
def test_string_attributes_must_be_strings(key, value, hint):
    attrs = {"step": "a", "host": "primary", "os": ["debian"], key: value}
    message = error_of("intro\n", fence("sh", attrs))
    assert message.startswith(f'rb.md:3: step a: "{key}": {json.dumps(value)} must be a non-empty JSON string'), message
    assert hint in message, message


@pytest.mark.parametrize("os", [7, None, [], ["debian", 8], [["debian"]], {"debian": True}])
def test_os_must_be_a_family_or_a_list_of_them(os):
    message = error_of(fence("sh", {"step": "a", "host": "primary", "os": os}))
    assert message.startswith(f'rb.md:1: step a: "os": {json.dumps(os)} must be a family'), message
    assert "('debian', 'el8', 'el7')" in message


@pytest.mark.parametrize("part", ["Verify", "1st", "-verify", "slot_limit", "verify all"])
def test_part_must_be_a_lower_case_name(part):
    message = error_of(sh(part=part))
    assert message.startswith(f"rb.md:1: step s1: part {part!r} is not a part name"), message
    assert 'starting with a letter (e.g. "verify")' in message


@pytest.mark.parametrize("variant", ["x", "PGDG", "apt"])
def test_variant_must_be_pgdg_or_distro(variant):
    message = error_of(sh(variant=variant))
    assert message == f"rb.md:1: step s1: variant {variant!r} is not one of ('pgdg', 'distro')"


def test_duplicate_step_for_same_family_and_variant_is_an_error():
    message = error_of(sh("a", variant="pgdg"), sh("a", os=("el8", "debian"), variant="pgdg"))
    assert "rb.md:5" in message and "'a'" in message and "line 1" in message


def test_same_step_with_two_variants_is_allowed():
    assert len(parse(sh("a", variant="pgdg"), sh("a", variant="distro")).blocks) == 2


def test_same_step_for_two_families_is_allowed():
    assert len(parse(sh("a", os=("debian",)), sh("a", os=("el8",))).blocks) == 2


# --- binding table ----------------------------------------------------------------------------

BINDINGS = """\
| Example value | Meaning | Bound to |
|---|---|---|
| `192.168.1.10` | primary | `primary.address` |
| `18` | major | `pg_major` |
"""


def test_binding_table_is_read():
    assert parse(BINDINGS).bindings == (
        Binding("192.168.1.10", "primary", "primary.address"),
        Binding("18", "major", "pg_major"),
    )


def test_table_with_other_headers_is_ignored():
    other = "| Name | Value |\n|---|---|\n| `a` | `b` |\n"
    assert parse(other, sh()).bindings == ()


@pytest.mark.parametrize("row", ["| 18 | major | `pg_major` |", "| `18` | major | pg_major |", "| `18` | major |"])
def test_malformed_binding_row_is_an_error(row):
    assert "rb.md" in error_of(BINDINGS + row + "\n")


@pytest.mark.parametrize(
    ("row", "empty"),
    [
        ("| `` | major | `pg_major` |", "example"),
        ("| ` ` | major | `pg_major` |", "example"),
        ("| `18` | major | `` |", "target"),
    ],
)
def test_binding_row_with_an_empty_cell_is_an_error(row, empty):
    message = error_of(BINDINGS + row + "\n")
    assert message.startswith("rb.md:5: binding row ") and f"the {empty} is empty" in message, message
    assert "write it as `example` | meaning | `target`" in message


def test_binding_to_an_unknown_target_is_an_error_at_parse_time():
    message = error_of(BINDINGS + "| `18` | major | `pg_version` |\n")
    assert message.startswith("rb.md:5: binding row `18` | major | `pg_version`: unknown target 'pg_version'"), message
    assert "bind to one of: " + ", ".join(sorted(TARGETS)) in message


def test_a_malformed_binding_row_names_its_line():
    message = error_of(BINDINGS + "| 18 | major | `pg_major` |\n")
    assert message.startswith("rb.md:5: binding row 18 | major | `pg_major`: write it as"), message


# --- binding patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["postgresql-18", "/usr/pgsql-18/bin", "postgresql18-server", "/etc/postgresql/18/main"]
)
def test_version_pattern_matches_inside_names_and_paths(text):
    assert Binding("18", "", "pg_major").pattern.sub("15", text) == text.replace("18", "15")


def test_version_pattern_matches_before_a_dot_suffix():
    assert Binding("18", "", "pg_major").pattern.sub("15", "systemctl start postgresql-18.service") == (
        "systemctl start postgresql-15.service"
    )


@pytest.mark.parametrize("text", ["2018", "1.18", "180", "5418"])
def test_version_pattern_leaves_other_numbers_alone(text):
    assert not Binding("18", "", "pg_major").pattern.search(text)


def test_address_pattern_does_not_match_a_longer_address():
    pattern = Binding("192.168.1.10", "", "primary.address").pattern
    assert not pattern.search("host 192.168.1.100")
    assert pattern.sub("10.0.0.1", "-h 192.168.1.10 -p 5432") == "-h 10.0.0.1 -p 5432"


def test_password_pattern_does_not_match_a_longer_name():
    pattern = Binding("YOUR_SECURE_PASSWORD", "", "secret").pattern
    assert not pattern.search("YOUR_SECURE_PASSWORD_2")
    assert pattern.search("PASSWORD 'YOUR_SECURE_PASSWORD';")


# --- selection --------------------------------------------------------------------------------

SELECTION = (
    sh("source", variant="pgdg"),
    sh("source", variant="distro"),
    sh("install", os=("debian", "el8")),
    sh("check", part="verify"),
    sh("el-only", os=("el8",)),
)


def test_select_by_family_and_variant_keeps_document_order():
    runbook = parse(*SELECTION)
    chosen = runbook.select(family="debian", variant="distro")
    assert [(b.step, b.variant) for b in chosen] == [("source", "distro"), ("install", None)]


def test_select_without_variant_takes_only_common_blocks():
    assert [b.step for b in parse(*SELECTION).select(family="debian")] == ["install"]


def test_select_by_parts_and_family():
    runbook = parse(*SELECTION)
    assert [b.step for b in runbook.select(family="debian", parts=("verify",))] == ["check"]
    assert [b.step for b in runbook.select(family="el8", parts=("setup", "verify"))] == ["install", "el-only"]
    assert runbook.parts() == ["setup", "verify"]


def test_select_with_nothing_matching_is_an_error():
    with pytest.raises(RunbookError, match="el7"):
        parse(*SELECTION).select(family="el7")


def test_alternatives_names_the_other_variants():
    runbook = parse(*SELECTION)
    pgdg, distro, install = runbook.blocks[:3]
    assert runbook.alternatives(distro) == ["pgdg"]
    assert runbook.alternatives(pgdg) == ["distro"]
    assert runbook.alternatives(install) == []


# --- edits for negative controls --------------------------------------------------------------


def test_edit_block_changes_only_the_named_step():
    runbook = parse(
        fence("sh", {"step": "a", "host": "primary", "os": ["debian"]}, "echo one\n"),
        fence("sh", {"step": "b", "host": "primary", "os": ["debian"]}, "echo one\n"),
    )
    edited = edit_block(runbook, "a", "one", "two")
    assert [b.body for b in edited.blocks] == ["echo two\n", "echo one\n"]
    assert [b.body for b in runbook.blocks] == ["echo one\n", "echo one\n"]


@pytest.mark.parametrize("step, old", [("s1", "not there"), ("nope", "echo")])
def test_edit_block_without_a_match_is_an_error(step, old):
    with pytest.raises(RunbookError):
        edit_block(parse(sh()), step, old, "x")


def test_drop_step_removes_its_blocks():
    runbook = parse(*SELECTION)
    assert "source" not in [b.step for b in drop_step(runbook, "source").blocks]
    with pytest.raises(RunbookError, match="nope"):
        drop_step(runbook, "nope")


# --- the real runbook -------------------------------------------------------------------------

DEBIAN_DISTRO_SETUP = [
    "primary-package-source",
    "primary-install",
    "primary-archive-dir",
    "primary-configure",
    "primary-wal-log-hints",
    "primary-start",
    "primary-create-user",
    "primary-create-slot",
    "primary-hba",
    "primary-restart",
    "secondary-package-source",
    "secondary-install",
    "secondary-pgpass",
    "secondary-stop-and-empty",
    "secondary-basebackup",
    "secondary-standby-signal",
    "secondary-configure",
    "secondary-start",
]
LIVE = {
    "primary.address": "10.0.0.1",
    "secondary.address": "10.0.0.2",
    "secret.replication_password": Secret("Test-Pass-word-xyz"),
    "pg_major": "15",
}


@pytest.fixture(scope="module")
def real():
    return parse_runbook(project.current().default_runbook)


def test_real_runbook_debian_distro_setup_steps(real):
    assert [b.step for b in real.select(family="debian", variant="distro")] == DEBIAN_DISTRO_SETUP


def test_real_runbook_verify_steps_are_named_verify(real):
    steps = [b.step for b in real.select(family="debian", parts=("verify",))]
    assert steps and all(s.startswith("verify-") for s in steps)


def test_real_runbook_binds_only_known_targets(real):
    assert {b.target for b in real.bindings} == set(LIVE)


def test_real_runbook_has_no_example_value_left_after_binding(real):
    for block in real.blocks:
        for text in (bind(block.body, real.bindings, LIVE), bind(block.file or "", real.bindings, LIVE)):
            for example in ("192.168.1.10", "192.168.1.20", "YOUR_SECURE_PASSWORD"):
                assert example not in text, block.step
            assert not re.search(r"(?<![\d.])18(?![\d.])", text), (block.step, text)


def test_real_runbook_scripts_are_valid_bash(real):
    for block in real.blocks:
        rendered = script(block, real.bindings, LIVE)
        proc = subprocess.run(["bash", "-n"], input=rendered, text=True, capture_output=True)
        assert proc.returncode == 0, f"{block.step}: {proc.stderr}"


# --- a block cannot silently vanish, bad input is an error --------------------------------------


@pytest.mark.parametrize("separator", ["", "\t", "  "], ids=["no-space", "tab", "two-spaces"])
def test_attributes_after_any_separator_make_a_block(separator):
    text = f'{FENCE}sh{separator}{{"step":"a","host":"primary","os":["debian"]}}\necho hi\n{FENCE}\n'
    (block,) = parse(text).blocks
    assert (block.step, block.kind) == ("a", "sh")


def test_attributes_without_a_language_are_an_error():
    assert "block language '' is not one of" in error_of(
        f'{FENCE}{{"step":"a","host":"primary","os":["debian"]}}\n{FENCE}\n'
    )


def test_an_unterminated_fence_cannot_swallow_the_next_block():
    text = sh("first")[: -len(FENCE) - 1] + "\n" + sh("second")  # the first block's closing fence is missing
    message = error_of(text)
    assert "rb.md:4: an opening fence with attributes inside the block that starts at line 1" in message
    assert "add its closing ```" in message


def test_a_prose_fence_left_open_cannot_swallow_a_block():
    message = error_of(fence("text", None, "output\n")[: -len(FENCE) - 1], sh("hidden"))
    assert "inside the block that starts at line 1" in message


def test_an_executable_block_never_closed_is_an_error():
    message = error_of("> " + sh("quoted").replace("\n", "\n> ").rsplit("```", 1)[0])
    assert "rb.md:1: the block is never closed" in message


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ('{"step": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deep"),
        ('{"step": ' + "1" * 5000 + "}", "cannot be read"),
    ],
    ids=["deep", "long-integer"],
)
def test_attributes_python_cannot_take_are_a_runbook_error(attrs, words):
    message = error_of(fence("sh", attrs))
    assert "rb.md:1" in message and words in message
