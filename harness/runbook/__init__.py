"""The executable runbook: parse (Markdown -> blocks), render (bind values), execute (run on hosts)."""

from harness.runbook.execute import Executor, StepFailed, Transcript
from harness.runbook.parse import (
    Binding,
    Block,
    Runbook,
    RunbookError,
    drop_step,
    edit_block,
    parse_runbook,
    parse_text,
)
from harness.runbook.render import bind, script

__all__ = [
    "Binding",
    "Block",
    "Executor",
    "Runbook",
    "RunbookError",
    "StepFailed",
    "Transcript",
    "bind",
    "drop_step",
    "edit_block",
    "parse_runbook",
    "parse_text",
    "script",
]
