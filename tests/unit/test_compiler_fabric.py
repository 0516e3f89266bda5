"""Fabric compilation on a leaf-spine: ECMP select groups, failover, a loop-free flood tree."""

from __future__ import annotations

import uuid
from types import MappingProxyType

import networkx as nx

from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.fabric import link_ports_in
from controller.flows import GroupAction, Output, PushVlan, SetField, mac, match
from controller.intent import FixedIP, Intent, Network, Port
from controller.topology import TopologyView

SPINES = (0x101, 0x102)
LEAVES = (0x201, 0x202, 0x203)


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"fabric-{kind}-{n}"))


def leafspine(cut: tuple[int, int] | None = None):
    """Leaf port 1 and 2 go to the spines, ports 10+ to hosts; spine port i to leaf i."""
    ports: dict[int, dict[str, int]] = {}
    state: dict[tuple[int, int], bool] = {}
    links: dict[tuple[int, int], tuple[int, int]] = {}
    for li, leaf in enumerate(LEAVES, start=1):
        for si, spine in enumerate(SPINES, start=1):
            a, b = (leaf, si), (spine, li)
            if cut is not None and {leaf, spine} == set(cut):
                continue
            links[a], links[b] = b, a
    for sw in SPINES + LEAVES:
        names = {f"s{sw:x}-eth{n}": n for n in (1, 2, 3, 10, 11)}
        ports[sw] = MappingProxyType(names)
        for n in names.values():
            state[(sw, n)] = True
    net = Network(_id("net", 1), "p", "n", "vlan", 42, physical_network="fabric")
    other = Network(_id("net", 2), "q", "m", "vlan", 43, physical_network="fabric")
    hosts = []
    for i, (leaf, netw) in enumerate(((0x201, net), (0x202, net), (0x203, net),
                                      (0x203, other)), start=1):
        hosts.append(Port(_id("port", i), netw.project_id, netw.id, f"h{i}",
                          f"fa:16:3e:00:03:{i:02x}", (FixedIP(_id("sub", 1), f"10.0.0.{i}"),),
                          binding_profile={"local_link_information": [
                              {"switch_id": f"{leaf:016x}",
                               "port_id": f"s{leaf:x}-eth{10 + (i == 4)}"}]}))
    intent = Intent(1, networks=MappingProxyType({net.id: net, other.id: other}),
                    ports=MappingProxyType({p.id: p for p in hosts}))
    topo = TopologyView(1, fabric_switches=frozenset(SPINES + LEAVES),
                        switch_ports=MappingProxyType(ports),
                        port_state=MappingProxyType(state), links=MappingProxyType(links))
    return net, other, hosts, intent, topo


def test_leaf_to_leaf_is_ecmp_over_both_spines_with_watched_buckets():
    net, _, hosts, intent, topo = leafspine()
    d = compile_all(intent, topo)[0x201]
    flow = d.flows[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
                    match(metadata=net.key, eth_dst=mac(hosts[1].mac_address)))]
    assert flow.actions[:2] == (PushVlan(), SetField("vlan_vid", 0x1000 | 42))
    (gid,) = [a.group_id for a in flow.actions if isinstance(a, GroupAction)]
    group = d.groups[gid]
    assert group.type == "select"
    assert sorted((b.actions[0].port, b.watch_port) for b in group.buckets) == [(1, 1), (2, 2)]


def test_spine_to_leaf_is_one_hop_in_a_failover_group():
    net, _, hosts, intent, topo = leafspine()
    d = compile_all(intent, topo)[0x101]
    flow = d.flows[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
                    match(metadata=net.key, eth_dst=mac(hosts[0].mac_address)))]
    (gid,) = [a.group_id for a in flow.actions if isinstance(a, GroupAction)]
    assert d.groups[gid].type == "ff"
    assert d.groups[gid].buckets[0].actions == (Output(1),)  # spine port 1 -> leaf 0x201


def test_a_cut_link_is_routed_around():
    net, _, hosts, intent, topo = leafspine(cut=(0x201, 0x101))
    d = compile_all(intent, topo)[0x201]
    flow = d.flows[("l2_lookup", pl.L2_LOOKUP.priorities["remote_mac"],
                    match(metadata=net.key, eth_dst=mac(hosts[1].mac_address)))]
    (gid,) = [a.group_id for a in flow.actions if isinstance(a, GroupAction)]
    assert [b.actions for b in d.groups[gid].buckets] == [(Output(2),)]


def test_flood_follows_a_loop_free_tree_pruned_to_the_networks_switches():
    net, other, _, intent, topo = leafspine()
    desired = compile_all(intent, topo)
    edges = set()
    for sw, d in desired.items():
        flood = d.flows.get(("l2_lookup", pl.L2_LOOKUP.priorities["flood"],
                             match(metadata=net.key)))
        if flood is None:
            continue
        gids = [a.group_id for a in flood.actions if isinstance(a, GroupAction)]
        for gid in gids:
            for b in d.groups[gid].buckets:
                port = [a.port for a in b.actions if isinstance(a, Output)][0]
                peer = topo.links[(sw, port)][0]
                edges.add(frozenset((sw, peer)))
    g = nx.Graph(list(map(tuple, edges)))
    assert nx.is_tree(g) and set(LEAVES) <= set(g.nodes)
    # `other` has ports on one leaf only: it floods nowhere across the fabric
    d3 = desired[0x203]
    flood_other = d3.flows[("l2_lookup", pl.L2_LOOKUP.priorities["flood"],
                            match(metadata=other.key))]
    assert not [a for a in flood_other.actions if isinstance(a, GroupAction)]


def test_fabric_links_classify_tagged_frames_and_lldp_goes_to_the_controller():
    net, _, _, intent, topo = leafspine()
    d = compile_all(intent, topo)[0x101]
    assert ("classify", pl.CLASSIFY.priorities["lldp"], match(eth_type=0x88CC)) in d.flows
    tagged = d.flows[("classify", pl.CLASSIFY.priorities["fabric"],
                      match(in_port=2, vlan_vid=0x1000 | 42))]
    assert tagged.goto == "l2_lookup" and tagged.write_metadata[0] == net.key


def test_without_fast_failover_buckets_watch_nothing():
    net, _, hosts, intent, topo = leafspine()
    d = compile_all(intent, topo, fast_failover=False)[0x201]
    groups = [g for g in d.groups.values() if g.group_id & pl.FABRIC_GROUP_BASE]
    assert groups and all(b.watch_port == 0xFFFFFFFF for g in groups for b in g.buckets)


def test_the_links_a_switch_was_given_are_read_back_from_its_next_hop_groups():
    """What a restarted controller waits to re-learn: every link port of the switch,
    and neither host ports nor flood groups' outputs taken for links."""
    _, _, _, intent, topo = leafspine()
    compiled = compile_all(intent, topo)
    assert link_ports_in(compiled[0x201].groups) == {1, 2}
    assert link_ports_in(compiled[0x101].groups) == {1, 2, 3}
    cut = compile_all(*leafspine(cut=(0x201, 0x101))[3:])
    assert link_ports_in(cut[0x201].groups) == {2}
