"""Move verdicts of a `mutate` state file written before verdicts had MutantKeys into the committed ledger.

Such a state (`artifacts/mutate/state.json`) names a verdict by the digest of its image and the whole mutated
runbook, which cannot be read back. This finds the runbook text each verdict was measured on among the runbook's
versions in git (every commit of every branch that changed it) and any copies given with --text (another
worktree's runbook), re-makes that version's mutants, and where one's old digest names a verdict, gives the verdict
the mutant's key in that version (harness.mutate.MutantKeys); when two verdicts get one key (the same mutant
measured on two versions that differ only where it does not count), the later one. A verdict whose key a mutant
of the runbook has now (its line, the blocks its scenarios run and the bindings read the same today) goes into the
ledger; the others belong to runbook text that is gone. A verdict already in the ledger is kept.

    python tools/rekey_mutation_verdicts.py artifacts/mutate/state.json [--text OTHER/runbooks/NAME.md ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import project
from harness.gate import module_parts
from harness.images import ImageProfile
from harness.kills import ledger_path
from harness.mutate import CLASSES, Ledger, MutantKeys, current_keys, mutants
from harness.runbook import RunbookError


def old_key(image: str, mutated: str) -> str:
    """How a state named a verdict before MutantKeys: the image and the whole mutated runbook."""
    return hashlib.sha256(f"{image}\0{mutated}".encode()).hexdigest()[:16]


def measured_at(verdict: dict | None) -> str:
    """When a verdict was measured ("" when it did not record it, or there is none): the newer of two wins."""
    return ((verdict or {}).get("measured") or {}).get("at", "")


def versions(root: Path, relative: str, extra: list[Path]) -> list[tuple[str, str]]:
    """(where from, text) of every version of the runbook in git, and of the extra copies, each text once."""
    git = ["git", "-C", str(root)]
    revisions = subprocess.run(
        [*git, "rev-list", "--all", "--", relative], capture_output=True, text=True, check=True
    ).stdout.split()
    found: dict[str, str] = {}
    for revision in revisions:
        shown = subprocess.run([*git, "show", f"{revision}:{relative}"], capture_output=True, text=True)
        if shown.returncode == 0:
            found.setdefault(shown.stdout, revision[:12])
    for path in extra:
        found.setdefault(path.read_text(), str(path))
    found.setdefault((root / relative).read_text(), "the working tree")
    return [(where, text) for text, where in found.items()]


def rekey(state: dict[str, dict], runbook: Path, extra: list[Path]) -> dict[str, dict]:
    """New key -> verdict (with its image, step and text) for every verdict of `state` whose runbook text is found."""
    root = project.current().root
    relative = str(runbook.resolve().relative_to(root))
    modules = module_parts()
    images = {name: ImageProfile.load(name) for name in project.current().image_names()}
    moved: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / runbook.name
        for where, text in versions(root, relative, extra):
            copy.write_text(text)
            lines = text.splitlines(keepends=True)
            try:
                keys = MutantKeys(copy, modules, relative=relative)
            except RunbookError:
                continue
            matched = 0
            for image, profile in images.items():
                try:
                    found = mutants(
                        copy,
                        profile.family,
                        tuple(keys.book.parts()),
                        profile.package_source,
                        classes=tuple(CLASSES),
                        pg_major=profile.pg_major,
                    )
                except RunbookError:
                    continue
                for mutant in found:
                    verdict = state.get(old_key(image, mutant.apply(lines)))
                    if verdict and verdict.get("verdict") in ("killed", "survived"):
                        key = keys.key(image, mutant)
                        if measured_at(moved.get(key)) > measured_at(verdict):
                            continue  # the same mutant measured later (another version, same blocks): the newer
                        moved[key] = {
                            **verdict,
                            "image": image,
                            "step": mutant.step,
                            "text": mutant.what,
                        }
                        matched += 1
            if matched:
                print(f"{where}: {matched} verdicts", file=sys.stderr)
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("states", nargs="+", type=Path, help="state.json files written by mutate before MutantKeys")
    parser.add_argument("--runbook", type=Path, default=project.current().default_runbook)
    parser.add_argument("--text", nargs="*", type=Path, default=[], help="other copies of the runbook to look in")
    args = parser.parse_args(argv)
    state: dict[str, dict] = {}
    for path in args.states:
        state.update(json.loads(path.read_text()))
    runbook = args.runbook.resolve()
    moved = rekey(state, runbook, args.text)
    ledger = Ledger(ledger_path(runbook))
    now = current_keys(runbook, {v["image"] for v in moved.values()})
    added = 0
    for key, verdict in sorted(moved.items()):
        if key in now and ledger.get(key) is None:
            ledger.put(key, verdict)
            added += 1
    print(
        f"{len(state)} verdicts in the states; {len(moved)} mutants found in a runbook version; {added} added to "
        f"{ledger.path} (the others are of runbook text that reads differently now, or already there)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
