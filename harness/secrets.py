"""Per-run secrets and the redaction every transcript, log and error message goes through."""

from __future__ import annotations

import functools
import os
import re
import secrets as _random

REDACTED = "********"
_known: set[str] = set()
# On GitHub Actions every generated secret is announced to the runner (`::add-mask::`), which then
# masks it in the job's log whatever prints it. The announcement goes to the stderr this process
# had when it started (kept here, before pytest captures it), never into a test's captured output.
_MASK_FD: int | None = os.dup(2) if os.environ.get("GITHUB_ACTIONS") == "true" else None


class Secret(str):
    """A generated password. Behaves as a str where it is used, is registered for redaction."""

    def __new__(cls, value: str) -> Secret:
        _known.add(value)
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    @classmethod
    def generate(cls, nbytes: int = 18) -> Secret:
        value = _random.token_urlsafe(nbytes)
        if _MASK_FD is not None:
            os.write(_MASK_FD, f"::add-mask::{value}\n".encode())
        return cls(value)


# A run of this many characters of a secret is masked too: a truncated repr ("'Ab3x...") must not
# show a third of it. By chance, 8 characters of a random 24 match ordinary text practically never.
MIN_FRAGMENT = 8


@functools.cache
def _fragments(value: str) -> re.Pattern[str]:
    """Every substring of `value` of MIN_FRAGMENT characters or more, longest first."""
    parts = {value[i:j] for i in range(len(value)) for j in range(i + MIN_FRAGMENT, len(value) + 1)}
    return re.compile("|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True)))


def redact(text: str) -> str:
    """Replace every secret generated in this process, and every long enough piece of one, by a mask."""
    values = sorted(_known, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    for value in values:  # after every whole secret, so that a piece of one never splits another
        if len(value) > MIN_FRAGMENT:
            text = _fragments(value).sub(REDACTED, text)
    return text


def redact_sections(sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A pytest report's captured output (its "Captured stdout/stderr/log" sections, which JUnit's
    system-out also shows), redacted."""
    return [(title, redact(text)) for title, text in sections]
