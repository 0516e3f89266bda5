"""Routers' external gateways: SNAT, floating IPs and port forwarding, on one chassis.

East-west routing is distributed (routing.py); the way out is not. Each router with
an external gateway has one *gateway chassis*, chosen among the live chassis that
map the external network's physical network and say `external_ids:loom-gateway=true`
(all live chassis that map it, when no chassis in the fleet says so), by rendezvous
hashing of (router, chassis): pure, deterministic, spread over the gateways, and
when a gateway dies only its routers move. The chassis' address on the physical
network (the gateway port's MAC, the floating IPs' ARP answers) then lives in one
place, as OVN's distributed gateway port does, and conntrack's NAT state in one
conntrack table.

On a chassis that is not the router's gateway, a routed packet that no route of the
router matches is sent unchanged, as a frame to the router's MAC, through the tunnel
of its network to the gateway chassis (`transit_flows`); there l2_lookup hands frames
to a router's MAC back to l3, which routes them out. Only overlay networks can carry
that transit: on a VLAN or flat internal network a router MAC seen from several
chassis would flap the physical switches' tables. Guests there reach the outside
only when they sit on the gateway chassis (a limit, stated in the README).

On the gateway chassis (`gateway_flows`), with Z the router's own conntrack zone
(Router.snat_zone, allocated once by the store, never one of a network's zones):

    classify      ARP from the physical network -> arp_responder ("gateway_arp")
    arp_responder who-has the gateway address or a floating IP -> the gateway MAC
    l3            out:  default route -> REG_NEXTHOP = upstream router; the
                        external subnet -> REG_NEXTHOP = the destination; goto snat
                        (routing.py; on every chassis of the router)
    snat          from a floating IP's fixed address -> TTL - 1, eth_src = its MAC
                        here, ct(commit, zone Z, nat(src = floating IP)); else TTL - 1,
                        eth_src = gateway MAC, ct(commit, zone Z, nat(src = gateway
                        address)) (enable_snat) or ct(zone Z, nat) (no SNAT: replies
                        of DNATed connections still un-NAT); metadata = external
                        network, then l3_resolve. Elsewhere: "transit" (above)
    l2_lookup     to the gateway MAC on the external network -> l3
    l3            in:   ARP to the gateway MAC -> controller (learns the upstream MAC)
                        port forwarding: (proto, floating IP, port) -> ct(commit,
                        zone Z, nat(dst = internal address:port))   ("dnat_port")
                        floating IP -> ct(commit, zone Z, nat(dst = fixed address))
                        gateway address -> ct(zone Z, nat): un-SNAT of replies
    unnat         destination in an internal subnet of the router -> TTL - 1,
                        eth_src = the router's MAC there, REG_CT_ZONE = that network's
                        zone, ct_clear, metadata = that network, l3_resolve
    l3_resolve    the upstream router's address -> its MAC (learnt: topology
                        mac_bindings), l2_lookup -> the physical network; any other
                        address of the external subnet -> the upstream's MAC too
                        ("upstream"), but the gateway's own and its floating IPs ->
                        the gateway MAC, back into l3 here: hairpin

Hairpin (a guest to its own or a neighbour's floating IP): the external subnet is
on-link from the gateway (l3 routes it with the address as its own next hop), so
such a packet is SNATed, resolved to the gateway MAC, and comes back into l3 as if
from outside: DNAT, unnat, the guest. Both NATs share the router's zone: two
connections with distinct tuples (the inbound flows clear the conntrack state
first, so the second lookup sees the translated addresses), and the reply walks them
back in turn. unnat clears in_port: the packet may leave by the port it came in by.
A floating IP of another router whose gateway is elsewhere is reached through the
upstream router.

Distributed floating IPs (OVN's DVR): a floating IP whose guest sits on a chassis
that maps the external network's physnet runs there, not on the gateway: its own
MAC (the floating IP port's) answers ARP on that chassis alone, l2_lookup hands
frames to it to l3 there, DNAT / unnat / SNAT work as above under that MAC, and the
guest's way out leaves by that chassis' provider patch (the upstream's MAC is the
one the gateway learnt: topology mac_bindings are per network). The chassis
announces the MAC by gratuitous ARP (upstream_arp.py). When the guest moves to a
chassis without the mapping, or the mapping goes, the floating IP returns to the
gateway chassis under the gateway MAC (`fip_home`). Where the router is present
but the floating IP is not, one resolve flow points at its MAC, out of the provider
patch (`fip_reach_flows`: hairpin between chassis).

Security groups keep working: the guest's connection is committed in its network's
zone by its own port's ACLs on its own chassis, before any NAT (outbound) or after
it (inbound, the un-NATed packet), so security groups see the guest's own address
and the outside host's real one; NAT state lives in zone Z only.

Cookies: the router owns its gateway flows; a floating IP (Owner.FLOATING_IP) its
DNAT, SNAT and ARP answer; a port forwarding (Owner.PORT_FORWARDING) its DNAT; the
external network the flows every router on it shares (ARP in, the upstream's MAC).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

from controller import pipeline as pl
from controller.compiler.network import OFPP_IN_PORT, arp_answer_flow
from controller.compiler.overlay import _to_provider as to_provider
from controller.compiler.overlay import provider_in_flow, provider_tag, tunnel_in_flow, zone_of
from controller.compiler.ports import _ALL_ONES_64, ETH_ARP, ETH_IPV4
from controller.compiler.routing import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    IPPROTO_ICMP,
    Leg,
    RouterPlan,
    _mask,
)
from controller.flows import (
    Action,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Meter,
    Nat,
    Output,
    PopVlan,
    RegMove,
    Resubmit,
    SetField,
    ip4,
    mac,
    match,
)
from controller.intent import FloatingIP, Intent, Network, PortForwarding, object_key
from controller.topology import TUNNEL_TYPES, TopologyView

IP_PROTOS = {"tcp": 6, "udp": 17}
_PORT_FIELD = {"tcp": "tcp_dst", "udp": "udp_dst"}


# ---------------------------------------------------------------- where
def gateway_candidates(topo: TopologyView, physnet: str) -> list[tuple[str, int]]:
    """(chassis name, dpid) of the live chassis that may carry a gateway on `physnet`."""
    flagged = any(c.gateway for c in topo.chassis.values())
    out = []
    for dpid, sw in topo.switches.items():
        ch = topo.chassis.get(sw.chassis)
        if ch is None or not ch.connected or (flagged and not ch.gateway):
            continue
        if (dpid, physnet) in topo.provider_ports:
            out.append((sw.chassis, dpid))
    return sorted(out)


def _weight(router_id: str, chassis: str) -> bytes:
    return hashlib.blake2b(f"{router_id}/{chassis}".encode(), digest_size=8).digest()


def gateway_order(router_id: str, chassis: Iterable[str]) -> list[str]:
    """`chassis` in the order the router prefers them as its gateway (the first live
    one carries it): what an operator (or a test) reads to know where it will go."""
    return sorted(chassis, key=lambda name: _weight(router_id, name), reverse=True)


def choose_gateway(plan: RouterPlan, topo: TopologyView) -> Optional[int]:
    """The dpid of the router's gateway chassis (rendezvous hash), None if none is live."""
    if plan.gateway is None:
        return None
    candidates = dict(gateway_candidates(topo, plan.gateway.physnet))
    if not candidates:
        return None
    return candidates[gateway_order(plan.router_id, candidates)[0]]


def choose_gateways(plans: Mapping[str, RouterPlan], topo: TopologyView) -> dict[str, int]:
    out = {}
    for rid, plan in plans.items():
        dpid = choose_gateway(plan, topo)
        if dpid is not None:
            out[rid] = dpid
    return out


# ---------------------------------------------------------------- what: NAT rules
@dataclass(frozen=True)
class FipRule:
    key: int  # the floating IP's object key (its cookie)
    fip: int
    fixed: int
    port_id: str = ""  # the guest's port
    mac: Optional[int] = None  # the floating IP port's MAC: its address where distributed


@dataclass(frozen=True)
class ForwardRule:
    key: int  # the port forwarding's object key
    fip_key: int  # its floating IP's (which answers ARP for the address)
    fip: int
    protocol: str
    external_port: int
    internal_ip: int
    internal_port: int


def fip_rule(fip: FloatingIP, intent: Intent) -> Optional[FipRule]:
    """The floating IP's NAT rule, when it is associated (IPv4 both sides)."""
    if fip.router_id is None or fip.port_id is None or not fip.fixed_ip_address:
        return None
    if ":" in fip.floating_ip_address or ":" in fip.fixed_ip_address:
        return None
    own = intent.ports.get(fip.floating_port_id) if fip.floating_port_id else None
    return FipRule(object_key(fip.id), ip4(fip.floating_ip_address),
                   ip4(fip.fixed_ip_address), fip.port_id,
                   mac(own.mac_address) if own is not None else None)


def fip_home(plan: RouterPlan, f: FipRule, gateway: Optional[int], topo: TopologyView
             ) -> tuple[Optional[int], bool]:
    """Where a floating IP's NAT runs, and whether that is distributed: on the chassis
    its guest is bound to when that chassis maps the external network's physnet (the
    floating IP's own MAC answers there), else on the router's gateway chassis (the
    gateway MAC answers)."""
    gw = plan.gateway
    if gw is None:
        return None, False
    binding = topo.bindings.get(f.port_id)
    if f.mac is not None and binding is not None \
            and (binding.datapath_id, gw.physnet) in topo.provider_ports \
            and binding.datapath_id in topo.switches:
        return binding.datapath_id, True
    return gateway, False


def forward_rule(intent: Intent, pf: PortForwarding) -> Optional[tuple[str, ForwardRule]]:
    """(router id, rule) of a port forwarding whose floating IP has a router."""
    fip = intent.floating_ips.get(pf.floatingip_id)
    if fip is None or fip.router_id is None or pf.protocol not in IP_PROTOS \
            or ":" in fip.floating_ip_address or ":" in pf.internal_ip_address:
        return None
    return fip.router_id, ForwardRule(
        object_key(pf.id), object_key(fip.id), ip4(fip.floating_ip_address), pf.protocol,
        pf.external_port, ip4(pf.internal_ip_address), pf.internal_port)


# ---------------------------------------------------------------- flows
def transit_flows(plan: RouterPlan, ingress: Iterable[str], here: int,
                  gateway_dpid: Optional[int], topo: TopologyView) -> list[Flow]:
    """On a chassis that is not the router's gateway: what no route matches (l3's
    default route leads to `snat`) and no distributed floating IP here takes goes, as
    it is, through the tunnel of its network to the gateway chassis."""
    if not plan.default_via_gateway or gateway_dpid is None or gateway_dpid == here:
        return []
    remote = topo.switches.get(gateway_dpid)
    if remote is None:
        return []
    owner = pl.cookie(pl.Owner.ROUTER, plan.key)
    wanted = set(ingress)
    out = []
    for leg in plan.legs:
        net = leg.network
        if leg.network_id not in wanted or net is None or net.network_type not in TUNNEL_TYPES:
            continue
        tunnel = topo.tunnels.get((here, remote.chassis, net.network_type))
        if tunnel is None:
            continue
        out.append(pl.SNAT.flow(
            "transit", match(metadata=leg.network_key, eth_dst=leg.mac, eth_type=ETH_IPV4),
            goto="l2_lookup", cookie=owner))
        out.append(pl.L2_LOOKUP.flow(
            "router", match(metadata=leg.network_key, eth_dst=leg.mac),
            actions=(SetField("tunnel_id", net.segmentation_id), Output(tunnel.ofport)),
            cookie=owner))
    return out


def gateway_reach_flows(plan: RouterPlan, here: int, gateway_dpid: Optional[int],
                        topo: TopologyView) -> list[Flow]:
    """Where the router is present, not its gateway, but the physnet is mapped (a
    distributed floating IP may NAT here): the router's gateway address as a next hop,
    the gateway MAC, out of the provider patch (a reply to a packet the router SNATed
    and a floating IP here DNATed: hairpin between chassis)."""
    gw = plan.gateway
    if gw is None or not plan.admin_state_up or gateway_dpid is None \
            or gateway_dpid == here:
        return []
    patch = topo.provider_ports.get((here, gw.physnet))
    if patch is None:
        return []
    owner = pl.cookie(pl.Owner.ROUTER, plan.key)
    ext = gw.network
    return [_resolve_to(ext.key, gw.ip, gw.mac, owner),
            pl.L2_LOOKUP.flow("remote_mac", match(metadata=ext.key, eth_dst=gw.mac),
                              actions=to_provider(ext, patch), cookie=owner)]


def upstream_arp_meter() -> Meter:
    """The meter the gateway chassis' copies of ARP to the controller go through (held by
    every switch that is some router's gateway chassis): a flood of ARP at a gateway MAC
    from the physical network costs the controller at most this rate."""
    return Meter(pl.PUNT_METER_UPSTREAM_ARP, pl.UPSTREAM_ARP_RATE_PPS,
                 pl.UPSTREAM_ARP_BURST_PACKETS, pps=True)


def gateway_flows(plan: RouterPlan, here: int, topo: TopologyView,
                  carriers: Mapping[str, Iterable[int]]) -> list[Flow]:
    """Everything the router's gateway chassis `here` holds for the way out and in
    (the module's docstring), besides the router's l3 flows (routing.router_flows with
    gateway_here, for every leg) and its floating IPs' and port forwardings' own
    flows (`fip_flows`, `forward_flows`: units of their own, so that one of them
    changing costs its own flows, not the router's), and the external network's own
    (`external_side_flows`, once per switch)."""
    gw = plan.gateway
    if gw is None or not plan.admin_state_up:
        return []
    patch = topo.provider_ports.get((here, gw.physnet))
    if patch is None:
        return []
    ext = gw.network
    owner = pl.cookie(pl.Owner.ROUTER, plan.key)
    out: list[Flow] = [
        arp_answer_flow(ext.key, gw.ip, gw.mac, owner),
        pl.L2_LOOKUP.flow("router", match(metadata=ext.key, eth_dst=gw.mac),
                          actions=(Resubmit("l3"),), cookie=owner),
    ]
    to_gw = {"metadata": ext.key, "eth_dst": gw.mac}
    l3 = pl.L3
    out.append(l3.flow("gateway_arp", match(**to_gw, eth_type=ETH_ARP),
                       actions=(Output(pl.OFPP_CONTROLLER, 0xFFFF),),
                       meter=pl.PUNT_METER_UPSTREAM_ARP, cookie=owner))
    for ttl in (0, 1):
        out.append(l3.flow("ttl_expired", match(**to_gw, eth_type=ETH_IPV4, nw_ttl=ttl),
                           cookie=owner))
    out.append(l3.flow(
        "echo", match(**to_gw, eth_type=ETH_IPV4, ip_proto=IPPROTO_ICMP,
                      icmpv4_type=ICMP_ECHO_REQUEST, ipv4_dst=gw.ip),
        actions=(RegMove("eth_src", "eth_dst", 48), SetField("eth_src", gw.mac),
                 RegMove("ipv4_src", "ipv4_dst", 32), SetField("ipv4_src", gw.ip),
                 SetField("icmpv4_type", ICMP_ECHO_REPLY), Output(OFPP_IN_PORT)),
        cookie=owner))
    # ct_clear first: a hairpinned packet comes here from this router's snat, tracked
    # in the same zone, and must be looked up again with its new addresses
    out.append(l3.flow("unsnat", match(**to_gw, eth_type=ETH_IPV4, ipv4_dst=gw.ip),
                       actions=(CtClear(), Ct(zone=gw.zone, nat=True, table="unnat")),
                       cookie=owner))
    out.append(_resolve_to(ext.key, gw.ip, gw.mac, owner))
    for leg in plan.legs:
        out.append(pl.UNNAT.flow(
            "route", match(**to_gw, eth_type=ETH_IPV4,
                           ipv4_dst=(leg.prefix, _mask(leg.prefixlen))),
            actions=_routed_in(leg), write_metadata=(leg.network_key, _ALL_ONES_64),
            goto="l3_resolve", cookie=owner))
        from_leg = {"metadata": leg.network_key, "eth_dst": leg.mac}
        nat = Ct(commit=True, zone=gw.zone, nat_spec=Nat("src", gw.ip), table="l3_resolve") \
            if gw.snat else Ct(zone=gw.zone, nat=True, table="l3_resolve")
        out.append(pl.SNAT.flow("snat", match(**from_leg, eth_type=ETH_IPV4),
                                actions=(*_leaving(gw.mac, ext.key), nat), cookie=owner))
        # frames to the router's MAC that other chassis sent here (transit_flows)
        net = leg.network
        if net is None or net.network_type not in TUNNEL_TYPES:
            continue
        out.append(pl.L2_LOOKUP.flow("router", match(**from_leg), actions=(Resubmit("l3"),),
                                     cookie=owner))
        for dpid in sorted(carriers.get(leg.network_id, ())):
            remote = topo.switches.get(dpid)
            if dpid == here or remote is None:
                continue
            tunnel = topo.tunnels.get((here, remote.chassis, net.network_type))
            if tunnel is not None:
                out.append(tunnel_in_flow(net, tunnel, leg.zone))
    return out


def _resolve_to(network_key: int, ip: int, hw: int, owner: int) -> Flow:
    """A next hop on the external network whose MAC Loom knows."""
    return pl.L3_RESOLVE.flow("resolve", match(metadata=network_key, **{pl.REG_NEXTHOP: ip}),
                              actions=(SetField("eth_dst", hw),), goto="l2_lookup",
                              cookie=owner)


def _leaving(hw: int, ext_key: int) -> tuple[Action, ...]:
    """Routed out of the external network (the next hop is in REG_NEXTHOP already): TTL
    - 1, the source MAC of where it leaves, the conntrack state of the guest's network
    dropped; then the NAT."""
    return (DecTtl(), SetField("eth_src", hw), SetField(pl.REG_FLAGS, 0), CtClear(),
            SetField("metadata", ext_key))


def fip_reach_flows(plan: RouterPlan, f: FipRule, home: int, distributed: bool,
                    here: int, topo: TopologyView) -> list[Flow]:
    """Where the router is present but the floating IP's NAT is elsewhere (`home`): the
    floating IP as a next hop on the external network, its MAC there, out through this
    chassis' provider patch (a guest here reaching a neighbour's floating IP from
    inside: hairpin, over the physical network). Nothing without the patch: what
    leaves from here then goes through the gateway chassis, which knows it."""
    gw = plan.gateway
    if gw is None or not plan.admin_state_up or home == here:
        return []
    patch = topo.provider_ports.get((here, gw.physnet))
    if patch is None:
        return []
    ext = gw.network
    hw = f.mac if distributed and f.mac is not None else gw.mac
    # the gateway MAC is the router's to own (every centralised floating IP of it
    # leads there); a distributed floating IP's MAC is its own
    mac_owner = pl.cookie(pl.Owner.FLOATING_IP, f.key) if hw != gw.mac \
        else pl.cookie(pl.Owner.ROUTER, plan.key)
    return [
        _resolve_to(ext.key, f.fip, hw, pl.cookie(pl.Owner.FLOATING_IP, f.key)),
        pl.L2_LOOKUP.flow("remote_mac", match(metadata=ext.key, eth_dst=hw),
                          actions=to_provider(ext, patch), cookie=mac_owner),
    ]


def fip_flows(plan: RouterPlan, f: FipRule, distributed: bool, here: int,
              topo: TopologyView) -> list[Flow]:
    """A floating IP where its NAT runs (`fip_home`): its ARP answer, DNAT in, and SNAT
    out of the internal subnet its fixed address is on, under the gateway MAC on the
    gateway chassis or its own MAC on its guest's chassis (`distributed`), which then
    also takes the external network's frames to that MAC and routes them in itself."""
    gw = plan.gateway
    if gw is None or not plan.admin_state_up:
        return []
    hw = f.mac if distributed and f.mac is not None else gw.mac
    owner = pl.cookie(pl.Owner.FLOATING_IP, f.key)
    ext = gw.network
    to_fip = {"metadata": ext.key, "eth_dst": hw}
    out = [
        arp_answer_flow(ext.key, f.fip, hw, owner),
        _resolve_to(ext.key, f.fip, hw, owner),  # from inside: hairpin
        pl.L3.flow("dnat", match(**to_fip, eth_type=ETH_IPV4, ipv4_dst=f.fip),
                   actions=(CtClear(), Ct(commit=True, zone=gw.zone,
                                          nat_spec=Nat("dst", f.fixed), table="unnat")),
                   cookie=owner),
    ]
    for leg in plan.legs:
        if f.fixed & _mask(leg.prefixlen) != leg.prefix:
            continue
        out.append(pl.SNAT.flow(
            "fip", match(metadata=leg.network_key, eth_dst=leg.mac, eth_type=ETH_IPV4,
                         ipv4_src=f.fixed),
            actions=(*_leaving(hw, ext.key),
                     Ct(commit=True, zone=gw.zone, nat_spec=Nat("src", f.fip),
                        table="l3_resolve")),
            cookie=owner))
        if distributed:
            out.append(pl.UNNAT.flow(
                "route", match(**to_fip, eth_type=ETH_IPV4, ipv4_dst=(leg.prefix,
                                                                      _mask(leg.prefixlen))),
                actions=_routed_in(leg), write_metadata=(leg.network_key, _ALL_ONES_64),
                goto="l3_resolve", cookie=owner))
    if distributed:
        out.append(pl.L2_LOOKUP.flow("router", match(**to_fip), actions=(Resubmit("l3"),),
                                     cookie=owner))
        for ttl in (0, 1):
            out.append(pl.L3.flow("ttl_expired", match(**to_fip, eth_type=ETH_IPV4,
                                                       nw_ttl=ttl), cookie=owner))
    return out


@dataclass(frozen=True)
class ExtUse:
    """A switch NATs for an external network (a router's gateway, a distributed
    floating IP): what `external_side_flows` needs of it."""

    network: Network
    physnet: str
    upstream: Optional[int]


def ext_use(plan: RouterPlan) -> Optional[ExtUse]:
    gw = plan.gateway
    if gw is None or not plan.admin_state_up:
        return None
    return ExtUse(gw.network, gw.physnet, gw.upstream)


def external_side_flows(uses: Iterable[ExtUse], here: int, topo: TopologyView) -> list[Flow]:
    """What a chassis that NATs for an external network needs of it, once, whoever
    asks (its own unit in the incremental compile, so that a thousand floating IPs on
    one chassis do not each carry a copy): its frames in from the provider patch, ARP
    from there to the ARP responder, and the upstream routers' MACs (learnt) for what
    leaves; a next hop on the external subnet that no flow names goes to the first
    upstream (lowest address) whose MAC is known."""
    uses = list(uses)
    if not uses:
        return []
    first = uses[0]
    patch = topo.provider_ports.get((here, first.physnet))
    if patch is None:
        return []
    ext = first.network
    net_owner = pl.cookie(pl.Owner.NETWORK, ext.key)
    flat = ext.network_type == "flat"
    ext_zone = zone_of(ext)
    out = [
        provider_in_flow(ext, patch, ext_zone),
        pl.CLASSIFY.flow(
            "gateway_arp", match(in_port=patch, vlan_vid=provider_tag(ext), eth_type=ETH_ARP),
            actions=(*(() if flat else (PopVlan(),)),
                     SetField(pl.REG_FLAGS, pl.FLAG_FROM_REMOTE),
                     SetField(pl.REG_CT_ZONE, ext_zone)),
            write_metadata=(ext.key, _ALL_ONES_64), goto="arp_responder", cookie=net_owner),
    ]
    fallback = False
    macs = set()
    for upstream in sorted({u.upstream for u in uses if u.upstream is not None}):
        bound = topo.mac_bindings.get((ext.key, upstream))
        if bound is None:
            continue
        out.append(_resolve_to(ext.key, upstream, bound, net_owner))
        if not fallback:
            fallback = True
            out.append(pl.L3_RESOLVE.flow(
                "upstream", match(metadata=ext.key), actions=(SetField("eth_dst", bound),),
                goto="l2_lookup", cookie=net_owner))
        if bound not in macs:
            macs.add(bound)
            out.append(pl.L2_LOOKUP.flow(
                "remote_mac", match(metadata=ext.key, eth_dst=bound),
                actions=to_provider(ext, patch), cookie=net_owner))
    return out


def _routed_in(leg: Leg) -> tuple[Action, ...]:
    """Into the internal network `leg` after DNAT or un-SNAT. in_port is cleared: a
    hairpinned packet may have to leave by the port it came in by (its own guest's, or
    the tunnel from that guest's chassis), which OpenFlow's output would skip."""
    return (DecTtl(), SetField("eth_src", leg.mac), SetField(pl.REG_CT_ZONE, leg.zone),
            SetField(pl.REG_FLAGS, 0), SetField("in_port", 0), CtClear(),
            RegMove("ipv4_dst", pl.REG_NEXTHOP, 32))


def forward_flows(plan: RouterPlan, p: ForwardRule) -> list[Flow]:
    """A port forwarding on its router's gateway chassis: DNAT of (protocol, floating
    IP, external port) to the internal address and port; its floating IP's ARP answer
    (owned by the floating IP: equal for every forwarding of it)."""
    gw = plan.gateway
    if gw is None or not plan.admin_state_up:
        return []
    ext = gw.network
    fip_owner = pl.cookie(pl.Owner.FLOATING_IP, p.fip_key)
    return [
        arp_answer_flow(ext.key, p.fip, gw.mac, fip_owner),
        _resolve_to(ext.key, p.fip, gw.mac, fip_owner),
        pl.L3.flow(
            "dnat_port",
            match(metadata=ext.key, eth_dst=gw.mac, eth_type=ETH_IPV4,
                  ip_proto=IP_PROTOS[p.protocol], ipv4_dst=p.fip,
                  **{_PORT_FIELD[p.protocol]: p.external_port}),
            actions=(CtClear(), Ct(commit=True, zone=gw.zone,
                                   nat_spec=Nat("dst", p.internal_ip, port_min=p.internal_port),
                                   table="unnat")),
            cookie=pl.cookie(pl.Owner.PORT_FORWARDING, p.key)),
    ]


def bindings_in(flows: Iterable[Flow]) -> dict[tuple[int, int], int]:
    """The upstream MACs a switch's own flows say it learnt (the l3_resolve flows of
    external networks that `gateway_flows` writes): what a restarted controller takes
    back from its gateway chassis, so that its first state keeps them (0 flow_mods)."""
    out = {}
    for f in flows:
        if f.table != "l3_resolve" or f.cookie >> pl.COOKIE_KIND_SHIFT != pl.Owner.NETWORK:
            continue
        fields = {m.field: m.value for m in f.match}
        hw = [a.value for a in f.actions if isinstance(a, SetField) and a.field == "eth_dst"]
        if "metadata" in fields and pl.REG_NEXTHOP in fields and len(hw) == 1:
            out[(fields["metadata"], fields[pl.REG_NEXTHOP])] = hw[0]
    return out


def upstream_wanted(plans: Mapping[str, RouterPlan], gateways: Mapping[str, int]
                    ) -> dict[tuple[int, int], tuple[RouterPlan, int]]:
    """(gateway dpid, external network key) -> (a router there, upstream address): what
    each gateway chassis must ask the physical network's ARP for."""
    out: dict[tuple[int, int], tuple[RouterPlan, int]] = {}
    for rid in sorted(gateways):
        plan = plans.get(rid)
        if plan is None or plan.gateway is None or plan.gateway.upstream is None:
            continue
        out.setdefault((gateways[rid], plan.gateway.network.key), (plan, plan.gateway.upstream))
    return out


__all__ = ["ExtUse", "FipRule", "ForwardRule", "bindings_in", "choose_gateway",
           "choose_gateways", "ext_use", "external_side_flows", "fip_flows",
           "fip_reach_flows", "fip_rule", "forward_flows", "forward_rule",
           "gateway_candidates", "gateway_order", "gateway_flows", "gateway_reach_flows",
           "transit_flows",
           "upstream_wanted"]
