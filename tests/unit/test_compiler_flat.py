"""Flat provider networks: untagged on the physical network, beside its VLAN networks.

Three chassis. hv1 and hv2 map physnet1 (patch port 90 on br-int); hv3 does not. On
physnet1: the flat network `flat` and the VLAN network `vlan` (VLAN 77); `flat` also
has a router interface joining it to the VXLAN network `tun`, whose only port is on
hv3. Checked on both compilers (full and incremental): untagged in, untagged out,
tagged frames never forwarded on the flat network, VLAN frames still to their own
network, routing into the flat network reaches its remote ports untagged.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType

from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.incremental import Compiler
from controller.flows import GroupAction, Output, PopVlan, PushVlan, SetField, mac, match
from controller.intent import FixedIP, Intent, Network, Port, Router, RouterInterface, Subnet
from controller.intent_delta import INTENT_ATTRS, IntentDelta
from controller.topology import (
    Binding,
    ChassisView,
    SwitchView,
    TopologyDelta,
    TopologyView,
    TunnelView,
)

D1, D2, D3 = 0xD1, 0xD2, 0xD3
PATCH = 90
OFPVID_PRESENT = 0x1000


def _id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"flat-{n}"))


FLAT = Network(_id(1), "p", "flat", "flat", 1, physical_network="physnet1")
VLAN = Network(_id(2), "p", "vlan", "vlan", 77, physical_network="physnet1")
TUN = Network(_id(3), "p", "tun", "vxlan", 5001)
SUBNETS = {
    FLAT.id: Subnet(_id(21), "p", FLAT.id, "sf", 4, "10.5.0.0/24", "10.5.0.1"),
    VLAN.id: Subnet(_id(22), "p", VLAN.id, "sv", 4, "10.6.0.0/24", "10.6.0.1"),
    TUN.id: Subnet(_id(23), "p", TUN.id, "st", 4, "10.7.0.0/24", "10.7.0.1"),
}


def _port(n: int, net: Network, ip: str, **kw: object) -> Port:
    return Port(_id(n), "p", net.id, f"p{n}", f"fa:16:3e:00:00:{n:02x}",
                (FixedIP(SUBNETS[net.id].id, ip),), **kw)  # type: ignore[arg-type]


F1 = _port(10, FLAT, "10.5.0.10")  # on hv1
F2 = _port(11, FLAT, "10.5.0.11")  # on hv2
F3 = _port(12, FLAT, "10.5.0.12")  # on hv3: no patch there
V1 = _port(13, VLAN, "10.6.0.13")  # on hv1
V2 = _port(14, VLAN, "10.6.0.14")  # on hv2
T3 = _port(15, TUN, "10.7.0.15")  # on hv3
ROUTER = Router(_id(30), "p", "r")
RPORTS = [
    _port(31, FLAT, "10.5.0.1", port_security_enabled=False, device_id=ROUTER.id,
          device_owner="network:router_interface"),
    _port(32, TUN, "10.7.0.1", port_security_enabled=False, device_id=ROUTER.id,
          device_owner="network:router_interface"),
]
RIFACES = [RouterInterface(_id(40), ROUTER.id, RPORTS[0].id, SUBNETS[FLAT.id].id),
           RouterInterface(_id(41), ROUTER.id, RPORTS[1].id, SUBNETS[TUN.id].id)]
WHERE = {F1.id: (D1, 5), F2.id: (D2, 6), F3.id: (D3, 7), V1.id: (D1, 8), V2.id: (D2, 9),
         T3.id: (D3, 10)}


def make_intent(generation: int = 1, routed: bool = False,
                ports: tuple[Port, ...] = (F1, F2, F3, V1, V2, T3)) -> Intent:
    all_ports = list(ports) + (RPORTS if routed else [])
    return Intent(
        generation,
        networks=MappingProxyType({n.id: n for n in (FLAT, VLAN, TUN)}),
        subnets=MappingProxyType({s.id: s for s in SUBNETS.values()}),
        ports=MappingProxyType({p.id: p for p in all_ports}),
        routers=MappingProxyType({ROUTER.id: ROUTER} if routed else {}),
        router_interfaces=MappingProxyType({r.id: r for r in RIFACES} if routed else {}),
    )


def make_topo(version: int = 1, provider: tuple[int, ...] = (D1, D2)) -> TopologyView:
    chassis = {d: f"hv{d & 0xF}" for d in (D1, D2, D3)}
    bindings = {pid: Binding(pid, chassis[d], "br-int", d, ofp, f"t{ofp}")
                for pid, (d, ofp) in WHERE.items()}
    tunnels = {(d, chassis[r], "vxlan"): TunnelView(d, chassis[r], "vxlan", 100 + (r & 0xF))
               for d in chassis for r in chassis if r != d}
    return TopologyView(
        version,
        MappingProxyType({d: SwitchView(d, c, "br-int") for d, c in chassis.items()}),
        MappingProxyType(bindings),
        MappingProxyType({c: ChassisView(c, f"172.31.0.{d & 0xF}", d)
                          for d, c in chassis.items()}),
        MappingProxyType(tunnels),
        MappingProxyType({(d, "physnet1"): PATCH for d in provider}))


def _flow(flows, table: str, priority: str, **m: object):
    return flows[(table, pl.TABLES[table].priorities[priority], match(**m))]  # type: ignore[arg-type]


def test_untagged_frames_from_the_patch_are_the_flat_network() -> None:
    d1 = compile_all(make_intent(), make_topo())[D1]
    fin = _flow(d1.flows, "classify", "vlan", in_port=PATCH, vlan_vid=0)
    assert fin.write_metadata == (FLAT.key, (1 << 64) - 1) and fin.goto == "l2_lookup"
    assert not any(isinstance(a, (PopVlan, PushVlan)) for a in fin.actions)
    assert SetField(pl.REG_FLAGS, pl.FLAG_FROM_REMOTE) in fin.actions
    # the VLAN network on the same physical network keeps its tagged classify flow
    vin = _flow(d1.flows, "classify", "vlan", in_port=PATCH, vlan_vid=OFPVID_PRESENT | 77)
    assert vin.write_metadata == (VLAN.key, (1 << 64) - 1) and vin.actions[0] == PopVlan()
    # and nothing else on the patch: a tag of no network here misses and drops
    on_patch = [f for f in d1.flows.values() if f.table == "classify"
                and ("in_port", PATCH) in {(m.field, m.value) for m in f.match}]
    assert len(on_patch) == 2


def test_remote_ports_and_flood_leave_untagged_through_the_patch() -> None:
    d1 = compile_all(make_intent(), make_topo())[D1]
    out = _flow(d1.flows, "l2_lookup", "remote_mac", metadata=FLAT.key, eth_dst=mac(F2.mac_address))
    assert out.actions == (Output(PATCH),)
    vout = _flow(d1.flows, "l2_lookup", "remote_mac", metadata=VLAN.key,
                 eth_dst=mac(V2.mac_address))
    assert vout.actions == (PushVlan(), SetField("vlan_vid", OFPVID_PRESENT | 77), Output(PATCH))
    flood = _flow(d1.flows, "l2_lookup", "flood", metadata=FLAT.key)
    (gid,) = [a.group_id for a in flood.actions if isinstance(a, GroupAction)]
    assert [b.actions for b in d1.groups[gid].buckets] == [(Output(PATCH),)]
    # split horizon: what came from the physical network floods to local ports only
    back = _flow(d1.flows, "l2_lookup", "flood_from_remote", metadata=FLAT.key,
                 **{pl.REG_FLAGS: (pl.FLAG_FROM_REMOTE, pl.FLAG_FROM_REMOTE)})
    assert not [a for a in back.actions if isinstance(a, (GroupAction, Output))]
    # hv3 has no patch: F3 is not reachable from hv1 over the physical network
    assert ("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
            match(metadata=FLAT.key, eth_dst=mac(F3.mac_address))) not in d1.flows


def test_tagged_frames_on_the_flat_network_are_dropped() -> None:
    """A guest's own 802.1Q tag must not reach the physical network through the flat
    network: there it would be a frame of the VLAN network of that tag."""
    for dpid, d in compile_all(make_intent(), make_topo()).items():
        drop = _flow(d.flows, "l2_lookup", "tagged", metadata=FLAT.key,
                     vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT))
        assert drop.actions == () and drop.goto is None, dpid
        assert drop.priority > pl.L2_LOOKUP.priorities["remote_mac"]
        # not on the VLAN network (its guests' tags stay inside its own tag)
        assert ("l2_lookup", pl.L2_LOOKUP.priorities["tagged"],
                match(metadata=VLAN.key, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT))) \
            not in d.flows


def test_a_chassis_without_the_physical_network_floods_locally_only() -> None:
    d3 = compile_all(make_intent(), make_topo())[D3]
    flood = _flow(d3.flows, "l2_lookup", "flood", metadata=FLAT.key)
    assert not [a for a in flood.actions if isinstance(a, GroupAction)]
    assert not [f for f in d3.flows.values() if f.table == "classify"
                and ("in_port", PATCH) in {(m.field, m.value) for m in f.match}]


def test_flat_needs_no_tunnel() -> None:
    """Flat ports on two chassis: no tunnel classify or tunnel bucket for the network."""
    d1 = compile_all(make_intent(), make_topo())[D1]
    flat_flows = [f for f in d1.flows.values()
                  if ("metadata", FLAT.key) in {(m.field, m.value) for m in f.match}
                  or (f.write_metadata or (None,))[0] == FLAT.key]
    for f in flat_flows:
        assert "tunnel_id" not in {m.field for m in f.match}
        assert not [a for a in f.actions if isinstance(a, SetField) and a.field == "tunnel_id"]


def test_routing_into_the_flat_network_reaches_its_remote_ports_untagged() -> None:
    """hv3 holds the router (T3 is there) and F3; F1 and F2 are reached over physnet1
    only from chassis that map it: hv3 does not, so it has no flow to them; hv1 routes
    from the flat network to T3 over the tunnel."""
    intent, topo = make_intent(routed=True), make_topo()
    full = compile_all(intent, topo)
    d3 = full[D3]
    # resolve flows for the flat network's ports on hv3 (a router there joins it)
    for p in (F1, F2, F3):
        _flow(d3.flows, "l3_resolve", "resolve", metadata=FLAT.key,
              **{pl.REG_NEXTHOP: int.from_bytes(bytes(map(int, p.fixed_ips[0].ip_address
                                                            .split("."))), "big")})
    assert ("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
            match(metadata=FLAT.key, eth_dst=mac(F1.mac_address))) not in d3.flows
    # with hv3 on physnet1 too, its routed packets reach F1 untagged through the patch
    d3 = compile_all(intent, make_topo(provider=(D1, D2, D3)))[D3]
    out = _flow(d3.flows, "l2_lookup", "remote_mac", metadata=FLAT.key,
                eth_dst=mac(F1.mac_address))
    assert out.actions == (Output(PATCH),)


def test_a_switch_routing_into_a_flat_network_it_has_no_port_on() -> None:
    """hv2 has F2 (flat) and no port of `tun`; T3 on hv3 routes into the flat network
    from hv3: hv3 reaches F2 untagged over physnet1 (routing.reach_flows)."""
    intent = make_intent(routed=True, ports=(F2, T3))
    d3 = compile_all(intent, make_topo(provider=(D1, D2, D3)))[D3]
    out = _flow(d3.flows, "l2_lookup", "remote_mac", metadata=FLAT.key,
                eth_dst=mac(F2.mac_address))
    assert out.actions == (Output(PATCH),)


def _delta(old: Intent, new: Intent) -> IntentDelta:
    touched = {}
    for attr in INTENT_ATTRS:
        a, b = getattr(old, attr), getattr(new, attr)
        ids = frozenset(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if ids:
            touched[attr] = ids
    return IntentDelta(MappingProxyType(touched))


def _tdelta(old: TopologyView, new: TopologyView) -> TopologyDelta:
    def changed(a, b):  # type: ignore[no-untyped-def]
        return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}

    return TopologyDelta(
        bindings=frozenset(changed(old.bindings, new.bindings)),
        switches=frozenset(changed(old.switches, new.switches)),
        tunnels=frozenset(k[0] for k in changed(old.tunnels, new.tunnels)),
        provider_ports=frozenset(k[0] for k in changed(old.provider_ports, new.provider_ports)),
        chassis=frozenset(changed(old.chassis, new.chassis)))


def test_the_incremental_compiler_agrees_through_flat_changes() -> None:
    steps = [
        (make_intent(1, ports=(F1, V1)), make_topo(1)),
        (make_intent(2, ports=(F1, F2, V1)), make_topo(1)),  # a remote flat port
        (make_intent(3, routed=True), make_topo(1)),  # everything, routed
        (make_intent(3, routed=True), make_topo(2, provider=(D1, D2, D3))),  # hv3 maps it
        (make_intent(3, routed=True), make_topo(3, provider=(D1,))),  # hv2, hv3 lose it
        (make_intent(4, ports=(F2, V2)), make_topo(4, provider=(D2, D3))),
    ]
    compiler = Compiler()
    intent, topo = steps[0]
    compiler.update(intent, topo, None, None)
    for new_intent, new_topo in steps[1:]:
        compiler.update(new_intent, new_topo, _delta(intent, new_intent),
                        _tdelta(topo, new_topo))
        intent, topo = new_intent, new_topo
        full = compile_all(intent, topo)
        for dpid, want in full.items():
            got = compiler.desired(dpid)
            assert got is not None
            assert dict(got.flows) == dict(want.flows), hex(dpid)
            assert dict(got.groups) == dict(want.groups), hex(dpid)
    assert compiler.incremental_compiles == len(steps) - 1
