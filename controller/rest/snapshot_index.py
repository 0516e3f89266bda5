"""Indexes kept per intent snapshot, shared by every request that reads it.

A snapshot is immutable, so an index of it never goes stale; keeping the last few
by identity serves the requests in flight while the store moves on. The list
order and the equality indexes of a new snapshot are carried over from a cached
older one, updated for the ids the store says changed in between
(`intent_delta.delta_between`), so the first list after a write costs what the
write changed rather than a sort of the table; without a known delta (first load,
reconnect) they are built afresh.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional, TypeVar

from controller.intent import Intent
from controller.intent_delta import IntentDelta, delta_between

T = TypeVar("T")
_KEEP = 4


class _Cache:
    """The values of the last few snapshots, newest first, by snapshot identity."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[Intent, Any]] = []

    def find(self, intent: Intent) -> Any:
        with self.lock:
            for known, cached in self.entries:
                if known is intent:
                    return cached
        return None

    def older(self, intent: Intent) -> list[tuple[Intent, Any]]:
        with self.lock:
            return [(k, v) for k, v in self.entries if k is not intent]

    def add(self, intent: Intent, value: Any) -> Any:
        with self.lock:
            for known, cached in self.entries:
                if known is intent:  # another thread got there first: share one
                    return cached
            self.entries.insert(0, (intent, value))
            del self.entries[_KEEP:]
        return value


def per_snapshot(build: Callable[[Intent], T]) -> Callable[[Intent], T]:
    cache = _Cache()

    @functools.wraps(build)
    def get(intent: Intent) -> T:
        found = cache.find(intent)
        if found is not None:
            return found  # type: ignore[no-any-return]
        return cache.add(intent, build(intent))  # type: ignore[no-any-return]

    return get


class Ordered:
    """One table's objects in list order, with their sort keys beside them.

    Sorted once, then carried from snapshot to snapshot (`derive`), so a page after
    a marker is found by bisecting the keys (`position`) instead of sorting and
    scanning the whole table per request. The key must depend on the object alone
    (it is the default list order, (created_at, id)) and be unique per object.
    """

    def __init__(self, objects: Iterable[Any], key: Callable[[Any], Any],
                 pairs: Optional[tuple[list[Any], list[Any]]] = None) -> None:
        if pairs is None:
            sorted_pairs = sorted(((key(o), o) for o in objects), key=lambda pair: pair[0])
            self.keys = [k for k, _ in sorted_pairs]
            self.objects = [o for _, o in sorted_pairs]
        else:
            self.keys, self.objects = pairs
        self.key = key

    def position(self, obj: Any) -> int:
        """Index of `obj` (an object of this table) in the order."""
        return bisect.bisect_left(self.keys, self.key(obj))

    def derive(self, old: Mapping[str, Any], new: Mapping[str, Any], ids: Iterable[str],
               key: Callable[[Any], Any]) -> Ordered:
        """The order of table `new`, which is this order's table `old` with `ids` touched:
        two C-level list copies, then a bisection and a list insert/delete per id."""
        keys, objects = list(self.keys), list(self.objects)
        for ident in ids:
            before = old.get(ident)
            if before is None:
                continue
            k = self.key(before)
            at = bisect.bisect_left(keys, k)
            while at < len(keys) and keys[at] == k:
                if objects[at] is before:
                    del keys[at], objects[at]
                    break
                at += 1
        for ident in ids:
            after = new.get(ident)
            if after is None:
                continue
            k = key(after)
            at = bisect.bisect_right(keys, k)
            keys.insert(at, k)
            objects.insert(at, after)
        return Ordered((), key, (keys, objects))


_orders_cache = _Cache()


def _orders(intent: Intent) -> dict[Any, Any]:
    """table -> Ordered, (table, key) -> equality index: what lists of this snapshot built."""
    found = _orders_cache.find(intent)
    if found is None:
        found = _orders_cache.add(intent, {})
    return found  # type: ignore[no-any-return]


def _carried(intent: Intent, name: Any) -> Optional[tuple[Intent, Any, IntentDelta]]:
    """An older cached snapshot that built `name`, its value and the delta from it."""
    for older, built in _orders_cache.older(intent):
        value = built.get(name)
        if value is None and name not in built:
            continue
        delta = delta_between(older, intent)
        if delta is not None:
            return older, value, delta
    return None


def ordered(intent: Intent, table: str, key: Callable[[Any], Any]) -> Ordered:
    """`table` of this exact snapshot sorted by `key`, built on first use (or carried
    over from an older snapshot's, see module doc).

    One key per table: the collection's default list order (the caller's `key`
    must be the same every time for a given table)."""
    orders = _orders(intent)
    found = orders.get(table)
    if found is None:
        carried = _carried(intent, table)
        objects = getattr(intent, table)
        if carried is not None and not _too_big(carried[2].ids(table), objects):
            older, order, delta = carried
            ids = delta.ids(table)
            if not ids and getattr(older, table) is objects:
                order = Ordered((), key, (order.keys, order.objects))  # nothing moved: share
            else:
                order = order.derive(getattr(older, table), objects, ids, key)
        else:
            order = Ordered(objects.values(), key)
        found = orders.setdefault(table, order)
    return found  # type: ignore[no-any-return]


def _too_big(ids: frozenset[str], table: Mapping[str, Any]) -> bool:
    """A change this large is cheaper to rebuild from than to apply one id at a time."""
    return len(ids) > max(64, len(table) // 4)


Groups = dict[Any, dict[str, Any]]  # value -> object id -> object


def grouped(intent: Intent, table: str, key: str,
            value: Callable[[Any], Any]) -> Optional[Groups]:
    """`table`'s objects by `value(obj)` (value -> id -> object): the equality index
    of one filter key, built on first use per snapshot (or carried over from an
    older snapshot's when only `table` changed in between), so a list filtered on
    it visits only the rows that can match. None: values not hashable."""
    indexes = _orders(intent)
    name = (table, key)
    if name in indexes:
        return indexes[name]  # type: ignore[no-any-return]
    objects: Mapping[str, Any] = getattr(intent, table)
    carried = _carried(intent, name)
    index: Optional[Groups]
    if (carried is not None and carried[2].attrs() <= {table} and carried[1] is not None
            and not _too_big(carried[2].ids(table), objects)):
        # `value` may read other tables (a port's network): carried only when none changed
        older, old_index, delta = carried
        index = _regroup(old_index, getattr(older, table), objects, delta.ids(table), value)
    else:
        index = {}
        for ident, obj in objects.items():
            try:
                index.setdefault(value(obj), {})[ident] = obj
            except TypeError:
                index = None
                break
    return indexes.setdefault(name, index)  # type: ignore[no-any-return]


def _regroup(base: Groups, old: Mapping[str, Any], new: Mapping[str, Any], ids: Iterable[str],
             value: Callable[[Any], Any]) -> Optional[Groups]:
    """Copy on write: the outer map once, a value's group when first edited."""
    out = dict(base)
    copied: set[Any] = set()

    def group(v: Any) -> dict[str, Any]:
        if v not in copied:
            copied.add(v)
            out[v] = dict(out.get(v, ()))
        return out[v]

    try:
        for ident in ids:
            before = old.get(ident)
            if before is not None:
                v = value(before)
                if ident in out.get(v, ()):
                    g = group(v)
                    del g[ident]
                    if not g:
                        del out[v]
                        copied.discard(v)
        for ident in ids:
            after = new.get(ident)
            if after is not None:
                group(value(after))[ident] = after
    except TypeError:
        return None
    return out


def positions(order: Ordered, groups: Iterable[Mapping[str, Any]]) -> list[int]:
    """Positions in `order` (ascending, no repeats) of the objects of `groups`."""
    at: set[int] = set()
    for g in groups:
        at.update(order.position(o) for o in g.values())
    return sorted(at)
