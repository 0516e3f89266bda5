"""What changed between two intent snapshots: the ids touched, per Intent attribute.

The store's snapshot builder records one `IntentDelta` per published snapshot
(relative to the previous generation) in a `DeltaLog`, a ring of the last few
thousand; `NorthboundStore.changes_since` and `delta_between` answer from it, so
consumers (the engine's compiler, the REST layer's per-snapshot indexes) update
what they keep in proportion to the change instead of rebuilding it from the
whole table. A full rebuild of the replica (first load, reconnect) leaves no
delta: everything before it is unknown (None).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional

# The Intent attributes a delta may name (every per-table mapping of `Intent`).
INTENT_ATTRS: tuple[str, ...] = (
    "networks",
    "subnets",
    "ports",
    "security_groups",
    "security_group_rules",
    "qos_policies",
    "qos_rules",
    "routers",
    "router_interfaces",
    "floating_ips",
    "port_forwardings",
    "chassis",
)

_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, eq=False)
class IntentDelta:
    """Ids touched between two snapshots, per Intent attribute name ("ports", "networks", "subnets",
    "security_groups", "security_group_rules", "qos_policies", "qos_rules", "routers",
    "router_interfaces", "floating_ips", "port_forwardings", "chassis"). Touched = added,
    changed or removed; consumers compare old and new snapshots for the ids to tell which."""

    touched: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def merge(self, other: IntentDelta) -> IntentDelta:
        """The union of both."""
        if not other.touched:
            return self
        if not self.touched:
            return other
        return union((self, other))

    def ids(self, attr: str) -> frozenset[str]:
        """The ids of `attr` touched (an empty frozenset if none)."""
        return self.touched.get(attr, _NONE)

    @property
    def size(self) -> int:
        """Total number of ids touched, over every attribute."""
        return sum(len(v) for v in self.touched.values())

    def __hash__(self) -> int:
        return hash(frozenset((k, v) for k, v in self.touched.items() if v))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntentDelta):
            return NotImplemented
        return {k: v for k, v in self.touched.items() if v} == {
            k: v for k, v in other.touched.items() if v}

    def __bool__(self) -> bool:
        return any(self.touched.values())

    def attrs(self) -> frozenset[str]:
        """The attributes with at least one id touched."""
        return frozenset(k for k, v in self.touched.items() if v)


EMPTY_DELTA = IntentDelta()


def make_delta(touched: Mapping[str, Iterable[str]]) -> IntentDelta:
    """An IntentDelta from attr -> ids (empty sets left out)."""
    out = {k: frozenset(v) for k, v in touched.items()}
    return IntentDelta(MappingProxyType({k: v for k, v in out.items() if v}))


def union(deltas: Iterable[IntentDelta]) -> IntentDelta:
    """The union of many deltas, one pass (no intermediate frozensets)."""
    acc: dict[str, set[str]] = {}
    only: Optional[IntentDelta] = None
    count = 0
    for d in deltas:
        if not d.touched:
            continue
        count += 1
        only = d
        for attr, ids in d.touched.items():
            if ids:
                acc.setdefault(attr, set()).update(ids)
    if count == 0:
        return EMPTY_DELTA
    if count == 1 and only is not None:
        return only
    return IntentDelta(MappingProxyType({k: frozenset(v) for k, v in acc.items()}))


class DeltaLog:
    """The deltas of the last `keep` snapshots of one store, by generation.

    Written by the store thread (`record`, in increasing generation order), read by
    any thread (`since`). Generations may jump: the store numbers a snapshot after
    the database's write counter (`NB_Global.nb_cfg`, so a write has the same
    generation on every controller instance), and several writes, from other
    instances too, can arrive in one snapshot. A delta covers everything from the
    generation recorded before it. A `None` delta marks a full rebuild: what
    happened before that generation is unknown from then on.
    """

    def __init__(self, keep: int = 4096) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._ring: deque[tuple[int, IntentDelta]] = deque()
        # the generation the first delta of the ring starts from (None: nothing known)
        self._start: Optional[int] = None

    def record(self, generation: int, delta: Optional[IntentDelta]) -> None:
        with self._lock:
            ring = self._ring
            last = ring[-1][0] if ring else self._start
            if delta is None or last is None or generation <= last:
                # a full rebuild, or (never expected) no base or a generation going
                # back: nothing before this one is known
                ring.clear()
                self._start = generation if delta is None else generation - 1
                if delta is None:
                    return
            ring.append((generation, delta))
            while len(ring) > self._keep:
                self._start = ring.popleft()[0]

    def since(self, generation: int, upto: int) -> Optional[IntentDelta]:
        """The union of the deltas of generations in (generation, upto]; None if unknown.

        `generation` may fall inside a jump (a number no snapshot here had): the
        delta that jumped over it is included whole, a superset of what changed
        after it, which is what an incremental compile needs."""
        if generation == upto:
            return EMPTY_DELTA
        if generation > upto:
            return None
        with self._lock:
            start = self._start
            if start is None or generation < start:
                return None  # before the last full rebuild, or fell out of the ring
            ring = self._ring
            if not ring or ring[-1][0] < upto:
                return None
            picked: list[IntentDelta] = []
            for gen, delta in reversed(ring):
                if gen <= generation:
                    break
                if gen <= upto:
                    picked.append(delta)
        return union(picked)


# Hidden attributes of Intent snapshots (instance __dict__, not dataclass fields, so
# `dataclasses.replace` never copies them onto a different snapshot).
_LOG = "_loom_delta_log"
_DELTA = "_loom_delta"
_BASE = "_loom_delta_base"


def stamp(intent: Any, log: DeltaLog, delta: Optional[IntentDelta]) -> None:
    """Mark a published snapshot: its store's log, and its delta to the previous generation."""
    intent.__dict__[_LOG] = log
    intent.__dict__[_DELTA] = delta


def link(derived: Any, base: Any, delta: IntentDelta) -> None:
    """Mark `derived` as `base` changed by `delta` (e.g. a transaction's view of its writes)."""
    derived.__dict__[_BASE] = (base, delta)


def published(intent: Any) -> bool:
    """Whether `intent` is a snapshot a store published (stamped with its delta log)."""
    return _LOG in intent.__dict__


def snapshot_delta(intent: Any) -> Optional[IntentDelta]:
    """A published snapshot's delta to the previous generation (None: full rebuild or unknown)."""
    return intent.__dict__.get(_DELTA)  # type: ignore[no-any-return]


def delta_between(old: Any, new: Any) -> Optional[IntentDelta]:
    """The ids touched from snapshot `old` to snapshot `new`, or None when unknown.

    Known when both were published by the same store (and the log still covers the
    span), or when `new` was linked to `old` (or to a snapshot known from `old`)."""
    if old is new:
        return EMPTY_DELTA
    linked = new.__dict__.get(_BASE)
    if linked is not None:
        base, delta = linked
        if base is old:
            return delta  # type: ignore[no-any-return]
        before = delta_between(old, base)
        return None if before is None else before.merge(delta)
    log = new.__dict__.get(_LOG)
    if log is None or old.__dict__.get(_LOG) is not log:
        return None
    return log.since(old.generation, new.generation)  # type: ignore[no-any-return]


__all__ = [
    "EMPTY_DELTA",
    "INTENT_ATTRS",
    "DeltaLog",
    "IntentDelta",
    "delta_between",
    "link",
    "make_delta",
    "published",
    "snapshot_delta",
    "stamp",
    "union",
]
