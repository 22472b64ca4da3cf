"""The mutation report of a runbook (`runbooks/NAME.mutation.md`, and `summary.md` of a mutate run): per OS
family, part and operator class, which mutants the gate killed, which survived, which are explained, and which
were not measured, from the committed verdicts `pgrepl-harness mutate` keeps in `runbooks/NAME.mutation.json`.

The report is a function of committed files only (the runbook, its explanations, the ledger, the scenario modules
and image profiles): no date, no commit of its own, no line numbers (a mutant is named by its step and text), so
anyone regenerates the same file on a fresh clone, and a prose edit leaves it as it is. A verdict is keyed by what
can change the mutant's outcome (harness.mutate.MutantKeys). Each cell's mutant list is fingerprinted in the
report (`cell_digests`), and tests/test_mutation_report.py fails when the runbook's mutants no longer match it,
or when regenerating the report would change it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import project
from harness.gate import module_parts
from harness.images import ImageProfile
from harness.kills import ledger_path
from harness.mutate import (
    CLASSES,
    NOT_RUN,
    Ledger,
    Mutant,
    MutantKeys,
    explanations,
    module_costs,
    mutants,
    not_run_here,
    part_modules,
    scenario_digest,
    usable,
)
from harness.runbook import RunbookError, parse_runbook

MEASURED = ("killed", "survived")  # the statuses a scenario run gave
# The image that measures each executed OS family (issue 24): the EL families on their PGDG-layout images.
MEASURED_IMAGES = {"debian": "debian-12", "el8": "el8-pgdg-layout", "el7": "el7-pgdg-layout"}
REGENERATE = "pgrepl-harness mutate --report"
DIGESTS = re.compile(r"^<!-- mutant digests: (\{.*\}) -->$", re.MULTILINE)


def report_path(runbook: Path) -> Path:
    """`runbooks/NAME.md` -> `runbooks/NAME.mutation.md`: the committed report."""
    return runbook.with_suffix(".mutation.md")


@dataclass
class Row:
    mutant: Mutant
    status: str  # killed, survived, explained, not measured, or NOT_RUN (the image never runs its block)
    by: str = ""  # the module that killed it
    why: str = ""  # an explanation's reason
    measured: dict = field(default_factory=dict)  # {"at": ..., "commit": ...}, when the verdict recorded them
    seconds: float | None = None
    modules: tuple[str, ...] = ()  # a partial measure (mutate --modules): only these modules ran


@dataclass
class Cell:
    family: str
    image: str
    part: str
    operators: str  # an operator class of harness.mutate.CLASSES
    rows: list[Row]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def score(self) -> str:
        """The share killed, always with the share of the cell it is measured on: never a bare percentage."""
        return (
            score(self.count("killed"), self.count("survived"), self.count("not measured"))
            + (f"; {self.count(NOT_RUN)} {NOT_RUN}" if self.count(NOT_RUN) else "")
            + (" (only some modules)" if any(r.modules for r in self.rows if r.status in MEASURED) else "")
        )

    @property
    def digest(self) -> str:
        return cell_digest([r.mutant for r in self.rows], self.explained_keys())

    def explained_keys(self) -> set[tuple[str, str, str, str]]:
        return {r.mutant.key for r in self.rows if r.status == "explained"}


def score(killed: int, survived: int, missing: int) -> str:
    """ "100.0% of 3 measured; 48 not measured", "none measured (48 not measured)", "50.0% of 2 measured, all"."""
    measured = killed + survived
    if not measured:
        return f"none measured ({missing} not measured)" if missing else "-"
    share = f"{100.0 * killed / measured:.1f}% of {measured} measured"
    return f"{share}; {missing} not measured" if missing else f"{share}, all"


def cell_digest(found: list[Mutant], explained: set[tuple[str, str, str, str]]) -> str:
    """A fingerprint of a cell's mutants as the report names them (step, operator, change, text, explained or not),
    in runbook order: adding, removing, changing or re-explaining one changes it; moving it to another line of the
    file (prose edited above it) does not, as the report shows no line numbers."""
    text = "\n".join(
        "\t".join((m.step, m.operator, m.change, m.text, str(m.key in explained), m.action)) for m in found
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def family_mutants(runbook: Path, family: str, image: str, operators: str) -> dict[str, list[Mutant]]:
    """Part -> the mutants of one operator class that `image` (of `family`) runs, every part at once."""
    from harness.images import ImageProfile

    profile = ImageProfile.load(image)
    parts = tuple(parse_runbook(runbook).parts())
    grouped: dict[str, list[Mutant]] = {part: [] for part in parts}
    try:
        found = mutants(runbook, family, parts, profile.package_source, classes=(operators,), pg_major=profile.pg_major)
    except RunbookError:  # the runbook has no block for this family: no cell of it
        return grouped
    for mutant in found:
        grouped[mutant.part].append(mutant)
    return grouped


def cell_digests(runbook: Path) -> dict[str, str]:
    """ "family/part/class" -> its digest, for every cell the runbook has (no verdicts needed: cheap)."""
    explained = set(explanations(runbook))
    return {
        f"{family}/{part}/{operators}": cell_digest(found, explained)
        for family, image in MEASURED_IMAGES.items()
        for operators in CLASSES
        for part, found in family_mutants(runbook, family, image, operators).items()
        if found
    }


def cells(runbook: Path, ledger: Path) -> list[Cell]:
    """Every (family, part, class) cell with each mutant's verdict from `ledger` (or explained, or not measured)."""
    verdicts = Ledger(ledger)
    explained = explanations(runbook)
    root = project.current().root
    modules, relative = module_parts(), str(runbook.resolve().relative_to(root))
    keys = MutantKeys(runbook, modules)
    tests = {
        part: scenario_digest(root, part_modules(modules, relative, part)) for part in parse_runbook(runbook).parts()
    }
    made = []
    for family, image in MEASURED_IMAGES.items():
        profile = ImageProfile.load(image)
        for operators in CLASSES:
            for part, found in family_mutants(runbook, family, image, operators).items():
                if not found:
                    continue
                rows = []
                for mutant in found:
                    if (why := explained.get(mutant.key)) is not None:
                        rows.append(Row(mutant, "explained", why=why))
                        continue
                    if (why := not_run_here(mutant, profile)) is not None:
                        rows.append(Row(mutant, NOT_RUN, why=why))
                        continue
                    verdict = usable(verdicts.get(keys.key(image, mutant)), tests[part])
                    if verdict is None:
                        rows.append(Row(mutant, "not measured"))
                        continue
                    rows.append(
                        Row(
                            mutant,
                            verdict["verdict"],
                            by=verdict.get("by") or "",
                            measured=verdict.get("measured", {}),
                            seconds=verdict.get("seconds"),
                            modules=tuple(verdict.get("modules", ())),
                        )
                    )
                made.append(Cell(family, image, part, operators, rows))
    return made


def code(text: str) -> str:
    """`text` as a code span inside a Markdown table cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


HOW_TO_READ = (
    "**How to read this report.** Each mutant is one line of a runbook block removed, or one value in it changed "
    "(a setting, a name, an address, an option), as a slip of a DBA's hand would. *Killed*: a scenario of the "
    "harness noticed, so a mistake on this line would be caught before it reaches a server. *Survived*: the "
    "scenarios ran with the line broken and no test noticed; such a line is guarded by review alone. "
    "*Explained*: a reviewer-checkable reason why no test should notice (the line only prints a message, a value "
    "equals the default), given next to it below. *Not measured*: no verdict is kept for the line as it reads now "
    "(never measured, or the line or a block its scenarios run changed since). *Not run here*: the image that "
    "measures the family never runs the line's block (the EL images, PostgreSQL preinstalled because PGDG cannot "
    "be reached, skip the package steps), so no scenario can see it; it counts neither as measured nor as "
    "explained. A score counts only measured mutants, and always says how many that is."
)


def markdown(runbook: Path, root: Path, ledger: Path | None = None) -> str:
    """The report, from the committed `ledger` alone (the runbook's own by default: ledger_path): the same text on
    any clone of the same commit."""
    ledger = ledger or ledger_path(runbook)
    made = cells(runbook, ledger)
    relative = runbook.resolve().relative_to(root)
    costs = module_costs()
    modules = module_parts()
    runs = {
        part: sorted(
            (Path(m).stem for m in part_modules(modules, str(relative), part)),
            key=lambda m: (costs.get(f"scenarios/{m}.py", 99), m),
        )
        for part in dict.fromkeys(c.part for c in made)
    }
    total = {s: sum(c.count(s) for c in made) for s in ("killed", "survived", "explained", "not measured", NOT_RUN)}
    dates = sorted({r.measured["at"] for c in made for r in c.rows if r.measured.get("at")})
    commits = sorted({r.measured["commit"] for c in made for r in c.rows if r.measured.get("commit")})
    undated = sum(1 for c in made for r in c.rows if r.status in MEASURED and not r.measured)
    timed = [r.seconds for c in made for r in c.rows if r.seconds]
    measured = [f"Measured from {dates[0]} to {dates[-1]} at commits {', '.join(commits)}"] if dates else []
    if undated:
        measured.append(f"{undated} verdicts were kept before verdicts recorded their date and commit")
    if timed:
        average = sum(timed) / len(timed)
        measured.append(f"{len(timed)} mutants timed: {average:.0f} s each ({min(timed):.0f}-{max(timed):.0f} s)")
    shown = ledger.relative_to(root) if ledger.resolve().is_relative_to(root) else ledger
    out = [
        f"# Mutation report: `{relative}`",
        "",
        HOW_TO_READ,
        "",
        f"Written by `{REGENERATE}` from the verdicts committed in `{shown}`, which `pgrepl-harness mutate` "
        "adds to as it measures. A verdict is kept while the mutated line, the blocks its scenarios run (the "
        "setup of its family and its part) and the bindings read as they did when it was measured; prose and "
        "other families' blocks do not count. A survival also needs the same scenario modules. "
        "`tests/test_mutation_report.py` fails when the runbook's mutants or verdicts no longer match this file, "
        f"naming `{REGENERATE}`, which only rewrites it (no scenario runs, no verdict is lost).",
        "",
        "Operator classes: `delete` (each functional line: a command with its continuation lines and "
        "here-document, a setting, a rule) and `value` (a setting to its default or another value, a name "
        "misspelt, an hba method or address, one option of a command dropped; `harness/mutations.py`). "
        "Families and the image that measures each: "
        + ", ".join(f"{family} on `{image}`" for family, image in MEASURED_IMAGES.items())
        + ". A mutant runs the scenario modules of its part (below, cheapest first) until one fails.",
        "",
        f"In all: {sum(len(c.rows) for c in made)} mutants, {total['killed']} killed, {total['survived']} survived, "
        f"{total['explained']} explained, {total['not measured']} not measured, {total[NOT_RUN]} {NOT_RUN}; score "
        f"{score(total['killed'], total['survived'], total['not measured'])}.",
        "; ".join(measured) + "." if measured else "No verdict is kept for this runbook as it is now.",
        "",
        "## Score per family, part and class",
        "",
        "| family (image) | part | class | mutants | killed | survived | explained | not measured "
        f"| {NOT_RUN} | score |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in made:
        out.append(
            f"| {c.family} (`{c.image}`) | {c.part} | {c.operators} | {len(c.rows)} | {c.count('killed')} | "
            f"{c.count('survived')} | {c.count('explained')} | {c.count('not measured')} | {c.count(NOT_RUN)} | "
            f"{c.score} |"
        )
    out += ["", "## Scenario modules per part", "", "| part | modules a mutant runs, cheapest first |", "|---|---|"]
    out += [f"| {part} | {', '.join(modules) or '(none)'} |" for part, modules in runs.items()]
    for title, status, extra in (
        ("Survivors", "survived", "measured"),
        ("Explained", "explained", "why"),
    ):
        rows = [(c, r) for c in made for r in c.rows if r.status == status]
        out += ["", f"## {title} ({len(rows)})", ""]
        if not rows:
            out.append("None.")
            continue
        out += [f"| family | part | class | step | text | {extra} |", "|---|---|---|---|---|---|"]
        for c, r in rows:
            note = r.why if status == "explained" else " ".join(r.measured.values()) or "not recorded"
            if r.modules:
                note += f" (only {', '.join(r.modules)})"
            out.append(
                f"| {c.family} | {c.part} | {c.operators} | {r.mutant.step} | "
                f"{code(r.mutant.what)} | {note.replace('|', '/')} |"
            )
    skipped: dict[tuple[str, str, str], list[Row]] = {}
    for c in made:
        for r in c.rows:
            if r.status == NOT_RUN:
                skipped.setdefault((c.family, c.image, r.why), []).append(r)
    out += ["", f"## {NOT_RUN.capitalize()} ({total[NOT_RUN]})", ""]
    out += [
        f"- {family} (`{image}`): {len(rows)} mutants of "
        + ", ".join(f"`{step}`" for step in dict.fromkeys(r.mutant.step for r in rows))
        + f". {why}."
        for (family, image, why), rows in skipped.items()
    ] or ["None."]
    digests = {f"{c.family}/{c.part}/{c.operators}": c.digest for c in made}
    out += ["", f"<!-- mutant digests: {json.dumps(digests, sort_keys=True)} -->", ""]
    return "\n".join(out)


def recorded_digests(report: Path) -> dict[str, str]:
    """The digests a committed report recorded ({} when there is none, or it has none)."""
    found = DIGESTS.search(report.read_text()) if report.is_file() else None
    return json.loads(found.group(1)) if found else {}
