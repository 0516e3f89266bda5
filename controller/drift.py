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
`loom_drift_*` metrics show it. Groups and meters are not watched (OpenFlow has no
monitor for them).

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
from typing import Any, Optional

from prometheus_client import Counter, Gauge

from controller.compiler.core import FlowKey
from controller.flows import Flow

MODES = ("repair", "report")
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
    kind: str  # missing | extra | modified (flows); tunnel-missing, ... (OVSDB)
    what: str  # the ovs-ofctl line of the flow (the installed one for extra), or a name
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
    checks: int = 0
    found: int = 0
    last_check: Optional[str] = None
    in_sync: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def checked(self, items: list[DriftItem], repaired: bool) -> None:
        """One comparison, and what it found (nothing: in sync)."""
        with self.lock:
            self.checks += 1
            self.last_check = iso(time.time())
            self.found += len(items)
            self.items.extend(items)
            self.in_sync = repaired or not items
        for item in items:
            DRIFT_FOUND.labels(item.kind).inc()
        DRIFT_ITEMS.labels(self.where).set(0 if repaired else len(items))

    def view(self) -> dict[str, Any]:
        with self.lock:
            return {"in_sync": self.in_sync, "checks": self.checks,
                    "last_check": self.last_check, "drift_found": self.found,
                    "drift": [i.view() for i in self.items]}


def describe(missing: list[Flow], extra: list[Flow], modified: list[tuple[Flow, Flow]],
             owner_of: Callable[[int], Any], to_line: Callable[[Flow], str],
             repaired: bool) -> list[DriftItem]:
    now = iso(time.time())
    out = [DriftItem("missing", to_line(f), now, owner_of(f.cookie), repaired=repaired)
           for f in missing]
    out += [DriftItem("extra", to_line(f), now, owner_of(f.cookie), repaired=repaired)
            for f in extra]
    out += [DriftItem("modified", to_line(now_f), now, owner_of(was.cookie),
                      expected=to_line(was), repaired=repaired) for was, now_f in modified]
    return out
