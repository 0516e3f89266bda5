"""What a write would do to the switches, worked out before it is made (issue 15).

`?dry_run=true` runs a write exactly as the real one (same validation, same answer)
and commits nothing; this module turns the intent it would have left into a plan:
per switch, the flows, groups and meters that would be added, removed or changed,
each with its owner and its `ovs-ofctl` line, and per chassis the tunnel ports and
shaping that would change.

It uses the engine's own incremental compiler, so a plan costs what the change
costs (not a compile of the fleet): the compiler is brought to the what-if intent,
the states it offers are kept, and it is brought back to the intent it held, the
same way (a change and its reverse are both deltas it compiles incrementally). The
compiler is deterministic, and the desired states it holds are immutable values, so
the states after the round trip are checked equal to those before; if they are
not, the engine's next compile is a full one. Only the engine's compile thread and
this, under the same lock, ever touch the compiler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Optional

from controller import ofwire
from controller import pipeline as pl
from controller.compiler.core import DesiredSwitch, FlowKey
from controller.compiler.tunnels import desired_tunnels
from controller.intent import Intent
from controller.intent_delta import delta_between
from controller.topology import TopologyDelta

LOG = logging.getLogger(__name__)

NO_TOPOLOGY_CHANGE = TopologyDelta()


class PlanUnavailable(RuntimeError):
    """Nothing compiled yet (a controller just started): no plan can be made."""


def what_if(compiler: Any, after: Intent,
            owners: Callable[[Intent, Intent], Callable[[Optional[int]], Any]]
            ) -> tuple[dict[str, Any], bool]:
    """(the plan of going from the compiler's intent to `after`, whether the compiler
    came back to exactly the state it held)."""
    base, topo = compiler.intent, compiler.topo
    if base is None or topo is None:
        raise PlanUnavailable("nothing has been compiled yet; try again in a moment")
    delta = delta_between(base, after)
    tdelta = None if delta is None else NO_TOPOLOGY_CHANGE
    before: dict[int, DesiredSwitch] = {
        d: sw.desired for d, sw in compiler.switches.items() if sw.desired is not None}
    shaping_before = compiler.shaping()
    offers = compiler.update(after, topo, delta, tdelta)
    shaping_after = compiler.shaping() if any(o.shaping_changed for o in offers.values()) \
        else shaping_before
    restored = compiler.update(base, topo, delta, tdelta)
    same = all(compiler.desired(d) is before.get(d) or compiler.desired(d) == before.get(d)
               for d in set(offers) | set(restored))
    owner_of = owners(base, after)
    switches = []
    for dpid in sorted(offers):
        entry = _switch_plan(dpid, before.get(dpid), offers[dpid].desired,
                             offers[dpid].changed_keys, owner_of)
        if entry is not None:
            switches.append(entry)
    chassis = _chassis_plan(base, after, topo, delta is None or bool(delta.ids("networks")),
                            shaping_before, shaping_after)
    return {"switches": switches, "chassis": chassis, "compiled_in_full": delta is None}, same


def _chassis_plan(base: Intent, after: Intent, topo: Any, networks_changed: bool,
                  shaping_before: Mapping[int, Mapping[str, Any]],
                  shaping_after: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The OVSDB side, per chassis: tunnel ports (only a change of networks can move
    them: a new tunnel type in use, or none left) and linux-htb shaping per interface."""
    out: dict[str, dict[str, Any]] = {}
    if networks_changed:
        old, new = desired_tunnels(base, topo), desired_tunnels(after, topo)
        for name in sorted(set(old) | set(new)):
            was, now = old.get(name, frozenset()), new.get(name, frozenset())
            if was != now:
                out.setdefault(name, {"chassis": name})["tunnels"] = {
                    "added": sorted(t.name for t in now - was),
                    "removed": sorted(t.name for t in was - now)}
    if shaping_after is not shaping_before:
        for dpid in sorted(set(shaping_before) | set(shaping_after)):
            had, has = shaping_before.get(dpid, {}), shaping_after.get(dpid, {})
            if had == has:
                continue
            switch = topo.switches.get(dpid)
            name = switch.chassis if switch is not None else f"{dpid:016x}"
            out.setdefault(name, {"chassis": name})["shaping"] = {
                "added": sorted(i for i in has if i not in had),
                "removed": sorted(i for i in had if i not in has),
                "modified": sorted(i for i in has if i in had and has[i] != had[i])}
    return [out[k] for k in sorted(out)]


def _switch_plan(dpid: int, old: Optional[DesiredSwitch], new: DesiredSwitch,
                 keys: Optional[frozenset[FlowKey]],
                 owner_of: Callable[[Optional[int]], Any]) -> Optional[dict[str, Any]]:
    old_flows: Mapping[FlowKey, Any] = old.flows if old is not None else {}
    new_flows = new.flows
    changed = keys if keys is not None else set(old_flows) | set(new_flows)
    added, removed, modified = [], [], []
    for key in sorted(changed, key=lambda k: (pl.TABLE_IDS.get(k[0], 255), -k[1], k[2])):
        was, now = old_flows.get(key), new_flows.get(key)
        if was == now:
            continue
        if was is None:
            added.append(_flow(now, owner_of))
        elif now is None:
            removed.append(_flow(was, owner_of))
        else:
            modified.append({**_flow(now, owner_of), "was": ofwire.to_ofctl(was)})
    groups = _diff_map(old.groups if old is not None else {}, new.groups)
    meters = _diff_map(old.meters if old is not None else {}, new.meters)
    if not (added or removed or modified or any(groups.values()) or any(meters.values())):
        return None
    return {"datapath_id": f"{dpid:016x}",
            "flows": {"added": added, "removed": removed, "modified": modified},
            "groups": groups, "meters": meters}


def _flow(flow: Any, owner_of: Callable[[Optional[int]], Any]) -> dict[str, Any]:
    return {"table": flow.table, "priority": flow.priority, "cookie": f"{flow.cookie:#x}",
            "owner": owner_of(flow.cookie), "flow": ofwire.to_ofctl(flow)}


def _diff_map(old: Mapping[int, Any], new: Mapping[int, Any]) -> dict[str, list[int]]:
    return {
        "added": sorted(k for k in new if k not in old),
        "removed": sorted(k for k in old if k not in new),
        "modified": sorted(k for k in new if k in old and new[k] != old[k]),
    }


# cookie owner kind -> the Intent mapping its objects are in
_KINDS = {"network": "networks", "port": "ports", "security_group_rule": "security_group_rules",
          "router": "routers", "floating_ip": "floating_ips",
          "port_forwarding": "port_forwardings", "qos_policy": "qos_policies"}


def owner_resolver(base: Intent, after: Intent) -> Callable[[Optional[int]], Any]:
    """Cookie -> the intent object it names, in the intent after the write, or before
    it (a removed object's flows). First from the objects the write touched (what
    most changed flows belong to: the plan costs what the change costs); the trace's
    index of every object only if a flow names another one (a security group rule's
    change rewrites its members' flows)."""
    from controller.explain.trace import owner_index, owner_of
    from controller.intent import object_key

    delta = delta_between(base, after)
    small: dict[tuple[str, int], dict[str, Any]] = {}
    if delta is not None:
        for kind, attr in _KINDS.items():
            for object_id in delta.ids(attr):
                obj = getattr(after, attr).get(object_id) or getattr(base, attr).get(object_id)
                try:
                    key = object_key(object_id)
                except ValueError:
                    continue
                small[(kind, key)] = {"kind": kind, "id": object_id,
                                      "name": getattr(obj, "name", None)}
    full: list[Mapping[Any, Any]] = []

    def resolve(cookie: Optional[int]) -> Any:
        found = owner_of(cookie, small)
        if not (isinstance(found, dict) and found.get("stale")):
            return found
        if not full:
            full.extend((owner_index(after), owner_index(base)))
        found = owner_of(cookie, full[0])
        if isinstance(found, dict) and found.get("stale"):
            return owner_of(cookie, full[1])
        return found

    return resolve
