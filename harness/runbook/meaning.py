"""What a block does when it runs, read as the program that runs it reads it.

Two texts of a block with the same meaning differ only in comments and spacing: the gate calls such
a change "comment only" and runs no scenario for it. Each kind is read by its reader's own rules, on
the text the host gets (the binding table applied, as `script` applies it):

- `sh`: bash's own parse. The executor runs a block as one group, `{ BODY } </dev/null`, once bash
  has parsed it whole (`standalone`); bash prints a function with that body (`declare -f`) without
  its comments, with its own spacing and line breaks, here-documents verbatim. That print is the
  meaning. bash is asked only after `bash -n` has parsed the body alone: then no line of it can end
  the function early, so nothing of the block runs here. (A bash that prints a `$( )` as written,
  comments and all, as older ones do, counts an edit inside one as a change.)
- `conf` appended to pg_hba.conf: each rule's fields as hba.c splits them (blanks apart, `#` to the
  end of the line outside double quotes), quotes kept (`"all"` is not `all` to PostgreSQL). A list
  spaced after its comma (`a, b`) is two fields here and one to PostgreSQL: counted as a change.
- any other `conf` (postgresql.conf syntax): the (name, value) pairs guc-file.l reads, in order
  (a later one wins, so order counts): names lower-cased, as PostgreSQL compares them; a quoted
  value with its quotes and escapes removed, as PostgreSQL stores it, so `on` and `'on'`, `10` and
  `'10'` are the same setting. Values are otherwise kept as written (`1GB` is not `1024MB` here).

A text its reader would not read (bash refuses it, a line PostgreSQL would reject, a pg_hba.conf
line ending in a backslash, which PostgreSQL 16 joins to the next line and 15 does not) has no
meaning here: `Meaning.value` is None and `why` says why, and the gate counts any change to it as a
change. Every error of reading here errs towards "changed". Comments still matter to the static gate
(shellcheck directives, placeholders), which runs for every change.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from harness.runbook.parse import Binding, Block
from harness.runbook.render import bind

BASH_TIMEOUT = 30  # seconds; a parse takes milliseconds


@dataclass(frozen=True)
class Meaning:
    value: object | None  # comparable; None when the text cannot be read
    same: str  # what two equal values mean, for the plan: "PostgreSQL reads the same settings"
    why: str = ""  # why the text cannot be read

    def same_as(self, other: Meaning) -> bool:
        return self.value is not None and other.value is not None and self.value == other.value


def meaning(block: Block, bindings: tuple[Binding, ...] = ()) -> Meaning:
    """The block's meaning, read from its text with the example values bound (to stand-ins: what
    matters is where binding puts a value, which a comment or a line break can change)."""
    targets = dict.fromkeys(b.target for b in bindings)
    stand_ins = {target: f"pgrepl_bound_{number}" for number, target in enumerate(targets)}
    body = bind(block.body, bindings, stand_ins)
    if block.kind == "sh":
        return _reading(bash_meaning, body, "bash parses the same script")
    if (block.file or "").endswith("pg_hba.conf"):
        return _reading(hba_meaning, body, "PostgreSQL reads the same rules")
    return _reading(settings_meaning, body, "PostgreSQL reads the same settings")


class Unreadable(Exception):
    """The text's reader would refuse it; the message says where and why."""


def _reading(read, body: str, same: str) -> Meaning:
    try:
        return Meaning(read(body), same)
    except Unreadable as exc:
        return Meaning(None, same, str(exc))


# --- sh: bash's parse ----------------------------------------------------------------------------


def _bash(script: str, *options: str) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")
    if bash is None:
        raise Unreadable("bash is not installed here")
    try:
        # an empty environment: no BASH_ENV to source, the same print whatever the caller's locale
        return subprocess.run(
            [bash, "--noprofile", "--norc", *options],
            input=script,
            capture_output=True,
            text=True,
            env={"LC_ALL": "C"},
            timeout=BASH_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise Unreadable(f"bash did not parse it within {BASH_TIMEOUT} s") from None


def bash_meaning(body: str) -> str:
    """The block as bash parses it: `declare -f` of a function whose body is the block, as the
    executor's `{ ... }` group holds it. Raises Unreadable when bash refuses it or warns about it."""
    alone = _bash(body, "-n")  # what the executor's `standalone` checks before it runs a block
    if alone.returncode != 0 or alone.stderr:
        raise Unreadable(f"bash -n refuses it: {_first_line(alone.stderr)}")
    # -r (restricted) as well, though after `bash -n` nothing but the definition and `declare` runs
    printed = _bash(f"pgrepl_block() {{\n{body.rstrip()}\n}}\ndeclare -f pgrepl_block\n", "-r", "-s")
    if printed.returncode != 0 or printed.stderr or not printed.stdout:
        raise Unreadable(f"bash cannot print it: {_first_line(printed.stderr)}")
    return printed.stdout


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip()[:200] if lines else "(no message)"


# --- postgresql.conf: guc-file.l's tokens and grammar ----------------------------------------------

# guc-file.l's rules in its order (flex takes the longest match; a tie goes to the rule listed first).
# LETTER includes the bytes 0x80-0xFF, so any non-ASCII character is a letter.
_LETTER = "A-Za-z_\u0080-\U0010ffff"
_ID = f"[{_LETTER}][{_LETTER}0-9]*"
GUC_TOKENS = [
    ("id", re.compile(_ID)),
    ("qualified_id", re.compile(rf"{_ID}\.{_ID}")),
    ("string", re.compile(r"'(?:[^'\\\n]|\\.|'')*'")),
    ("unquoted_string", re.compile(rf"[{_LETTER}](?:[{_LETTER}0-9]|[-._:/])*")),
    ("integer", re.compile(r"[-+]?(?:0x[0-9a-fA-F]+|[0-9]+)[a-zA-Z]*")),  # 0x first: flex takes the longest
    ("real", re.compile(r"[-+]?[0-9]*\.[0-9]*(?:[Ee][-+]?[0-9]+)?")),
    ("equals", re.compile("=")),
]
GUC_BLANK = re.compile(r"[ \t\r]*")
VALUE_TOKENS = {"id", "string", "integer", "real", "unquoted_string"}  # not qualified_id: ParseConfigFp
ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _guc_tokens(line: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while True:
        at = GUC_BLANK.match(line, at).end()
        if at == len(line) or line[at] == "#":
            return tokens
        kind, text = "error", line[at]  # flex's `.` rule: GUC_ERROR
        longest = 0
        for name, rule in GUC_TOKENS:
            found = rule.match(line, at)
            if found and len(found.group()) > longest:
                kind, text, longest = name, found.group(), len(found.group())
        tokens.append((kind, text))
        at += len(text)


def _deescape(quoted: str) -> str:
    """DeescapeQuotedString: '' is one quote; \\b \\f \\n \\r \\t, up to three octal digits, else the
    character itself; the value ends at a NUL, as a C string does."""
    out, inner, at = [], quoted[1:-1], 0
    while at < len(inner):
        char = inner[at]
        if char == "\\" and at + 1 < len(inner):
            nxt = inner[at + 1]
            octal = re.match(r"[0-7]{1,3}", inner[at + 1 :])
            if octal:
                out.append(chr(int(octal.group(), 8) & 0xFF))
                at += 1 + len(octal.group())
                continue
            out.append(ESCAPES.get(nxt, nxt))
            at += 2
        elif char == "'" and inner[at + 1 : at + 2] == "'":
            out.append("'")
            at += 2
        else:
            out.append(char)
            at += 1
    return "".join(out).split("\0")[0]


def settings_meaning(body: str) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs PostgreSQL reads from `body` in postgresql.conf syntax (`include`,
    `include_if_exists` and `include_dir` too, as the pairs they are written as), in order."""
    pairs = []
    for number, line in enumerate(body.split("\n"), 1):
        tokens = _guc_tokens(line)
        if not tokens:
            continue
        if tokens[0][0] in ("id", "qualified_id") and len(tokens) > 1 and tokens[1][0] == "equals":
            tokens = [tokens[0], *tokens[2:]]
        if len(tokens) != 2 or tokens[0][0] not in ("id", "qualified_id") or tokens[1][0] not in VALUE_TOKENS:
            raise Unreadable(f"line {number} is not a setting PostgreSQL reads: {line.strip()[:120]!r}")
        (_, name), (kind, value) = tokens
        pairs.append((name.translate(ASCII_LOWER), _deescape(value) if kind == "string" else value))
    return tuple(pairs)


# --- pg_hba.conf: hba.c's fields -------------------------------------------------------------------

HBA_BLANKS = " \t\r"


def hba_meaning(body: str) -> tuple[tuple[str, ...], ...]:
    """Each rule's fields as PostgreSQL splits them, quotes kept, in order."""
    rules = []
    for number, line in enumerate(body.split("\n"), 1):
        if line.rstrip("\r").endswith("\\"):
            raise Unreadable(
                f"line {number} ends in a backslash, which PostgreSQL 16 and later join to the next line "
                "and older versions do not"
            )
        fields, field, quoted = [], "", False
        for char in line:
            if char == "#" and not quoted:
                break
            if char in HBA_BLANKS and not quoted:
                if field:
                    fields.append(field)
                field = ""
                continue
            if char == '"':
                quoted = not quoted
            field += char
        if quoted:
            raise Unreadable(f"line {number} has an unclosed double quote: {line.strip()[:120]!r}")
        if field:
            fields.append(field)
        if fields:
            rules.append(tuple(fields))
    return tuple(rules)
