"""One table's lookup, as OVS's classifier does it: the highest-priority match wins.

Flows are grouped by the shape of their match (which fields, with which masks), as
OVS's tuple-space search does: a lookup masks the packet once per shape and finds
the flows with that exact masked value in a dictionary, so it costs the number of
shapes (tens per table), not the number of flows (100,000 on a big switch).

Conjunctive matches (`conjunction(id, k/n)`): at a priority where the packet hits
flows of every clause 1..n of an id, it then matches the flow on `conj_id=id` (whose
other fields must match too). A packet that completes no conjunction falls through
to lower priorities, as in OVS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional

from controller.flows import Conjunction, Flow, Match

Shape = tuple[tuple[str, Optional[int]], ...]  # (field, mask or None for exact)
Packet = Mapping[str, int]


def shape_of(m: Match) -> Shape:
    return tuple((f.field, f.mask) for f in m)


def matches(m: Match, packet: Packet, skip: str = "") -> bool:
    """Whether every field of `m` (but `skip`) holds for the packet. A field the packet
    does not have (tcp_dst of an ICMP packet) never matches."""
    for f in m:
        if f.field == skip:
            continue
        value = packet.get(f.field)
        if value is None:
            return False
        if (value if f.mask is None else value & f.mask) != f.value:
            return False
    return True


def is_clause(flow: Flow) -> bool:
    return bool(flow.actions) and all(isinstance(a, Conjunction) for a in flow.actions)


class TableIndex:
    """The flows of one table, indexed by match shape; conjunction clauses apart."""

    def __init__(self, flows: Iterable[Flow] = ()) -> None:
        # shape -> [highest priority in it, {masked values -> flows}]
        self._plain: dict[Shape, list[Any]] = {}
        self._clauses: dict[Shape, list[Any]] = {}
        self._conj_targets: dict[int, list[Flow]] = {}  # conj_id -> flows matching it
        self._order: Optional[list[tuple[int, dict[tuple[int, ...], list[Flow]], Shape]]] = None
        self._clause_order: Optional[list[tuple[int, dict[tuple[int, ...], list[Flow]],
                                                Shape]]] = None
        for flow in flows:
            self._bucket(flow).append(flow)

    def _bucket(self, flow: Flow, copied: Optional[set[object]] = None) -> list[Flow]:
        """The list `flow` belongs in (copied first, once, when `copied` is given: a
        patched index shares the rest with its original)."""
        for f in flow.match:
            if f.field == "conj_id":
                if copied is not None and ("conj", f.value) not in copied:
                    copied.add(("conj", f.value))
                    self._conj_targets[f.value] = list(self._conj_targets.get(f.value, ()))
                return self._conj_targets.setdefault(f.value, [])
        shapes = self._clauses if is_clause(flow) else self._plain
        shape = shape_of(flow.match)
        key = tuple(f.value for f in flow.match)
        if copied is not None and (id(shapes), shape) not in copied:
            copied.add((id(shapes), shape))
            old = shapes.get(shape)
            shapes[shape] = [old[0], dict(old[1])] if old is not None else [0, {}]
        entry = shapes.setdefault(shape, [0, {}])
        entry[0] = max(entry[0], flow.priority)
        if copied is not None and (id(shapes), shape, key) not in copied:
            copied.add((id(shapes), shape, key))
            entry[1][key] = list(entry[1].get(key, ()))
        self._order = self._clause_order = None
        return entry[1].setdefault(key, [])  # type: ignore[no-any-return]

    def patched(self, removed: Iterable[Flow], added: Iterable[Flow]) -> TableIndex:
        """A copy with `removed` taken out and `added` put in: only the shapes they touch
        are copied (a one-port change to a table of 100,000 flows copies a few of its
        dictionaries, not the table)."""
        new = TableIndex.__new__(TableIndex)
        new._plain = dict(self._plain)
        new._clauses = dict(self._clauses)
        new._conj_targets = dict(self._conj_targets)
        new._order = new._clause_order = None
        copied: set[object] = set()
        for flow in removed:
            bucket = new._bucket(flow, copied)
            bucket[:] = [f for f in bucket if f.key != flow.key]
        for flow in added:
            new._bucket(flow, copied).append(flow)
        return new

    def __len__(self) -> int:
        return sum(len(v) for shapes in (self._plain, self._clauses)
                   for entry in shapes.values() for v in entry[1].values()) + \
            sum(len(v) for v in self._conj_targets.values())

    @staticmethod
    def _ordered(shapes: dict[Shape, list[Any]]
                 ) -> list[tuple[int, dict[tuple[int, ...], list[Flow]], Shape]]:
        return sorted(((e[0], e[1], shape) for shape, e in shapes.items()),
                      key=lambda t: -t[0])

    def lookup(self, packet: Packet) -> Optional[Flow]:
        """The flow the packet hits, or None (nothing matches: OpenFlow drops it).

        Shapes are tried highest priority first, and no shape whose flows are all
        below the best hit so far is looked at."""
        if self._order is None:
            self._order = self._ordered(self._plain)
            self._clause_order = self._ordered(self._clauses)
        best: Optional[Flow] = None
        for top, sub, shape in self._order:
            if best is not None and top < best.priority:
                break
            for flow in _hits(sub, shape, packet):
                if best is None or flow.priority > best.priority or (
                        flow.priority == best.priority and flow.match < best.match):
                    best = flow
        floor = -1 if best is None else best.priority
        clauses: list[Flow] = []
        assert self._clause_order is not None
        for top, sub, shape in self._clause_order:
            if top <= floor:
                break
            clauses.extend(f for f in _hits(sub, shape, packet) if f.priority > floor)
        if clauses:
            for priority in sorted({f.priority for f in clauses}, reverse=True):
                done = self._completed([f for f in clauses if f.priority == priority], packet)
                if done:
                    return min(done, key=lambda f: (-f.priority, f.match))
        return best

    def _completed(self, level: list[Flow], packet: Packet) -> list[Flow]:
        clauses: dict[int, set[int]] = {}
        need: dict[int, int] = {}
        for flow in level:
            for act in flow.actions:
                assert isinstance(act, Conjunction)
                clauses.setdefault(act.conj_id, set()).add(act.clause)
                need[act.conj_id] = act.n_clauses
        out: list[Flow] = []
        for conj_id, seen in clauses.items():
            if len(seen) < need[conj_id]:
                continue
            out.extend(f for f in self._conj_targets.get(conj_id, ())
                       if matches(f.match, packet, skip="conj_id"))
        return out


def _hits(sub: dict[tuple[int, ...], list[Flow]], shape: Shape, packet: Packet) -> list[Flow]:
    key = []
    for name, mask in shape:
        value = packet.get(name)
        if value is None:
            return []
        key.append(value if mask is None else value & mask)
    return sub.get(tuple(key)) or []
