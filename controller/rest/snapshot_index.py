"""Indexes built once per intent snapshot, shared by every request that reads it.

A snapshot is immutable, so an index of it never goes stale; keeping the last few
by identity serves the requests in flight while the store moves on.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any, Optional, TypeVar

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


class Ordered:
    """One table's objects in list order, with their sort keys beside them.

    Sorted once per snapshot, so a page after a marker is found by bisecting the
    keys (`position`) instead of sorting and scanning the whole table per request.
    """

    def __init__(self, objects: Iterable[Any], key: Callable[[Any], Any]) -> None:
        pairs = sorted(((key(o), o) for o in objects), key=lambda pair: pair[0])
        self.keys = [k for k, _ in pairs]
        self.objects = [o for _, o in pairs]
        self.key = key

    def position(self, obj: Any) -> int:
        """Index of `obj` (an object of this table) in the order."""
        return bisect.bisect_left(self.keys, self.key(obj))


@per_snapshot
def _orders(intent: Intent) -> dict[Any, Any]:
    """table -> Ordered, (table, key) -> equality index: what lists of this snapshot built."""
    return {}


def ordered(intent: Intent, table: str, key: Callable[[Any], Any]) -> Ordered:
    """`table` of this exact snapshot sorted by `key`, built on first use.

    One key per table: the collection's default list order (the caller's `key`
    must be the same every time for a given table)."""
    orders = _orders(intent)
    found = orders.get(table)
    if found is None:
        found = orders.setdefault(table, Ordered(getattr(intent, table).values(), key))
    return found  # type: ignore[no-any-return]


def grouped(intent: Intent, table: str, key: str, order: Ordered,
            value: Callable[[Any], Any]) -> Optional[dict[Any, list[int]]]:
    """Positions in `order` (ascending) of `table`'s objects, by `value(obj)`: the
    equality index of one filter key, built on first use per snapshot, so a list
    filtered on it visits only the rows that can match. None: values not hashable."""
    indexes = _orders(intent)
    name = (table, key)
    if name not in indexes:
        index: Optional[dict[Any, list[int]]] = {}
        for i, obj in enumerate(order.objects):
            try:
                index.setdefault(value(obj), []).append(i)  # type: ignore[union-attr]
            except TypeError:
                index = None
                break
        indexes.setdefault(name, index)
    return indexes[name]  # type: ignore[no-any-return]
