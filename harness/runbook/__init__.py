"""The executable runbook: parse (Markdown -> blocks), render (bind values), execute (run on hosts)."""

from harness.runbook.execute import After, Before, Executor, Skip, StepFailed, StepHook, Transcript
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
    "After",
    "Before",
    "Binding",
    "Block",
    "Executor",
    "Runbook",
    "RunbookError",
    "Skip",
    "StepFailed",
    "StepHook",
    "Transcript",
    "bind",
    "drop_step",
    "edit_block",
    "parse_runbook",
    "parse_text",
    "script",
]
