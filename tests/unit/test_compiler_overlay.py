"""Overlay and provider compilation: remote MACs through the right tunnel, head-end
replication only to chassis with ports on the network, split horizon, VLAN tagging."""

from __future__ import annotations

import uuid
from types import MappingProxyType

from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.tunnels import desired_tunnels, tunnel_port_name
from controller.flows import GroupAction, Output, PopVlan, PushVlan, SetField, mac, match
from controller.intent import FixedIP, Intent, Network, Port
from controller.topology import Binding, ChassisView, SwitchView, TopologyView, TunnelView

D1, D2, D3 = 0xD1, 0xD2, 0xD3


def _id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"overlay-{n}"))


def world(net_type: str = "vxlan"):
    net = Network(_id(1), "p", "n", net_type, 77,
                  physical_network="physnet1" if net_type == "vlan" else None)
    other = Network(_id(2), "p", "m", net_type, 78,
                    physical_network="physnet1" if net_type == "vlan" else None)
    ports = [
        Port(_id(10), "p", net.id, "a", "fa:16:3e:00:00:0a", (FixedIP(_id(9), "10.0.0.10"),)),
        Port(_id(11), "p", net.id, "b", "fa:16:3e:00:00:0b", (FixedIP(_id(9), "10.0.0.11"),)),
        Port(_id(12), "p", other.id, "c", "fa:16:3e:00:00:0c", (FixedIP(_id(8), "10.0.0.12"),)),
    ]
    where = {ports[0].id: (D1, 5), ports[1].id: (D2, 6), ports[2].id: (D3, 7)}
    bindings = {pid: Binding(pid, f"hv{d & 0xF}", "br-int", d, ofp, f"t{ofp}")
                for pid, (d, ofp) in where.items()}
    switches = {d: SwitchView(d, f"hv{d & 0xF}", "br-int") for d in (D1, D2, D3)}
    chassis = {f"hv{d & 0xF}": ChassisView(f"hv{d & 0xF}", f"172.31.0.{d & 0xF}", d)
               for d in (D1, D2, D3)}
    tunnels, provider = {}, {}
    for d in (D1, D2, D3):
        provider[(d, "physnet1")] = 90
        for r in (D1, D2, D3):
            if r != d:
                tunnels[(d, f"hv{r & 0xF}", net_type)] = TunnelView(
                    d, f"hv{r & 0xF}", net_type, 100 + (r & 0xF))
    intent = Intent(1, networks=MappingProxyType({net.id: net, other.id: other}),
                    ports=MappingProxyType({p.id: p for p in ports}))
    topo = TopologyView(1, MappingProxyType(switches), MappingProxyType(bindings),
                        MappingProxyType(chassis), MappingProxyType(tunnels),
                        MappingProxyType(provider if net_type == "vlan" else {}))
    return net, other, ports, intent, topo


def test_remote_mac_goes_through_the_tunnel_to_its_chassis_with_the_vni():
    net, _, ports, intent, topo = world()
    d1 = compile_all(intent, topo)[D1]
    flow = d1.flows[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
                     match(metadata=net.key, eth_dst=mac(ports[1].mac_address)))]
    assert flow.actions == (SetField("tunnel_id", 77), Output(102))  # tunnel to hv2


def test_flood_replicates_only_to_chassis_with_ports_on_the_network():
    net, other, _, intent, topo = world()
    d1 = compile_all(intent, topo)[D1]
    flood = d1.flows[("l2_lookup", pl.L2_LOOKUP.priorities["flood"], match(metadata=net.key))]
    (gid,) = [a.group_id for a in flood.actions if isinstance(a, GroupAction)]
    buckets = d1.groups[gid].buckets
    # hv2 has a port on `net`; hv3 only on `other`: one bucket, to hv2
    assert [b.actions for b in buckets] == [(SetField("tunnel_id", 77), Output(102))]
    # nothing of `other` on hv1, which has none of its ports
    assert not [f for f in d1.flows.values()
                if ("metadata", other.key) in {(m.field, m.value) for m in f.match}]


def test_split_horizon_and_tunnel_classification():
    net, _, _, intent, topo = world()
    d1 = compile_all(intent, topo)[D1]
    tin = d1.flows[("classify", pl.CLASSIFY.priorities["tunnel"],
                    match(in_port=102, tunnel_id=77))]
    assert tin.goto == "l2_lookup" and tin.write_metadata[0] == net.key
    from_remote = d1.flows[("l2_lookup", pl.L2_LOOKUP.priorities["flood_from_remote"],
                            match(metadata=net.key, reg5=(1, 1)))]
    assert not [a for a in from_remote.actions if isinstance(a, (GroupAction, Output))]
    # a tunnel from a chassis without ports on this network is not accepted
    assert ("classify", pl.CLASSIFY.priorities["tunnel"],
            match(in_port=103, tunnel_id=77)) not in d1.flows


def test_vlan_network_leaves_tagged_through_the_provider_patch():
    net, _, ports, intent, topo = world("vlan")
    d1 = compile_all(intent, topo)[D1]
    vin = d1.flows[("classify", pl.CLASSIFY.priorities["vlan"],
                    match(in_port=90, vlan_vid=0x1000 | 77))]
    assert vin.actions[0] == PopVlan()
    out = d1.flows[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
                    match(metadata=net.key, eth_dst=mac(ports[1].mac_address)))]
    assert out.actions == (PushVlan(), SetField("vlan_vid", 0x1000 | 77), Output(90))


def test_tunnel_mesh_per_type_in_use():
    _, _, _, intent, topo = world("geneve")
    mesh = desired_tunnels(intent, topo)
    assert {t.remote_chassis for t in mesh["hv1"]} == {"hv2", "hv3"}
    assert all(t.tunnel_type == "geneve" for t in mesh["hv1"])
    assert {t.name for t in mesh["hv1"]} == {tunnel_port_name("geneve", "hv2"),
                                            tunnel_port_name("geneve", "hv3")}
    assert all(len(t.name) <= 15 for t in mesh["hv1"])
