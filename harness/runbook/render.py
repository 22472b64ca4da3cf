"""Bind a block's example values to live ones and turn it into a script a host runs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from harness.runbook.parse import Binding, Block, RunbookError

# What a live value may hold: characters no shell reads in any place a block may put it (a word, double
# quotes, a here-document, an SQL or .pgpass string). IP addresses (the inventory's are checked to be
# addresses, so none starts with '-'), the major and the generated passwords (token_urlsafe) are such
# words; anything else is refused, never quoted into a block.
INERT = re.compile(r"[A-Za-z0-9_.:-]+")


def bind(text: str, bindings: tuple[Binding, ...], values: Mapping[str, str]) -> str:
    """Replace each binding's example value by the live value of its target, in one pass.

    One pass, so a live value (a generated password containing `18`, say) is never rewritten
    by a later binding.
    """
    for binding in bindings:
        if binding.target not in values:
            known = ", ".join(sorted(values))
            raise RunbookError(
                f"binding {binding.example!r} -> {binding.target!r}: no such value (the harness knows: {known})"
            )
    for binding in bindings:
        value = str(values[binding.target])
        if not INERT.fullmatch(value):
            raise RunbookError(
                f"binding {binding.example!r} -> {binding.target!r}: the live value {value!r} is not a plain word "
                "(letters, digits, '_', '.', ':', '-'): it would reach a root shell on the hosts; "
                "check the inventory's addresses"
            )
    if not bindings:
        return text
    combined = re.compile("|".join(f"(?P<b{i}>{b.pattern.pattern})" for i, b in enumerate(bindings)))
    return combined.sub(lambda m: str(values[bindings[int(m.lastgroup[1:])].target]), text)


def script(block: Block, bindings: tuple[Binding, ...], values: Mapping[str, str]) -> str:
    """The bash script that performs `block` (a shell block as written; a conf block as an append)."""
    body = bind(block.body, bindings, values)
    if block.kind == "sh":
        return body
    path = shlex.quote(bind(block.file or "", bindings, values))
    marker = "__PGREPL_CONF__"
    if marker in body:
        raise RunbookError(f"step {block.step}: the block must not contain {marker}")
    # Append after making sure the file ends with a newline, as an editor would.
    return (
        f"sudo test -f {path} || {{ echo 'no such file: {path}' >&2; exit 1; }}\n"
        f"sudo sed -i -e '$a\\' {path}\n"
        f"sudo tee -a {path} >/dev/null <<'{marker}'\n{body}{marker}\n"
    )
