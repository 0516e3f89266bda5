"""One way for tests to wait on a condition with a real deadline (never a fixed sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 60.0,
             interval: float = 0.05) -> Any:
    """`cond()`'s first truthy value; AssertionError naming `what` (and the last value)
    once `timeout` seconds pass without one."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} after {timeout:g}s (last: {last!r})")
