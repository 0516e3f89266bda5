"""Drift: a switch that no longer holds what Loom installed, found and put right (issue 15).

OVS repairs nothing by itself, and an `ovs-ofctl add-flow` at a high priority, a
`del-flows` or a `mod-flows` behind the controller's back can open a hole between
projects or cut a port off. Each switch's owner asks it, once, for a flow monitor
(ONF EXT-187, `ofwire.flow_monitor_request`) on every table, for the changes made by
anyone but this connection: no table is dumped while nothing happens, and a change
made by hand is signalled within the round trip, with the changed flows themselves
(ONFFMF_ACTIONS). The worker compares those with what it installed (a change costs
what it changed; only when the switch paused its updates, or one does not decode,
is every flow read and compared), records each difference (a flow *missing*,
*extra*, or *modified*) with its owner and the time it was found, and, with
`--drift repair` (the default), pushes the desired state of those flows again in one
bundle; with `--drift report` it only reports. `GET /v1/verify` and the
`loom_drift_*` metrics show it.

Groups and meters have no monitor in OpenFlow, so the same worker reads them (group
descriptions, meter configs) every `engine.GROUP_METER_PERIOD` seconds, between its
own pushes, and compares them with the state its last completed push left
(`group_meter_drift`): *group-missing*, *group-extra*, *group-modified*, and the same
for meters. A read costs what the switch holds in groups and meters, not its flows
(15-25 ms for 10,000 punt meters, most of it parsing: bench/bench_group_meter_read.py).
A meter or group deleted by hand takes the flows that use it with it; the flow monitor
signals those at once, and that check reads the groups and meters too, so one push puts
both back in order. Report mode only reports, each difference once; the switch's
groups and meters are then what Loom's next push compares with (every push compares
all groups and the shared meters, so that push puts those right as any push would).

The chassis' OVSDB side (tunnel ports, the integration bridge's settings, QoS rows)
is watched by its session's IDL already, which corrects any difference on the next
change it sees; a difference found while Loom's own wish had not changed is drift,
recorded here the same way (`ChassisSession`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, TypeVar, Union

from prometheus_client import Counter, Gauge

from controller.compiler.core import FlowKey
from controller.flows import Flow, Group, Meter
from controller.ofwire.model import OpaqueMeter
from controller.ofwire.ofctl import group_to_ofctl, meter_to_ofctl

MODES = ("repair", "report")
GROUP_METER = "groups-meters"  # the source of group and meter drift in a DriftRecord
KEEP = 200  # drift items kept per switch or chassis for /v1/verify

DRIFT_FOUND = Counter("loom_drift_found_total",
                      "Differences found between a switch (or chassis) and what Loom installed",
                      ["kind"])
DRIFT_ITEMS = Gauge("loom_drift_items",
                    "Differences found and not (yet) repaired, per switch or chassis",
                    ["where"])


def iso(wall: float) -> str:
    stamp = time.gmtime(wall)
    return time.strftime("%Y-%m-%dT%H:%M:%S", stamp) + f".{int(wall * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class DriftItem:
    # missing | extra | modified (flows); group-missing, meter-extra, ... (groups and
    # meters: `TableDrift`); tunnel-missing, ... (OVSDB)
    kind: str
    # the ovs-ofctl line of the flow, group or meter (the one the switch holds for
    # extra and modified), or a name
    what: str
    found_at: str
    owner: Optional[Mapping[str, Any]] = None
    expected: Optional[str] = None  # modified: the line Loom installed
    repaired: bool = False

    def view(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def flow_drift(believed: Mapping[FlowKey, Flow], actual: Mapping[FlowKey, Flow]
               ) -> tuple[list[Flow], list[Flow], list[tuple[Flow, Flow]]]:
    """(missing, extra, modified as (believed, actual)) between what Loom installed and
    what the switch holds. O(flows held): it runs only after the switch signalled a
    change that was not Loom's."""
    missing = [f for k, f in believed.items() if k not in actual]
    extra = [f for k, f in actual.items() if k not in believed]
    modified = [(f, actual[k]) for k, f in believed.items()
                if k in actual and actual[k] != f]
    return missing, extra, modified


@dataclass
class DriftRecord:
    """What was found on one switch or chassis: the last KEEP items and the counts."""

    where: str
    items: deque[DriftItem] = field(default_factory=lambda: deque(maxlen=KEEP))
    checks: int = 0  # comparisons the switch (or IDL) signalled a change for
    found: int = 0
    last_check: Optional[str] = None
    in_sync: bool = True
    # periodic reads of a switch's groups and meters (no monitor for them): counted
    # apart, so `checks` still says how often something not Loom's was signalled
    group_meter_reads: int = 0
    last_group_meter_read: Optional[str] = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # unrepaired differences per source ("flows", GROUP_METER): one source's clean
    # check must not declare in sync a switch whose other source still differs
    _open: dict[str, int] = field(default_factory=dict)

    def checked(self, items: list[DriftItem], repaired: bool, source: str = "flows") -> None:
        """One comparison, and what it found (nothing: in sync)."""
        with self.lock:
            self.checks += 1
            self.last_check = iso(time.time())
            self.found += len(items)
            self.items.extend(items)
            self._open[source] = 0 if repaired else len(items)
            still = self._still_open()
        for item in items:
            DRIFT_FOUND.labels(item.kind).inc()
        DRIFT_ITEMS.labels(self.where).set(still)

    def group_meter_read(self, new: list[DriftItem], still_open: int) -> None:
        """One periodic read of a switch's groups and meters: `new`, the differences not
        reported by an earlier read (report mode leaves them, and they must not be
        counted again every period); `still_open`, how many the switch holds now and
        that were not repaired (0: they are gone, repaired or undone by hand)."""
        with self.lock:
            self.group_meter_reads += 1
            self.last_group_meter_read = iso(time.time())
            self.found += len(new)
            self.items.extend(new)
            self._open[GROUP_METER] = still_open
            still = self._still_open()
        for item in new:
            DRIFT_FOUND.labels(item.kind).inc()
        DRIFT_ITEMS.labels(self.where).set(still)

    def repaired(self) -> None:
        """Everything put right at once (a push in full after a failed repair)."""
        with self.lock:
            self._open.clear()
            self._still_open()
        DRIFT_ITEMS.labels(self.where).set(0)

    def _still_open(self) -> int:
        total = sum(self._open.values())
        self.in_sync = total == 0
        return total

    def view(self) -> dict[str, Any]:
        with self.lock:
            return {"in_sync": self.in_sync, "checks": self.checks,
                    "last_check": self.last_check, "drift_found": self.found,
                    "group_meter_reads": self.group_meter_reads,
                    "last_group_meter_read": self.last_group_meter_read,
                    "drift": [i.view() for i in self.items]}


def describe(missing: list[Flow], extra: list[Flow], modified: list[tuple[Flow, Flow]],
             owner_of: Callable[[int], Any], to_line: Callable[[Flow], str],
             repaired: bool, found: Optional[float] = None) -> list[DriftItem]:
    """Drift items for flows; `found`: when the difference was found (wall clock; now
    when not given: a repair pushed before the items are written must not move it)."""
    now = iso(time.time() if found is None else found)
    out = [DriftItem("missing", to_line(f), now, owner_of(f.cookie), repaired=repaired)
           for f in missing]
    out += [DriftItem("extra", to_line(f), now, owner_of(f.cookie), repaired=repaired)
            for f in extra]
    out += [DriftItem("modified", to_line(now_f), now, owner_of(was.cookie),
                      expected=to_line(was), repaired=repaired) for was, now_f in modified]
    return out


# ---------------------------------------------------------------- groups and meters
K = TypeVar("K")
V = TypeVar("V")
HeldMeter = Union[Meter, OpaqueMeter]  # what a meter config read returns


def by_id_drift(believed: Mapping[K, V], actual: Mapping[K, Any]
                ) -> tuple[list[V], list[Any], list[tuple[V, Any]]]:
    """(missing, extra, modified as (believed, actual)) between two maps by id, in id
    order (a stable report). Equality is the model's: a group's owner and a meter's
    are not on the wire, and are not compared."""
    def by_id(pairs: list[tuple[Any, Any]]) -> list[Any]:
        return [v for _, v in sorted(pairs, key=lambda kv: kv[0])]

    missing = by_id([(k, v) for k, v in believed.items() if k not in actual])
    extra = by_id([(k, v) for k, v in actual.items() if k not in believed])
    modified = by_id([(k, (v, actual[k])) for k, v in believed.items()
                      if k in actual and actual[k] != v])
    return missing, extra, modified


@dataclass(frozen=True)
class TableDrift:
    """How a switch's groups and meters differ from what Loom's last push left."""

    groups_missing: tuple[Group, ...] = ()
    groups_extra: tuple[Group, ...] = ()
    groups_modified: tuple[tuple[Group, Group], ...] = ()
    meters_missing: tuple[Meter, ...] = ()
    meters_extra: tuple[HeldMeter, ...] = ()
    meters_modified: tuple[tuple[Meter, HeldMeter], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.groups_missing or self.groups_extra or self.groups_modified
                    or self.meters_missing or self.meters_extra or self.meters_modified)

    def __len__(self) -> int:
        return (len(self.groups_missing) + len(self.groups_extra)
                + len(self.groups_modified) + len(self.meters_missing)
                + len(self.meters_extra) + len(self.meters_modified))

    @property
    def meter_ids(self) -> set[int]:
        """The meters that differ: the next push must compare these even when its
        meter map did not change (`SwitchSync.note_groups_meters`)."""
        return {m.meter_id for m in (*self.meters_missing, *self.meters_extra)} | {
            m.meter_id for m, _ in self.meters_modified}

    def signature(self) -> frozenset[tuple[str, int, Any]]:
        """What the switch holds that differs, as (kind, id, what it holds): a
        difference left in place (report mode) reads the same at the next period and
        is reported once, a new one (or the same id changed again) is reported."""
        return frozenset(
            [("group-missing", g.group_id, None) for g in self.groups_missing]
            + [("group-extra", g.group_id, g) for g in self.groups_extra]
            + [("group-modified", g.group_id, now) for g, now in self.groups_modified]
            + [("meter-missing", m.meter_id, None) for m in self.meters_missing]
            + [("meter-extra", m.meter_id, m) for m in self.meters_extra]
            + [("meter-modified", m.meter_id, now) for m, now in self.meters_modified])


def group_meter_drift(believed_groups: Mapping[int, Group], actual_groups: Mapping[int, Group],
                      believed_meters: Mapping[int, Meter],
                      actual_meters: Mapping[int, HeldMeter]) -> TableDrift:
    """The groups and meters a switch holds against what Loom believes it installed
    (the desired state of its last completed push: in report mode the drift stays on
    the switch, and its undoing by hand is then no drift). O(groups + meters held)."""
    gm, ge, gd = by_id_drift(believed_groups, actual_groups)
    mm, me, md = by_id_drift(believed_meters, actual_meters)
    return TableDrift(tuple(gm), tuple(ge), tuple(gd), tuple(mm), tuple(me), tuple(md))


def describe_groups_meters(drift: TableDrift, owner_of: Callable[[int], Any],
                           user_cookie: Callable[[str, int], Optional[int]], repaired: bool,
                           only: Optional[frozenset[tuple[str, int, Any]]] = None,
                           found: Optional[float] = None) -> list[DriftItem]:
    """Drift items for `drift`: what the switch holds (or, missing, what Loom wants)
    in `ovs-ofctl add-group` / `add-meter` syntax, and the owner where one is known: a
    group's (`Group.cookie_owner`), a QoS meter's policy, else (a punt meter has no
    owner of its own) the owner of the flows that use it (`user_cookie("meter" |
    "group", id)`). An extra group or meter was never Loom's: no owner. `only`:
    report only the differences whose `TableDrift.signature` entry is in it (the new
    ones). `found`: when it was found (wall clock; now when not given)."""
    now = iso(time.time() if found is None else found)

    def owner(cookie: Optional[int]) -> Any:
        return None if cookie is None else owner_of(cookie)

    def group_owner(g: Group) -> Any:
        return owner(g.cookie_owner or user_cookie("group", g.group_id))

    def meter_owner(m: Meter) -> Any:
        return owner(m.owner or user_cookie("meter", m.meter_id))

    def wanted(kind: str, ident: int, held: Any) -> bool:
        return only is None or (kind, ident, held) in only

    out = [DriftItem("group-missing", group_to_ofctl(g), now, group_owner(g),
                     repaired=repaired)
           for g in drift.groups_missing if wanted("group-missing", g.group_id, None)]
    out += [DriftItem("group-extra", group_to_ofctl(g), now, repaired=repaired)
            for g in drift.groups_extra if wanted("group-extra", g.group_id, g)]
    out += [DriftItem("group-modified", group_to_ofctl(held), now, group_owner(g),
                      expected=group_to_ofctl(g), repaired=repaired)
            for g, held in drift.groups_modified
            if wanted("group-modified", g.group_id, held)]
    out += [DriftItem("meter-missing", meter_to_ofctl(m), now, meter_owner(m),
                      repaired=repaired)
            for m in drift.meters_missing if wanted("meter-missing", m.meter_id, None)]
    out += [DriftItem("meter-extra", meter_to_ofctl(m), now, repaired=repaired)
            for m in drift.meters_extra if wanted("meter-extra", m.meter_id, m)]
    out += [DriftItem("meter-modified", meter_to_ofctl(held), now, meter_owner(m),
                      expected=meter_to_ofctl(m), repaired=repaired)
            for m, held in drift.meters_modified
            if wanted("meter-modified", m.meter_id, held)]
    return out
