"""Rendering blocks into scripts (binding, conf appends) and rendering the transcript."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from harness.runbook.execute import StepRecord, Transcript
from harness.runbook.parse import Binding, RunbookError, parse_text
from harness.runbook.render import bind, script
from harness.secrets import REDACTED, Secret

RUNBOOK = """\
| Example value | Meaning | Bound to |
|---|---|---|
| `192.168.1.10` | primary | `primary.address` |
| `18` | major | `pg_major` |

```sh {"step":"install","host":"primary","os":["debian"]}
sudo apt-get install -y postgresql-18
psql -h 192.168.1.10
```

```conf {"step":"configure","host":"primary","os":["debian"],"file":"/etc/postgresql/18/main/postgresql.conf"}
listen_addresses = '*'
primary_conninfo = 'host=192.168.1.10'
```
"""
VALUES = {"primary.address": "10.0.0.1", "pg_major": "15"}


@pytest.fixture
def runbook():
    return parse_text(RUNBOOK, "rb.md")


def conf_block_for(runbook, path):
    """The runbook's conf block, appending to `path` instead of the postgresql.conf."""
    return replace(runbook.blocks[1], file=str(path))


# --- bind -------------------------------------------------------------------------------------


def test_bind_replaces_every_example(runbook):
    assert bind("-h 192.168.1.10 postgresql-18", runbook.bindings, VALUES) == "-h 10.0.0.1 postgresql-15"


def test_bind_with_unknown_target_names_it_and_the_known_values():
    with pytest.raises(RunbookError) as info:
        bind("x", (Binding("18", "", "pg_version"),), {"pg_major": "15", "primary.address": "h"})
    assert "pg_version" in str(info.value)
    assert "pg_major" in str(info.value) and "primary.address" in str(info.value)


def test_bind_does_not_rewrite_live_values():
    bindings = (Binding("YOUR_SECURE_PASSWORD", "", "secret"), Binding("18", "", "pg_major"))
    assert bind("PASSWORD 'YOUR_SECURE_PASSWORD'", bindings, {"secret": "ab18cd", "pg_major": "15"}) == (
        "PASSWORD 'ab18cd'"
    )


# --- script -----------------------------------------------------------------------------------


def test_sh_block_script_is_the_bound_body(runbook):
    assert script(runbook.blocks[0], runbook.bindings, VALUES) == (
        "sudo apt-get install -y postgresql-15\npsql -h 10.0.0.1\n"
    )


def test_conf_block_script_appends_the_bound_body_to_the_bound_file(runbook):
    rendered = script(runbook.blocks[1], runbook.bindings, VALUES)
    assert "tee -a /etc/postgresql/15/main/postgresql.conf" in rendered
    assert "listen_addresses = '*'\nprimary_conninfo = 'host=10.0.0.1'\n" in rendered
    assert "18" not in rendered and "192.168.1.10" not in rendered


def run_without_sudo(rendered: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e"], input=rendered.replace("sudo ", ""), text=True, capture_output=True)


@pytest.mark.parametrize("existing", ["# first\n", "# no newline at end", ""])
def test_conf_script_appends_to_the_file_for_real(runbook, tmp_path, existing):
    target = tmp_path / "post gres.conf"
    target.write_text(existing)
    proc = run_without_sudo(script(conf_block_for(runbook, target), runbook.bindings, VALUES))
    assert proc.returncode == 0, proc.stderr
    expected_start = existing if not existing or existing.endswith("\n") else existing + "\n"
    assert target.read_text() == expected_start + "listen_addresses = '*'\nprimary_conninfo = 'host=10.0.0.1'\n"


def test_conf_script_fails_when_the_file_is_missing(runbook, tmp_path):
    target = tmp_path / "absent.conf"
    proc = run_without_sudo(script(conf_block_for(runbook, target), runbook.bindings, VALUES))
    assert proc.returncode != 0 and "no such file" in proc.stderr
    assert not target.exists()


def test_conf_body_containing_the_heredoc_marker_is_an_error(runbook):
    block = replace(runbook.blocks[1], body="__PGREPL_CONF__\n")
    with pytest.raises(RunbookError, match="__PGREPL_CONF__"):
        script(block, runbook.bindings, VALUES)


# --- transcript -------------------------------------------------------------------------------


def test_transcript_render_lists_steps_outcomes_and_redacts_secrets():
    secret = Secret("transcript-secret-42")
    transcript = Transcript(
        records=[
            StepRecord("primary-install", "primary", 1.5, "ok"),
            StepRecord("secondary-basebackup", "secondary", 0.25, "failed", f"exit 1 with {secret}"),
            StepRecord("primary-start", "primary", 0.0, "reused", "from snapshot"),
        ],
        notes=[f"password was {secret}"],
    )
    text = transcript.render()
    for step, outcome in [("primary-install", "ok"), ("secondary-basebackup", "failed"), ("primary-start", "reused")]:
        assert any(step in line and outcome in line for line in text.splitlines()), step
    assert "transcript-secret-42" not in text and REDACTED in text
    assert transcript.steps() == ["primary-install", "secondary-basebackup", "primary-start"]
