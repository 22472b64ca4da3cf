"""What a CI run reports about the runbook: where a failure is in it, the evidence, the summary.

- A failed runbook step's test report carries the runbook file, line and step id (JUnit
  properties); on GitHub Actions it also becomes an `::error file=...,line=...::` annotation.
- For every failed scenario, an evidence folder: transcript, both servers' logs, the unit's
  journal, the replication views; all redacted.
- A Markdown summary opening with the step x image matrix (the "verified on" table), then per
  target passed/failed/skipped and per failed test its step, host, command and last lines.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness import project
from harness.gate import block_text
from harness.runbook import Runbook, StepFailed
from harness.runbook.meaning import Unreadable, settings_meaning
from harness.secrets import redact

STEPS_PROPERTY = "pgrepl_steps"  # JSON {step: outcome} of the pairs that ran the unmodified runbook
RANK = {"failed": 4, "ok": 3, "reused": 2}  # a step's verdict per target: the strongest outcome seen


def relative(path: Path | str) -> str:
    """A path as the repository names it (what GitHub annotations and JUnit readers expect)."""
    path, root = Path(path).resolve(), project.current().root
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def failure_properties(error: BaseException) -> list[tuple[str, str]]:
    """For a failed runbook step: runbook file, line, step id, host, and the likely cause, if another block."""
    if not isinstance(error, StepFailed) or error.runbook is None:
        return []
    props = [
        ("runbook_file", relative(error.runbook)),
        ("runbook_line", str(error.block.line)),
        ("runbook_step", error.block.step),
        ("runbook_host", error.host_name),
    ]
    cause = likely_cause(error)
    if cause is not None:
        props.append(("runbook_cause", f"{relative(error.runbook)}:{cause[0]}:{cause[1]}"))
    return props


def likely_cause(error: StepFailed) -> tuple[int, str] | None:
    """(line, step) of the block that most likely broke a step, when its output names it: the `pg_hba.conf`
    block behind a refused connection, or the block of the same OS family setting a parameter the output
    names (pg_rewind's `"wal_log_hints = on"`). None when the failing block is that block itself."""
    if error.book is None:
        return None
    output = error.result.tail(40) if error.result is not None else ""
    family = [b for b in error.book.blocks if set(b.os) & set(error.block.os) and b != error.block]
    if "no pg_hba.conf entry" in str(error):
        rule = next((b for b in family if (b.file or "").endswith("pg_hba.conf")), None)
        return (rule.line, rule.step) if rule is not None else None
    settings = [b for b in family if b.kind == "conf" and not (b.file or "").endswith("pg_hba.conf")]
    for block in sorted(settings, key=lambda b: b.host != error.block.host):  # the failing host's own first
        try:
            names = {name for name, _ in settings_meaning(block.body)}
        except Unreadable:
            continue
        if any(re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", output) for name in names):
            return block.line, block.step
    return None


CHANGE_PROPERTY = "runbook_change"  # in a gate run: the changed blocks a failure may come from, `FILE:LINE:STEP;...`


REMOVED = " (removed, its line at the base)"  # after the step of a removed block: no line of today's runbook


def change_property(changes: Iterable[Any]) -> list[tuple[str, str]]:
    """The property naming `changes` (harness.gate.BlockChange), none for none."""
    named = ";".join(f"{c.runbook}:{c.line}:{c.step}{REMOVED if c.how == 'removed' else ''}" for c in changes)
    return [(CHANGE_PROPERTY, named)] if named else []


def places(value: str) -> list[tuple[str, str, str]]:
    """(file, line, step) of each `FILE:LINE:STEP` in a `runbook_cause` or `runbook_change` value."""
    return [tuple(item.rsplit(":", 2)) for item in value.split(";") if item]  # type: ignore[misc]


def _escape(text: str, *, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def annotations(props: Mapping[str, str], test: str, message: str) -> list[str]:
    """GitHub workflow commands marking the runbook line(s) of a failed step, its likely cause, and in a gate
    run the changed lines it may come from."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    lines = []
    if "runbook_file" in props:
        lines.append(
            f"::error file={_escape(props['runbook_file'], property_value=True)},line={props['runbook_line']},"
            f"title={_escape('step ' + props['runbook_step'], property_value=True)}::"
            + _escape(redact(f"{test}: {first}"))
        )
    failed = f"step {props['runbook_step']} failed" if "runbook_file" in props else "failed"
    for key, title, because in (
        ("runbook_cause", "likely cause", "because of this block"),
        (CHANGE_PROPERTY, "changed in this diff", "after this change"),
    ):
        for file, line, step in places(props.get(key, "")):
            if step.endswith(REMOVED):  # an annotation marks a line of the changed file, which has no such block
                continue
            lines.append(
                f"::error file={_escape(file, property_value=True)},line={line},"
                f"title={_escape(f'{title}: step {step}', property_value=True)}::"
                + _escape(redact(f"{test}: {failed} {because} ({first})"))
            )
    return lines


# --- evidence -----------------------------------------------------------------------------------

VIEWS = {
    "pg_stat_replication": "SELECT * FROM pg_stat_replication",
    "pg_stat_wal_receiver": "SELECT * FROM pg_stat_wal_receiver",
    "pg_replication_slots": "SELECT * FROM pg_replication_slots",
    "pg_stat_archiver": "SELECT * FROM pg_stat_archiver",
}


def collect_evidence(pairs: Iterable[tuple[Any, bool]], folder: Path) -> list[Path]:
    """Write what a person needs to see why a scenario failed, for each (pair, whether its hosts are
    still there: else its transcript alone); never raises (a host may be gone)."""
    written = []
    for index, (pair, live) in enumerate(pairs, 1):
        prefix = folder / f"pair-{index}"
        prefix.mkdir(parents=True, exist_ok=True)
        items = {"transcript.txt": lambda c=pair: c.transcript.render()}
        for name, node in pair.nodes.items() if live else ():
            items[f"{name}-server.log"] = lambda n=node: _tail(n, n.layout.log_file)
            items[f"{name}-journal.txt"] = lambda n=node: (
                n.host.run(f"journalctl --no-pager -n 300 -u {n.layout.unit}", user="root", check=False).stdout
            )
            items[f"{name}-views.txt"] = lambda n=node: "\n\n".join(
                f"== {name}\n{_view(n, sql)}" for name, sql in VIEWS.items()
            )
        for name, produce in items.items():
            try:
                text = produce()
            except Exception as exc:  # evidence is best effort: say what could not be read
                text = f"(could not be read: {type(exc).__name__}: {exc})"
            path = prefix / name
            path.write_text(redact(text))
            written.append(path)
    return written


def _tail(node, path: str) -> str:
    return node.host.run(f"tail -n 500 {path} 2>&1 || true", user="root", check=False).stdout


def _view(node, sql: str) -> str:
    """The view through psql over the local socket: works without the harness role (a failed setup)."""
    return node.psql(f"\\x on\n{sql};", check=False) or "(none)"


# --- summary ------------------------------------------------------------------------------------


def step_outcomes(made: Iterable[tuple], reference: Runbook) -> dict[str, str]:
    """The strongest outcome of each step of `reference` (failed > ok > reused > other skips) over
    (pair, unmodified) pairs. A pair of an edited runbook (a negative control) counts only
    for the steps it ran ok whose block is word for word the reference's: its failures are the
    control's purpose, not the runbook's."""
    outcomes: dict[str, str] = {}
    same = {block_text(b) for b in reference.blocks}
    for pair, unmodified in made:
        unchanged = {b.step for b in pair.runbook.blocks if block_text(b) in same}
        for record in pair.transcript.records:
            if not unmodified and (record.outcome != "ok" or record.step not in unchanged):
                continue
            outcome = record.outcome if record.outcome in RANK else f"skipped: {record.outcome} {record.note}".strip()
            merge_steps(outcomes, {record.step: outcome})
    return outcomes


def summary(
    runbook: Runbook,
    families: Mapping[str, str],
    results: Mapping[str, Mapping[str, int]],
    skipped_targets: Mapping[str, str],
    steps: Mapping[str, Mapping[str, str]],
    failures: list[dict[str, str]],
    plan: str | None = None,
    reuse: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The Markdown summary: the step x target matrix, outcomes per target, then each failure.

    `families`: target label -> OS family; `steps`: target -> {step: outcome}; `failures`: dicts
    with test, target, and the runbook properties and message when known."""
    targets = sorted(set(results) | set(skipped_targets))
    lines = [f"# Runbook gate: {relative(runbook.path)}", ""]
    if plan:
        lines += ["```", plan, "```", ""]
    lines += ["## Verified on (step x image and backend)", ""]
    lines += ["| step | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for step in dict.fromkeys(b.step for b in runbook.blocks):
        cells = []
        for target in targets:
            in_family = any(b.step == step and families.get(target) in b.os for b in runbook.blocks)
            if not in_family:
                cells.append("-")
            elif target in skipped_targets:
                cells.append("static gate only")
            else:
                cells.append(steps.get(target, {}).get(step, "not run by a scenario"))
        lines.append(f"| `{step}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "ok: every line ran and succeeded in this run; reused: restored from a snapshot of the same text "
        "(it ran when the snapshot was made); static gate only: rendered and checked, not executed here"
        + (" (by the gate: a block changed since the base; the others are as at the base)." if plan else "."),
        "",
        "## Tests per target",
        "",
        "| target | passed | failed | skipped |",
        "|---|---|---|---|",
    ]
    for target in targets:
        counts = results.get(target, {})
        note = f" ({skipped_targets[target]})" if target in skipped_targets else ""
        lines.append(
            f"| {target} | {counts.get('passed', 0)} | {counts.get('failed', 0)} | {counts.get('skipped', 0)}{note} |"
        )
    if reuse:
        lines += [
            "",
            "## Set-up state reused (pairs that started from this run's set-up state / pairs made)",
            "",
        ]
        for target, modules in sorted(reuse.items()):
            lines.append(f"- {target}: " + ", ".join(f"{m.rsplit('/', 1)[-1]} {n}" for m, n in sorted(modules.items())))
    groups: dict[tuple, list[dict[str, str]]] = {}
    for failure in failures:  # one section per failed runbook step (a broken step fails many tests)
        key = tuple(failure.get(k, "") for k in ("runbook_file", "runbook_line", "runbook_step", "runbook_host"))
        groups.setdefault(key if key[0] else (failure["test"],), []).append(failure)
    if groups:
        lines += ["", "## Failures", ""]
    for group in groups.values():
        first = group[0]
        if "runbook_file" in first:
            where = f"`{first['runbook_file']}:{first['runbook_line']}` step `{first['runbook_step']}`"
            lines += [f"### {where} on {first['runbook_host']}", ""]
        else:
            lines += [f"### {first['test']} (not a runbook step)", ""]
        if "runbook_cause" in first:
            lines.append(f"- likely cause: `{first['runbook_cause']}`")
        if CHANGE_PROPERTY in first:
            changed = ", ".join(f"`{file}:{line}` step `{step}`" for file, line, step in places(first[CHANGE_PROPERTY]))
            lines.append(f"- changed in this diff, and run on this OS family: {changed}")
        lines += [f"- failed: {f['test']} ({f.get('target', '')})" for f in group[:20]]
        if len(group) > 20:
            lines.append(f"- and {len(group) - 20} more tests")
        evidence = next((f["evidence"] for f in group if "evidence" in f), None)
        if evidence:
            lines.append(f"- evidence: `{evidence}`")
        message = "\n".join(first.get("message", "").splitlines()[-40:])
        lines += ["", "```", message, "```", ""]
    return redact("\n".join(lines)) + "\n"


def decode_steps(value: str) -> dict[str, str]:
    return json.loads(value) if value else {}


def encode_steps(outcomes: Mapping[str, str]) -> str:
    return json.dumps(dict(outcomes), sort_keys=True)


def merge_steps(into: dict[str, str], outcomes: Mapping[str, str]) -> None:
    for step, outcome in outcomes.items():
        if RANK.get(outcome, 1) > RANK.get(into.get(step, ""), 0):
            into[step] = outcome


def write_summary(text: str, artifacts: Path) -> Path:
    """To $GITHUB_STEP_SUMMARY when set (appended, as GitHub asks), else into the artifacts folder."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a") as out:
            out.write(text)
        return Path(target)
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / "summary.md"
    path.write_text(text)
    return path


def safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]
