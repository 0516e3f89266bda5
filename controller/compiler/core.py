"""Assemble each switch's desired state from the per-port and per-network pieces."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

from controller import pipeline as pl
from controller.compiler.acl import GroupIndex, switch_acl_flows
from controller.compiler.fabric import FabricPlan, fabric_bindings, fabric_switch_state
from controller.compiler.fabric import plan as plan_fabric
from controller.compiler.gateway import (
    ExtUse,
    choose_gateways,
    ext_use,
    external_side_flows,
    fip_flows,
    fip_home,
    fip_reach_flows,
    fip_rule,
    forward_flows,
    forward_rule,
    gateway_flows,
    gateway_reach_flows,
    transit_flows,
    upstream_arp_meter,
)
from controller.compiler.network import (
    flood_flow,
    flood_from_remote_flow,
    nd_base_flows,
    neighbour_reply_flows,
)
from controller.compiler.overlay import (
    flood_group,
    group_id_for,
    physnet_of,
    provider_flood_group,
    provider_in_flow,
    provider_mac_flow,
    remote_mac_flow,
    tagged_drop_flow,
    tunnel_in_flow,
    zones_for,
)
from controller.compiler.ports import NO_QOS, port_flows, port_punts, punt_meter
from controller.compiler.qos import PolicyIndex, Shaping, share_cap_flows, switch_qos
from controller.compiler.routing import (
    RouterPlan,
    RoutingIndex,
    reach_flows,
    resolve_flows,
    router_flows,
    senders_of,
)
from controller.flows import Flow, Group, Match, Meter
from controller.intent import FloatingIP, Intent, Network, Port, PortForwarding
from controller.topology import TUNNEL_TYPES, Binding, TopologyView

FlowKey = tuple[str, int, Match]


@dataclass(frozen=True)
class DesiredSwitch:
    """Everything one switch should hold, and the inputs' versions it was built from."""

    datapath_id: int
    generation: int
    topology_version: int
    flows: Mapping[FlowKey, Flow] = field(default_factory=lambda: MappingProxyType({}))
    groups: Mapping[int, Group] = field(default_factory=lambda: MappingProxyType({}))
    meters: Mapping[int, Meter] = field(default_factory=lambda: MappingProxyType({}))
    # object key -> port id, of the intent ports whose flows are in `flows`
    port_keys: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    # linux-htb per interface, applied through the chassis' OVSDB, not OpenFlow
    shaping: Mapping[str, Shaping] = field(default_factory=lambda: MappingProxyType({}))
    # the meters among `meters` that are not a port's punt meter (QoS, upstream ARP): a
    # few, compared in full on every push; a port's punt meter changes only with the
    # flow that points to it, so a push compares only those of the flows it changed
    # (None: compare every meter)
    shared_meters: Optional[Mapping[int, Meter]] = None


class CompileError(RuntimeError):
    """Two flows with one OpenFlow key but different contents: a compiler bug."""


class Placement:
    """Where each live port of each network is bound, indexed once per compile."""

    def __init__(self, intent: Intent, topo: TopologyView, fast_failover: bool = True) -> None:
        self.fast_failover = fast_failover
        self.by_network: dict[str, dict[int, list[tuple[Port, Binding]]]] = defaultdict(
            lambda: defaultdict(list))
        self.by_switch: dict[int, list[tuple[Port, Binding]]] = defaultdict(list)
        bindings = dict(topo.bindings)
        for fport, dpid, ofport, name in fabric_bindings(intent, topo):
            bindings.setdefault(fport.id, Binding(fport.id, "fabric", name, dpid, ofport, name))
        for binding in sorted(bindings.values(), key=lambda b: b.port_id):
            port = intent.ports.get(binding.port_id)
            if port is None or not port.admin_state_up:
                continue
            network = intent.networks.get(port.network_id)
            if network is None or not network.admin_state_up:
                continue
            self.by_network[network.id][binding.datapath_id].append((port, binding))
            self.by_switch[binding.datapath_id].append((port, binding))
        self.groups = GroupIndex(intent)
        self.policies = PolicyIndex(intent)
        # routing (compiler/routing.py): which routers each switch holds, which networks
        # it resolves next hops on, and, per network, the switches that route into it
        self.routing = RoutingIndex(intent)
        self.routers: dict[int, set[str]] = {}
        self.resolve_nets: dict[int, set[str]] = {}
        self.resolvers: dict[str, set[int]] = defaultdict(set)
        # external gateways (compiler/gateway.py): each router's gateway chassis, which
        # holds the router (all its legs) whether or not a network of it is bound there
        self.gateways = choose_gateways(self.routing.plans, topo)
        gw_routers: dict[int, set[str]] = defaultdict(set)
        for rid, dpid in self.gateways.items():
            gw_routers[dpid].add(rid)
        self.router_fips: dict[str, list] = defaultdict(list)
        for fip in intent.floating_ips.values():
            if fip.router_id is not None:
                self.router_fips[fip.router_id].append(fip)
        self.fip_forwards: dict[str, list] = defaultdict(list)
        for pf in intent.port_forwardings.values():
            self.fip_forwards[pf.floatingip_id].append(pf)
        for dpid in sorted(set(self.by_switch) | set(gw_routers)):
            if dpid in topo.fabric_switches:
                continue  # fabric switches do not route (yet)
            placed = self.by_switch.get(dpid, [])
            present = self.routing.present({p.network_id for p, _ in placed}) \
                | gw_routers.get(dpid, set())
            if not present:
                continue
            self.routers[dpid] = present
            self.resolve_nets[dpid] = nets = self.routing.resolve_nets(present)
            for nid in nets:
                self.resolvers[nid].add(dpid)
        self.fabric: Optional[FabricPlan] = None
        if topo.fabric_switches:
            members = {nid: {d for d in by_dpid if d in topo.fabric_switches}
                       for nid, by_dpid in self.by_network.items()}
            self.fabric = plan_fabric(intent, topo, {k: v for k, v in members.items() if v})


def compile_switch(intent: Intent, topo: TopologyView, datapath_id: int,
                   placement: Optional[Placement] = None) -> DesiredSwitch:
    """The desired state of one switch: a chassis' integration bridge or a fabric switch."""
    placement = placement or Placement(intent, topo)
    flows: dict[FlowKey, Flow] = {}
    groups: dict[int, Group] = {}

    def add(flow: Flow) -> None:
        old = flows.setdefault(flow.key, flow)
        if old is not flow and old != flow:
            raise CompileError(f"conflicting flows for {flow.key}: {old} vs {flow}")

    for f in pl.miss_flows():
        add(f)

    local_by_net: dict[str, list[int]] = defaultdict(list)
    port_keys: dict[int, str] = {}
    meters: dict[int, Meter] = {}
    here = placement.by_switch.get(datapath_id, [])
    fabric = placement.fabric if datapath_id in topo.fabric_switches else None
    zone_nets = {p.network_id for p, _ in here} | (set(fabric.members) if fabric else set())
    zones = zones_for([intent.networks[nid] for nid in zone_nets])
    local_ports: dict[int, Port] = {}
    # guaranteed senders count wherever they are bound (qos.switch_qos)
    qos = switch_qos([(p, intent.networks[p.network_id], b.interface, b.ofport)
                      for p, b in here], placement.policies, datapath_id,
                     placement.by_network, topo)
    for f in share_cap_flows(qos.caps):
        add(f)
    for port, binding in here:
        network = intent.networks[port.network_id]
        punts = port_punts(port, intent)
        if punts:
            meter = punt_meter(binding.ofport)
            meters[meter.meter_id] = meter
        for f in port_flows(port, network, binding.ofport, zones[network.id],
                            qos.per_port.get(port.id, NO_QOS), punts):
            add(f)
        local_by_net[network.id].append(binding.ofport)
        local_ports[binding.ofport] = port
        port_keys[port.key] = port.id
    for f in switch_acl_flows(local_ports, placement.groups):
        add(f)
    for f in nd_base_flows() if local_ports else ():
        add(f)

    switch = topo.switches.get(datapath_id)
    taken_group_ids: set[int] = set()
    fabric_floods: dict[str, Optional[int]] = {}
    if fabric is not None:
        fflows, fgroups, fabric_floods = fabric_switch_state(
            intent, fabric, datapath_id, placement.by_network, local_by_net, zones,
            taken_group_ids, fast_failover=placement.fast_failover)
        for f in fflows:
            add(f)
        for g in fgroups:
            groups[g.group_id] = g
        for net_id, gid in sorted(fabric_floods.items()):
            add(flood_flow(intent.networks[net_id], tuple(sorted(local_by_net.get(net_id, ()))),
                           gid))
            if net_id not in local_by_net:
                continue
            for port in intent.ports_on_network(net_id):
                for f in neighbour_reply_flows(port, intent.networks[net_id]):
                    add(f)
    for net_id in sorted(local_by_net):
        if net_id in fabric_floods:
            continue
        network = intent.networks[net_id]
        local = tuple(sorted(local_by_net[net_id]))
        group_id = None
        if network.network_type in TUNNEL_TYPES and switch is not None:
            tunnels = []
            carriers = placement.by_network[net_id]
            for dpid in senders_of(carriers, placement.resolvers, net_id):
                remote = topo.switches.get(dpid)
                if dpid == datapath_id or remote is None:
                    continue
                tunnel = topo.tunnels.get((datapath_id, remote.chassis, network.network_type))
                if tunnel is None:
                    continue  # not created yet: its appearance triggers a recompile
                add(tunnel_in_flow(network, tunnel, zones[net_id]))
                if dpid not in carriers:
                    continue  # routes into the network, has no port on it
                tunnels.append(tunnel)
                for port, _ in carriers[dpid]:
                    add(remote_mac_flow(port, network, tunnel))
            if tunnels:
                group_id = group_id_for(network, taken_group_ids)
                groups[group_id] = flood_group(network, group_id, tuple(tunnels))
                add(flood_from_remote_flow(network, local))
        elif (physnet := physnet_of(network)) is not None:
            if network.network_type == "flat":
                add(tagged_drop_flow(network))
            patch = topo.provider_ports.get((datapath_id, physnet))
            if patch is not None:
                # Leaves through the provider bridge, like Neutron's bridge mappings:
                # tagged (VLAN) or untagged (flat).
                add(provider_in_flow(network, patch, zones[net_id]))
                for dpid, members in sorted(placement.by_network[net_id].items()):
                    if dpid == datapath_id or \
                            (dpid, physnet) not in topo.provider_ports:
                        continue
                    for port, _ in members:
                        add(provider_mac_flow(port, network, patch))
                group_id = group_id_for(network, taken_group_ids)
                groups[group_id] = provider_flood_group(network, group_id, patch)
                add(flood_from_remote_flow(network, local))
        add(flood_flow(network, local, group_id))
        for port in intent.ports_on_network(net_id):
            for f in neighbour_reply_flows(port, network):
                add(f)
    for f in _routing_flows(intent, topo, datapath_id, placement, local_by_net):
        add(f)

    shared = {**qos.meters, **({pl.PUNT_METER_UPSTREAM_ARP: upstream_arp_meter()}
                               if datapath_id in placement.gateways.values() else {})}
    return DesiredSwitch(
        datapath_id=datapath_id,
        generation=intent.generation,
        topology_version=topo.version,
        flows=MappingProxyType(flows),
        groups=MappingProxyType(groups),
        meters=MappingProxyType({**meters, **shared}),
        shared_meters=MappingProxyType(shared),
        port_keys=MappingProxyType(port_keys),
        shaping=MappingProxyType(qos.shaping),
    )


def _routing_flows(intent: Intent, topo: TopologyView, datapath_id: int, placement: Placement,
                   local_by_net: Mapping[str, list[int]]) -> list[Flow]:
    """The routers present here (their l3 flows for the local networks), and for every
    network they join: each port's resolve flow and, where the network has no local
    port, how to reach the port's chassis (compiler/routing.py)."""
    out: list[Flow] = []
    routing = placement.routing
    uses: dict[str, list[ExtUse]] = defaultdict(list)  # external network -> who NATs here
    for rid in sorted(placement.routers.get(datapath_id, ())):
        plan = routing.plans[rid]
        gateway = placement.gateways.get(rid)
        use = ext_use(plan) if gateway == datapath_id else None
        if use is not None:
            uses[use.network.id].append(use)
        out.extend(router_unit_flows(
            plan, datapath_id, gateway, {leg.network_id for leg in plan.legs
                                         if leg.network_id in local_by_net},
            topo, lambda nid: placement.by_network.get(nid, {}).keys()))
        for fip in placement.router_fips.get(rid, ()):
            # on its router's gateway, or distributed to its guest's chassis (both
            # hold the router)
            place, flows = fip_unit_flows(intent, fip, datapath_id, routing.plans,
                                          placement.gateways, topo, True)
            out.extend(flows)
            if place.use is not None:
                uses[place.use.network.id].append(place.use)
            if gateway != datapath_id:
                continue
            for pf in placement.fip_forwards.get(fip.id, ()):
                out.extend(forward_unit_flows(intent, pf, datapath_id, routing.plans,
                                              placement.gateways))
    for nid in sorted(uses):
        out.extend(external_side_flows(uses[nid], datapath_id, topo))
    for nid in sorted(placement.resolve_nets.get(datapath_id, ())):
        network = intent.networks[nid]
        for port in intent.ports_on_network(nid):
            out.extend(resolve_flows(port, network))
        if nid in local_by_net:
            continue  # its remote ports' flows are there already
        for dpid, members in sorted(placement.by_network.get(nid, {}).items()):
            for port, _ in members:
                out.extend(reach_flows(port, network, datapath_id, dpid, topo))
    return out


def router_unit_flows(plan: RouterPlan, here: int, gateway: Optional[int],
                      local: set[str], topo: TopologyView,
                      carriers: Callable[[str], Iterable[int]]) -> list[Flow]:
    """A router's flows on one switch: its l3 flows for the networks bound here (every
    network, on its gateway chassis), then either the gateway's flows (gateway.py) or
    the transit to the gateway chassis. The full and the incremental compile share it;
    floating IPs and port forwardings are units of their own (`nat_unit_flows`)."""
    gateway_here = gateway == here
    ingress = frozenset(leg.network_key for leg in plan.legs
                        if gateway_here or leg.network_id in local)
    out = list(router_flows(plan, ingress, gateway_here))
    if not gateway_here:
        out.extend(transit_flows(plan, local, here, gateway, topo))
        out.extend(gateway_reach_flows(plan, here, gateway, topo))
        return out
    out.extend(gateway_flows(plan, here, topo,
                             {leg.network_id: carriers(leg.network_id) for leg in plan.legs}))
    return out


@dataclass(frozen=True)
class FipPlace:
    """Where a floating IP's NAT runs (`gateway.fip_home`), and, when that is its
    guest's chassis, what announces it there (a gratuitous ARP from its own MAC, so
    that the physical switches learn where it is: controller/upstream_arp.py)."""

    home: Optional[int]
    announce: Optional[tuple[Network, int, int]] = None  # (external network, MAC, IPv4)
    use: Optional[ExtUse] = None  # here is its home, and it is distributed


def fip_unit_flows(intent: Intent, fip: Optional[FloatingIP], here: int,
                   plans: Mapping[str, RouterPlan], gateways: Mapping[str, int],
                   topo: TopologyView, present: bool) -> tuple[FipPlace, list[Flow]]:
    """A floating IP's place and its flows on switch `here`: all of them at home;
    where its router is `present` otherwise, how to reach it as a next hop
    (`gateway.fip_reach_flows`)."""
    rule = None if fip is None else fip_rule(fip, intent)
    if fip is None or rule is None or fip.router_id is None or fip.router_id not in plans:
        return FipPlace(None), []
    plan = plans[fip.router_id]
    home, distributed = fip_home(plan, rule, gateways.get(fip.router_id), topo)
    if home is None or plan.gateway is None:
        return FipPlace(None), []
    announce = (plan.gateway.network, rule.mac, rule.fip) \
        if distributed and rule.mac is not None else None
    if home == here:
        use = ext_use(plan) if distributed else None
        return FipPlace(home, announce, use), fip_flows(plan, rule, distributed, here, topo)
    if not present:
        return FipPlace(home, announce), []
    return FipPlace(home, announce), fip_reach_flows(plan, rule, home, distributed, here,
                                                     topo)


def forward_unit_flows(intent: Intent, pf: Optional[PortForwarding], here: int,
                       plans: Mapping[str, RouterPlan], gateways: Mapping[str, int]
                       ) -> list[Flow]:
    """A port forwarding's flows on switch `here` (its router's gateway chassis)."""
    found = None if pf is None else forward_rule(intent, pf)
    if found is None:
        return []
    rid, rule = found
    if gateways.get(rid) != here or rid not in plans:
        return []
    return forward_flows(plans[rid], rule)


def compile_all(intent: Intent, topo: TopologyView, fast_failover: bool = True
                ) -> dict[int, DesiredSwitch]:
    placement = Placement(intent, topo, fast_failover)
    dpids = sorted(set(topo.switches) | set(topo.fabric_switches))
    return {dpid: compile_switch(intent, topo, dpid, placement) for dpid in dpids}
