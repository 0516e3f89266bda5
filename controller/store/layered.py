"""The tables of published snapshots: read-only mappings whose next version costs the
change, not a copy of the table.

Each snapshot the store publishes holds, per Intent table, a mapping of id -> object
that must never change once published. A dict copy per write made every create
pay for the whole table (issue 11: at 10,000 ports the copy, freeing the snapshot
it replaced, and the garbage collector walking each new 10,000-entry dict made the
last thousand creates 2x slower than the first). A `Layered` mapping is a shared,
never-modified base dict plus the (small) changes made since; the next version
copies only those, and folds them into a new base once they grow past about the
square root of the table (so a write costs O(sqrt n) amortised, lookups two dict
probes).

It answers exactly as the merged dict would, in the same order: the base's order,
a replaced key in its place, a removed key gone, and an added key (or one removed
and added again) appended, in the order added. Iteration, `len`, `keys`, `values`,
`items` and `copy` go through the merged dict, made once per version on first
need.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from math import isqrt
from typing import Any, Optional

from controller.frozen import copy_of

_MISSING: Any = object()
_FOLD_MIN = 64  # changes kept unfolded at least (small tables fold rarely, cheaply)


class ChangedView(Mapping[str, Any]):
    """A read-only mapping: `_base` with `_changes` (key -> object now, None: removed)
    applied. Lookups are two dict probes; whatever needs every entry goes through the
    merged dict of `_all()`, which each subclass makes once, in the order a dict copy
    edited the same way would have (the base's, a replaced key in its place, a new key
    appended)."""

    __slots__ = ()
    _base: Mapping[str, Any]
    _changes: dict[str, Any]

    def _all(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        value = self._changes.get(key, _MISSING)
        if value is _MISSING:
            return self._base[key]
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._changes.get(key, _MISSING)
        if value is _MISSING:
            return self._base.get(key, default)
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        value = self._changes.get(key, _MISSING)  # type: ignore[call-overload]
        if value is _MISSING:
            return key in self._base
        return value is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __reversed__(self) -> Iterator[str]:
        return reversed(list(self._all()))

    def keys(self) -> KeysView[str]:
        return self._all().keys()

    def values(self) -> ValuesView[Any]:
        return self._all().values()

    def items(self) -> ItemsView[str, Any]:
        return self._all().items()

    def copy(self) -> dict[str, Any]:
        """A dict copy (as `MappingProxyType.copy`; `frozen.copy_of` relies on it)."""
        return copy_of(self._all())

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        out = self.copy()
        out.update(other)
        return out

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(other)
        out.update(self._all())
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChangedView):
            other = other._all()
        return self._all() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self._all())!r})"


class Layered(ChangedView):
    """A read-only mapping: `base` (never modified) with `changes` applied."""

    __slots__ = ("_base", "_changes", "_gone", "_tail", "_len", "_merged", "__weakref__")

    def __init__(self, base: Optional[dict[str, Any]] = None) -> None:
        """A mapping of exactly `base`, which the caller hands over (never modifies again)."""
        self._base: dict[str, Any] = {} if base is None else base
        # key -> object now (None: removed) for every key that differs from the base
        self._changes: dict[str, Any] = {}
        self._gone: frozenset[str] = frozenset()  # base keys no longer at their base place
        self._tail: dict[str, None] = {}  # keys after the base's, in order (all present)
        self._len = len(self._base)
        self._merged: Optional[dict[str, Any]] = None

    # -- the next version ---------------------------------------------------------
    def updated(self, removed: Iterable[str], put: Iterable[tuple[str, Any]]) -> Layered:
        """A new mapping: this one with the `removed` keys popped (those absent
        ignored), then each (key, object) of `put` assigned in order, as on a dict
        copy. This one is left as it was."""
        changes = dict(self._changes)
        gone = set(self._gone)
        tail = dict(self._tail)
        base = self._base
        size = self._len

        def present(key: str) -> bool:
            value = changes.get(key, _MISSING)
            return key in base if value is _MISSING else value is not None

        for key in removed:
            if not present(key):
                continue
            size -= 1
            if key in tail:
                del tail[key]
            if key in base:
                changes[key] = None
                gone.add(key)
            else:
                del changes[key]
        for key, obj in put:
            if obj is None:
                raise ValueError(f"None cannot be stored (key {key!r})")
            if not present(key):  # appended, as a dict would
                size += 1
                tail[key] = None
                if key in base:
                    gone.add(key)
            if key in base and key not in gone and base[key] is obj:
                changes.pop(key, None)  # back to the base's own object
            else:
                changes[key] = obj
        out = Layered.__new__(Layered)
        out._base = base
        out._changes = changes
        out._gone = frozenset(gone)
        out._tail = tail
        out._len = size
        out._merged = None
        if len(changes) > max(_FOLD_MIN, 2 * isqrt(len(base))):
            return Layered(out._all())  # fold: a new base, nothing pending
        return out

    # -- reading ------------------------------------------------------------------
    def _all(self) -> dict[str, Any]:
        """The merged dict (made once; never modified, never handed out)."""
        merged = self._merged
        if merged is None:
            if not self._changes:
                merged = self._base
            else:
                merged = self._base.copy()
                changes = self._changes
                for key in self._gone:
                    del merged[key]
                for key, obj in changes.items():
                    if obj is not None and key not in self._tail:
                        merged[key] = obj  # in its base place
                for key in self._tail:
                    merged[key] = changes[key]
            self._merged = merged
        return merged

    def __len__(self) -> int:
        return self._len


__all__ = ["ChangedView", "Layered"]
