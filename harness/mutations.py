"""Value mutations of a runbook's lines: the second operator class of `pgrepl-harness mutate`.

A real edit changes a value far more often than it deletes a line. For each functional unit of a
block (harness.mutate.units) these operators each make one changed copy:

- `default`: a setting's value replaced by PostgreSQL's default for it (BOOT_VALUES, recorded from
  `pg_settings.boot_val`); none where the value already is the default (nothing would change).
- `other-value`: a boolean or enumerated setting set to each of its other values (ENUM_VALUES),
  the default excluded (that is `default`'s).
- `name`: one occurrence of a name the runbook gives (a slot, an application name, the replication
  user: NAME_DEFINITIONS) misspelt, its last character doubled.
- `hba-method`: a pg_hba.conf rule's method changed to `trust`, and to `reject`.
- `hba-address`: a pg_hba.conf rule's address widened to `/0`.
- `drop-option`: one option of a command line removed, with its argument where the command takes
  one (OPTION_ARGUMENTS); each letter of a bundle such as `-Atc` on its own, except for commands
  whose options are words (WORD_OPTIONS: `openssl ... -CAkey FILE`). One drop is not made, being
  equivalent by construction: `-v ON_ERROR_STOP=1` from a psql that runs a single `-c` command and
  reads no script, which exits 1 when its command fails either way (`_one_command_psql`).

Nothing here runs anything: a mutant is a unit's text and its replacement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from harness.runbook import Block
from harness.runbook.meaning import Unreadable, hba_meaning, settings_meaning

VALUE_OPERATORS = ("default", "other-value", "name", "hba-method", "hba-address", "drop-option")

# pg_settings.boot_val of every setting the runbook's conf blocks set, per major, recorded from running
# servers: initdb, then `SELECT name, boot_val FROM pg_settings` in single-user mode, on the project's
# images with PostgreSQL 13 (debian-11), 15 (debian-12), 17 (debian-13) and 18 (debian-testing).
# (`postgres --describe-config` is no source: it prints a variable's initial C value, such as
# hot_standby FALSE and max_wal_senders 0, not its boot value.) They are the same in every major.
BOOT_VALUES: dict[str, dict[int, str]] = {
    name: dict.fromkeys((13, 15, 17, 18), value)
    for name, value in {
        "archive_command": "",
        "archive_mode": "off",
        "hot_standby": "on",
        "hot_standby_feedback": "off",
        "listen_addresses": "localhost",
        "max_slot_wal_keep_size": "-1",
        "max_wal_senders": "10",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "restore_command": "",
        "ssl": "off",
        "ssl_ca_file": "",
        "ssl_cert_file": "server.crt",
        "ssl_key_file": "server.key",
        "synchronous_commit": "on",
        "synchronous_standby_names": "",
        "wal_level": "replica",
        "wal_log_hints": "off",
    }.items()
}
# pg_settings.enumvals (vartype enum), and bool's two values, from the same servers
ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "archive_mode": ("always", "on", "off"),
    "synchronous_commit": ("local", "remote_write", "remote_apply", "on", "off"),
    "wal_level": ("minimal", "replica", "logical"),
    "hot_standby": ("on", "off"),
    "hot_standby_feedback": ("on", "off"),
    "ssl": ("on", "off"),
    "wal_log_hints": ("on", "off"),
}
BOOLEAN = {"on": "on", "true": "on", "yes": "on", "1": "on", "off": "off", "false": "off", "no": "off", "0": "off"}

# Where the runbook gives a name: its slots, its standbys' application names, its roles.
NAME_DEFINITIONS = (
    re.compile(r"pg_create_physical_replication_slot\('(\w+)'"),
    re.compile(r"application_name=(\w+)"),
    re.compile(r"CREATE ROLE (\w+)"),
)

# Options that take an argument, per command (the command's file name): the letter of a short
# option, or a long option written apart from its value. Any other option is removed alone.
OPTION_ARGUMENTS: dict[str, set[str]] = {
    "psql": {"c", "d", "f", "h", "o", "p", "U", "v"},
    "pg_basebackup": {"D", "d", "h", "p", "S", "t", "U", "X"},
    "pg_rewind": {"D"},
    "postgres": {"c", "D"},
    "pg_ctl": {"D", "m", "o"},
    "sudo": {"g", "u"},
    "install": {"g", "m", "o"},
    "sh": {"c"},
    "bash": {"c"},
    "sed": {"e"},
    "ps": {"o"},
    "gpg": {"o"},
    "wget": {"O"},
    "openssl": {"days", "subj", "newkey", "keyout", "out", "in", "CA", "CAkey", "CAfile", "extfile"},
}
# Commands whose options are words after one dash (`openssl x509 -req -CAkey FILE`), never bundles
# of letters: such an option is removed whole, with its argument where it takes one.
WORD_OPTIONS = {"openssl"}
# Shell builtins whose options are the shell's own, not a command line's: left alone.
BUILTINS = {"set", "echo", "printf", "test", "[", "exit", "return", "read", "shopt", "trap"}
# Commands that run the next word as a command (after their own options and VAR=value words).
WRAPPERS = {"sudo", "env", "timeout", "nice", "exec", "setsid"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SETTING = re.compile(r"^(\s*[A-Za-z_][A-Za-z0-9_.]*\s*=?\s*)('(?:[^'\\]|\\.|'')*'|[^\s#]+)(.*)$")


@dataclass(frozen=True)
class Change:
    """One value mutation of a unit: its operator, what it does (for reports and explanations), and
    the unit's text with it made."""

    operator: str
    change: str
    replacement: str


def changes(block: Block, unit: str, *, pg_major: int, names: set[str]) -> Iterator[Change]:
    """Every value mutation of `unit` (the text of one functional unit of `block`)."""
    if block.kind == "conf" and (block.file or "").endswith("pg_hba.conf"):
        yield from hba_changes(unit)
    elif block.kind == "conf":
        yield from setting_changes(unit, pg_major)
    else:
        yield from option_changes(unit)
    yield from name_changes(unit, names)


def runbook_names(blocks: list[Block]) -> set[str]:
    """The names the runbook gives (NAME_DEFINITIONS), in any of `blocks`."""
    return {m.group(1) for b in blocks for pattern in NAME_DEFINITIONS for m in pattern.finditer(b.body)}


# --- settings --------------------------------------------------------------------------------------


def normal(name: str, value: str) -> str:
    """A value as PostgreSQL compares it: booleans by their meaning, enums in lower case."""
    if name in ENUM_VALUES:
        value = value.lower()
        return BOOLEAN.get(value, value) if ENUM_VALUES[name] == ("on", "off") else value
    return value


def setting_changes(line: str, pg_major: int) -> Iterator[Change]:
    try:
        pairs = settings_meaning(line)
    except Unreadable:
        return
    found = SETTING.match(line)
    if len(pairs) != 1 or found is None:
        return
    name, value = pairs[0]
    current = normal(name, value)
    boot = BOOT_VALUES.get(name, {}).get(pg_major)

    def to(new: str) -> str:
        return f"{found.group(1)}'{new}'{found.group(3)}"

    shown = repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if boot is not None and normal(name, boot) != current:
        yield Change("default", f"{name}: {shown} -> default {boot!r}", to(boot))
    for other in ENUM_VALUES.get(name, ()):
        if other not in (current, normal(name, boot or "")):
            yield Change("other-value", f"{name}: {shown} -> {other!r}", to(other))


# --- pg_hba.conf -----------------------------------------------------------------------------------


def hba_changes(line: str) -> Iterator[Change]:
    try:
        rules = hba_meaning(line)
    except Unreadable:
        return
    if len(rules) != 1 or len(rules[0]) < 4:
        return
    fields = rules[0]
    method = fields[4] if fields[0].startswith("host") and len(fields) > 4 else fields[3]
    at = line.rindex(method)
    for new in ("trust", "reject"):
        if method != new:
            yield Change("hba-method", f"method {method} -> {new}", line[:at] + new + line[at + len(method) :])
    if fields[0].startswith("host") and "/" in fields[3] and not fields[3].endswith("/0"):
        address = fields[3]
        wide = address.split("/")[0] + "/0"
        yield Change("hba-address", f"address {address} -> {wide}", line.replace(address, wide, 1))


# --- names -----------------------------------------------------------------------------------------


def name_changes(unit: str, names: set[str]) -> Iterator[Change]:
    """Each occurrence of a name misspelt; not in a message (`echo`), where a name is only words."""
    if unit.lstrip().startswith(("echo ", "printf ")):
        return
    for name in sorted(names):
        for number, found in enumerate(re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", unit), 1):
            misspelt = name + name[-1]
            replacement = unit[: found.start()] + misspelt + unit[found.end() :]
            yield Change("name", f"{name} -> {misspelt} (occurrence {number})", replacement)


# --- command-line options --------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    text: str  # as written, quotes included
    command: str  # the command the word belongs to ("" for a command word itself)


def command_text(unit: str) -> str:
    """The part of a unit bash reads as commands: up to a here-document's body."""
    first, _, rest = unit.partition("\n")
    if "<<" in first or not rest:
        return first
    return unit  # continuation lines


def words(text: str) -> list[Word]:
    """The words of `text` with the command each belongs to. Quotes keep a word together; `|`,
    `&&`, `||`, `;`, `$(` and `)` outside quotes end a simple command. A sketch of bash's reading:
    enough to find the options of the runbook's commands."""
    found: list[Word] = []
    command, expect_command, pending_arg = "", True, False
    at, n = 0, len(text)
    while at < n:
        char = text[at]
        if char in " \t\n" or text.startswith("\\\n", at):
            at += 2 if char == "\\" else 1
            continue
        for separator in ("&&", "||", "$(", "|", ";", ")", "("):
            if text.startswith(separator, at):
                at += len(separator)
                command, expect_command, pending_arg = "", True, False
                break
        else:
            start, quote = at, None
            while at < n:
                char = text[at]
                if quote:
                    if char == "\\" and quote == '"':
                        at += 1
                    elif char == quote:
                        quote = None
                elif char in "'\"":
                    quote = char
                elif char in " \t\n;|&)" or (text.startswith("$(", at) and at > start and text[at - 1] == "="):
                    break
                elif char == "\\":
                    at += 1
                at += 1
            if at == start:  # a lone & or redirection character: not a word
                at += 1
                continue
            word = text[start:at]
            if text.startswith("$(", at):  # name=$(command ...): the assignment ends here
                found.append(Word(start, at, word, command))
                continue
            if expect_command and not ASSIGNMENT.match(word):
                name = word.rsplit("/", 1)[-1]
                found.append(Word(start, at, word, ""))
                command, expect_command = name, False
                continue
            found.append(Word(start, at, word, command))
            if command in WRAPPERS and not pending_arg and not word.startswith("-") and not ASSIGNMENT.match(word):
                if command == "timeout" and word[:1].isdigit():
                    continue
                command, expect_command = word.rsplit("/", 1)[-1], False
                found[-1] = Word(start, at, word, "")
                continue
            name = word[1:] if command in WORD_OPTIONS else word[-1:]
            pending_arg = (
                word.startswith("-") and not word.startswith("--") and name in OPTION_ARGUMENTS.get(command, set())
            )
    return found


def option_changes(unit: str) -> Iterator[Change]:
    """Each option dropped; the same option written twice in a unit (`sudo -u postgres cat ... | sudo -u
    postgres tee`) is dropped at each place, the second and later ones named by their occurrence."""
    seen: dict[str, int] = {}
    for change in _option_changes(unit):
        seen[change.change] = seen.get(change.change, 0) + 1
        if seen[change.change] > 1:
            change = Change(change.operator, f"{change.change} (occurrence {seen[change.change]})", change.replacement)
        yield change


def _option_changes(unit: str) -> Iterator[Change]:
    text = command_text(unit)
    found = words(text)
    for index, word in enumerate(found):
        option = word.text
        is_option = option.startswith("-") and option not in ("-", "--") and not option[1:2].isdigit()
        if word.command in BUILTINS or not word.command or not is_option:
            continue
        takes = OPTION_ARGUMENTS.get(word.command, set())
        following = found[index + 1] if index + 1 < len(found) and found[index + 1].command == word.command else None
        if option.startswith("--") or len(option) == 2 or word.command in WORD_OPTIONS:
            end = word.end
            with_arg = option[1:] in takes if len(option) == 2 or word.command in WORD_OPTIONS else False
            if with_arg and following is not None:
                end = following.end
            removed = text[word.start : end]
            if removed == "-v ON_ERROR_STOP=1" and word.command == "psql" and _one_command_psql(found, index, text):
                continue  # equivalent by construction (the module's docstring)
            yield Change("drop-option", f"{word.command}: drop {removed}", _cut(unit, text, word.start, end))
            continue
        for letter_at, letter in enumerate(option[1:], 1):  # a bundle: -Atc, -eo, -rf
            rest = option[:letter_at] + option[letter_at + 1 :]
            end = word.end
            if letter in takes and letter_at == len(option) - 1 and following is not None:
                end = following.end
                removed = f"{letter} (and {following.text})"
            else:
                removed = letter
            new = text[: word.start] + rest + text[end:]
            yield Change("drop-option", f"{word.command}: drop -{removed} from {option}", new + unit[len(text) :])


def _one_command_psql(found: list[Word], index: int, text: str) -> bool:
    """Whether the psql that word `index` belongs to runs exactly one `-c` command and reads no script
    (no -f, no here-document): then psql exits 1 when that command fails, ON_ERROR_STOP or not (psql's
    startup.c: ACT_SINGLE_QUERY sets EXIT_FAILURE from SendQuery; the variable only stops a script)."""
    first = last = index
    while first > 0 and found[first - 1].command == "psql":
        first -= 1
    while last + 1 < len(found) and found[last + 1].command == "psql":
        last += 1
    options = [w.text for w in found[first : last + 1] if w.text.startswith("-") and not w.text.startswith("--")]
    commands = sum(1 for option in options if option.endswith("c") and option[1:].isalpha())
    reads_script = any("f" in option[1:] for option in options if option[1:].isalpha()) or "<<" in text
    return commands == 1 and not reads_script


def _cut(unit: str, text: str, start: int, end: int) -> str:
    """`unit` without text[start:end] and the blank before it; a continuation line left empty goes too."""
    while start > 0 and text[start - 1] in " \t":
        start -= 1
    cut = text[:start] + text[end:]
    cut = re.sub(r"[ \t]*\\\n[ \t]*(?=\\\n|$)", "", cut)  # `\` then nothing: the option was a line's only word
    return cut + unit[len(text) :]
