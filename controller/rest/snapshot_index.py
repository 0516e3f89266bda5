"""Indexes built once per intent snapshot, shared by every request that reads it.

A snapshot is immutable, so an index of it never goes stale; keeping the last few
by identity serves the requests in flight while the store moves on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

from controller.intent import Intent

T = TypeVar("T")
_KEEP = 4


def per_snapshot(build: Callable[[Intent], T]) -> Callable[[Intent], T]:
    lock = threading.Lock()
    cache: list[tuple[Intent, T]] = []

    @functools.wraps(build)
    def get(intent: Intent) -> T:
        with lock:
            for known, cached in cache:
                if known is intent:
                    return cached
        value = build(intent)
        with lock:
            cache.insert(0, (intent, value))
            del cache[_KEEP:]
        return value

    return get
