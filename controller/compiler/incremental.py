"""Incremental compilation: recompile only the (switch, unit) pairs a change touches.

`compile_switch` (core.py) builds a switch's whole desired state from the whole
intent: simple, and the reference, but its cost is the fleet's (every port on every
network the switch carries, every time). This module keeps each switch's desired
state split by *unit*, the intent object that owns a group of flows on that switch:

    ("pipeline", "")  table-miss flows, and the ACL ladder once a port is bound
    ("qos", "")       the switch's QoS: share caps, meters, linux-htb shaping
    ("port", id)      a port bound here: its own flows, its guard, its plain SG rules
    ("netport", id)   a port of a network bound here (anywhere): ARP reply, remote MAC
    ("net", id)       a network bound here: flood, tunnels in, the flood group
    ("sg", id)        a security group with ports bound here: its remote-group rules
    ("member", id)    a port whose addresses a remote-group rule here names
    ("router", id)    a router with a network bound here, or whose gateway chassis this is:
                      its l3 flows (compiler/routing.py), its transit to the gateway
                      chassis or, there, its gateway's flows (compiler/gateway.py)
    ("fip", id)       a floating IP, where its NAT runs: its guest's chassis if that maps
                      the external network (distributed), else its router's gateway
    ("pf", id)        a port forwarding, likewise: its DNAT
    ("ext", id)       an external network where a router or floating IP NATs for it here:
                      its frames in, ARP to the responder, the upstream's MAC (once
                      per switch, not once per floating IP)

A "netport" unit also lives where its network is only routed to (a network of a router
present here): the port's resolve flow, and how to reach its chassis.

and keeps the indexes that say which units a change touches (`_Index`): where each
port is placed, which switches carry each network and each security group, which
groups name a group as remote. A change (the store's `IntentDelta`, the topology's
`TopologyDelta`) marks the units it touches on the switches they live on; only those
are evaluated again, their flows replaced in the switch's flow map (a persistent
map: a new version costs what changed), and only switches whose state changed are
returned, each with the flow keys that changed so the reconciler diffs only those.

Flows that two units put under one OpenFlow key (two rules of the same shape on one
port; one address in two remote groups) are merged exactly as `acl.merge_flows` does
for a whole switch.

The full compile stays: as the reference the property test compares this with after
every step (tests/unit/test_incremental_compile.py), and as the fallback: after a
restart, a reconnect, a change too large to be worth tracking, or whenever a fabric
is present (fabric switches route over the whole topology: `Compiler.update` then
compiles every switch, as before).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional

import immutables

from controller import pipeline as pl
from controller.compiler.acl import (
    base_flows,
    conj_id_of,
    conj_rule_flows,
    member_clause_flows,
    plain_rule_flows,
    port_guard_flows,
    rule_shape,
)
from controller.compiler.core import (
    CompileError,
    DesiredSwitch,
    FlowKey,
    compile_all,
    fip_unit_flows,
    forward_unit_flows,
    router_unit_flows,
)
from controller.compiler.gateway import (
    ExtUse,
    choose_gateway,
    choose_gateways,
    ext_use,
    external_side_flows,
    upstream_arp_meter,
    upstream_wanted,
)
from controller.compiler.network import (
    flood_flow,
    flood_from_remote_flow,
    nd_base_flows,
    neighbour_reply_flows,
)
from controller.compiler.overlay import (
    flood_group,
    flood_group_id,
    physnet_of,
    provider_flood_group,
    provider_in_flow,
    tagged_drop_flow,
    tunnel_in_flow,
    zone_of,
)
from controller.compiler.ports import (
    NO_QOS,
    port_flows,
    port_punts,
    punt_meter,
    subnet_punts,
)
from controller.compiler.qos import PolicyIndex, Shaping, SwitchQos, share_cap_flows, switch_qos
from controller.compiler.routing import (
    RouterPlan,
    RoutingIndex,
    plan_router,
    reach_flows,
    resolve_flows,
    senders_of,
)
from controller.flows import Conjunction, Flow, Group, Meter
from controller.intent import FloatingIP, Intent, Network, Port, SecurityGroupRule, object_key
from controller.intent_delta import IntentDelta
from controller.topology import TUNNEL_TYPES, Binding, TopologyDelta, TopologyView

UnitKey = tuple[str, str]
PIPELINE: UnitKey = ("pipeline", "")
QOS: UnitKey = ("qos", "")

# Fields no flow depends on, and a neutral value: a change of only these (a rename)
# touches nothing.
_NOT_COMPILED = {"name": "", "description": "", "created_at": "", "updated_at": "",
                 "revision_number": 0}

# A change touching more ports than this share of the ports is compiled in full.
FULL_SHARE = 0.25
FULL_MIN = 256

_EMPTY_SWITCH_QOS = SwitchQos({}, {}, {}, ())


def compiled_view(obj: Any) -> Any:
    """`obj` without the fields no flow depends on (None stays None)."""
    if obj is None:
        return None
    names = {f.name for f in dataclasses.fields(obj)}
    return dataclasses.replace(obj, **{n: v for n, v in _NOT_COMPILED.items() if n in names})


def merge_pair(old: Flow, new: Flow) -> Flow:
    """One flow for two that share an OpenFlow key (`acl.merge_flows`' rule): equal ones
    are one; conjunction clauses carry the union of their conjunctions; the same actions
    keep the lower cookie. Anything else is a compiler bug."""
    if old == new:
        return old
    if all(isinstance(a, Conjunction) for a in (*old.actions, *new.actions)):
        acts = tuple(sorted(set(old.actions) | set(new.actions),
                            key=lambda a: (a.conj_id, a.clause)))  # type: ignore[union-attr]
        return Flow(new.table, new.priority, new.match, acts, new.goto, new.write_metadata,
                    new.meter, min(old.cookie, new.cookie))
    if (old.actions, old.goto, old.write_metadata, old.meter) == \
            (new.actions, new.goto, new.write_metadata, new.meter):
        return old if old.cookie <= new.cookie else new
    raise CompileError(f"conflicting flows for {new.key}: {old} vs {new}")


@dataclass
class _Switch:
    """One switch's units and the flow map they add up to."""

    dpid: int
    units: dict[UnitKey, tuple[Flow, ...]] = field(default_factory=dict)
    # key -> the units that put a flow under it (most keys: exactly one)
    contrib: dict[FlowKey, dict[UnitKey, Flow]] = field(default_factory=dict)
    flows: immutables.Map = field(default_factory=immutables.Map)
    groups: dict[str, Group] = field(default_factory=dict)  # network id -> flood group
    qos: SwitchQos = _EMPTY_SWITCH_QOS
    # port id -> binding, of the ports placed here
    local: dict[str, Binding] = field(default_factory=dict)
    local_nets: dict[str, set[str]] = field(default_factory=dict)  # network -> local ports
    local_sgs: dict[str, set[str]] = field(default_factory=dict)  # group -> local ports
    netports: dict[str, set[str]] = field(default_factory=dict)  # network -> netport units
    netport_net: dict[str, str] = field(default_factory=dict)  # netport unit -> its network
    members: set[str] = field(default_factory=set)  # member units present
    routers: set[str] = field(default_factory=set)  # routers present (a network of theirs here)
    resolve_nets: set[str] = field(default_factory=set)  # the networks of those routers
    # external network -> the units that NAT for it here and what they need of it, and
    # how many need each distinct thing (its ext unit changes only when those do)
    ext_users: dict[str, dict[UnitKey, ExtUse]] = field(default_factory=dict)
    ext_needs: dict[str, dict[ExtUse, int]] = field(default_factory=dict)
    desired: Optional[DesiredSwitch] = None
    # object key -> port id, of `local`: persistent, so an offer shares it as it is
    # (a frozenset rebuilt per offer cost O(ports on the switch) per change)
    port_keys: immutables.Map = field(default_factory=immutables.Map)
    # meter id -> punt meter of the local ports Loom answers DHCP for, and port -> its id
    punt_meters: immutables.Map = field(default_factory=immutables.Map)
    punt_meter_of: dict[str, int] = field(default_factory=dict)
    ra_ports: dict[str, int] = field(default_factory=dict)  # port -> ofport: RAs go to
    _meters: Optional[tuple[tuple[Any, Any, bool], Mapping[int, Meter],
                            Mapping[int, Meter]]] = None

    def set_punt_meter(self, pid: str, meter: Optional[Meter]) -> None:
        """The punt meter of local port `pid` (None: it has none)."""
        if meter is None:
            if pid in self.punt_meter_of:
                self.punt_meters = self.punt_meters.delete(self.punt_meter_of.pop(pid))
            return
        if self.punt_meter_of.get(pid) != meter.meter_id:
            self.set_punt_meter(pid, None)
            self.punt_meter_of[pid] = meter.meter_id
        if self.punt_meters.get(meter.meter_id) != meter:
            self.punt_meters = self.punt_meters.set(meter.meter_id, meter)

    def meters(self, upstream_arp: bool) -> Mapping[int, Meter]:
        """Every meter the switch should hold: QoS, the ports' punt meters, the upstream
        ARP punt meter of a gateway chassis. The same object while none of them changes
        (the reconciler compares meters only when it is a new one)."""
        inputs = (self.punt_meters, self.qos.meters, upstream_arp)
        cached = self._meters
        if cached is not None and cached[0][0] is inputs[0] and cached[0][1] is inputs[1] \
                and cached[0][2] == upstream_arp:
            return cached[1]
        shared = dict(self.qos.meters)
        if upstream_arp:
            shared[pl.PUNT_METER_UPSTREAM_ARP] = upstream_arp_meter()
        built = self.punt_meters.update(shared) if shared else self.punt_meters
        self._meters = (inputs, built, MappingProxyType(shared))
        return built

    def shared_meters(self) -> Mapping[int, Meter]:
        """The meters of the last `meters` that are not a port's punt meter."""
        assert self._meters is not None
        return self._meters[2]

    def set_unit(self, key: UnitKey, flows: Iterable[Flow], changed: set[FlowKey]) -> None:
        """Replace one unit's flows; `changed` gets the keys to merge again (`commit`).
        Merging waits for every unit of the switch: a unit being replaced may still
        hold a key another unit now claims (a port that moved away: its own flows go,
        its remote-MAC flow comes)."""
        new = tuple(flows)
        old = self.units.get(key, ())
        if new == old:
            return
        if new:
            self.units[key] = new
        else:
            self.units.pop(key, None)
        for f in old:
            per_key = self.contrib.get(f.key)
            if per_key is not None and per_key.pop(key, None) is not None:
                changed.add(f.key)
                if not per_key:
                    del self.contrib[f.key]
        for f in new:
            per_key = self.contrib.setdefault(f.key, {})
            if key in per_key:  # the unit itself has the key twice: merge (acl.merge_flows)
                per_key[key] = merge_pair(per_key[key], f)
            else:
                per_key[key] = f
            changed.add(f.key)

    def commit(self, changed: set[FlowKey]) -> set[FlowKey]:
        """Merge the changed keys into the flow map; returns the keys whose flow changed."""
        touched: set[FlowKey] = set()
        if not changed:
            return touched
        with self.flows.mutate() as flows:
            for k in changed:
                per_key = self.contrib.get(k)
                if not per_key:
                    if k in flows:
                        del flows[k]
                        touched.add(k)
                    continue
                merged: Optional[Flow] = None
                if len(per_key) == 1:  # most keys: one unit's flow, nothing to merge
                    merged = next(iter(per_key.values()))
                else:
                    for _, f in sorted(per_key.items()):
                        merged = f if merged is None else merge_pair(merged, f)
                assert merged is not None
                if flows.get(k) != merged:
                    flows[k] = merged
                    touched.add(k)
            self.flows = flows.finish()
        return touched


@dataclass(frozen=True)
class Offer:
    """A switch's new desired state and the flow keys it changed (None: diff it all)."""

    desired: DesiredSwitch
    changed_keys: Optional[frozenset[FlowKey]]
    shaping_changed: bool = False


class Compiler:
    """Desired state per switch, kept up to date change by change. Not thread-safe: the
    engine's compile thread alone calls it."""

    def __init__(self, fast_failover: bool = True) -> None:
        self.fast_failover = fast_failover
        self.intent: Optional[Intent] = None
        self.topo: Optional[TopologyView] = None
        self.full_compiles = 0
        self.incremental_compiles = 0
        self.units_evaluated = 0
        self._reset()

    def _reset(self) -> None:
        self.switches: dict[int, _Switch] = {}
        self.placed: dict[str, Binding] = {}
        self.by_network: dict[str, dict[int, dict[str, Binding]]] = {}
        self.sg_members: dict[str, set[str]] = {}
        self.sg_rules: dict[str, dict[str, SecurityGroupRule]] = {}
        self.rule_remote: dict[str, set[str]] = {}  # remote group -> groups naming it
        self.sg_switches: dict[str, set[int]] = {}
        self.policies: Optional[PolicyIndex] = None
        # routing: plans, interfaces per router, what each plan was built from (so a
        # change to a port, subnet or network re-plans its routers), where each router
        # is present and which switches resolve (route into) each network
        self.router_plans: dict[str, RouterPlan] = {}
        self.router_ifaces: dict[str, set[str]] = {}
        self.router_deps: dict[str, set[tuple[str, str]]] = {}
        self.dep_routers: dict[tuple[str, str], set[str]] = {}
        self.net_routers: dict[str, set[str]] = {}
        self.router_switches: dict[str, set[int]] = {}
        self.resolvers: dict[str, set[int]] = {}
        self._nets_moved: set[int] = set()  # switches a network arrived on or left
        # external gateways (compiler/gateway.py): each router's gateway chassis, the
        # routers each chassis is the gateway of, the floating IPs of each router and
        # the port forwardings of each floating IP
        self.gateways: dict[str, int] = {}
        self.gw_routers: dict[int, set[str]] = {}
        # routers whose gateway chassis moved away from each switch in this compile
        # (their floating IP units there are evaluated again: to nothing)
        self._gw_before: dict[int, set[str]] = {}
        self.router_fips: dict[str, set[str]] = {}
        self.fip_forwards: dict[str, set[str]] = {}
        self.port_fips: dict[str, set[str]] = {}  # guest port -> its floating IPs
        self.fip_home: dict[str, int] = {}  # floating IP -> the switch its flows are on
        # distributed floating IPs: -> (home, external network, its MAC, its address)
        self.fip_announce: dict[str, tuple[int, Network, int, int]] = {}

    @property
    def generation(self) -> int:
        return self.intent.generation if self.intent is not None else -1

    @property
    def topology_version(self) -> int:
        return self.topo.version if self.topo is not None else -1

    def desired(self, dpid: int) -> Optional[DesiredSwitch]:
        sw = self.switches.get(dpid)
        return sw.desired if sw is not None else None

    def shaping(self) -> dict[int, Mapping[str, Shaping]]:
        return {d: sw.qos.shaping for d, sw in self.switches.items()}

    def announcements(self) -> list[tuple[int, Network, int, int]]:
        """(switch, external network, MAC, IPv4) of the distributed floating IPs: what
        each chassis announces by gratuitous ARP (controller/upstream_arp.py). A copy:
        safe from another thread."""
        return list(self.fip_announce.values())

    def upstreams(self) -> dict[tuple[int, int], tuple[RouterPlan, int]]:
        """(gateway dpid, external network) -> (a router there, its upstream address):
        whom each gateway chassis asks ARP for (controller/upstream_arp.py)."""
        return upstream_wanted(self.router_plans, self.gateways)

    def port_at(self, dpid: int, key: int) -> Optional[Port]:
        """Read-only, safe from another thread: the intent port whose flows on switch
        `dpid` carry cookie key `key` (a punted packet's port), as of the last compile;
        None if that switch holds no such port. O(1)."""
        sw, intent = self.switches.get(dpid), self.intent
        desired = sw.desired if sw is not None else None
        if desired is None or intent is None:
            return None
        pid = desired.port_keys.get(key)
        return intent.ports.get(pid) if pid is not None else None

    def router_port_on(self, subnet_id: str) -> Optional[Port]:
        """Read-only, safe from another thread: a router's port on subnet `subnet_id`
        (the source of its router advertisements), from the routers that depend on
        the subnet; O(those routers' interfaces), and nothing for a subnet no router
        depends on (a guest soliciting there costs no scan). Without unit state (a
        fabric, compiled whole), a scan of the router interfaces."""
        intent, topo = self.intent, self.topo
        if intent is None:
            return None
        rids = self.dep_routers.get(("subnet", subnet_id))
        if rids is None and not (topo is not None and topo.fabric_switches):
            return None
        riids = ([ri for rid in tuple(rids) for ri in tuple(self.router_ifaces.get(rid, ()))]
                 if rids is not None else list(intent.router_interfaces))
        for riid in sorted(riids):
            ri = intent.router_interfaces.get(riid)
            if ri is not None and ri.subnet_id == subnet_id:
                return intent.ports.get(ri.port_id)
        return None

    def ra_targets(self) -> list[tuple[int, str, int]]:
        """Read-only, safe from another thread: (switch, port, ofport) of the local ports
        on advertised IPv6 subnets (periodic router advertisements go to them)."""
        return [(dpid, pid, ofport) for dpid, sw in list(self.switches.items())
                for pid, ofport in list(sw.ra_ports.items())]

    def carriers_of(self, network_id: str) -> Optional[tuple[int, ...]]:
        """Read-only, safe from another thread: the switches the last compile placed a
        port of network `network_id` on, in no order. Each holds the network's ARP
        answers (`_netport_unit`), a router port's own flows among them (a router's
        port is placed nowhere). O(those switches). None when this compiler keeps no
        unit state: nothing compiled yet, or a fabric (`_full_fabric`)."""
        topo = self.topo
        if self.intent is None or topo is None or topo.fabric_switches:
            return None
        # one C-level copy under the GIL: the compile thread may be editing the map
        return tuple(self.by_network.get(network_id, ()))

    # ------------------------------------------------------------------ entry point
    def update(self, intent: Intent, topo: TopologyView, idelta: Optional[IntentDelta],
               tdelta: Optional[TopologyDelta]) -> dict[int, Offer]:
        """Bring every switch's desired state to (intent, topo); return the switches
        whose state changed. `idelta`/`tdelta`: what changed since the intent and
        topology this compiler last saw (None: unknown, compile in full)."""
        if topo.fabric_switches:
            return self._full_fabric(intent, topo)
        if self.intent is None or self.topo is None or idelta is None or tdelta is None \
                or tdelta.fabric or tdelta.switches or self.topo.fabric_switches \
                or self._too_big(intent, idelta, tdelta):
            return self._rebuild(intent, topo)
        return self._incremental(intent, topo, idelta, tdelta)

    def _too_big(self, intent: Intent, idelta: IntentDelta, tdelta: TopologyDelta) -> bool:
        n = len(idelta.ids("ports")) + len(tdelta.bindings)
        return n > max(FULL_MIN, FULL_SHARE * len(intent.ports))

    # ------------------------------------------------------------------ full paths
    def _full_fabric(self, intent: Intent, topo: TopologyView) -> dict[int, Offer]:
        """With a fabric, every switch from `compile_all` (and no unit state kept)."""
        self.full_compiles += 1
        self._reset()
        self.intent, self.topo = intent, topo
        self.router_plans = dict(RoutingIndex(intent).plans)  # (for `upstreams` only)
        self.gateways = choose_gateways(self.router_plans, topo)
        out = {}
        for dpid, desired in compile_all(intent, topo, self.fast_failover).items():
            sw = self.switches[dpid] = _Switch(dpid)
            sw.desired = desired
            sw.qos = SwitchQos({}, dict(desired.meters), dict(desired.shaping), ())
            out[dpid] = Offer(desired, None, True)
        return out

    def _rebuild(self, intent: Intent, topo: TopologyView) -> dict[int, Offer]:
        """Every unit of every switch, from scratch (a cold start, or the fallback)."""
        self.full_compiles += 1
        self._reset()
        self.intent, self.topo = intent, topo
        self.policies = PolicyIndex(intent)
        for rule in intent.security_group_rules.values():
            self._index_rule(None, rule)
        for port in intent.ports.values():
            self._index_member(None, port)
        for ri in intent.router_interfaces.values():
            self.router_ifaces.setdefault(ri.router_id, set()).add(ri.id)
        for rid in sorted(set(intent.routers) | set(self.router_ifaces)):
            self._replan(rid)
        for fip in intent.floating_ips.values():
            if fip.router_id is not None:
                self.router_fips.setdefault(fip.router_id, set()).add(fip.id)
            if fip.port_id is not None:
                self.port_fips.setdefault(fip.port_id, set()).add(fip.id)
        for pf in intent.port_forwardings.values():
            self.fip_forwards.setdefault(pf.floatingip_id, set()).add(pf.id)
        self._assign_gateways(self.router_plans)
        for dpid in topo.switches:
            self.switches[dpid] = _Switch(dpid)
        for binding in topo.bindings.values():
            self._place(binding.port_id)
        dirty: dict[int, set[UnitKey]] = defaultdict(set)
        self._nets_moved = set()
        self._refresh_routing(set(self.switches), dirty)
        self._gw_before = {}
        for dpid, sw in self.switches.items():
            units = dirty[dpid]
            units.update((PIPELINE, QOS))
            units.update(("port", p) for p in sw.local)
            for nid in sw.local_nets:
                units.add(("net", nid))
                units.update(("netport", p.id) for p in intent.ports_on_network(nid))
            for sg in sw.local_sgs:
                units.add(("sg", sg))
                for remote in self._remotes_of(sg):
                    units.update(("member", m) for m in self.sg_members.get(remote, ()))
        return self._evaluate(dirty, full=True)

    # ------------------------------------------------------------------ incremental
    def _incremental(self, intent: Intent, topo: TopologyView, idelta: IntentDelta,
                     tdelta: TopologyDelta) -> dict[int, Offer]:
        self.incremental_compiles += 1
        old = self.intent
        assert old is not None
        self.intent, self.topo = intent, topo
        dirty: dict[int, set[UnitKey]] = defaultdict(set)

        qos_changed = bool(idelta.ids("qos_policies") or idelta.ids("qos_rules"))
        if qos_changed:
            self.policies = PolicyIndex(intent)
            for dpid in self.switches:
                dirty[dpid].add(QOS)

        ports: set[str] = set(tdelta.bindings)
        for pid in idelta.ids("ports"):
            if compiled_view(old.ports.get(pid)) != compiled_view(intent.ports.get(pid)):
                ports.add(pid)
        for nid in idelta.ids("networks"):
            before, after = old.networks.get(nid), intent.networks.get(nid)
            if compiled_view(before) == compiled_view(after):
                continue
            ports.update(p.id for p in old.ports_on_network(nid))
            ports.update(p.id for p in intent.ports_on_network(nid))
            for dpid in self._carriers(nid):
                dirty[dpid].add(("net", nid))

        for sid in idelta.ids("subnets"):
            # DHCP served or advertised: the punt flows of its ports (ports.port_punts)
            before_s, after_s = old.subnets.get(sid), intent.subnets.get(sid)
            if subnet_punts(before_s) == subnet_punts(after_s):
                continue
            for snap, sub in ((old, before_s), (intent, after_s)):
                if sub is not None:
                    ports.update(p.id for p in snap.ports_on_network(sub.network_id)
                                 if any(f.subnet_id == sid for f in p.fixed_ips))

        groups: set[str] = set()
        for rid in idelta.ids("security_group_rules"):
            before_r, after_r = old.security_group_rules.get(rid), \
                intent.security_group_rules.get(rid)
            if compiled_view(before_r) == compiled_view(after_r):
                continue
            remotes = self._index_rule(before_r, after_r)
            for r in (before_r, after_r):
                if r is not None:
                    groups.add(r.security_group_id)
            for sg in {r.security_group_id for r in (before_r, after_r) if r is not None}:
                for dpid in self.sg_switches.get(sg, ()):
                    units = dirty[dpid]
                    units.add(("sg", sg))
                    units.update(("port", p) for p in self.switches[dpid].local_sgs.get(sg, ()))
                    for remote in remotes:
                        units.update(("member", m) for m in self.sg_members.get(remote, ()))

        routers = self._routers_touched(old, idelta)
        refresh: set[int] = set()
        replanned: set[str] = set()
        for rid in sorted(routers):
            refresh |= self.router_switches.get(rid, set())
            replanned |= self._replan(rid)
        gateway_topology = bool(tdelta.chassis or tdelta.provider_ports)
        refresh |= self._assign_gateways(self.router_plans if gateway_topology else routers)
        self._nat_changed(old, idelta, dirty)
        if tdelta.mac_bindings:  # the upstream's MAC: each ext unit that sends to it
            for at, switch in self.switches.items():
                for nid, needs in switch.ext_needs.items():
                    if any((u.network.key, u.upstream) in tdelta.mac_bindings
                           for u in needs):
                        dirty[at].add(("ext", nid))
        for net_key, _ in tdelta.mac_bindings:
            for rid, dpid in self.gateways.items():
                plan = self.router_plans.get(rid)
                if plan is not None and plan.gateway is not None \
                        and plan.gateway.network.key == net_key:
                    dirty[dpid].add(("router", rid))
                    # distributed floating IPs send to the upstream too (rare: once
                    # per upstream router)
                    self._mark_fips(self.router_fips.get(rid, ()), dirty)

        for pid in sorted(ports):
            self._port_changed(pid, old, dirty)

        for nid in replanned:
            refresh |= self._carriers(nid)
        refresh |= self._nets_moved
        self._nets_moved = set()
        self._refresh_routing(refresh, dirty)
        self._gw_before = {}

        for dpid in tdelta.tunnels | tdelta.provider_ports:
            sw = self.switches.get(dpid)
            if sw is None:
                continue
            units = dirty[dpid]
            units.add(QOS)
            units.update(("router", r) for r in sw.routers)  # transit, gateway tunnels in
            units.update(("ext", nid) for nid in sw.ext_users)  # its provider patch
            for nid in sw.local_nets:
                units.add(("net", nid))
            for nid in set(sw.local_nets) | sw.resolve_nets:
                units.update(("netport", p.id) for p in intent.ports_on_network(nid))
        if tdelta.provider_ports:
            # a remote port is reached over the physical network only where both ends
            # have the patch (routing.reach_flows), and QoS names the patch a remote
            # sender comes in through: the ports bound where a patch came or went are
            # evaluated again everywhere (a rare event: a bridge mapping changed)
            moved = sorted(pid for dpid in tdelta.provider_ports
                           if (there := self.switches.get(dpid)) is not None
                           for pid in there.local)
            for pid in moved:  # a floating IP is distributed only where the mapping is
                self._mark_fips(self.port_fips.get(pid, ()), dirty)
                for dpid in tdelta.provider_ports:
                    dirty[dpid].update(("fip", f) for f in self.port_fips.get(pid, ()))
            for dpid in self.switches:
                units = dirty[dpid]
                units.add(QOS)
                units.update(("netport", pid) for pid in moved)
        return self._evaluate(dirty, full=False)

    # ------------------------------------------------------------------ gateways
    def _assign_gateways(self, rids: Iterable[str]) -> set[int]:
        """Choose the gateway chassis of `rids` again (gateway.choose_gateway); returns
        the switches where a router arrived or left, and every switch of a router whose
        gateway moved (their transit flows point at it)."""
        topo = self.topo
        assert topo is not None
        out: set[int] = set()
        for rid in list(rids):
            plan = self.router_plans.get(rid)
            new = None if plan is None else choose_gateway(plan, topo)
            old = self.gateways.get(rid)
            if new == old:
                continue
            if old is not None:
                self._gw_before.setdefault(old, set()).add(rid)
                del self.gateways[rid]
                there = self.gw_routers.get(old, set())
                there.discard(rid)
                if not there:
                    self.gw_routers.pop(old, None)
                out.add(old)
            if new is not None:
                self.gateways[rid] = new
                self.gw_routers.setdefault(new, set()).add(rid)
                out.add(new)
            out |= self.router_switches.get(rid, set())
        return out

    def _nat_changed(self, old: Intent, idelta: IntentDelta,
                     dirty: dict[int, set[UnitKey]]) -> None:
        """Floating IPs and port forwardings: their routers' units on the routers'
        gateway chassis (nowhere else holds NAT)."""
        intent = self.intent
        assert intent is not None
        marks: list[tuple[str, UnitKey]] = []  # (router, unit) for its gateway chassis
        for fid in idelta.ids("floating_ips"):
            before, after = old.floating_ips.get(fid), intent.floating_ips.get(fid)
            if compiled_view(before) == compiled_view(after):
                continue
            routers = {f.router_id for f in (before, after)
                       if f is not None and f.router_id is not None}
            for dpid in self._fip_places(fid, before) | self._fip_places(fid, after):
                dirty[dpid].add(("fip", fid))
            for rid in routers:
                marks.extend((rid, ("pf", p)) for p in self.fip_forwards.get(fid, ()))
            for f, add in ((before, False), (after, True)):
                if f is None or f.port_id is None:
                    continue
                ids = self.port_fips.setdefault(f.port_id, set())
                if add:
                    ids.add(fid)
                else:
                    ids.discard(fid)
                    if not ids:
                        self.port_fips.pop(f.port_id, None)
            if before is not None and before.router_id is not None:
                ids = self.router_fips.get(before.router_id, set())
                ids.discard(fid)
                if not ids:
                    self.router_fips.pop(before.router_id, None)
            if after is not None and after.router_id is not None:
                self.router_fips.setdefault(after.router_id, set()).add(fid)
        for pid in idelta.ids("port_forwardings"):
            before_pf = old.port_forwardings.get(pid)
            after_pf = intent.port_forwardings.get(pid)
            if compiled_view(before_pf) == compiled_view(after_pf):
                continue
            for pf, table in ((before_pf, old), (after_pf, intent)):
                if pf is None:
                    continue
                fip = table.floating_ips.get(pf.floatingip_id)
                if fip is not None and fip.router_id is not None:
                    marks.append((fip.router_id, ("pf", pid)))
            if before_pf is not None:
                ids = self.fip_forwards.get(before_pf.floatingip_id, set())
                ids.discard(pid)
                if not ids:
                    self.fip_forwards.pop(before_pf.floatingip_id, None)
            if after_pf is not None:
                self.fip_forwards.setdefault(after_pf.floatingip_id, set()).add(pid)
        for rid, unit in marks:
            gateway = self.gateways.get(rid)
            if gateway is not None:
                dirty[gateway].add(unit)

    @staticmethod
    def _note_ext(sw: _Switch, unit: UnitKey, use: Optional[ExtUse], later: set[str]) -> None:
        """`unit` NATs here for `use`'s external network (or no longer): the network's
        ext unit is evaluated again when what it must hold changes."""
        for nid, users in list(sw.ext_users.items()):
            old = users.get(unit)
            if old is None or old == use:
                continue
            del users[unit]
            needs = sw.ext_needs[nid]
            needs[old] -= 1
            if not needs[old]:
                del needs[old]
                later.add(nid)
            if not users:
                del sw.ext_users[nid]
                del sw.ext_needs[nid]
        if use is not None:
            users = sw.ext_users.setdefault(use.network.id, {})
            if users.get(unit) != use:
                users[unit] = use
                needs = sw.ext_needs.setdefault(use.network.id, {})
                needs[use] = needs.get(use, 0) + 1
                if needs[use] == 1:
                    later.add(use.network.id)

    def _fip_places(self, fid: str, fip: Optional[FloatingIP]) -> set[int]:
        """The switches a floating IP's unit may live on, now or last compile: where it
        was put, its router's gateway, its guest's chassis."""
        out = {self.fip_home[fid]} if fid in self.fip_home else set()
        if fip is not None:
            if fip.router_id is not None:
                # where its router is: how to reach it (fip_reach_flows)
                out |= self.router_switches.get(fip.router_id, set())
            if fip.router_id is not None and fip.router_id in self.gateways:
                out.add(self.gateways[fip.router_id])
            topo = self.topo
            binding = None if fip.port_id is None or topo is None \
                else topo.bindings.get(fip.port_id)
            if binding is not None:
                out.add(binding.datapath_id)
        return out

    def _mark_fips(self, fids: Iterable[str], dirty: dict[int, set[UnitKey]]) -> None:
        intent = self.intent
        assert intent is not None
        for fid in fids:
            for dpid in self._fip_places(fid, intent.floating_ips.get(fid)):
                dirty[dpid].add(("fip", fid))

    def _nat_units(self, rid: str, dirty: dict[int, set[UnitKey]]) -> set[UnitKey]:
        """Router `rid`'s floating IPs marked wherever they may live, and its port
        forwarding units (returned: they live on its gateway chassis)."""
        out: set[UnitKey] = set()
        fids = self.router_fips.get(rid, ())
        self._mark_fips(fids, dirty)
        for fid in fids:
            out.update(("pf", p) for p in self.fip_forwards.get(fid, ()))
        return out

    # ------------------------------------------------------------------ routing
    def _routers_touched(self, old: Intent, idelta: IntentDelta) -> set[str]:
        """Routers whose plan may have changed: their row, their interfaces, or a port,
        subnet or network an interface names. Keeps router_ifaces up to date."""
        intent = self.intent
        assert intent is not None
        out = {rid for rid in idelta.ids("routers")
               if compiled_view(old.routers.get(rid)) != compiled_view(intent.routers.get(rid))}
        for riid in idelta.ids("router_interfaces"):
            before, after = old.router_interfaces.get(riid), intent.router_interfaces.get(riid)
            if before is not None:
                out.add(before.router_id)
                ids = self.router_ifaces.get(before.router_id, set())
                ids.discard(riid)
                if not ids:
                    self.router_ifaces.pop(before.router_id, None)
            if after is not None:
                out.add(after.router_id)
                self.router_ifaces.setdefault(after.router_id, set()).add(riid)
        for kind, attr in (("port", "ports"), ("subnet", "subnets"), ("net", "networks")):
            table_before, table_now = getattr(old, attr), getattr(intent, attr)
            for oid in idelta.ids(attr):
                rids = self.dep_routers.get((kind, oid))
                if rids and compiled_view(table_before.get(oid)) != \
                        compiled_view(table_now.get(oid)):
                    out |= rids
        return out

    def _replan(self, rid: str) -> set[str]:
        """Plan router `rid` again; returns the networks it joined before or joins now."""
        intent = self.intent
        assert intent is not None
        for dep in self.router_deps.pop(rid, set()):
            rids = self.dep_routers.get(dep)
            if rids is not None:
                rids.discard(rid)
                if not rids:
                    del self.dep_routers[dep]
        old = self.router_plans.pop(rid, None)
        nets: set[str] = set()
        if old is not None:
            nets |= old.nets
            for nid in old.nets:
                rids = self.net_routers.get(nid, set())
                rids.discard(rid)
                if not rids:
                    self.net_routers.pop(nid, None)
        ifaces = [intent.router_interfaces[i] for i in sorted(self.router_ifaces.get(rid, ()))
                  if i in intent.router_interfaces]
        deps: set[tuple[str, str]] = set()
        for ri in ifaces:
            deps.add(("port", ri.port_id))
            deps.add(("subnet", ri.subnet_id))
            port = intent.ports.get(ri.port_id)
            if port is not None:
                deps.add(("net", port.network_id))
        router = intent.routers.get(rid)
        if router is not None and router.gateway_port_id is not None:
            deps.add(("port", router.gateway_port_id))
            gw_port = intent.ports.get(router.gateway_port_id)
            if gw_port is not None:
                deps.update(("subnet", f.subnet_id) for f in gw_port.fixed_ips)
        if router is not None and router.external_network_id is not None:
            deps.add(("net", router.external_network_id))
        if deps:
            self.router_deps[rid] = deps
            for dep in deps:
                self.dep_routers.setdefault(dep, set()).add(rid)
        plan = None if router is None else plan_router(intent, router, ifaces)
        if plan is not None:
            self.router_plans[rid] = plan
            nets |= plan.nets
            for nid in plan.nets:
                self.net_routers.setdefault(nid, set()).add(rid)
        return nets

    def _refresh_routing(self, dpids: Iterable[int], dirty: dict[int, set[UnitKey]]) -> None:
        """Which routers are present on each of `dpids` and which networks it resolves;
        marks the router units there, and for every network that starts or stops being
        resolved there: its ports' netport units there, and its carriers' net units
        (their tunnel-in flows follow the switches that route into the network)."""
        intent = self.intent
        assert intent is not None
        for dpid in dpids:
            sw = self.switches.get(dpid)
            if sw is None:
                continue
            present: set[str] = set(self.gw_routers.get(dpid, ()))
            for nid in sw.local_nets:
                present.update(self.net_routers.get(nid, ()))
            resolve: set[str] = set()
            for rid in present:
                resolve |= self.router_plans[rid].nets
            units = dirty[dpid]
            units.update(("router", r) for r in sw.routers | present)
            for r in (sw.routers | present) & (self.gw_routers.get(dpid, set())
                                               | self._gw_before.get(dpid, set())):
                units.update(self._nat_units(r, dirty))
            for rid in sw.routers ^ present:  # its floating IPs' reach flows come or go
                units.update(("fip", f) for f in self.router_fips.get(rid, ()))
            for rid in sw.routers - present:
                where = self.router_switches.get(rid, set())
                where.discard(dpid)
                if not where:
                    self.router_switches.pop(rid, None)
            for rid in present - sw.routers:
                self.router_switches.setdefault(rid, set()).add(dpid)
            sw.routers = present
            for nid in resolve ^ sw.resolve_nets:
                ids = {p.id for p in intent.ports_on_network(nid)} | sw.netports.get(nid, set())
                units.update(("netport", p) for p in ids)
                if nid in resolve:
                    self.resolvers.setdefault(nid, set()).add(dpid)
                else:
                    there = self.resolvers.get(nid, set())
                    there.discard(dpid)
                    if not there:
                        self.resolvers.pop(nid, None)
                for carrier in self._carriers(nid):
                    dirty[carrier].add(("net", nid))
            sw.resolve_nets = resolve

    def _routed_here(self, sw: _Switch, nid: str) -> bool:
        return nid in sw.local_nets or nid in sw.resolve_nets

    def _router_unit(self, sw: _Switch, rid: str) -> tuple[Flow, ...]:
        plan = self.router_plans.get(rid)
        intent, topo = self.intent, self.topo
        if plan is None or rid not in sw.routers or intent is None or topo is None:
            return ()
        return tuple(router_unit_flows(
            plan, sw.dpid, self.gateways.get(rid),
            {leg.network_id for leg in plan.legs if leg.network_id in sw.local_nets}, topo,
            self._carriers))

    def _carriers(self, nid: str) -> set[int]:
        """The switches a network is bound on."""
        return set(self.by_network.get(nid, ()))

    def _port_changed(self, pid: str, old: Intent, dirty: dict[int, set[UnitKey]]) -> None:
        intent = self.intent
        assert intent is not None
        before, after = old.ports.get(pid), intent.ports.get(pid)
        self._index_member(before, after)
        was = self.placed.get(pid)
        carriers_before = {n: self._carriers(n) for n in
                           {p.network_id for p in (before, after) if p is not None}}
        self._place(pid)
        now = self.placed.get(pid)
        hosts = {b.datapath_id for b in (was, now) if b is not None}
        if pid in self.port_fips:  # a floating IP follows its guest (distributed)
            for dpid in hosts:
                dirty[dpid].update(("fip", f) for f in self.port_fips[pid])
            self._mark_fips(self.port_fips[pid], dirty)
        qos = self._has_qos(before, old) or self._has_qos(after, intent)
        for dpid in hosts:
            units = dirty[dpid]
            units.update((PIPELINE, ("port", pid)))
            if qos:
                units.add(QOS)
        for nid, carriers in carriers_before.items():
            carriers_now = self._carriers(nid)
            moved = carriers != carriers_now  # tunnels and flood groups change everywhere
            if moved:  # a gateway chassis accepts the network's transit from its carriers
                for rid in self.net_routers.get(nid, ()):
                    if rid in self.gateways:
                        dirty[self.gateways[rid]].add(("router", rid))
            for dpid in self.resolvers.get(nid, set()) - carriers - carriers_now:
                dirty[dpid].add(("netport", pid))  # routed to here: resolve, reach
            for dpid in carriers | carriers_now:
                units = dirty[dpid]
                units.add(("netport", pid))
                if moved or dpid in hosts:
                    units.add(("net", nid))
                if qos:
                    units.add(QOS)  # a guaranteed sender elsewhere on the network
                sw = self.switches.get(dpid)
                if sw is None:
                    continue
                carried_before = dpid in carriers
                if carried_before != (nid in sw.local_nets):
                    # the network arrives on (or leaves) this switch: every port of it
                    ids = {p.id for p in intent.ports_on_network(nid)} | \
                        sw.netports.get(nid, set())
                    units.update(("netport", p) for p in ids)
        sgs: set[str] = set()
        for p in (before, after):
            if p is not None:
                sgs.update(p.security_groups)
        for sg in sgs:
            for dpid in hosts:
                dirty[dpid].add(("sg", sg))
            for naming in self.rule_remote.get(sg, ()):
                for dpid in self.sg_switches.get(naming, ()):
                    dirty[dpid].add(("member", pid))

    def _has_qos(self, port: Optional[Port], intent: Intent) -> bool:
        """Whether a QoS policy with rules applies to the port (its own or its
        network's): only then can it change any switch's QoS."""
        if port is None or self.policies is None or not self.policies.rules:
            return False
        network = intent.networks.get(port.network_id)
        policy = port.qos_policy_id or (network.qos_policy_id if network else None)
        return bool(policy and self.policies.rules.get(policy))

    # ------------------------------------------------------------------ indexes
    def _index_rule(self, before: Optional[SecurityGroupRule],
                    after: Optional[SecurityGroupRule]) -> set[str]:
        """Keep sg_rules and rule_remote; returns the remote groups involved."""
        remotes = set()
        for r in (before, after):
            if r is not None and r.remote_group_id:
                remotes.add(r.remote_group_id)
        if before is not None:
            rules = self.sg_rules.get(before.security_group_id, {})
            rules.pop(before.id, None)
            if not rules:
                self.sg_rules.pop(before.security_group_id, None)
        if after is not None:
            self.sg_rules.setdefault(after.security_group_id, {})[after.id] = after
        for remote in remotes:
            naming = {g for g, rules in ((g, self.sg_rules.get(g, {})) for g in
                                         self.rule_remote.get(remote, set()) |
                                         ({after.security_group_id} if after else set()))
                      if any(r.remote_group_id == remote for r in rules.values())}
            if naming:
                self.rule_remote[remote] = naming
            else:
                self.rule_remote.pop(remote, None)
        return remotes

    def _index_member(self, before: Optional[Port], after: Optional[Port]) -> None:
        """sg_members: the ports each group's remote-group rules match (acl.GroupIndex)."""
        for p, add in ((before, False), (after, True)):
            if p is None or not p.port_security_enabled or not p.admin_state_up:
                continue
            for sg in p.security_groups:
                members = self.sg_members.setdefault(sg, set())
                if add:
                    members.add(p.id)
                else:
                    members.discard(p.id)
                    if not members:
                        del self.sg_members[sg]

    def _binding_of(self, pid: str) -> Optional[Binding]:
        """Where the port is placed: bound, up, on a live network (core.Placement)."""
        intent, topo = self.intent, self.topo
        assert intent is not None and topo is not None
        binding = topo.bindings.get(pid)
        port = intent.ports.get(pid)
        if binding is None or port is None or not port.admin_state_up:
            return None
        network = intent.networks.get(port.network_id)
        if network is None or not network.admin_state_up:
            return None
        if binding.datapath_id not in self.switches:
            return None
        return binding

    def _place(self, pid: str) -> None:
        intent = self.intent
        assert intent is not None
        old = self.placed.pop(pid, None)
        if old is not None:
            sw = self.switches.get(old.datapath_id)
            if sw is not None:
                sw.local.pop(pid, None)
                if object_key(pid) in sw.port_keys:
                    sw.port_keys = sw.port_keys.delete(object_key(pid))
                for nid, ports in list(sw.local_nets.items()):
                    if pid in ports:
                        ports.discard(pid)
                        if not ports:
                            del sw.local_nets[nid]
                            self._nets_moved.add(old.datapath_id)
                        by_dpid = self.by_network.get(nid, {})
                        by_dpid.get(old.datapath_id, {}).pop(pid, None)
                        if not by_dpid.get(old.datapath_id, True):
                            del by_dpid[old.datapath_id]
                        if not by_dpid:
                            self.by_network.pop(nid, None)
                for sg, ports in list(sw.local_sgs.items()):
                    if pid in ports:
                        ports.discard(pid)
                        if not ports:
                            del sw.local_sgs[sg]
                            self._sg_left(sg, old.datapath_id)
        new = self._binding_of(pid)
        if new is None:
            return
        port = intent.ports[pid]
        self.placed[pid] = new
        sw = self.switches[new.datapath_id]
        sw.local[pid] = new
        sw.port_keys = sw.port_keys.set(port.key, pid)
        if port.network_id not in sw.local_nets:
            self._nets_moved.add(new.datapath_id)
        sw.local_nets.setdefault(port.network_id, set()).add(pid)
        self.by_network.setdefault(port.network_id, {}).setdefault(
            new.datapath_id, {})[pid] = new
        if port.port_security_enabled:
            for sg in port.security_groups:
                ports = sw.local_sgs.setdefault(sg, set())
                if not ports:
                    self._sg_arrived(sg, new.datapath_id)
                ports.add(pid)

    # A group arriving on (leaving) a switch brings (takes) its remote rules' members.
    _pending_members: Optional[dict[int, set[str]]] = None

    def _sg_arrived(self, sg: str, dpid: int) -> None:
        self.sg_switches.setdefault(sg, set()).add(dpid)
        self._note_members(sg, dpid)

    def _sg_left(self, sg: str, dpid: int) -> None:
        dpids = self.sg_switches.get(sg, set())
        dpids.discard(dpid)
        if not dpids:
            self.sg_switches.pop(sg, None)
        self._note_members(sg, dpid)

    def _note_members(self, sg: str, dpid: int) -> None:
        if self._pending_members is None:
            self._pending_members = {}
        units = self._pending_members.setdefault(dpid, set())
        units.add(sg)

    def _remotes_of(self, sg: str) -> set[str]:
        return {r.remote_group_id for r in self.sg_rules.get(sg, {}).values()
                if r.remote_group_id}

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, dirty: dict[int, set[UnitKey]], full: bool) -> dict[int, Offer]:
        intent, topo = self.intent, self.topo
        assert intent is not None and topo is not None
        if self._pending_members:
            for dpid, sgs in self._pending_members.items():
                units = dirty[dpid]
                for sg in sgs:
                    units.add(("sg", sg))
                    for remote in self._remotes_of(sg):
                        units.update(("member", m) for m in self.sg_members.get(remote, ()))
                    sw = self.switches.get(dpid)
                    if sw is not None:
                        units.update(("member", m) for m in sw.members)
            self._pending_members = None
        if any(QOS in units for units in dirty.values()):
            self.policies = PolicyIndex(intent)  # its `guaranteed` cache: one compile
        out: dict[int, Offer] = {}
        for dpid in sorted(dirty):
            sw = self.switches.get(dpid)
            if sw is None:
                continue
            units = dirty[dpid]
            pending: set[FlowKey] = set()
            groups_before = dict(sw.groups)
            qos_before = sw.qos
            if QOS in units:
                self._eval_qos(sw)
                if sw.qos.per_port != qos_before.per_port:
                    units.update(("port", p) for p in set(sw.qos.per_port) |
                                 set(qos_before.per_port)
                                 if sw.qos.per_port.get(p) != qos_before.per_port.get(p))
                sw.set_unit(QOS, share_cap_flows(sw.qos.caps), pending)
            ext_later = {oid for kind, oid in units if kind == "ext"}
            for unit in sorted(units):
                if unit == QOS:
                    continue
                self.units_evaluated += 1
                kind, oid = unit
                if kind == "pipeline":
                    flows: tuple[Flow, ...] = pl.miss_flows() + (
                        base_flows() + nd_base_flows() if sw.local else ())
                elif kind == "port":
                    flows = self._port_unit(sw, oid)
                elif kind == "netport":
                    flows = self._netport_unit(sw, oid)
                elif kind == "net":
                    flows = self._net_unit(sw, oid)
                elif kind == "sg":
                    flows = self._sg_unit(sw, oid)
                elif kind == "member":
                    flows = self._member_unit(sw, oid)
                elif kind == "router":
                    flows = self._router_unit(sw, oid)
                    plan = self.router_plans.get(oid)
                    self._note_ext(sw, unit, ext_use(plan) if plan is not None and oid in
                                   sw.routers and self.gateways.get(oid) == dpid else None,
                                   ext_later)
                elif kind == "fip":
                    fip = intent.floating_ips.get(oid)
                    place, fip_flows = fip_unit_flows(
                        intent, fip, dpid, self.router_plans, self.gateways, topo,
                        fip is not None and fip.router_id in sw.routers)
                    flows = tuple(fip_flows)
                    self._note_ext(sw, unit, place.use, ext_later)
                    if place.home is None:
                        self.fip_home.pop(oid, None)
                        self.fip_announce.pop(oid, None)
                    else:
                        self.fip_home[oid] = place.home
                        if place.announce is None:
                            self.fip_announce.pop(oid, None)
                        else:
                            self.fip_announce[oid] = (place.home, *place.announce)
                elif kind == "ext":
                    continue  # after the units that use it (`ext_later`)
                elif kind == "pf":
                    flows = tuple(forward_unit_flows(
                        intent, intent.port_forwardings.get(oid), dpid, self.router_plans,
                        self.gateways))
                else:  # pragma: no cover - a typo in this module
                    raise CompileError(f"unknown unit {unit}")
                sw.set_unit(unit, flows, pending)
            for nid in sorted(ext_later):
                self.units_evaluated += 1
                needs = sw.ext_needs.get(nid, {})
                sw.set_unit(("ext", nid), external_side_flows(
                    sorted(needs, key=lambda u: u.upstream or 0), dpid, topo), pending)
            touched = sw.commit(pending)
            changed = bool(touched) or sw.groups != groups_before \
                or sw.qos.meters != qos_before.meters
            shaping_changed = sw.qos.shaping != qos_before.shaping
            if not (changed or shaping_changed or full or sw.desired is None):
                continue
            sw.desired = DesiredSwitch(
                datapath_id=dpid, generation=intent.generation, topology_version=topo.version,
                flows=sw.flows,
                groups=MappingProxyType({g.group_id: g for _, g in sorted(sw.groups.items())}),
                meters=sw.meters(bool(self.gw_routers.get(dpid))),
                shared_meters=sw.shared_meters(),
                port_keys=sw.port_keys,
                shaping=MappingProxyType(dict(sw.qos.shaping)))
            out[dpid] = Offer(sw.desired, None if full else frozenset(touched),
                              shaping_changed or full)
        return out

    def _eval_qos(self, sw: _Switch) -> None:
        intent, topo = self.intent, self.topo
        assert intent is not None and topo is not None
        if self.policies is None or not self.policies.rules or not sw.local:
            sw.qos = _EMPTY_SWITCH_QOS
            return
        local = []
        for pid, b in sw.local.items():
            port = intent.ports[pid]
            local.append((port, intent.networks[port.network_id], b.interface, b.ofport))
        members = _MembersView(self.by_network, intent)
        sw.qos = switch_qos(local, self.policies, sw.dpid, members, topo)

    def _port_unit(self, sw: _Switch, pid: str) -> tuple[Flow, ...]:
        intent = self.intent
        assert intent is not None
        binding = sw.local.get(pid)
        if binding is None:
            sw.set_punt_meter(pid, None)
            sw.ra_ports.pop(pid, None)
            return ()
        port = intent.ports[pid]
        network = intent.networks[port.network_id]
        ofport = binding.ofport
        punts = port_punts(port, intent)
        sw.set_punt_meter(pid, punt_meter(ofport) if punts else None)
        if punts.rs:
            sw.ra_ports[pid] = ofport
        else:
            sw.ra_ports.pop(pid, None)
        out = list(port_flows(port, network, ofport, zone_of(network),
                              sw.qos.per_port.get(pid, NO_QOS), punts))
        out.extend(port_guard_flows(port, ofport))
        if port.port_security_enabled:
            for sg in sorted(set(port.security_groups)):
                for _, rule in sorted(self.sg_rules.get(sg, {}).items()):
                    if rule.remote_group_id is None:
                        out.extend(plain_rule_flows(rule, ofport))
                    elif rule_shape(rule) is not None:
                        # clause 1 for this port; the sg unit holds the conj_id flow
                        out.extend(conj_rule_flows(rule, conj_id_of(rule), (ofport,))[:-1])
        return tuple(out)

    def _netport_unit(self, sw: _Switch, pid: str) -> tuple[Flow, ...]:
        intent, topo = self.intent, self.topo
        assert intent is not None and topo is not None
        port = intent.ports.get(pid)
        nets = sw.netports
        # the one network whose set holds pid, if any (not a scan of every network:
        # O(ports x networks) in a full compile)
        nid = sw.netport_net.get(pid)
        if nid is not None and (port is None or port.network_id != nid
                                or not self._routed_here(sw, nid)):
            del sw.netport_net[pid]
            ids = nets.get(nid)
            if ids is not None:
                ids.discard(pid)
                if not ids:
                    del nets[nid]
        if port is None or not self._routed_here(sw, port.network_id):
            return ()
        network = intent.networks.get(port.network_id)
        if network is None:
            return ()
        nets.setdefault(network.id, set()).add(pid)
        sw.netport_net[pid] = network.id
        # ARP answers where the network has a local port; the port's resolve flow where
        # a router present here joins its network; its remote MAC wherever either holds
        out = list(neighbour_reply_flows(port, network)) if network.id in sw.local_nets else []
        there = self.placed.get(pid)
        if there is not None:
            out.extend(reach_flows(port, network, sw.dpid, there.datapath_id, topo))
        if network.id in sw.resolve_nets:
            out.extend(resolve_flows(port, network))
        return tuple(out)

    def _net_unit(self, sw: _Switch, nid: str) -> tuple[Flow, ...]:
        intent, topo = self.intent, self.topo
        assert intent is not None and topo is not None
        sw.groups.pop(nid, None)
        local_ids = sw.local_nets.get(nid)
        network = intent.networks.get(nid)
        if not local_ids or network is None:
            return ()
        local = tuple(sorted(sw.local[p].ofport for p in local_ids))
        zone = zone_of(network)
        out: list[Flow] = []
        group_id = None
        switch = topo.switches.get(sw.dpid)
        if network.network_type in TUNNEL_TYPES and switch is not None:
            tunnels = []
            carriers = self.by_network.get(nid, {})
            for dpid in senders_of(carriers, self.resolvers, nid):
                remote = topo.switches.get(dpid)
                if dpid == sw.dpid or remote is None:
                    continue
                tunnel = topo.tunnels.get((sw.dpid, remote.chassis, network.network_type))
                if tunnel is None:
                    continue
                out.append(tunnel_in_flow(network, tunnel, zone))
                if dpid in carriers:
                    tunnels.append(tunnel)
            if tunnels:
                group_id = flood_group_id(network)
                sw.groups[nid] = flood_group(network, group_id, tuple(tunnels))
                out.append(flood_from_remote_flow(network, local))
        elif (physnet := physnet_of(network)) is not None:
            if network.network_type == "flat":
                out.append(tagged_drop_flow(network))
            patch = topo.provider_ports.get((sw.dpid, physnet))
            if patch is not None:
                out.append(provider_in_flow(network, patch, zone))
                group_id = flood_group_id(network)
                sw.groups[nid] = provider_flood_group(network, group_id, patch)
                out.append(flood_from_remote_flow(network, local))
        out.append(flood_flow(network, local, group_id))
        return tuple(out)

    def _sg_unit(self, sw: _Switch, sg: str) -> tuple[Flow, ...]:
        """The conj_id flow of each remote-group rule of a group with ports here (their
        clause-1 flows are the ports' own: a port joining costs one port's flows)."""
        if not sw.local_sgs.get(sg):
            return ()
        out: list[Flow] = []
        for _, rule in sorted(self.sg_rules.get(sg, {}).items()):
            if rule.remote_group_id is None or rule_shape(rule) is None:
                continue
            out.append(conj_rule_flows(rule, conj_id_of(rule), ())[-1])
        return tuple(out)

    def _member_unit(self, sw: _Switch, pid: str) -> tuple[Flow, ...]:
        intent = self.intent
        assert intent is not None
        port = intent.ports.get(pid)
        sw.members.discard(pid)
        if port is None or not port.port_security_enabled or not port.admin_state_up:
            return ()
        wanted: dict[tuple[str, int], set[int]] = {}
        for remote in set(port.security_groups):
            for sg in self.rule_remote.get(remote, ()):
                if sg not in sw.local_sgs:
                    continue
                for rule in self.sg_rules.get(sg, {}).values():
                    if rule.remote_group_id != remote:
                        continue
                    shape = rule_shape(rule)
                    if shape is None:
                        continue
                    wanted.setdefault((rule.direction, shape.eth_type), set()).add(
                        conj_id_of(rule))
        if not wanted:
            return ()
        sw.members.add(pid)
        out: list[Flow] = []
        for (direction, eth), cids in sorted(wanted.items()):
            out.extend(member_clause_flows(port, direction, eth, tuple(sorted(cids))))
        return tuple(out)


class _MembersView(Mapping[str, Mapping[int, list[tuple[Port, Binding]]]]):
    """network -> switch -> [(port, binding)] in port id order, as `Placement.by_network`
    gives `switch_qos`; built per network on demand."""

    def __init__(self, by_network: dict[str, dict[int, dict[str, Binding]]],
                 intent: Intent) -> None:
        self._by_network = by_network
        self._intent = intent

    def __getitem__(self, nid: str) -> Mapping[int, list[tuple[Port, Binding]]]:
        by_dpid = self._by_network[nid]
        return {d: [(self._intent.ports[p], b) for p, b in sorted(ports.items())]
                for d, ports in by_dpid.items()}

    def get(self, nid: str, default: Any = None) -> Any:
        return self[nid] if nid in self._by_network else default

    def __iter__(self) -> Any:
        return iter(self._by_network)

    def __len__(self) -> int:
        return len(self._by_network)

    def __contains__(self, nid: object) -> bool:
        return nid in self._by_network


__all__ = ["Compiler", "Offer", "compiled_view", "merge_pair"]
