"""The one place that sleeps: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from harness.errors import WaitTimeout
from harness.secrets import redact

T = TypeVar("T")
__all__ = ["Stopwatch", "WaitTimeout", "wait_until"]


class Stopwatch:
    """Wall time per phase of a bring-up, in order (what `up` and bench show)."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - started))


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    seen: Callable[[], str] | None = None,
    hopeless: Callable[[], str | None] | None = None,
) -> T:
    """Call `probe` until it returns a truthy value, which is returned.

    On timeout, raise WaitTimeout naming `what` and showing `seen()` (or the last value or
    exception the probe produced), like PostgreSQL's poll_query_until. `hopeless()`, asked at
    most once a second, names a reason the condition can no longer hold: the wait stops at once.
    """
    started = time.monotonic()
    deadline, next_hope_check = started + timeout, started + 1.0
    last: object = None
    while True:
        try:
            last = probe()
            if last:
                return last  # type: ignore[return-value]
        except Exception as exc:
            last = exc
        if hopeless is not None and time.monotonic() >= next_hope_check:
            next_hope_check = time.monotonic() + 1.0
            reason = hopeless()
            if reason:
                raise WaitTimeout(
                    redact(f"gave up after {time.monotonic() - started:.1f} s waiting for {what}: {reason}")
                )
        if time.monotonic() >= deadline:
            detail = repr(last)
            if seen is not None:
                detail = seen() + (f"\nlast error: {last!r}" if isinstance(last, Exception) else "")
            raise WaitTimeout(redact(f"timed out after {timeout:.0f} s waiting for {what}; last seen:\n{detail}"))
        time.sleep(interval)
