"""Parse an executable runbook: Markdown whose fenced blocks carry JSON attributes.

    ```sh {"step":"primary-install","host":"primary","os":["debian"]}
    sudo apt-get install -y postgresql-18
    ```

Keys: step (an id: lower-case letters, digits, '-'), host, os (a family or a list of them)
are required; part (default "setup"; lower-case letters, digits, '-'), variant ("pgdg" or
"distro"), expect (regex on stdout), file (for `conf` blocks: append the body to this file),
action (what the step does for the harness, which finds "the promote step" by it, not by a step
id the author may rename) are optional strings. Unknown keys are kept.
Blocks without a JSON object in the info string are prose and never run. A fence holding another
block's opening line, or an executable block never closed, is an error: a block cannot silently vanish. The table whose
header is `Example value | Meaning | Bound to` binds example values to live ones; every row
needs a non-empty example and a known target (harness.runbook.values.TARGETS).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from markdown_it import MarkdownIt

from harness import PACKAGE_SOURCES, ROLES
from harness.errors import HarnessError
from harness.layout import FAMILIES
from harness.runbook.values import TARGETS

KINDS = ("sh", "conf")
VARIANTS = PACKAGE_SOURCES
HOSTS = ROLES
REQUIRED = ("step", "host", "os")
ACTIONS = ("fence", "promote", "rewind", "packages")
# the attributes that are one string when present, and what each one holds
STRINGS = {
    "host": f"one of {HOSTS}",
    "part": 'e.g. "verify"; default "setup"',
    "variant": f"one of {VARIANTS}",
    "expect": "a regex on the step's stdout",
    "file": "the file a `conf` block appends to",
    "action": f"one of {ACTIONS}",
}
# a fence's opening line with attributes (```sh {...}), which no block's body can hold
OPENING = re.compile(r"^ {0,3}(?:`{3,}|~{3,})[^`\s{]*\s*\{")
STEP = re.compile(r"^[a-z0-9][a-z0-9-]*$")
PART = re.compile(r"^[a-z][a-z0-9-]*$")
BINDING_HEADER = ["Example value", "Meaning", "Bound to"]


class RunbookError(HarnessError, ValueError):
    """The runbook itself is malformed; the message names file and line."""


@dataclass(frozen=True)
class Block:
    step: str
    host: str
    os: tuple[str, ...]
    kind: str
    body: str
    line: int
    part: str = "setup"
    variant: str | None = None
    expect: str | None = None
    file: str | None = None
    action: str | None = None
    heading: str = ""
    attrs: dict = field(default_factory=dict, compare=False, repr=False)

    def where(self, path: Path | str) -> str:
        return f"{path}:{self.line}"


@dataclass(frozen=True)
class Binding:
    example: str
    meaning: str
    target: str

    @property
    def pattern(self) -> re.Pattern[str]:
        """The example value, not glued to more of the same kind of character.

        `18` matches in `postgresql-18`, `postgresql18-server`, `postgresql-18.service`, not in `2018`, `1.18`;
        `192.168.1.10` does not match inside `192.168.1.100`.
        """

        def before(char: str) -> str:
            # a '.' belongs to a number only with a digit on its far side (1.18, not postgresql-18.service)
            return r"(?<![0-9])(?<![0-9]\.)" if char.isdigit() else r"(?<!\w)"

        def after(char: str) -> str:
            return r"(?![0-9])(?!\.[0-9])" if char.isdigit() else r"(?!\w)"

        return re.compile(f"{before(self.example[0])}{re.escape(self.example)}{after(self.example[-1])}")


@dataclass(frozen=True)
class Runbook:
    path: Path
    blocks: tuple[Block, ...]
    bindings: tuple[Binding, ...]

    def select(self, *, family: str, parts: tuple[str, ...] = ("setup",), variant: str | None = None) -> list[Block]:
        """The blocks one OS family runs, in document order; `variant` picks among alternatives."""
        chosen = [
            b for b in self.blocks if family in b.os and b.part in parts and (b.variant is None or b.variant == variant)
        ]
        if not chosen:
            raise RunbookError(f"{self.path}: no executable block for OS family {family!r} and parts {parts}")
        return chosen

    def alternatives(self, block: Block) -> list[str]:
        """Other variants of the same step for the same family (what was not run)."""
        return sorted(
            {
                b.variant
                for b in self.blocks
                if b.step == block.step and b.variant and b.variant != block.variant and set(b.os) & set(block.os)
            }
        )

    def parts(self) -> list[str]:
        return list(dict.fromkeys(b.part for b in self.blocks))


def parse_runbook(path: Path | str) -> Runbook:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RunbookError(f"runbook {path}: cannot be read ({exc.strerror}); pass an existing Markdown file") from None
    return parse_text(text, path)


def parse_text(text: str, path: Path | str = "<runbook>") -> Runbook:
    path = Path(path)
    try:
        tokens = MarkdownIt("commonmark").enable("table").parse(text)
    except RecursionError:
        raise RunbookError(f"{path}: Markdown nested too deep to read (lists or quotes inside each other)") from None
    blocks: list[Block] = []
    bindings: list[Binding] = []
    heading = ""
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            heading = tokens[index + 1].content
        elif token.type == "fence":
            line = token.map[0] + 1 if token.map else 0
            _check_fence(token, line, path)
            block = _block(token.info, token.content, line, heading, path)
            if block is not None:
                blocks.append(block)
        elif token.type == "table_open":
            bindings.extend(_bindings(tokens, index, path))
    _check_unique(blocks, path)
    return Runbook(path=path, blocks=tuple(blocks), bindings=tuple(bindings))


def _check_fence(token, line: int, path: Path) -> None:
    """A block must not silently vanish: a fence that holds another block's opening line, or an
    executable one that is never closed (it runs to the end of the document or of its quote)."""
    lines = token.content.splitlines()
    for number, text in enumerate(lines, line + 1):
        if OPENING.match(text):
            raise RunbookError(
                f"{path}:{number}: an opening fence with attributes inside the block that starts at line {line} "
                f"({text.strip()[:80]}): that block is not closed before it; add its closing {token.markup}"
            )
    closed = token.map is None or token.map[1] - token.map[0] >= len(lines) + 2
    if "{" in token.info and not closed:
        raise RunbookError(f"{path}:{line}: the block is never closed; end it with a line {token.markup}")


def _block(info: str, body: str, line: int, heading: str, path: Path) -> Block | None:
    info = info.strip()
    if "{" not in info:
        return None
    # the attributes start at the first '{': `sh {...}`, `sh\t{...}` and `sh{...}` are all the same block
    kind, rest = info[: info.index("{")].strip(), info[info.index("{") :]
    where = f"{path}:{line}"
    try:
        attrs = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise RunbookError(f"{where}: the block's attributes are not valid JSON ({exc.msg}): {rest[:200]}") from None
    except (ValueError, RecursionError) as exc:  # an integer too long to convert; nesting too deep
        why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        raise RunbookError(f"{where}: the block's attributes cannot be read ({why}): {rest[:200]}") from None
    missing = [key for key in REQUIRED if key not in attrs]
    if missing:
        raise RunbookError(f"{where}: block lacks {', '.join(missing)} in its attributes {rest}")
    step = attrs["step"]
    if not isinstance(step, str) or not STEP.match(step):
        raise RunbookError(
            f"{where}: step {json.dumps(step)}: not a step id; write a non-empty string of lower-case "
            'letters, digits and "-", starting with a letter or digit (e.g. "primary-install")'
        )
    where = f"{where}: step {step}"
    for key, hint in STRINGS.items():
        if key in attrs and (not isinstance(attrs[key], str) or not attrs[key]):
            raise RunbookError(f'{where}: "{key}": {json.dumps(attrs[key])} must be a non-empty JSON string ({hint})')
    if kind not in KINDS:
        raise RunbookError(f"{where}: block language {kind!r} is not one of {KINDS}")
    if attrs["host"] not in HOSTS:
        raise RunbookError(f"{where}: host {attrs['host']!r} is not one of {HOSTS}")
    families = attrs["os"] if isinstance(attrs["os"], list) else [attrs["os"]]
    if not families or not all(isinstance(f, str) for f in families):
        raise RunbookError(
            f'{where}: "os": {json.dumps(attrs["os"])} must be a family or a non-empty list of families, '
            f"as strings from {FAMILIES}"
        )
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise RunbookError(f"{where}: unknown OS family {unknown} (known: {FAMILIES})")
    if (kind == "conf") != ("file" in attrs):
        raise RunbookError(f'{where}: a `conf` block needs "file", and only it may have one')
    if "part" in attrs and not PART.match(attrs["part"]):
        raise RunbookError(
            f'{where}: part {attrs["part"]!r} is not a part name; write lower-case letters, digits and "-", '
            'starting with a letter (e.g. "verify")'
        )
    if attrs.get("variant", VARIANTS[0]) not in VARIANTS:
        raise RunbookError(f"{where}: variant {attrs['variant']!r} is not one of {VARIANTS}")
    if attrs.get("action", ACTIONS[0]) not in ACTIONS:
        raise RunbookError(f"{where}: action {attrs['action']!r} is not one of {ACTIONS}")
    if "expect" in attrs:
        try:
            re.compile(attrs["expect"])
        except re.error as exc:
            raise RunbookError(f"{where}: bad expect regex: {exc}") from exc
    return Block(
        step=attrs["step"],
        host=attrs["host"],
        os=tuple(families),
        kind=kind,
        body=body,
        line=line,
        part=attrs.get("part", "setup"),
        variant=attrs.get("variant"),
        expect=attrs.get("expect"),
        file=attrs.get("file"),
        action=attrs.get("action"),
        heading=heading,
        attrs=attrs,
    )


def _bindings(tokens: list, start: int, path: Path) -> list[Binding]:
    rows: list[tuple[int, list[str]]] = []
    row: list[str] = []
    line = 0
    for token in tokens[start:]:
        if token.type == "table_close":
            break
        if token.type == "tr_open":
            row = []
            line = token.map[0] + 1 if token.map else 0
        elif token.type == "inline":
            row.append(token.content.strip())
        elif token.type == "tr_close":
            rows.append((line, row))
    if not rows or rows[0][1] != BINDING_HEADER:
        return []
    known = ", ".join(sorted(TARGETS))
    result = []
    for line, cells in rows[1:]:
        where = f"{path}:{line}: binding row {' | '.join(cells)}"
        if len(cells) != 3 or not all(c.startswith("`") and c.endswith("`") for c in (cells[0], cells[2])):
            raise RunbookError(f"{where}: write it as `example` | meaning | `target`")
        example, target = cells[0].strip("`"), cells[2].strip("`")
        if not example.strip() or not target.strip():
            empty = "example" if not example.strip() else "target"
            raise RunbookError(f"{where}: the {empty} is empty; write it as `example` | meaning | `target`")
        if target not in TARGETS:
            raise RunbookError(f"{where}: unknown target {target!r}; bind to one of: {known}")
        result.append(Binding(example=example, meaning=cells[1], target=target))
    return result


def _check_unique(blocks: list[Block], path: Path) -> None:
    seen: dict[tuple[str, str, str | None], Block] = {}
    for block in blocks:
        for family in block.os:
            key = (block.step, family, block.variant)
            if key in seen:
                raise RunbookError(
                    f"{block.where(path)}: step {block.step!r} for {family} already defined at line {seen[key].line}"
                )
            seen[key] = block


def edit_block(runbook: Runbook, step: str, old: str, new: str) -> Runbook:
    """A copy of `runbook` with `old` replaced by `new` in every block of `step`.

    For negative controls ("the same runbook without this line"). Raises if `old` is not there,
    so a control cannot silently test nothing.
    """
    touched = [b for b in runbook.blocks if b.step == step and old in b.body]
    if not touched:
        raise RunbookError(f"{runbook.path}: no block of step {step!r} contains {old!r}")
    blocks = tuple(replace(b, body=b.body.replace(old, new)) if b in touched else b for b in runbook.blocks)
    return replace(runbook, blocks=blocks)


def drop_step(runbook: Runbook, step: str) -> Runbook:
    """A copy of `runbook` without the blocks of `step`."""
    if not any(b.step == step for b in runbook.blocks):
        raise RunbookError(f"{runbook.path}: no step {step!r}")
    return replace(runbook, blocks=tuple(b for b in runbook.blocks if b.step != step))
