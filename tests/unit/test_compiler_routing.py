"""Distributed east-west routing: the l3 and l3_resolve flows of a two-subnet router,
where they are compiled, TTL, echo replies, longest prefix first, and isolation from a
third project that uses the same addresses."""

from __future__ import annotations

import dataclasses
import uuid
from types import MappingProxyType
from typing import Any

from controller import ofwire
from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.incremental import Compiler
from controller.compiler.overlay import zone_of
from controller.flows import (
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
from controller.intent import (
    FixedIP,
    Intent,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
    object_key,
)
from controller.topology import Binding, ChassisView, SwitchView, TopologyView, TunnelView

D1, D2, D3 = 0xD1, 0xD2, 0xD3
ALL_ONES_64 = (1 << 64) - 1


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"routing-{name}"))


N1 = Network(_id("n1"), "p", "front", "vxlan", 101)
N2 = Network(_id("n2"), "p", "back", "geneve", 102)
N3 = Network(_id("n3"), "q", "other", "vxlan", 103)  # another project, same CIDR as N2
S1 = Subnet(_id("s1"), "p", N1.id, "front-v4", 4, "10.0.1.0/24", "10.0.1.1")
S2 = Subnet(_id("s2"), "p", N2.id, "back-v4", 4, "10.0.2.0/24", "10.0.2.1")
S3 = Subnet(_id("s3"), "q", N3.id, "other-v4", 4, "10.0.2.0/24", "10.0.2.1")
ROUTER = Router(_id("r"), "p", "r")
RKEY = object_key(ROUTER.id)
R1_MAC, R2_MAC = "fa:16:3e:00:01:01", "fa:16:3e:00:02:01"


def _port(name: str, net: Network, sub: Subnet, ip: str, mac_: str, **kw: Any) -> Port:
    return Port(_id(name), net.project_id, net.id, name, mac_, (FixedIP(sub.id, ip),), **kw)


RP1 = _port("rp1", N1, S1, "10.0.1.1", R1_MAC, port_security_enabled=False,
            device_owner="network:router_interface", device_id=ROUTER.id)
RP2 = _port("rp2", N2, S2, "10.0.2.1", R2_MAC, port_security_enabled=False,
            device_owner="network:router_interface", device_id=ROUTER.id)
A = _port("a", N1, S1, "10.0.1.10", "fa:16:3e:00:01:0a")
D = _port("d", N1, S1, "10.0.1.20", "fa:16:3e:00:01:14")  # an appliance: extra route hop
B = _port("b", N2, S2, "10.0.2.10", "fa:16:3e:00:02:0a")
C = _port("c", N3, S3, "10.0.2.10", "fa:16:3e:00:03:0a")  # same IP as b, other project
IFACES = [RouterInterface(_id("ri1"), ROUTER.id, RP1.id, S1.id),
          RouterInterface(_id("ri2"), ROUTER.id, RP2.id, S2.id)]
WHERE = {A.id: (D1, 5), B.id: (D2, 6), C.id: (D1, 7), D.id: (D3, 8)}


def _chassis(d: int) -> str:
    return f"hv{d & 0xF}"


def world(router: Router = ROUTER, where: dict[str, tuple[int, int]] = WHERE,
          ifaces: list[RouterInterface] = IFACES) -> tuple[Intent, TopologyView]:
    ports = [RP1, RP2, A, B, C, D]
    intent = Intent(
        1,
        networks=MappingProxyType({n.id: n for n in (N1, N2, N3)}),
        subnets=MappingProxyType({s.id: s for s in (S1, S2, S3)}),
        ports=MappingProxyType({p.id: p for p in ports}),
        routers=MappingProxyType({router.id: router}),
        router_interfaces=MappingProxyType({ri.id: ri for ri in ifaces}))
    bindings = {pid: Binding(pid, _chassis(d), "br-int", d, ofp, f"t{ofp}")
                for pid, (d, ofp) in where.items()}
    tunnels = {}
    for d in (D1, D2, D3):
        for r in (D1, D2, D3):
            if r != d:
                for t, base in (("vxlan", 100), ("geneve", 110)):
                    tunnels[(d, _chassis(r), t)] = TunnelView(d, _chassis(r), t, base + (r & 0xF))
    topo = TopologyView(
        1, MappingProxyType({d: SwitchView(d, _chassis(d), "br-int") for d in (D1, D2, D3)}),
        MappingProxyType(bindings),
        MappingProxyType({_chassis(d): ChassisView(_chassis(d), f"172.31.0.{d & 0xF}", d)
                          for d in (D1, D2, D3)}),
        MappingProxyType(tunnels), MappingProxyType({}))
    return intent, topo


def _table(flows: Any, name: str) -> list[Flow]:
    """The table's flows, its miss flow left out."""
    return [f for f in flows.values() if f.table == name and f.priority != 0]


def _route_key(net: Network, rmac: str, cidr: str, plen: int) -> tuple:
    net_addr = ip4(cidr)
    mask = ((1 << plen) - 1) << (32 - plen)
    return ("l3", pl.L3.priorities[pl.route_priority(plen)],
            match(metadata=net.key, eth_dst=mac(rmac), eth_type=0x0800,
                  ipv4_dst=(net_addr, mask)))


def test_a_two_subnet_router_routes_both_ways_where_its_guests_are() -> None:
    intent, topo = world()
    out = compile_all(intent, topo)
    d1, d2 = out[D1].flows, out[D2].flows
    # hv1 (a on front): front -> back, TTL - 1, back's MAC, zone and key, next hop = dst
    route = d1[_route_key(N1, R1_MAC, "10.0.2.0", 24)]
    assert route.actions == (DecTtl(), SetField("eth_src", mac(R2_MAC)),
                             SetField(pl.REG_CT_ZONE, zone_of(N2)), CtClear(),
                             RegMove("ipv4_dst", pl.REG_NEXTHOP, 32))
    assert route.write_metadata == (N2.key, ALL_ONES_64) and route.goto == "l3_resolve"
    assert route.cookie == pl.cookie(pl.Owner.ROUTER, RKEY)
    # ... then b's address resolves to b's MAC, and b's MAC goes through the tunnel to hv2
    resolve = d1[("l3_resolve", pl.L3_RESOLVE.priorities["resolve"],
                  match(metadata=N2.key, **{pl.REG_NEXTHOP: ip4("10.0.2.10")}))]
    assert resolve.actions == (SetField("eth_dst", mac(B.mac_address)),)
    assert resolve.goto == "l2_lookup" and resolve.cookie == pl.cookie(pl.Owner.PORT, B.key)
    remote = d1[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
                 match(metadata=N2.key, eth_dst=mac(B.mac_address)))]
    assert remote.actions == (SetField("tunnel_id", 102), Output(112))  # geneve to hv2
    # hv2 accepts back's VNI from hv1 (which routes into it, with no port of its own there)
    tin = out[D2].flows[("classify", pl.CLASSIFY.priorities["tunnel"],
                         match(in_port=111, tunnel_id=102))]
    assert tin.write_metadata == (N2.key, ALL_ONES_64)
    # hv2 (b on back): the way back, to a on front through the VXLAN tunnel to hv1
    assert _route_key(N2, R2_MAC, "10.0.1.0", 24) in d2
    assert d2[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
               match(metadata=N1.key, eth_dst=mac(A.mac_address)))].actions == \
        (SetField("tunnel_id", 101), Output(101))
    assert ("classify", pl.CLASSIFY.priorities["tunnel"], match(in_port=102, tunnel_id=101)) \
        in out[D1].flows
    # the router's own ports are never a next hop; every flow encodes
    for flows in (d1, d2):
        assert not [f for f in _table(flows, "l3_resolve")
                    if any(a == SetField("eth_dst", mac(R1_MAC)) or
                           a == SetField("eth_dst", mac(R2_MAC)) for a in f.actions)]
        for f in flows.values():
            ofwire.encode_flow_mod(f, ofwire.ADD, 1)


def test_routes_are_compiled_only_for_the_local_networks() -> None:
    intent, topo = world()
    out = compile_all(intent, topo)
    l3_d1 = _table(out[D1].flows, "l3")
    assert {m.value for f in l3_d1 for m in f.match if m.field == "metadata"} == {N1.key}
    # hv3 has d (front): routes from front; hv2 only from back
    assert {m.value for f in _table(out[D3].flows, "l3") for m in f.match
            if m.field == "metadata"} == {N1.key}
    assert {m.value for f in _table(out[D2].flows, "l3") for m in f.match
            if m.field == "metadata"} == {N2.key}


def test_a_third_project_with_the_same_cidr_is_never_routed_into() -> None:
    intent, topo = world()
    for desired in compile_all(intent, topo).values():
        for f in desired.flows.values():
            if f.table in ("l3", "l3_resolve"):
                assert (f.write_metadata or (0, 0))[0] != N3.key
                assert ("metadata", N3.key) not in {(m.field, m.value) for m in f.match}
            if f.table == "l3":
                assert f.write_metadata is None or f.write_metadata[0] in (N1.key, N2.key)
        # c (other project, also 10.0.2.10) has no resolve flow anywhere
        assert not [f for f in desired.flows.values()
                    if f.cookie == pl.cookie(pl.Owner.PORT, C.key) and f.table == "l3_resolve"]


def test_ttl_is_decremented_once_and_ttl_1_never_forwarded() -> None:
    intent, topo = world()
    flows = compile_all(intent, topo)[D1].flows
    routes = [f for f in _table(flows, "l3") if f.goto == "l3_resolve"]
    assert routes and all(f.actions.count(DecTtl()) == 1 and f.actions[0] == DecTtl()
                          for f in routes)
    for ttl in (0, 1):
        drop = flows[("l3", pl.L3.priorities["ttl_expired"],
                      match(metadata=N1.key, eth_dst=mac(R1_MAC), eth_type=0x0800, nw_ttl=ttl))]
        assert drop.actions == () and drop.goto is None
    assert pl.L3.priorities["ttl_expired"] > max(f.priority for f in routes)
    # not routed, to the router's MAC: dropped, never flooded
    assert flows[("l3", pl.L3.priorities["router_mac"],
                  match(metadata=N1.key, eth_dst=mac(R1_MAC)))].actions == ()


def test_echo_to_every_router_address_is_answered_in_place() -> None:
    intent, topo = world()
    flows = compile_all(intent, topo)[D1].flows
    for addr in ("10.0.1.1", "10.0.2.1"):
        echo = flows[("l3", pl.L3.priorities["echo"],
                      match(metadata=N1.key, eth_dst=mac(R1_MAC), eth_type=0x0800, ip_proto=1,
                            icmpv4_type=8, ipv4_dst=ip4(addr)))]
        assert echo.actions == (RegMove("eth_src", "eth_dst", 48), SetField("eth_src", mac(R1_MAC)),
                                RegMove("ipv4_src", "ipv4_dst", 32),
                                SetField("ipv4_src", ip4(addr)), SetField("icmpv4_type", 0),
                                Output(0xFFFFFFF8))
        assert echo.cookie == pl.cookie(pl.Owner.ROUTER, RKEY)
    assert pl.L3.priorities["echo"] > pl.L3.priorities["ttl_expired"]
    # ARP for the router's addresses is answered by arp_responder like any port's
    assert ("arp_responder", pl.ARP_RESPONDER.priorities["reply"],
            match(metadata=N1.key, eth_type=0x0806, arp_op=1, arp_tpa=ip4("10.0.1.1"))) in flows


def test_longest_prefix_first_and_extra_routes() -> None:
    router = dataclasses.replace(ROUTER, routes=(
        ("10.0.2.128/25", "10.0.1.20"),  # via d, an appliance on front
        ("192.168.0.0/16", "172.16.0.1"),  # next hop on no attached subnet: ignored
        ("10.0.2.0/24", "10.0.1.20"),  # the connected route wins
    ))
    intent, topo = world(router)
    flows = compile_all(intent, topo)[D1].flows
    extra = flows[_route_key(N1, R1_MAC, "10.0.2.128", 25)]
    connected = flows[_route_key(N1, R1_MAC, "10.0.2.0", 24)]
    assert extra.priority > connected.priority
    assert extra.write_metadata == (N1.key, ALL_ONES_64)
    assert extra.actions[-1] == SetField(pl.REG_NEXTHOP, ip4("10.0.1.20"))
    assert connected.write_metadata == (N2.key, ALL_ONES_64)
    assert not [f for f in _table(flows, "l3")
                if ("ipv4_dst", ip4("192.168.0.0")) in {(m.field, m.value) for m in f.match}]
    assert ("l3_resolve", pl.L3_RESOLVE.priorities["resolve"],
            match(metadata=N1.key, **{pl.REG_NEXTHOP: ip4("10.0.1.20")})) in flows
    assert all(pl.L3.priorities[pl.route_priority(n)] < pl.L3.priorities[pl.route_priority(n + 1)]
               for n in range(32))


def test_a_router_is_only_where_its_networks_are() -> None:
    where = {A.id: (D1, 5), B.id: (D2, 6), C.id: (D3, 7)}
    intent, topo = world(where=where)
    out = compile_all(intent, topo)
    assert not _table(out[D3].flows, "l3") and not _table(out[D3].flows, "l3_resolve")
    # no tunnel-in for front or back on hv3, which neither carries nor routes into them
    assert not [f for f in out[D3].flows.values()
                if f.table == "classify" and ("tunnel_id", 101) in
                {(m.field, m.value) for m in f.match}]


def test_an_admin_down_router_drops_what_is_sent_to_it() -> None:
    intent, topo = world(dataclasses.replace(ROUTER, admin_state_up=False))
    l3 = _table(compile_all(intent, topo)[D1].flows, "l3")
    assert [f.priority for f in l3] == [pl.L3.priorities["router_mac"]]


def test_removing_the_interface_removes_the_route() -> None:
    intent, topo = world(ifaces=IFACES[:1])
    flows = compile_all(intent, topo)[D1].flows
    assert _route_key(N1, R1_MAC, "10.0.2.0", 24) not in flows
    assert not _table(flows, "l3_resolve") or all(
        ("metadata", N2.key) not in {(m.field, m.value) for m in f.match}
        for f in _table(flows, "l3_resolve"))


def test_incremental_matches_full_through_router_changes() -> None:
    compiler = Compiler()
    intent, topo = world(ifaces=[])
    compiler.update(intent, topo, None, None)
    from tests.unit.test_incremental_compile import intent_delta, topology_delta

    steps = [
        world(ifaces=IFACES[:1]),
        world(),
        world(dataclasses.replace(ROUTER, routes=(("10.0.2.128/25", "10.0.1.20"),))),
        world(where={A.id: (D3, 5), B.id: (D2, 6), C.id: (D1, 7), D.id: (D3, 8)}),
        world(dataclasses.replace(ROUTER, admin_state_up=False)),
        world(ifaces=IFACES[1:]),
        world(ifaces=[]),
    ]
    for new_intent, new_topo in steps:
        new_intent = dataclasses.replace(new_intent, generation=intent.generation + 1)
        compiler.update(new_intent, new_topo, intent_delta(intent, new_intent),
                        topology_delta(topo, new_topo))
        intent, topo = new_intent, new_topo
        assert compiler.incremental_compiles >= 1
        full = compile_all(intent, topo)
        for dpid, want in full.items():
            got = compiler.desired(dpid)
            assert got is not None and dict(got.flows) == dict(want.flows), hex(dpid)
            assert dict(got.groups) == dict(want.groups)


def test_renaming_a_router_touches_no_switch() -> None:
    from tests.unit.test_incremental_compile import intent_delta, topology_delta

    compiler = Compiler()
    intent, topo = world()
    compiler.update(intent, topo, None, None)
    renamed, _ = world(dataclasses.replace(ROUTER, name="renamed", revision_number=2))
    renamed = dataclasses.replace(renamed, generation=2)
    evaluated = compiler.units_evaluated
    assert compiler.update(renamed, topo, intent_delta(intent, renamed),
                           topology_delta(topo, topo)) == {}
    assert compiler.units_evaluated == evaluated
