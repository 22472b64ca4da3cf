"""Per-run secrets and the redaction every transcript, log and error message goes through."""

from __future__ import annotations

import secrets as _random

REDACTED = "********"
_known: set[str] = set()


class Secret(str):
    """A generated password. Behaves as a str where it is used, is registered for redaction."""

    def __new__(cls, value: str) -> Secret:
        _known.add(value)
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    @classmethod
    def generate(cls, nbytes: int = 18) -> Secret:
        return cls(_random.token_urlsafe(nbytes))


def redact(text: str) -> str:
    """Replace every secret generated in this process by a fixed mask."""
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
