"""Data-plane allocations: made once, in the store, and never moved.

Switches keep state under some numbers the compiler chooses: conntrack zones (a
moved zone breaks every live connection of the network), flood group ids, meter
ids, the VLAN a network rides on fabric links, conjunction ids, a router's NAT
zone. Each is a column of the object that owns it, allocated when the row is
created (inside the same OVSDB transaction, by `TxnHelper.put`), so neither a new
colliding object nor a restart can move it; the compiler only reads it
(compiler/overlay.py `zone_of`, `flood_group_id`, acl.py `conj_id_of`, qos.py
`meter_id_of`, fabric.py `fabric_vlans`).

The value allocated is the one the compiler used to derive from the object's key
(for a zone `key % CT_ZONE_SPAN + 1`), probed past the values other objects hold,
so an upgraded store gives each existing object what its switches already hold
unless two objects collided. `backfill` does that once, at store start, for rows
of an older database whose column is still 0, in id order, in one transaction.

A router's NAT zone (`Router.snat_zone`) comes from the same space as the networks'
conntrack zones (one `Spec.space`), so it never equals a network's zone; it exists
only while the router has a gateway (`Spec.applies`): a router written without one
gets 0, which frees the value, and a later gateway gets a fresh one.

Uniqueness is kept by this module, not by an OVSDB index: after a schema
conversion every existing row holds 0, and a unique index over the column would
make the conversion itself fail. Writes run one at a time in the store thread on
the newest snapshot (northbound.py), so "pick a free value, write it" is atomic for
one controller.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Optional

from controller import intent as model
from controller import pipeline as pl
from controller.intent_delta import delta_between
from controller.store.errors import TransactionFailed

log = logging.getLogger(__name__)

MAX_FABRIC_VLAN = 4094
CONJ_ID_MAX = pl.CONJ_ID_MASK


class AllocationExhausted(TransactionFailed):
    """Every value of a required allocation is in use (e.g. 65,000 networks have a zone)."""


@dataclass(frozen=True)
class Spec:
    """One allocated column: `cls.attr`, a value in lo..hi unique among `cls` objects."""

    cls: type
    attr: str
    intent_attr: str  # the Intent mapping holding the objects
    hi: int
    derive: Callable[[Any], int]  # the preferred value (what the compiler used to derive)
    what: str  # in words, for errors and logs
    required: bool = True  # exhausted: refuse the write (else leave 0, the compiler copes)
    applies: Callable[[Any], bool] = lambda obj: True
    # values an object blocks in this space besides its own allocation
    also_claims: Optional[Callable[[Any], Iterable[int]]] = None
    lo: int = 1
    # specs naming the same space share its values (a router's NAT zone and the
    # networks' conntrack zones); "" : a space of its own
    space: str = ""

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    @property
    def key(self) -> str:
        """The value space this column allocates from."""
        return self.space or f"{self.cls.__name__}.{self.attr}"

    def claims(self, obj: Any) -> set[int]:
        out = set(self.also_claims(obj)) if self.also_claims is not None else set()
        value = getattr(obj, self.attr)
        if value:
            out.add(value)
        return out

    def taken(self, intent: model.Intent) -> set[int]:
        """Values held in `intent`: one pass over the table (0.7 ms at 10,000 ports),
        made once per transaction that creates an object, never on an update."""
        objs = getattr(intent, self.intent_attr).values()
        if self.also_claims is None:
            out = {getattr(obj, self.attr) for obj in objs}
            out.discard(0)
            return out
        out = set()
        for obj in objs:
            out |= self.claims(obj)
        return out

    def pick(self, obj: Any, taken: Collection[int]) -> int:
        """The derived value probed upwards (wrapping) past `taken`; 0 if none is free."""
        if len(taken) >= self.size and len(
                {v for v in taken if self.lo <= v <= self.hi}) >= self.size:
            return 0
        value = self.lo + (self.derive(obj) - self.lo) % self.size  # (always in range)
        for _ in range(self.size):
            if value not in taken:
                return value
            value = self.lo + (value - self.lo + 1) % self.size
        return 0


def _vlan_claims(network: model.Network) -> Iterable[int]:
    """A VLAN network rides the fabric on its own segmentation id."""
    if network.network_type == "vlan" and 1 <= network.segmentation_id <= MAX_FABRIC_VLAN:
        return (network.segmentation_id,)
    return ()


def _conj_key(rule: model.SecurityGroupRule) -> int:
    return (model.object_key(rule.id) & CONJ_ID_MAX) or 1


CT_ZONES = "conntrack zones"  # one space: networks' zones and routers' NAT zones

SPECS: tuple[Spec, ...] = (
    Spec(model.Network, "ct_zone", "networks", pl.CT_ZONE_SPAN,
         lambda n: n.key % pl.CT_ZONE_SPAN + 1, "conntrack zone", space=CT_ZONES),
    # a router's NAT zone exists while it has a gateway: written without one, the
    # column goes back to 0 (freed); kept from the row while the gateway stays
    Spec(model.Router, "snat_zone", "routers", pl.CT_ZONE_SPAN,
         lambda r: model.object_key(r.id) % pl.CT_ZONE_SPAN + 1, "conntrack zone",
         applies=lambda r: r.external_network_id is not None, space=CT_ZONES),
    Spec(model.Network, "flood_group", "networks", pl.GROUP_ID_MASK,
         lambda n: (n.key & pl.GROUP_ID_MASK) or 1, "flood group id"),
    Spec(model.Network, "fabric_vlan", "networks", MAX_FABRIC_VLAN,
         lambda n: n.key % MAX_FABRIC_VLAN + 1, "fabric VLAN", required=False,
         applies=lambda n: n.network_type != "vlan", also_claims=_vlan_claims),
    Spec(model.SecurityGroupRule, "conj_id", "security_group_rules", CONJ_ID_MAX,
         _conj_key, "conjunction id"),
    Spec(model.Port, "meter_id", "ports", pl.METER_ID_SPAN,
         lambda p: p.key % pl.METER_ID_SPAN + 1, "meter id", required=False),
)
BY_CLASS: dict[type, tuple[Spec, ...]] = {}
BY_SPACE: dict[str, tuple[Spec, ...]] = {}
for _spec in SPECS:
    BY_CLASS[_spec.cls] = (*BY_CLASS.get(_spec.cls, ()), _spec)
    BY_SPACE[_spec.key] = (*BY_SPACE.get(_spec.key, ()), _spec)


class _Held:
    """How many objects of one published snapshot hold each value of one space, carried
    from snapshot to snapshot by the store's deltas (the store thread alone uses it):
    a creating transaction pays for what changed since the last one, not a pass over
    the table."""

    def __init__(self, spec: Spec, intent: model.Intent) -> None:
        self.spec = spec
        self.intent = intent
        self.counts: dict[int, int] = {}
        for obj in getattr(intent, spec.intent_attr).values():
            self._count(obj, 1)

    def _count(self, obj: Any, step: int) -> None:
        for value in self.spec.claims(obj):
            n = self.counts.get(value, 0) + step
            if n > 0:
                self.counts[value] = n
            else:
                self.counts.pop(value, None)

    def advance(self, intent: model.Intent) -> bool:
        """Move to `intent`; False if the store cannot say what changed (rebuild)."""
        if intent is self.intent:
            return True
        delta = delta_between(self.intent, intent)
        attr = self.spec.intent_attr
        if delta is None or len(delta.ids(attr)) > 4096:
            return False
        before, after = getattr(self.intent, attr), getattr(intent, attr)
        for key in delta.ids(attr):
            old, new = before.get(key), after.get(key)
            if old is not None:
                self._count(old, -1)
            if new is not None:
                self._count(new, 1)
        self.intent = intent
        return True


_held: dict[Spec, _Held] = {}


def _held_in(spec: Spec, intent: model.Intent) -> _Held:
    held = _held.get(spec)
    if held is None or not held.advance(intent):
        held = _held[spec] = _Held(spec, intent)
    return held


class Taken:
    """The values taken in one space for one transaction: those the base snapshot holds
    (in each table allocating from the space) and those the transaction's own writes
    claim. `len` may count a value held in two tables twice (an upper bound)."""

    def __init__(self, held: list[dict[int, int]], extra: set[int]) -> None:
        self._held = held
        self._extra = extra

    def _in_held(self, value: object) -> bool:
        return any(value in h for h in self._held)

    def __contains__(self, value: object) -> bool:
        return value in self._extra or self._in_held(value)

    def __len__(self) -> int:
        return sum(len(h) for h in self._held) + len(self._extra)

    def __iter__(self) -> Any:
        seen: set[int] = set()
        for h in self._held:
            for v in h:
                if v not in seen:
                    seen.add(v)
                    yield v
        yield from (v for v in self._extra if v not in seen)

    def __ior__(self, values: Iterable[int]) -> Taken:
        self._extra.update(values)
        return self

    def add(self, value: int) -> None:
        self._extra.add(value)


class Allocator:
    """Allocation state of one transaction: the values taken, made on first need.

    `current` gives the intent as the transaction leaves it so far, `base` the
    published snapshot it started from. Values freed by deletes in the same
    transaction stay taken until it commits (harmless).
    """

    def __init__(self, current: Callable[[], model.Intent],
                 base: Optional[model.Intent] = None) -> None:
        self._current = current
        self._base = base
        self._taken: dict[str, Taken] = {}  # by space

    def _taken_for(self, spec: Spec) -> Taken:
        taken = self._taken.get(spec.key)
        if taken is None:
            current = self._current()
            base = self._base if self._base is not None else current
            # A copy of the counts only for a table the transaction already changed
            # (a bulk create): its own writes are added below.
            extra: set[int] = set()
            delta = delta_between(base, current) if current is not base else None
            if current is not base and delta is None:
                base = current  # the view cannot say what it changed: count it whole
            helds: list[dict[int, int]] = []
            for member in BY_SPACE[spec.key]:  # every table allocating from the space
                helds.append(_held_in(member, base).counts)
                if delta is not None:
                    objs = getattr(current, member.intent_attr)
                    for key in delta.ids(member.intent_attr):
                        obj = objs.get(key)
                        if obj is not None:
                            extra |= member.claims(obj)
            taken = self._taken[spec.key] = Taken(helds, extra)
        return taken

    def fill(self, obj: Any, stored: Optional[Callable[[str], int]] = None) -> Any:
        """`obj` with every allocation it lacks made; `stored(attr)` reads the row's value.

        An object written with 0 keeps what its row already holds (an update built
        from scratch never drops an allocation); a new object, or a row of an older
        database still at 0, gets a fresh value. Raises AllocationExhausted when a
        required space is full.
        """
        specs = BY_CLASS.get(type(obj), ())
        changes: dict[str, int] = {}
        for spec in specs:
            if not spec.applies(obj):
                if getattr(obj, spec.attr):  # e.g. a router's NAT zone, its gateway gone
                    changes[spec.attr] = 0
                continue
            if getattr(obj, spec.attr):
                continue
            value = stored(spec.attr) if stored is not None else 0
            if not value:
                value = spec.pick(obj, self._taken_for(spec))
                if not value:
                    if spec.required:
                        raise AllocationExhausted(
                            f"no free {spec.what} left: all {spec.size} are in use")
                    log.warning("no free %s for %s %s; the compiler picks one per switch",
                                spec.what, spec.cls.__name__, obj.id)
            if value:
                changes[spec.attr] = value
        if changes:
            obj = dataclasses.replace(obj, **changes)
        self.note(obj)
        return obj

    def note(self, obj: Any) -> None:
        """Record what `obj` (as written) holds, in every space already being tracked."""
        for spec in BY_CLASS.get(type(obj), ()):
            taken = self._taken.get(spec.key)
            if taken is not None:
                taken |= spec.claims(obj)


def missing(intent: model.Intent) -> list[Any]:
    """Objects of `intent` that lack an allocation they should have, in id order."""
    out: dict[tuple[str, str], Any] = {}
    for spec in SPECS:
        for obj in getattr(intent, spec.intent_attr).values():
            if not getattr(obj, spec.attr) and spec.applies(obj):
                out[(spec.intent_attr, obj.id)] = obj
    return [out[k] for k in sorted(out)]


def plan_backfill(intent: model.Intent) -> list[Any]:
    """The objects of `intent` lacking allocations, with them made (pure; deterministic).

    Per space: values already held stay; the rest are given, in id order, the
    derived value probed past those taken: what the compiler derived before
    allocations were stored, whenever nothing collided.
    """
    taken: dict[str, set[int]] = {}
    for spec in SPECS:
        taken.setdefault(spec.key, set()).update(spec.taken(intent))
    filled: dict[tuple[str, str], Any] = {}
    for spec in SPECS:
        objs = sorted(getattr(intent, spec.intent_attr).values(), key=lambda o: o.id)
        for obj in objs:
            if getattr(obj, spec.attr) or not spec.applies(obj):
                continue
            value = spec.pick(obj, taken[spec.key])
            if not value:  # more objects than values (e.g. >65,000 networks): the
                log.error("no free %s for %s %s; the compiler derives one per switch",
                          spec.what, spec.cls.__name__, obj.id)  # start must not fail
                continue
            taken[spec.key].add(value)
            k = (spec.intent_attr, obj.id)
            filled[k] = dataclasses.replace(filled.get(k, obj), **{spec.attr: value})
    return [filled[k] for k in sorted(filled)]


def backfill(helper: Any, intent: model.Intent) -> int:
    """Store-start hook (a `NorthboundStore.transact` job): allocate what rows lack.

    Writes only the allocation columns, in one transaction; returns how many rows
    it changed (0, and nothing written, on a store already filled).
    """
    objs = plan_backfill(intent)
    for obj in objs:
        helper.put(obj)
    if objs:
        log.info("northbound store: allocated conntrack zones, group, meter, VLAN and "
                 "conjunction ids for %d rows of an older database", len(objs))
    return len(objs)


def backfill_store(store: Any, timeout: float = 300.0) -> None:
    """Run `backfill` as one write on a connected `NorthboundStore`.

    Called once the first copy is loaded and before anyone subscribes or writes
    (NorthboundStore.connect), so the compiler's first snapshot has every
    allocation. A failure is logged, not raised: rows left at 0 get the key's
    derived value from the compiler, as before allocations were stored.
    """
    from controller.store.errors import StoreError

    try:
        store.transact(backfill, timeout=timeout)
    except StoreError as exc:
        log.error("northbound store: could not allocate for rows of an older database: %s",
                  exc)


def cleared(obj: Any) -> Any:
    """`obj` with its allocations back at 0: as written, before the store filled them in."""
    specs = BY_CLASS.get(type(obj), ())
    return dataclasses.replace(obj, **{s.attr: 0 for s in specs}) if specs else obj
