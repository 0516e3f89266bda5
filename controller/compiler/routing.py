"""Routers, distributed: east-west routing between a router's subnets on every chassis.

A router has no home. Every switch with a local port on a network attached to a
router holds that router's flows in `l3`, so a packet from a guest to its gateway MAC
is routed on the guest's own chassis and then handled exactly like a local L2 packet
of the destination network (l2_lookup: a local port, a tunnel, a provider VLAN or
flat network); there is no hair-pin through a central node. The tables (pipeline.py):

    l3          metadata = N1, eth_dst = router MAC on N1, and
                  ICMP echo request to any of the router's addresses -> echo reply
                  built in place, out of the port it came in on      ("echo")
                  TTL 0 or 1 -> drop (never forwarded, never punted)  ("ttl_expired")
                  ipv4_dst in a route's prefix -> dec_ttl, eth_src = router MAC on N2,
                  REG_CT_ZONE = zone of N2, ct_clear, REG_NEXTHOP = ipv4_dst (a
                  connected subnet) or the route's next hop (an extra route),
                  metadata = N2, goto l3_resolve        ("route/<prefix length>")
                  anything else -> drop, never flooded                ("router_mac")
    l3_resolve  metadata = N2, REG_NEXTHOP = a port's IPv4 -> eth_dst = its MAC,
                  goto l2_lookup; an unknown next hop misses and drops ("resolve")

Conntrack zones. A routed packet leaves with REG_CT_ZONE = the destination network's
zone and its conntrack state cleared, so the destination port's ingress ACL tracks it
in the destination network's zone, on whichever chassis delivers it: the source
chassis (a local destination) or the destination's chassis (after the tunnel, whose
classify flow sets the same zone). Each zone on each chassis therefore sees both
directions of every connection of the ports of its network, exactly as for L2
traffic: the source port's egress ACL commits the connection in the source
network's zone, the destination port's ingress ACL in the destination's, and the
reply is judged by the destination's egress ACL (its zone knows the connection as a
reply) and the source's ingress ACL (likewise). Without ct_clear a packet routed to
a local port would reach ingress_acl already tracked in the source zone, and the
destination zone would see only one direction of a TCP connection (its sequence
tracking then calls later packets invalid). Neutron's OVS firewall and OVN reach the
same with per-port zones; per-network zones are Loom's, and routing keeps them.

Cookies. Everything in `l3` is owned by the router (Owner.ROUTER, router key):
`/v1/trace` and the flow dump name the router that answered, dropped or routed. A
resolve flow is owned by the destination port (Owner.PORT): it exists because that
port holds that address, changes only with that port, and is compiled with the
port's other per-network flows (ARP answer, remote MAC), in the same unit.

Where. A router is *present* on a switch when one of its networks has a local port
there; the switch then gets the router's `l3` flows for the networks it carries
locally (packets only enter `l3` from local ports), and, for every network of every
present router (its *resolve networks*), each port's resolve flows and, when the
network has no local port, the L2 flows that reach that port's chassis (tunnel or
provider VLAN or flat network). A switch that carries a network also accepts it from
every tunnel whose remote chassis routes into it (`senders`).

External gateways (SNAT, floating IPs, port forwarding) are compiled by
compiler/gateway.py on the router's gateway chassis; the default route of a router
with a gateway is the transit there.

Limits: IPv4 only; an extra route's next hop must be a port (not another router) on
a subnet attached to the router; fabric switches do not route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from controller import pipeline as pl
from controller.compiler.network import OFPP_IN_PORT
from controller.compiler.overlay import physnet_of, provider_mac_flow, remote_mac_flow, zone_of
from controller.compiler.ports import _ALL_ONES_64, ETH_IPV4, split_ips
from controller.flows import (
    Action,
    CtClear,
    DecTtl,
    Flow,
    Output,
    RegMove,
    SetField,
    ip4,
    mac,
    match,
)
from controller.intent import Intent, Network, Port, Router, RouterInterface, object_key
from controller.topology import TUNNEL_TYPES, TopologyView

IPPROTO_ICMP = 1
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
# Ports that stand for a router or a floating address rather than a guest: never a
# next hop (their MAC is not in any l2_lookup: a routed packet to it would flood).
_NOT_A_HOST = ("network:router", "network:floatingip")


def is_router_owned(port: Port) -> bool:
    return port.device_owner.startswith(_NOT_A_HOST)


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Leg:
    """One interface of a router: its network, MAC, addresses and connected prefix."""

    iface_id: str
    network_id: str
    network_key: int
    zone: int  # the network's conntrack zone (overlay.zone_of)
    mac: int
    addresses: tuple[int, ...]  # the router's IPv4 addresses on this subnet
    prefix: int  # the subnet's network address
    prefixlen: int
    network: Optional[Network] = None  # (the gateway's transit needs its type and key)


@dataclass(frozen=True)
class Route:
    prefix: int
    prefixlen: int
    leg: int  # index into RouterPlan.legs: the network the packet is routed into
    nexthop: Optional[int]  # None: connected (the destination itself is the next hop)


@dataclass(frozen=True)
class Gateway:
    """A router's external gateway: its port on a flat or VLAN external network
    (compiler/gateway.py), and the upstream router its default route points at."""

    port_id: str
    network: Network  # the external network (router:external, flat or vlan)
    physnet: str
    zone: int  # the router's own conntrack zone for NAT (Router.snat_zone)
    mac: int  # the gateway port's MAC
    ip: int  # its IPv4 address: the SNAT address
    upstream: Optional[int]  # the external subnet's gateway_ip: the default route's next hop
    snat: bool  # enable_snat
    prefix: int = 0  # the external subnet (on-link from the gateway: floating IPs, and
    prefixlen: int = 0  # other routers' gateways, are reached there, hairpin included)

    @property
    def network_key(self) -> int:
        return self.network.key


@dataclass(frozen=True)
class RouterPlan:
    """What a router compiles to, from its row, its interfaces, and their ports,
    subnets and networks. Hashable, so `router_flows` is memoised on it."""

    router_id: str
    key: int
    admin_state_up: bool
    legs: tuple[Leg, ...]
    routes: tuple[Route, ...]
    gateway: Optional[Gateway] = None

    @property
    def default_via_gateway(self) -> bool:
        """The router sends what no route matches out of its gateway (no extra route
        to 0.0.0.0/0 takes precedence, and the upstream router is known)."""
        return self.gateway is not None and self.gateway.upstream is not None \
            and self.admin_state_up and not any(r.prefixlen == 0 for r in self.routes)

    @property
    def nets(self) -> frozenset[str]:
        return frozenset(leg.network_id for leg in self.legs)


def plan_router(intent: Intent, router: Router, ifaces: Iterable[RouterInterface]
                ) -> Optional[RouterPlan]:
    """The router's plan; None when none of its interfaces leads anywhere (yet)."""
    legs: list[Leg] = []
    for ri in sorted(ifaces, key=lambda r: r.id):
        port = intent.ports.get(ri.port_id)
        subnet = intent.subnets.get(ri.subnet_id)
        if port is None or subnet is None or subnet.ip_version != 4 \
                or subnet.network_id != port.network_id:
            continue
        network = intent.networks.get(port.network_id)
        if network is None:
            continue
        net = ipaddress.IPv4Network(subnet.cidr, strict=False)
        addresses = tuple(sorted({ip4(f.ip_address) for f in port.fixed_ips
                                  if f.subnet_id == subnet.id and ":" not in f.ip_address}))
        legs.append(Leg(ri.id, network.id, network.key, zone_of(network),
                        mac(port.mac_address), addresses, int(net.network_address),
                        net.prefixlen, network))
    if not legs:
        return None
    routes: list[Route] = []
    seen: set[tuple[int, int]] = set()
    for i, leg in enumerate(legs):
        if (leg.prefix, leg.prefixlen) not in seen:  # overlapping subnets: the first wins
            seen.add((leg.prefix, leg.prefixlen))
            routes.append(Route(leg.prefix, leg.prefixlen, i, None))
    own = {a for leg in legs for a in leg.addresses}
    for destination, nexthop in sorted(router.routes):
        try:
            dest = ipaddress.ip_network(destination, strict=False)
            hop = ipaddress.ip_address(nexthop)
        except ValueError:
            continue
        if dest.version != 4 or hop.version != 4 or int(hop) in own:
            continue
        # the leg whose subnet holds the next hop (the longest such prefix, then the first)
        on = [(-leg.prefixlen, i) for i, leg in enumerate(legs)
              if int(hop) & _mask(leg.prefixlen) == leg.prefix]
        key = (int(dest.network_address), dest.prefixlen)
        if not on or key in seen:
            continue
        seen.add(key)
        routes.append(Route(key[0], key[1], min(on)[1], int(hop)))
    return RouterPlan(router.id, object_key(router.id), router.admin_state_up, tuple(legs),
                      tuple(routes), plan_gateway(intent, router))


def plan_gateway(intent: Intent, router: Router) -> Optional[Gateway]:
    """The router's external gateway, when it has one that leads somewhere: a port with
    an IPv4 address on a flat or VLAN network."""
    if router.external_network_id is None or router.gateway_port_id is None:
        return None
    port = intent.ports.get(router.gateway_port_id)
    network = intent.networks.get(router.external_network_id)
    if port is None or network is None or port.network_id != network.id:
        return None
    physnet = physnet_of(network)
    if physnet is None:
        return None
    for f in port.fixed_ips:
        subnet = intent.subnets.get(f.subnet_id)
        if ":" in f.ip_address or subnet is None:
            continue
        upstream = ip4(subnet.gateway_ip) if subnet.gateway_ip and \
            ":" not in subnet.gateway_ip else None
        zone = router.snat_zone or object_key(router.id) % pl.CT_ZONE_SPAN + 1
        try:
            on_link = ipaddress.IPv4Network(subnet.cidr, strict=False)
        except ValueError:
            continue
        return Gateway(port.id, network, physnet, zone, mac(port.mac_address),
                       ip4(f.ip_address), upstream, router.enable_snat,
                       int(on_link.network_address), on_link.prefixlen)
    return None


def _mask(prefixlen: int) -> int:
    return ((1 << prefixlen) - 1) << (32 - prefixlen)


class RoutingIndex:
    """Every router's plan and the routers of each network, built once per full compile."""

    def __init__(self, intent: Intent) -> None:
        ifaces: dict[str, list[RouterInterface]] = {}
        for ri in intent.router_interfaces.values():
            ifaces.setdefault(ri.router_id, []).append(ri)
        self.plans: dict[str, RouterPlan] = {}
        self.net_routers: dict[str, set[str]] = {}
        for rid, ris in ifaces.items():
            router = intent.routers.get(rid)
            plan = None if router is None else plan_router(intent, router, ris)
            if plan is None:
                continue
            self.plans[rid] = plan
            for nid in plan.nets:
                self.net_routers.setdefault(nid, set()).add(rid)

    def present(self, local_nets: Iterable[str]) -> set[str]:
        """The routers with a network among `local_nets`."""
        out: set[str] = set()
        for nid in local_nets:
            out.update(self.net_routers.get(nid, ()))
        return out

    def resolve_nets(self, routers: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for rid in routers:
            out.update(self.plans[rid].nets)
        return out


# ---------------------------------------------------------------- flows
@lru_cache(maxsize=16384)
def router_flows(plan: RouterPlan, ingress: frozenset[int], gateway_here: bool = False
                 ) -> tuple[Flow, ...]:
    """The router's l3 flows for packets entering from the networks (keys) `ingress`.

    `gateway_here`: this switch is the router's gateway chassis, so its default route
    leads out of the gateway (through `snat`); elsewhere the default route is the
    transit to the gateway chassis (gateway.transit_flows), not compiled here."""
    owner = pl.cookie(pl.Owner.ROUTER, plan.key)
    t = pl.L3
    out: dict[tuple, Flow] = {}

    def put(flow: Flow) -> None:
        out.setdefault(flow.key, flow)

    addresses = sorted({a for leg in plan.legs for a in leg.addresses}
                       | ({plan.gateway.ip} if plan.gateway is not None else set()))
    for leg in plan.legs:
        if leg.network_key not in ingress:
            continue
        to_router = {"metadata": leg.network_key, "eth_dst": leg.mac}
        put(t.flow("router_mac", match(**to_router), cookie=owner))
        if not plan.admin_state_up:
            continue
        for ttl in (0, 1):
            put(t.flow("ttl_expired", match(**to_router, eth_type=ETH_IPV4, nw_ttl=ttl),
                       cookie=owner))
        for addr in addresses:
            put(t.flow(
                "echo",
                match(**to_router, eth_type=ETH_IPV4, ip_proto=IPPROTO_ICMP,
                      icmpv4_type=ICMP_ECHO_REQUEST, ipv4_dst=addr),
                actions=(
                    RegMove("eth_src", "eth_dst", 48),
                    SetField("eth_src", leg.mac),
                    RegMove("ipv4_src", "ipv4_dst", 32),
                    SetField("ipv4_src", addr),
                    SetField("icmpv4_type", ICMP_ECHO_REPLY),
                    Output(OFPP_IN_PORT),
                ),
                cookie=owner))
        for route in plan.routes:
            to = plan.legs[route.leg]
            hop: Action = RegMove("ipv4_dst", pl.REG_NEXTHOP, 32) if route.nexthop is None \
                else SetField(pl.REG_NEXTHOP, route.nexthop)
            put(t.flow(
                pl.route_priority(route.prefixlen),
                match(**to_router, eth_type=ETH_IPV4,
                      ipv4_dst=(route.prefix, _mask(route.prefixlen))),
                actions=(DecTtl(), SetField("eth_src", to.mac), SetField(pl.REG_CT_ZONE, to.zone),
                         CtClear(), hop),
                write_metadata=(to.network_key, _ALL_ONES_64), goto="l3_resolve",
                cookie=owner))
        if plan.default_via_gateway:
            # the way out (compiler/gateway.py): the next hop is the upstream router;
            # `snat` then NATs here (the gateway chassis, or a distributed floating
            # IP's chassis) or sends the frame on to the gateway chassis (transit)
            gw = plan.gateway
            assert gw is not None and gw.upstream is not None
            put(t.flow(pl.route_priority(0), match(**to_router, eth_type=ETH_IPV4),
                       actions=(SetField(pl.REG_NEXTHOP, gw.upstream),), goto="snat",
                       cookie=owner))
            if gw.prefixlen and (gw.prefix, gw.prefixlen) not in \
                    {(r.prefix, r.prefixlen) for r in plan.routes}:
                # the external subnet is on-link where NAT runs: its addresses are
                # their own next hop (the router's floating IPs are resolved where it
                # is present: hairpin; gateway.py)
                put(t.flow(
                    pl.route_priority(gw.prefixlen),
                    match(**to_router, eth_type=ETH_IPV4,
                          ipv4_dst=(gw.prefix, _mask(gw.prefixlen))),
                    actions=(RegMove("ipv4_dst", pl.REG_NEXTHOP, 32),), goto="snat",
                    cookie=owner))
    return tuple(out.values())


@lru_cache(maxsize=65536)
def resolve_flows(port: Port, network: Network) -> tuple[Flow, ...]:
    """A routed packet whose next hop is one of the port's IPv4 addresses goes to its MAC."""
    if is_router_owned(port):
        return ()
    owner = pl.cookie(pl.Owner.PORT, port.key)
    v4, _ = split_ips(port)
    hw = mac(port.mac_address)
    return tuple(
        pl.L3_RESOLVE.flow("resolve", match(metadata=network.key, **{pl.REG_NEXTHOP: ip4(a)}),
                           actions=(SetField("eth_dst", hw),), goto="l2_lookup", cookie=owner)
        for a in sorted(set(v4)))


def reach_flows(port: Port, network: Network, here: int, there: int,
                topo: TopologyView) -> list[Flow]:
    """How switch `here` reaches `port`, bound on switch `there`: its remote-MAC flow
    through the tunnel or the physical network, tagged (VLAN) or not (flat), as for any
    remote port of the network."""
    if there == here:
        return []
    if network.network_type in TUNNEL_TYPES:
        remote = topo.switches.get(there)
        tunnel = None if remote is None else topo.tunnels.get(
            (here, remote.chassis, network.network_type))
        return [] if tunnel is None else [remote_mac_flow(port, network, tunnel)]
    physnet = physnet_of(network)
    if physnet is not None:
        patch = topo.provider_ports.get((here, physnet))
        if patch is not None and (there, physnet) in topo.provider_ports:
            return [provider_mac_flow(port, network, patch)]
    return []


def senders_of(carriers: Iterable[int], resolvers: Mapping[str, set[int]], nid: str
               ) -> list[int]:
    """The switches that may tunnel packets of network `nid` here: those with a port on
    it, and those that route into it."""
    return sorted(set(carriers) | resolvers.get(nid, set()))


__all__ = ["Leg", "Route", "RouterPlan", "RoutingIndex", "is_router_owned", "plan_router",
           "reach_flows", "resolve_flows", "router_flows", "senders_of"]
