"""Forwarding across a fabric of OpenFlow switches joined by LLDP-discovered links.

Between switches a frame carries its network's VLAN tag. Unicast to a MAC bound on
switch D leaves switch S through a next-hop group towards D, computed from the
graph with networkx:
- several equal-cost next hops: a select group (ECMP), each bucket watching its
  port, so a dead link drops out in the data plane before the controller knows;
- one next hop: a fast-failover group, primary plus, where one exists, a backup
  towards a neighbour no farther from D than S itself. Such a neighbour's own
  shortest paths to D cannot lead back through S, so the backup cannot loop.
Broadcast and unknown unicast follow one loop-free tree (a BFS tree of the
fabric), pruned to the switches that have ports on the network: loops in the
cabling never storm, and no STP is needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import networkx as nx

from controller import pipeline as pl
from controller.flows import (
    Bucket,
    Flow,
    Group,
    GroupAction,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    mac,
    match,
)
from controller.intent import Intent, Network, Port
from controller.topology import TopologyView

Members = Sequence[tuple[Port, Any]]
OFPVID_PRESENT = 0x1000
ETH_LLDP = 0x88CC
_ALL_ONES_64 = (1 << 64) - 1
_MAX_VLAN = 4094


@dataclass
class FabricPlan:
    """Everything about the fabric that does not depend on which switch is compiled."""

    graph: nx.Graph
    ports_to: dict[int, dict[int, list[int]]]  # S -> neighbour -> S's ports towards it
    link_ports: dict[int, list[int]]  # S -> its ports that face another switch
    tree_edges: set[frozenset[int]]
    vlan: dict[str, int]  # network id -> fabric VLAN
    members: dict[str, set[int]]  # network id -> fabric switches with its ports
    dist: dict[int, dict[int, int]] = field(default_factory=dict)  # D -> S -> hops

    def distance(self, src: int, dst: int) -> Optional[int]:
        if dst not in self.dist:
            self.dist[dst] = nx.single_source_shortest_path_length(self.graph, dst)
        return self.dist[dst].get(src)


def fabric_vlans(intent: Intent, network_ids: set[str]) -> dict[str, int]:
    """VLAN networks keep their id; others get a stable one that is not in use."""
    taken = {n.segmentation_id for n in intent.networks.values() if n.network_type == "vlan"}
    out = {}
    for nid in sorted(network_ids):
        net = intent.networks[nid]
        if net.network_type == "vlan":
            out[nid] = net.segmentation_id
            continue
        vid = net.key % _MAX_VLAN + 1
        while vid in taken:
            vid = vid % _MAX_VLAN + 1
        taken.add(vid)
        out[nid] = vid
    return out


def plan(intent: Intent, topo: TopologyView, members: dict[str, set[int]]) -> FabricPlan:
    graph = nx.Graph()
    graph.add_nodes_from(sorted(topo.fabric_switches))
    ports_to: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    link_ports: dict[int, list[int]] = defaultdict(list)
    for (a, pa), (b, _pb) in sorted(topo.links.items()):
        if a not in topo.fabric_switches or b not in topo.fabric_switches:
            continue
        graph.add_edge(a, b)
        ports_to[a][b].append(pa)
        link_ports[a].append(pa)
    tree_edges: set[frozenset[int]] = set()
    for component in sorted(nx.connected_components(graph), key=min):
        root = min(component)
        tree = nx.bfs_tree(graph, root, sort_neighbors=sorted)
        tree_edges |= {frozenset(e) for e in tree.edges}
    return FabricPlan(graph, {k: dict(v) for k, v in ports_to.items()},
                      {k: sorted(v) for k, v in link_ports.items()}, tree_edges,
                      fabric_vlans(intent, set(members)), members)


def _pruned_tree(plan: FabricPlan, members: set[int]) -> set[frozenset[int]]:
    """The tree's edges that lie between members of one network."""
    edges = {e for e in plan.tree_edges}
    while True:
        degree: dict[int, int] = defaultdict(int)
        for e in edges:
            for n in e:
                degree[n] += 1
        leaves = {n for n, d in degree.items() if d == 1 and n not in members}
        if not leaves:
            return edges
        edges = {e for e in edges if not (e & leaves)}


def next_hop_group(plan: FabricPlan, src: int, dst: int, group_id: int,
                   fast_failover: bool = True) -> Optional[Group]:
    here = plan.distance(src, dst)
    if here is None or here == 0:
        return None
    neighbours = plan.ports_to.get(src, {})
    best = [n for n in sorted(neighbours) if plan.distance(n, dst) == here - 1]
    ports = [p for n in best for p in sorted(neighbours[n])]
    watch = (lambda p: p) if fast_failover else (lambda p: 0xFFFFFFFF)
    if len(ports) >= 2:
        return Group(group_id, "select", tuple(
            Bucket((Output(p),), weight=1, watch_port=watch(p)) for p in ports),
            cookie_owner=pl.cookie(pl.Owner.FABRIC, dst))
    if not ports:
        return None
    buckets = [Bucket((Output(ports[0]),), watch_port=watch(ports[0]))]
    if fast_failover:
        sideways = [n for n in sorted(neighbours) if n not in best
                    and (plan.distance(n, dst) or 1 << 30) <= here]
        buckets += [Bucket((Output(p),), watch_port=p)
                    for n in sideways for p in sorted(neighbours[n])][:1]
    return Group(group_id, "ff" if fast_failover else "indirect", tuple(buckets),
                 cookie_owner=pl.cookie(pl.Owner.FABRIC, dst))


def fabric_switch_state(intent: Intent, plan: FabricPlan, datapath_id: int,
                        placement_by_network: Mapping[str, Mapping[int, Members]],
                        local_ofports: dict[str, list[int]], zones: dict[str, int],
                        taken_group_ids: set[int], fast_failover: bool = True
                        ) -> tuple[list[Flow], list[Group], dict[str, Optional[int]]]:
    """Flows and groups one fabric switch needs for every network in the fabric.

    Returns the flood group per network too, for the caller's flood flows.
    """
    flows: list[Flow] = [pl.CLASSIFY.flow(
        "lldp", match(eth_type=ETH_LLDP), actions=(Output(pl.OFPP_CONTROLLER, 0xFFFF),),
        cookie=pl.cookie(pl.Owner.FABRIC, datapath_id))]
    groups: list[Group] = []
    nh_groups: dict[int, Optional[int]] = {}
    flood_groups: dict[str, Optional[int]] = {}
    my_link_ports = plan.link_ports.get(datapath_id, [])

    def nh(dst: int) -> Optional[int]:
        if dst not in nh_groups:
            gid = pl.FABRIC_GROUP_BASE | (dst & pl.GROUP_ID_MASK)
            while gid in taken_group_ids:
                gid = pl.FABRIC_GROUP_BASE | ((gid + 1) & pl.GROUP_ID_MASK)
            g = next_hop_group(plan, datapath_id, dst, gid, fast_failover)
            if g is not None:
                taken_group_ids.add(gid)
                groups.append(g)
            nh_groups[dst] = gid if g is not None else None
        return nh_groups[dst]

    for net_id in sorted(plan.members):
        network = intent.networks[net_id]
        vid = OFPVID_PRESENT | plan.vlan[net_id]
        zone = zones[net_id]
        owner = pl.cookie(pl.Owner.NETWORK, network.key)
        for p in my_link_ports:
            flows.append(pl.CLASSIFY.flow(
                "fabric", match(in_port=p, vlan_vid=vid),
                actions=(PopVlan(), SetField(pl.REG_CT_ZONE, zone)),
                write_metadata=(network.key, _ALL_ONES_64), goto="l2_lookup", cookie=owner))
        tag = (PushVlan(), SetField("vlan_vid", vid))
        for dst, members in sorted(placement_by_network.get(net_id, {}).items()):
            if dst == datapath_id or dst not in plan.graph:
                continue
            gid = nh(dst)
            if gid is None:
                continue  # unreachable now: the flood tree may still carry BUM
            for port, _ in members:
                flows.append(_remote_mac(port, network, tag, gid))
        tree = _pruned_tree(plan, plan.members[net_id])
        tree_ports = [min(plan.ports_to[datapath_id][n])
                      for e in sorted(tree, key=sorted) if datapath_id in e
                      for n in e if n != datapath_id]
        gid = None
        if tree_ports:
            gid = _flood_group_id(network, taken_group_ids)
            groups.append(Group(gid, "all", tuple(Bucket((*tag, Output(p))) for p in
                                                  sorted(tree_ports)), cookie_owner=owner))
        if gid is not None or local_ofports.get(net_id):
            flood_groups[net_id] = gid
    return flows, groups, flood_groups


def _remote_mac(port: Port, network: Network, tag: tuple, gid: int) -> Flow:
    return pl.L2_LOOKUP.flow(
        "remote_mac", match(metadata=network.key, eth_dst=mac(port.mac_address)),
        actions=(*tag, GroupAction(gid)), cookie=pl.cookie(pl.Owner.PORT, port.key))


def _flood_group_id(network: Network, taken: set[int]) -> int:
    gid = (network.key & pl.GROUP_ID_MASK) or 1
    while gid in taken:
        gid = (gid + 1) & pl.GROUP_ID_MASK or 1
    taken.add(gid)
    return gid


def fabric_bindings(intent: Intent, topo: TopologyView) -> list[tuple[Port, int, int, str]]:
    """Ports bound by Neutron's baremetal convention: (port, dpid, ofport, port name).

    binding:profile {"local_link_information": [{"switch_id": dpid, "port_id": name}]}
    """
    out = []
    for port in sorted(intent.ports.values(), key=lambda p: p.id):
        infos = port.binding_profile.get("local_link_information") if port.binding_profile \
            else None
        if not isinstance(infos, list):
            continue
        for info in infos:
            if not isinstance(info, dict):
                continue
            try:
                dpid = int(str(info.get("switch_id", "")).replace(":", ""), 16)
            except ValueError:
                continue
            name = str(info.get("port_id", ""))
            ofport = topo.switch_ports.get(dpid, {}).get(name)
            if ofport is not None and dpid in topo.fabric_switches:
                out.append((port, dpid, ofport, name))
                break
    return out
