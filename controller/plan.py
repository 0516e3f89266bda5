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

import dataclasses
import gc
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

from controller import ofwire
from controller import pipeline as pl
from controller.compiler.core import DesiredSwitch, FlowKey
from controller.compiler.tunnels import desired_tunnels
from controller.intent import Intent
from controller.intent_delta import delta_between
from controller.simulate.fleet import Fleet, ModelCache, bound_ports
from controller.simulate.reachability import diff as reachability_diff
from controller.simulate.reachability import touched_ports
from controller.simulate.switch import SimulationError, SwitchModel
from controller.topology import TopologyDelta

LOG = logging.getLogger(__name__)

NO_TOPOLOGY_CHANGE = TopologyDelta()


class PlanUnavailable(RuntimeError):
    """Nothing compiled yet (a controller just started): no plan can be made."""


def what_if(compiler: Any, after: Intent,
            owners: Callable[[Intent, Intent], Callable[[Optional[int]], Any]],
            models: Optional[ModelCache] = None) -> tuple[dict[str, Any], bool]:
    """(the plan of going from the compiler's intent to `after`, whether the compiler
    came back to exactly the state it held). `models`: the switch models kept for the
    reachability diff by the engine (which notes its compiles there); a fresh set
    when not given."""
    models = models if models is not None else ModelCache()
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
    same = True
    for d in set(offers) | set(restored):
        keys = _keys_of(offers.get(d), restored.get(d))
        same = same and _came_back(before.get(d), compiler.desired(d), keys)
        models.note(d, keys, compiler.desired(d))  # (back as other, equal, objects)
    owner_of = owners(base, after)
    reach = _reachability(base, after, topo, before, offers, owner_of, models)
    switches = []
    for dpid in sorted(offers):
        entry = _switch_plan(dpid, before.get(dpid), offers[dpid].desired,
                             offers[dpid].changed_keys, owner_of)
        if entry is not None:
            switches.append(entry)
    chassis = _chassis_plan(base, after, topo, delta is None or bool(delta.ids("networks")),
                            shaping_before, shaping_after)
    return {"switches": switches, "chassis": chassis, "reachability": reach,
            "compiled_in_full": delta is None}, same


def _keys_of(there: Any, back: Any) -> Optional[set[FlowKey]]:
    """The flow keys the round trip touched on one switch (None: unknown, all)."""
    keys: set[FlowKey] = set()
    for offer in (there, back):
        if offer is None:
            continue
        if offer.changed_keys is None:
            return None
        keys |= offer.changed_keys
    return keys


def _came_back(was: Optional[DesiredSwitch], now: Optional[DesiredSwitch],
               keys: Optional[set[FlowKey]]) -> bool:
    """Whether a switch's state after the round trip is the one before: its flows
    compared on the keys the round trip touched (the rest were never offered as
    changed), everything else whole (groups and meters are small next to flows)."""
    if now is was:
        return True
    if now is None or was is None:
        return False
    if keys is None:
        return now == was
    if len(now.flows) != len(was.flows) or any(now.flows.get(k) != was.flows.get(k)
                                               for k in keys):
        return False
    return all(getattr(now, f.name) == getattr(was, f.name)
               for f in dataclasses.fields(DesiredSwitch) if f.name != "flows")


class _Models(Mapping[int, SwitchModel]):
    """Switch models built when a packet first gets to the switch: a plan simulates the
    switches its probes cross, not the fleet."""

    def __init__(self, cache: ModelCache, desired: Mapping[int, DesiredSwitch],
                 start: Optional[Mapping[int, DesiredSwitch]] = None,
                 keys: Optional[Mapping[int, Optional[frozenset[FlowKey]]]] = None) -> None:
        self._cache = cache
        self._desired = desired
        self._start = start  # the what-if: the states it starts from, kept
        self._keys = keys or {}
        self._built: dict[int, SwitchModel] = {}

    def __getitem__(self, dpid: int) -> SwitchModel:
        model = self._built.get(dpid)
        if model is None:
            if self._start is None:
                model = self._cache.model(self._desired[dpid])
            else:
                model = self._cache.model(self._desired[dpid], keep=False,
                                      base=self._start.get(dpid), keys=self._keys.get(dpid))
            self._built[dpid] = model
        return model

    def __iter__(self) -> Iterator[int]:
        return iter(self._desired)

    def __len__(self) -> int:
        return len(self._desired)



def _reachability(base: Intent, after: Intent, topo: Any,
                  before: Mapping[int, DesiredSwitch], offers: Mapping[int, Any],
                  owner_of: Callable[[Optional[int]], Any], models: ModelCache
                  ) -> dict[str, Any]:
    """Which pairs of ports gain or lose reachability (controller/simulate): the ports
    the changed flows concern, each with the ports it could talk to, simulated on the
    desired states before and after."""
    changed: dict[int, list[Any]] = {}
    now: dict[int, DesiredSwitch] = dict(before)
    keys_of: dict[int, Optional[frozenset[FlowKey]]] = {}
    for dpid, offer in offers.items():
        old = before.get(dpid)
        new = offer.desired
        now[dpid] = new
        old_flows: Mapping[FlowKey, Any] = old.flows if old is not None else {}
        keys_of[dpid] = offer.changed_keys
        keys = offer.changed_keys if offer.changed_keys is not None \
            else set(old_flows) | set(new.flows)
        flows = [f for k in keys for f in (old_flows.get(k), new.flows.get(k))
                 if f is not None and old_flows.get(k) != new.flows.get(k)]
        if flows:
            changed[dpid] = flows
    if not changed:
        return {"changes": [], "ports_checked": [], "pairs_checked": 0, "probes": 0,
                "truncated": False}
    collecting = gc.isenabled()
    # the probes make many short-lived dicts: a collection among them would walk the
    # compiled state of the whole fleet (the engine keeps it out of collections too)
    gc.disable()
    try:
        ports = bound_ports(topo)  # one pass over the bindings per plan
        touched = touched_ports(changed, base, after, ports, owner_of)
        return reachability_diff(
            (base, Fleet(_Models(models, before), topo, ports)),
            (after, Fleet(_Models(models, now, before, keys_of), topo, ports)), topo, touched)
    except SimulationError as exc:
        LOG.warning("reachability not simulated: %s", exc)
        return {"error": str(exc)}
    except Exception as exc:  # a simulator bug must cost the answer one part, not more
        LOG.exception("reachability not simulated")
        return {"error": f"the simulation failed: {exc}"}
    finally:
        if collecting:
            gc.enable()


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
