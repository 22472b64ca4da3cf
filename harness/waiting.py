"""The one place that sleeps: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness.errors import WaitTimeout
from harness.secrets import redact

T = TypeVar("T")
__all__ = ["WaitTimeout", "wait_until"]


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    seen: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns a truthy value, which is returned.

    On timeout, raise WaitTimeout naming `what` and showing `seen()` (or the last value or
    exception the probe produced), like PostgreSQL's poll_query_until.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = probe()
            if last:
                return last  # type: ignore[return-value]
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            detail = repr(last)
            if seen is not None:
                detail = seen() + (f"\nlast error: {last!r}" if isinstance(last, Exception) else "")
            raise WaitTimeout(redact(f"timed out after {timeout:.0f} s waiting for {what}; last seen:\n{detail}"))
        time.sleep(interval)
