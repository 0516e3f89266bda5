"""External gateways: where a router's gateway lives, and what it compiles to there
(SNAT, floating IP DNAT/SNAT, port forwarding, the upstream's MAC) and elsewhere (the
transit to the gateway chassis); the incremental compile equals the full one through
gateway, floating IP, port forwarding and gateway-chassis changes."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.gateway import choose_gateway
from controller.compiler.incremental import Compiler
from controller.compiler.routing import RoutingIndex
from controller.flows import (
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Nat,
    Output,
    Resubmit,
    SetField,
    ip4,
    mac,
    match,
)
from controller.intent import FloatingIP, Intent, Network, PortForwarding, Subnet
from controller.intent_delta import IntentDelta
from controller.topology import TopologyDelta, TopologyView
from tests.unit.test_compiler_routing import (
    D1,
    D2,
    D3,
    N1,
    ROUTER,
    A,
    _chassis,
    _id,
    _port,
    world,
)
from tests.unit.test_incremental_compile import INTENT_ATTRS, assert_same

EXT = Network(_id("ext"), "admin", "public", "flat", 1, physical_network="ext",
              router_external=True)
ES = Subnet(_id("es"), "admin", EXT.id, "public-v4", 4, "198.51.100.0/24", "198.51.100.1")
GW_MAC = "fa:16:3e:ee:00:01"
GWP = _port("gwp", EXT, ES, "198.51.100.10", GW_MAC, port_security_enabled=False,
            device_owner="network:router_gateway", device_id=ROUTER.id)
FIP_PORT = _port("fipp", EXT, ES, "198.51.100.20", "fa:16:3e:ee:00:02",
                 device_owner="network:floatingip")
FIP = FloatingIP(_id("fip"), "p", EXT.id, "198.51.100.20", port_id=A.id,
                 fixed_ip_address="10.0.1.10", router_id=ROUTER.id,
                 floating_port_id=FIP_PORT.id)
PF_FIP = FloatingIP(_id("pffip"), "p", EXT.id, "198.51.100.30", router_id=ROUTER.id)
PF = PortForwarding(_id("pf"), PF_FIP.id, "tcp", 10080, 80, "10.0.1.10", A.id)
UPSTREAM_MAC = 0x02AABBCCDDEE
PATCH = 90  # the provider patch's ofport on every chassis
ZONE = 4242


def gateway_world(gateways: tuple[int, ...] = (D2, D3), fips: tuple[FloatingIP, ...] = (FIP,),
                  forwards: tuple[PortForwarding, ...] = (),
                  mapped: tuple[int, ...] = (D2, D3)) -> tuple[Intent, TopologyView]:
    """The routing world's router with a gateway on EXT; `mapped`: the chassis that map
    EXT's physnet (by default not hv1, where guest a, the floating IP's, lives)."""
    router = dataclasses.replace(ROUTER, external_network_id=EXT.id, gateway_port_id=GWP.id,
                                 enable_snat=True, snat_zone=ZONE)
    intent, topo = world(router)
    intent = dataclasses.replace(
        intent,
        networks=MappingProxyType({**intent.networks, EXT.id: EXT}),
        subnets=MappingProxyType({**intent.subnets, ES.id: ES}),
        ports=MappingProxyType({**intent.ports, GWP.id: GWP, FIP_PORT.id: FIP_PORT}),
        floating_ips=MappingProxyType({f.id: f for f in (*fips, PF_FIP)}),
        port_forwardings=MappingProxyType({p.id: p for p in forwards}))
    chassis = {name: dataclasses.replace(c, gateway=c.datapath_id in gateways)
               for name, c in topo.chassis.items()}
    topo = dataclasses.replace(
        topo, chassis=MappingProxyType(chassis),
        provider_ports=MappingProxyType({(d, "ext"): PATCH for d in mapped}))
    return intent, topo


def _gateway_of(intent: Intent, topo: TopologyView) -> int:
    plan = RoutingIndex(intent).plans[ROUTER.id]
    dpid = choose_gateway(plan, topo)
    assert dpid is not None
    return dpid


def _find(flows: Any, table: str, priority: str, **fields: Any) -> Flow:
    key = (table, pl.TABLES[table].priorities[priority], match(**fields))
    return flows[key]


def test_the_gateway_is_a_live_flagged_chassis_and_moves_only_when_it_dies() -> None:
    intent, topo = gateway_world()
    gw = _gateway_of(intent, topo)
    assert gw in (D2, D3)  # D1 maps the physnet but is not a gateway chassis
    assert _gateway_of(intent, topo) == gw  # deterministic
    dead = dataclasses.replace(topo.chassis[_chassis(gw)], connected=False)
    topo2 = dataclasses.replace(topo, chassis=MappingProxyType(
        {**topo.chassis, _chassis(gw): dead}))
    other = _gateway_of(intent, topo2)
    assert other in (D2, D3) and other != gw
    # no chassis flagged at all: every live chassis that maps the physnet may carry it
    unflagged = {n: dataclasses.replace(c, gateway=False) for n, c in topo.chassis.items()}
    assert _gateway_of(intent, dataclasses.replace(
        topo, chassis=MappingProxyType(unflagged))) in (D1, D2, D3)


def test_snat_fip_and_port_forwarding_compile_on_the_gateway_only() -> None:
    intent, topo = gateway_world(forwards=(PF,))
    topo = dataclasses.replace(topo, mac_bindings=MappingProxyType(
        {(EXT.key, ip4("198.51.100.1")): UPSTREAM_MAC}))
    gw = _gateway_of(intent, topo)
    out = compile_all(intent, topo)
    flows = out[gw].flows
    to_gw = {"metadata": EXT.key, "eth_dst": mac(GW_MAC)}
    # the default route: the upstream hop, then snat (TTL, the gateway's MAC, NAT)
    route0 = _find(flows, "l3", pl.route_priority(0), metadata=N1.key,
                   eth_dst=mac("fa:16:3e:00:01:01"), eth_type=0x0800)
    assert route0.goto == "snat"
    assert route0.actions == (SetField(pl.REG_NEXTHOP, ip4("198.51.100.1")),)
    snat = _find(flows, "snat", "snat", metadata=N1.key, eth_dst=mac("fa:16:3e:00:01:01"),
                 eth_type=0x0800)
    assert snat.actions == (DecTtl(), SetField("eth_src", mac(GW_MAC)), SetField(pl.REG_FLAGS, 0),
                            CtClear(), SetField("metadata", EXT.key),
                            Ct(commit=True, zone=ZONE, nat_spec=Nat("src", ip4("198.51.100.10")),
                               table="l3_resolve"))
    fip_out = _find(flows, "snat", "fip", metadata=N1.key, eth_dst=mac("fa:16:3e:00:01:01"),
                    eth_type=0x0800, ipv4_src=ip4("10.0.1.10"))
    assert fip_out.actions[-1].nat_spec == Nat("src", ip4("198.51.100.20"))
    assert fip_out.cookie >> pl.COOKIE_KIND_SHIFT == pl.Owner.FLOATING_IP
    dnat = _find(flows, "l3", "dnat", **to_gw, eth_type=0x0800, ipv4_dst=ip4("198.51.100.20"))
    assert dnat.actions == (CtClear(), Ct(commit=True, zone=ZONE,
                                          nat_spec=Nat("dst", ip4("10.0.1.10")),
                                          table="unnat"))
    pf = _find(flows, "l3", "dnat_port", **to_gw, eth_type=0x0800, ip_proto=6,
               ipv4_dst=ip4("198.51.100.30"), tcp_dst=10080)
    assert pf.actions[-1].nat_spec == Nat("dst", ip4("10.0.1.10"), port_min=80)
    assert pf.cookie >> pl.COOKIE_KIND_SHIFT == pl.Owner.PORT_FORWARDING
    unsnat = _find(flows, "l3", "unsnat", **to_gw, eth_type=0x0800,
                   ipv4_dst=ip4("198.51.100.10"))
    assert unsnat.actions == (CtClear(), Ct(zone=ZONE, nat=True, table="unnat"))
    # the external subnet is on-link from the gateway: a floating IP from inside is
    # resolved to the gateway MAC here (hairpin), anything else there goes upstream
    on_link = _find(flows, "l3", pl.route_priority(24), metadata=N1.key,
                    eth_dst=mac("fa:16:3e:00:01:01"), eth_type=0x0800,
                    ipv4_dst=(ip4("198.51.100.0"), 0xFFFFFF00))
    assert on_link.goto == "snat"
    hairpin = _find(flows, "l3_resolve", "resolve", metadata=EXT.key,
                    **{pl.REG_NEXTHOP: ip4("198.51.100.20")})
    assert hairpin.actions == (SetField("eth_dst", mac(GW_MAC)),)
    assert _find(flows, "l3_resolve", "upstream", metadata=EXT.key).actions == (
        SetField("eth_dst", UPSTREAM_MAC),)
    back = _find(flows, "unnat", "route", **to_gw, eth_type=0x0800,
                 ipv4_dst=(ip4("10.0.1.0"), 0xFFFFFF00))
    assert back.write_metadata == (N1.key, (1 << 64) - 1) and back.goto == "l3_resolve"
    resolve = _find(flows, "l3_resolve", "resolve", metadata=EXT.key,
                    **{pl.REG_NEXTHOP: ip4("198.51.100.1")})
    assert resolve.actions == (SetField("eth_dst", UPSTREAM_MAC),)
    upstream = _find(flows, "l2_lookup", "remote_mac", metadata=EXT.key, eth_dst=UPSTREAM_MAC)
    assert upstream.actions == (Output(PATCH),)
    punt = _find(flows, "l3", "gateway_arp", **to_gw, eth_type=0x0806)
    assert punt.actions == (Output(pl.OFPP_CONTROLLER, 0xFFFF),)
    # ARP for the gateway and the floating IPs: answered with the gateway MAC, here only
    for dpid, desired in out.items():
        answers = [f for f in desired.flows.values() if f.table == "arp_responder"
                   and f.match and dict((m.field, m.value) for m in f.match).get("metadata")
                   == EXT.key]
        if dpid == gw:
            assert {dict((m.field, m.value) for m in f.match)["arp_tpa"] for f in answers} \
                == {ip4("198.51.100.10"), ip4("198.51.100.20"), ip4("198.51.100.30")}
            assert all(SetField("eth_src", mac(GW_MAC)) in f.actions for f in answers)
        else:
            assert not answers, f"switch {dpid:#x} answers ARP for the gateway"
            assert not [f for f in desired.flows.values() if f.table in ("snat", "unnat")
                        and f.priority not in (0, pl.SNAT.priorities["transit"])
                        or f.goto == "l3_resolve" and f.table == "snat"]


def test_other_chassis_send_the_way_out_to_the_gateway_chassis() -> None:
    intent, topo = gateway_world(gateways=(D2,))
    assert _gateway_of(intent, topo) == D2
    out = compile_all(intent, topo)
    d1 = out[D1].flows  # guest a (front, vxlan) lives on hv1
    rmac = mac("fa:16:3e:00:01:01")
    route0 = _find(d1, "l3", pl.route_priority(0), metadata=N1.key, eth_dst=rmac,
                   eth_type=0x0800)
    assert route0.goto == "snat"  # no NAT here: on as it is
    assert _find(d1, "snat", "transit", metadata=N1.key, eth_dst=rmac,
                 eth_type=0x0800).goto == "l2_lookup"
    transit = _find(d1, "l2_lookup", "router", metadata=N1.key, eth_dst=rmac)
    tunnel = topo.tunnels[(D1, _chassis(D2), "vxlan")]
    assert transit.actions == (SetField("tunnel_id", N1.segmentation_id), Output(tunnel.ofport))
    # the gateway takes front's frames from hv1 and hands those to the router's MAC to l3
    d2 = out[D2].flows
    back_in = _find(d2, "l2_lookup", "router", metadata=N1.key, eth_dst=rmac)
    assert back_in.actions == (Resubmit("l3"),)
    tin = topo.tunnels[(D2, _chassis(D1), "vxlan")]
    assert ("classify", pl.CLASSIFY.priorities["tunnel"],
            match(in_port=tin.ofport, tunnel_id=N1.segmentation_id)) in d2


def _deltas(old: tuple[Intent, TopologyView], new: tuple[Intent, TopologyView]
            ) -> tuple[IntentDelta, TopologyDelta]:
    touched = {}
    for attr in INTENT_ATTRS:
        a, b = getattr(old[0], attr), getattr(new[0], attr)
        ids = frozenset(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if ids:
            touched[attr] = ids

    def changed(a: Any, b: Any) -> set:
        return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}

    ot, nt = old[1], new[1]
    return IntentDelta(MappingProxyType(touched)), TopologyDelta(
        bindings=frozenset(changed(ot.bindings, nt.bindings)),
        switches=frozenset(changed(ot.switches, nt.switches)),
        tunnels=frozenset(k[0] for k in changed(ot.tunnels, nt.tunnels)),
        provider_ports=frozenset(k[0] for k in changed(ot.provider_ports, nt.provider_ports)),
        chassis=frozenset(changed(ot.chassis, nt.chassis)),
        mac_bindings=frozenset(changed(ot.mac_bindings, nt.mac_bindings)))


def test_incremental_equals_full_through_gateway_changes() -> None:
    plain = world()
    base = gateway_world()
    steps: list[tuple[Intent, TopologyView]] = [plain, base]
    intent, topo = base
    # the upstream's MAC is learnt
    topo = dataclasses.replace(topo, version=topo.version + 1, mac_bindings=MappingProxyType(
        {(EXT.key, ip4("198.51.100.1")): UPSTREAM_MAC}))
    steps.append((intent, topo))
    # a port forwarding appears; the floating IP is disassociated
    intent = dataclasses.replace(intent, port_forwardings=MappingProxyType({PF.id: PF}))
    steps.append((intent, topo))
    gone = dataclasses.replace(FIP, port_id=None, fixed_ip_address=None, router_id=None)
    intent = dataclasses.replace(intent, floating_ips=MappingProxyType(
        {**intent.floating_ips, FIP.id: gone}))
    steps.append((intent, topo))
    # hv1 maps the physnet: a's floating IP is distributed there; then it is not again
    mapped = dict(topo.provider_ports)
    topo = dataclasses.replace(topo, version=topo.version + 1, provider_ports=MappingProxyType(
        {**mapped, (D1, "ext"): PATCH}))
    intent = dataclasses.replace(intent, floating_ips=MappingProxyType(
        {**intent.floating_ips, FIP.id: FIP}))
    steps.append((intent, topo))
    # the upstream router is replaced (a new MAC): the distributed floating IP's chassis
    # sends to it too
    topo = dataclasses.replace(topo, version=topo.version + 1, mac_bindings=MappingProxyType(
        {(EXT.key, ip4("198.51.100.1")): UPSTREAM_MAC + 1}))
    steps.append((intent, topo))
    # a moves to hv2 (which maps it too), then back
    moved = dataclasses.replace(topo.bindings[A.id], datapath_id=D2, chassis=_chassis(D2),
                                ofport=55)
    topo = dataclasses.replace(topo, version=topo.version + 1, bindings=MappingProxyType(
        {**topo.bindings, A.id: moved}))
    steps.append((intent, topo))
    topo = dataclasses.replace(topo, version=topo.version + 1, provider_ports=MappingProxyType(
        mapped))
    steps.append((intent, topo))
    # the gateway chassis dies: the router moves
    gw = _gateway_of(intent, topo)
    dead = dataclasses.replace(topo.chassis[_chassis(gw)], connected=False)
    topo = dataclasses.replace(topo, version=topo.version + 1, chassis=MappingProxyType(
        {**topo.chassis, _chassis(gw): dead}))
    steps.append((intent, topo))
    assert _gateway_of(intent, topo) != gw
    # SNAT switched off, then the gateway cleared
    router = intent.routers[ROUTER.id]
    intent = dataclasses.replace(intent, routers=MappingProxyType(
        {ROUTER.id: dataclasses.replace(router, enable_snat=False)}))
    steps.append((intent, topo))
    intent = dataclasses.replace(intent, routers=MappingProxyType(
        {ROUTER.id: dataclasses.replace(router, external_network_id=None,
                                        gateway_port_id=None)}))
    steps.append((intent, topo))
    compiler = Compiler()
    compiler.update(*steps[0], None, None)
    assert_same(compiler, *steps[0])
    for before, after in zip(steps, steps[1:], strict=False):
        idelta, tdelta = _deltas(before, after)
        compiler.update(after[0], after[1], idelta, tdelta)
        assert_same(compiler, *after)
    assert compiler.full_compiles == 1  # every step above was incremental


def test_a_floating_ip_change_touches_only_where_its_router_is() -> None:
    """Its NAT on the gateway chassis (hv1, a's chassis, does not map the physnet), and
    how to reach it where the router is present and the physnet mapped (hv2); not the
    router's own flows, nor any other switch."""
    intent, topo = gateway_world(gateways=(D3,), fips=())
    assert _gateway_of(intent, topo) == D3
    compiler = Compiler()
    compiler.update(intent, topo, None, None)
    after = dataclasses.replace(intent, floating_ips=MappingProxyType(
        {**intent.floating_ips, FIP.id: FIP}))
    idelta, tdelta = _deltas((intent, topo), (after, topo))
    evaluated = compiler.units_evaluated
    offers = compiler.update(after, topo, idelta, tdelta)
    assert set(offers) == {D3, D2}
    # D2 learns the floating IP as a next hop (the gateway MAC, out of its patch, it
    # knew already: the router's gateway address leads there too)
    assert {k[0] for k in offers[D2].changed_keys or ()} == {"l3_resolve"}
    # the floating IP's unit on each switch of its router (D1, D2, D3), nothing else
    assert compiler.units_evaluated - evaluated == 3
    assert_same(compiler, after, topo)


def test_floating_ip_ports_are_not_answered_where_guests_are() -> None:
    """A floating IP's port holds its address; only the gateway answers for it."""
    intent, topo = gateway_world(gateways=(D2,))
    guest = _port("ext-guest", EXT, ES, "198.51.100.99", "fa:16:3e:ee:00:63")
    intent = dataclasses.replace(intent, ports=MappingProxyType(
        {**intent.ports, guest.id: guest}))
    topo = dataclasses.replace(topo, bindings=MappingProxyType(
        {**topo.bindings, guest.id: dataclasses.replace(
            next(iter(topo.bindings.values())), port_id=guest.id, datapath_id=D1, ofport=44)}))
    d1 = compile_all(intent, topo)[D1].flows
    tpas = {dict((m.field, m.value) for m in f.match).get("arp_tpa") for f in d1.values()
            if f.table == "arp_responder"}
    assert ip4("198.51.100.99") in tpas and ip4("198.51.100.20") not in tpas


def test_every_gateway_flow_names_its_owner() -> None:
    """/v1/trace and the flow dump name the router, floating IP or port forwarding."""
    from controller.explain.trace import owner_index, owner_of

    intent, topo = gateway_world(forwards=(PF,))
    topo = dataclasses.replace(topo, mac_bindings=MappingProxyType(
        {(EXT.key, ip4("198.51.100.1")): UPSTREAM_MAC}))
    gw = _gateway_of(intent, topo)
    owners = owner_index(intent)
    kinds = set()
    for flow in compile_all(intent, topo)[gw].flows.values():
        owner = owner_of(flow.cookie, owners)
        assert owner is not None, flow
        kinds.add(owner["kind"])
    assert {"router", "floating_ip", "port_forwarding", "network"} <= kinds
    pf = next(v for (k, _), v in owners.items() if k == "port_forwarding")
    assert pf["external_port"] == 10080 and pf["internal_port"] == 80


def test_a_floating_ip_is_distributed_to_its_guests_chassis_when_it_maps_the_physnet() -> None:
    """Its own MAC answers there, and NAT runs there; nothing of it on the gateway."""
    intent, topo = gateway_world(gateways=(D2,), mapped=(D1, D2))
    topo = dataclasses.replace(topo, mac_bindings=MappingProxyType(
        {(EXT.key, ip4("198.51.100.1")): UPSTREAM_MAC}))
    out = compile_all(intent, topo)
    d1, d2 = out[D1].flows, out[D2].flows
    fmac = mac(FIP_PORT.mac_address)
    fip_ip = ip4("198.51.100.20")
    dnat = _find(d1, "l3", "dnat", metadata=EXT.key, eth_dst=fmac, eth_type=0x0800,
                 ipv4_dst=fip_ip)
    assert dnat.actions[-1].nat_spec == Nat("dst", ip4("10.0.1.10"))
    out_nat = _find(d1, "snat", "fip", metadata=N1.key, eth_dst=mac("fa:16:3e:00:01:01"),
                    eth_type=0x0800, ipv4_src=ip4("10.0.1.10"))
    assert SetField("eth_src", fmac) in out_nat.actions
    assert _find(d1, "l2_lookup", "router", metadata=EXT.key, eth_dst=fmac).actions == (
        Resubmit("l3"),)
    assert _find(d1, "unnat", "route", metadata=EXT.key, eth_dst=fmac, eth_type=0x0800,
                 ipv4_dst=(ip4("10.0.1.0"), 0xFFFFFF00)).goto == "l3_resolve"
    assert _find(d1, "l3_resolve", "upstream", metadata=EXT.key).actions == (
        SetField("eth_dst", UPSTREAM_MAC),)
    arp = [f for f in d1.values() if f.table == "arp_responder"
           and ("arp_tpa", fip_ip) in {(m.field, m.value) for m in f.match}]
    assert len(arp) == 1 and SetField("eth_src", fmac) in arp[0].actions
    # the gateway neither answers for it nor NATs it (one MAC in one place): it only
    # knows where it is, out of its own provider patch (hairpin from its guests)
    fip_cookies = {f.cookie for f in d1.values()
                   if f.cookie >> pl.COOKIE_KIND_SHIFT == pl.Owner.FLOATING_IP}
    on_gateway = [f for f in d2.values() if f.cookie in fip_cookies]
    assert fip_cookies and sorted(f.table for f in on_gateway) == ["l2_lookup", "l3_resolve"]
    assert _find(d2, "l2_lookup", "remote_mac", metadata=EXT.key, eth_dst=fmac).actions == (
        Output(PATCH),)
