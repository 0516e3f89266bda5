"""Forwarding across a fabric of OpenFlow switches joined by LLDP-discovered links.

Between switches a frame carries its network's VLAN tag. Unicast to a MAC bound on
switch D leaves switch S through a next-hop group towards D, computed from the
graph with networkx:
- several equal-cost next hops: a select group (ECMP), each bucket watching its
  port, so a dead link drops out in the data plane before the controller knows;
- one next hop: a fast-failover group, primary plus, where one exists, a backup
  towards a neighbour no farther from D than S itself. Such a neighbour's own
  shortest paths to D cannot lead back through S, so the backup cannot loop;
  and last a detour: the frame gets a second, outer VLAN tag naming the link
  (`Detour`, priority `DETOUR_PCP`) and follows a precomputed path round it to the
  link's far end, which pops that tag and handles the frame as if it had come in on
  its end of the link (a frame must not go back out of the port it came in on, and
  the far end never routes towards the near one). The far end must see the inner
  tag once the outer one is popped: OVS does only with `other_config:vlan-limit`
  of 2 (or 0), where its default of 1 drops the frame; the fabric runner sets it.
  Only about half of a real network's (switch, destination) pairs have such a
  neighbour (46% on Uninett2010); with detours every single link cut on a
  two-edge-connected fabric is repaired in the data plane, before the controller
  hears of it (the "not-via" idea of IP fast reroute, RFC 6981, on OpenFlow).
Broadcast and unknown unicast follow one loop-free tree (a BFS tree of the
fabric), pruned to the switches that have ports on the network: loops in the
cabling never storm, and no STP is needed.

A change of links reaches the switches one at a time, and a mix of old and new
state can loop. So `rollout_stages` cuts a change into steps (`FabricStage`, which
the topology hands over one by one, each once every switch runs the previous):
links added move routes to the new links nearest-the-destination first, so a
switch only turns onto a path every switch down it already follows; a flood tree
that changes shape goes through the forest both trees share. The ports of a link
held down (`standby_links`) accept fabric traffic before any path uses it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Optional

import networkx as nx

from controller import pipeline as pl
from controller.compiler.overlay import flood_group_id
from controller.flows import (
    Bucket,
    Flow,
    Group,
    GroupAction,
    Output,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    mac,
    match,
)
from controller.intent import Intent, Network, Port
from controller.ofwire.consts import OFPP_ANY, OFPP_MAX
from controller.topology import FabricStage, TopologyView

Members = Sequence[tuple[Port, Any]]
OFPVID_PRESENT = 0x1000
ETH_LLDP = 0x88CC
_ALL_ONES_64 = (1 << 64) - 1
_MAX_VLAN = 4094
# A frame on a detour carries an outer tag with this priority, which no frame of a
# network has on a fabric link (Loom pushes their tags with priority 0): so the outer
# tag's VLAN id names the detour whatever VLAN ids the networks use. (MPLS would be
# the textbook label, but OVS pushes it after the VLAN tag, and the hop that pops
# it would have to know the payload's ethertype.) The id is derived from the link,
# stable across compiles and restarts, probing upwards on a collision.
DETOUR_PCP = 7


@dataclass(frozen=True)
class Detour:
    """The way round the link that leaves `hops[0][0]` on `hops[0][1]`: each hop is
    (switch, port out). The first switch pushes the outer tag `vid`, the ones after
    forward on it, and the link's far end (`end`: switch, its port on the link) pops
    it and classifies the frame as come in on that port."""

    vid: int
    hops: tuple[tuple[int, int], ...]
    end: tuple[int, int]


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
    # Mid-rollout (FabricStage.rank): routes from switches more than `rank` hops from
    # their destination still follow `prev`, the plan of the links before the change.
    prev: Optional[FabricPlan] = None
    rank: Optional[int] = None
    # Repair step after a loss (FabricStage.repair): keep the old group where the new
    # route is the old one minus the dead ports (S -> its ports whose links are gone).
    repair: bool = False
    dead_ports: dict[int, set[int]] = field(default_factory=dict)
    # Per compile, shared by every switch: a remote MAC's flow is the same on every
    # switch that reaches its switch through the same group id, and a network's
    # pruned flood tree the same everywhere (cheaper compiles: a cut's reroute waits
    # on them).
    remote_macs: dict[tuple[str, str, int, int], Flow] = field(default_factory=dict)
    pruned: dict[str, set[frozenset[int]]] = field(default_factory=dict)
    _memo: Optional[_DetourMemo] = None
    _transit: Optional[dict[int, list[Flow]]] = None

    def _detour_memo(self) -> _DetourMemo:
        if self._memo is None:
            self._memo = _detour_memo(self.graph, self.ports_to)
        return self._memo

    def all_detours(self) -> dict[tuple[int, int], Detour]:
        """Every link's detour (what the switches on the paths need)."""
        out = {}
        for key in self._vids():
            d = self.detour(*key)
            if d is not None:
                out[key] = d
        return out

    def detour(self, src: int, port: int) -> Optional[Detour]:
        """The detour round the link on `src`'s `port`, if the fabric has one. One
        path search, the first time: a repair after a cut needs a few, not all."""
        memo = self._detour_memo()
        key = (src, port)
        if key not in memo.detours:
            peer_vid = memo.vids.get(key)
            memo.detours[key] = None if peer_vid is None else \
                _detour(self.graph, self.ports_to, src, port, *peer_vid)
        return memo.detours[key]

    def _vids(self) -> dict[tuple[int, int], tuple[int, int]]:
        return self._detour_memo().vids

    def transit_flows(self, datapath_id: int) -> list[Flow]:
        """What `datapath_id` does with frames on a detour (its own and, mid-rollout,
        those of the previous plan's groups that some switch may still use)."""
        if self._transit is None and self.prev is None:
            self._transit = self._detour_memo().transit  # the same links: built once
        if self._transit is None:
            by_vid: dict[int, dict[int, Flow]] = {}
            for one in (self, self.prev):
                for d in one.all_detours().values() if one is not None else ():
                    if d.vid not in by_vid:  # the current plan's path wins
                        by_vid[d.vid] = _detour_flows(d)
            transit: dict[int, list[Flow]] = defaultdict(list)
            for vid in sorted(by_vid):
                for dpid, flow in by_vid[vid].items():
                    transit[dpid].append(flow)
            self._transit = dict(transit)
            if self.prev is None:
                self._detour_memo().transit = self._transit
        return self._transit.get(datapath_id, [])

    def distance(self, src: int, dst: int) -> Optional[int]:
        if dst not in self.dist:
            self.dist[dst] = nx.single_source_shortest_path_length(self.graph, dst)
        return self.dist[dst].get(src)


@dataclass
class _DetourMemo:
    """Detours depend on the links alone, not on intent: worked out once per set of
    links and shared by every compile until the links change (a port created on a
    74-switch fabric would otherwise pay 10-15 ms of path searches)."""

    vids: dict[tuple[int, int], tuple[int, int]]
    detours: dict[tuple[int, int], Optional[Detour]] = field(default_factory=dict)
    transit: Optional[dict[int, list[Flow]]] = None


_DETOUR_MEMOS: OrderedDict[frozenset, _DetourMemo] = OrderedDict()
_DETOUR_MEMOS_KEPT = 64


def _detour_memo(graph: nx.Graph, ports_to: Mapping[int, Mapping[int, list[int]]]
                 ) -> _DetourMemo:
    key = frozenset((a, b, tuple(ports)) for a, peers in ports_to.items()
                    for b, ports in peers.items())
    with _STAGES_LOCK:
        memo = _DETOUR_MEMOS.get(key)
        if memo is not None:
            _DETOUR_MEMOS.move_to_end(key)
            return memo
        memo = _DETOUR_MEMOS[key] = _DetourMemo(detour_vids(ports_to))
        while len(_DETOUR_MEMOS) > _DETOUR_MEMOS_KEPT:
            _DETOUR_MEMOS.popitem(last=False)
        return memo


def detour_vids(ports_to: Mapping[int, Mapping[int, list[int]]]
                ) -> dict[tuple[int, int], tuple[int, int]]:
    """(neighbour, outer VLAN id) for every link that is a switch's only one to its
    neighbour (with parallel links the select group already spreads over the live
    ones), by (switch, port) of the near end. A fabric with more such links than
    VLAN ids (4094) leaves the rest without a detour."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    taken: set[int] = set()
    for src in sorted(ports_to):
        for peer, ports in sorted(ports_to[src].items()):
            if len(ports) != 1:
                continue
            if len(taken) == _MAX_VLAN:
                return out
            vid = 1 + (src * 0x9E3779B1 + ports[0] * 0x85EBCA77) % _MAX_VLAN
            while vid in taken:
                vid = vid % _MAX_VLAN + 1
            taken.add(vid)
            out[(src, ports[0])] = (peer, vid)
    return out


def _detour(graph: nx.Graph, ports_to: Mapping[int, Mapping[int, list[int]]], src: int,
            port: int, peer: int, vid: int) -> Optional[Detour]:
    """The shortest path between the link's two ends without it; None for a bridge."""
    try:
        path = nx.shortest_path(nx.restricted_view(graph, (), ((src, peer),)), src, peer)
    except nx.NetworkXNoPath:
        return None
    hops = tuple((a, min(ports_to[a][b])) for a, b in pairwise(path))
    return Detour(vid, hops, (peer, ports_to[peer][src][0]))


def detours(graph: nx.Graph, ports_to: Mapping[int, Mapping[int, list[int]]]
            ) -> dict[tuple[int, int], Detour]:
    """Every link's detour (see `FabricPlan.detour`)."""
    out = {}
    for (src, port), (peer, vid) in detour_vids(ports_to).items():
        d = _detour(graph, ports_to, src, port, peer, vid)
        if d is not None:
            out[(src, port)] = d
    return out


def _detour_flows(d: Detour) -> dict[int, Flow]:
    """Per switch after the first, its classify flow for the detour's tag."""
    tag = match(vlan_vid=OFPVID_PRESENT | d.vid, vlan_pcp=DETOUR_PCP)
    owner = pl.cookie(pl.Owner.FABRIC, d.hops[0][0])
    out = {dpid: pl.CLASSIFY.flow("detour", tag, actions=(Output(port),), cookie=owner)
           for dpid, port in d.hops[1:]}
    far, port = d.end
    out[far] = pl.CLASSIFY.flow("detour", tag, actions=(
        PopVlan(), SetField("in_port", port), Resubmit("classify")), cookie=owner)
    return out


def fabric_vlans(intent: Intent, network_ids: set[str]) -> dict[str, int]:
    """The VLAN each network rides on fabric links.

    VLAN networks keep their segmentation id. Others use the one the store allocated
    (`Network.fabric_vlan`, unique and clear of every VLAN network's id when it was
    made), so it does not move when another network appears. Only a network without
    one (an Intent built by hand; all 4094 in use), or whose stored VLAN a VLAN
    network created later claims as its segmentation id (the operator's id wins),
    gets the key's derived VLAN probed past the ones in use, as all did before.
    """
    taken = {n.segmentation_id for n in intent.networks.values() if n.network_type == "vlan"}
    out = {}
    probe: list[Network] = []
    for nid in sorted(network_ids):
        net = intent.networks[nid]
        if net.network_type == "vlan":
            out[nid] = net.segmentation_id
        elif net.fabric_vlan and net.fabric_vlan not in taken:
            out[nid] = net.fabric_vlan
            taken.add(net.fabric_vlan)
        else:
            probe.append(net)
    # stored VLANs of networks not in this fabric stay reserved for them
    taken |= {n.fabric_vlan for n in intent.networks.values() if n.fabric_vlan}
    for net in probe:
        vid = net.key % _MAX_VLAN + 1
        for _ in range(_MAX_VLAN):
            if vid not in taken:
                break
            vid = vid % _MAX_VLAN + 1
        taken.add(vid)
        out[net.id] = vid
    return out


Links = Mapping[tuple[int, int], tuple[int, int]]


def _links_graph(switches: frozenset[int], links: Links
                 ) -> tuple[nx.Graph, dict[int, dict[int, list[int]]]]:
    """The switch graph of `links` and each switch's ports towards each neighbour."""
    graph = nx.Graph()
    graph.add_nodes_from(sorted(switches))
    ports_to: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for (a, pa), (b, _pb) in sorted(links.items()):
        if a not in switches or b not in switches:
            continue
        graph.add_edge(a, b)
        ports_to[a][b].append(pa)
    return graph, {k: {n: sorted(p) for n, p in v.items()} for k, v in ports_to.items()}


def flood_tree(graph: nx.Graph) -> set[frozenset[int]]:
    """A BFS tree per connected component, rooted at its lowest datapath id."""
    tree_edges: set[frozenset[int]] = set()
    for component in sorted(nx.connected_components(graph), key=min):
        root = min(component)
        tree = nx.bfs_tree(graph, root, sort_neighbors=sorted)
        tree_edges |= {frozenset(e) for e in tree.edges}
    return tree_edges


def plan(intent: Intent, topo: TopologyView, members: dict[str, set[int]]) -> FabricPlan:
    graph, ports_to = _links_graph(topo.fabric_switches, topo.links)
    link_ports: dict[int, list[int]] = defaultdict(list)
    for (a, pa), (b, _pb) in topo.links.items():
        if a in topo.fabric_switches and b in topo.fabric_switches:
            link_ports[a].append(pa)
    for (a, pa), (b, _pb) in topo.standby_links.items():
        if a in topo.fabric_switches and b in topo.fabric_switches:
            link_ports[a].append(pa)  # accept before use: make before break
    if topo.fabric_stage is not None:
        for (a, pa), (b, _pb) in topo.fabric_stage.prev_links.items():
            if a in topo.fabric_switches and b in topo.fabric_switches:
                link_ports[a].append(pa)  # a detour's end takes frames "from" a dead link
    tree_edges = flood_tree(graph)
    prev: Optional[FabricPlan] = None
    dead: dict[int, set[int]] = defaultdict(set)
    stage = topo.fabric_stage
    if stage is not None:
        prev_graph, prev_ports = _links_graph(topo.fabric_switches, stage.prev_links)
        prev_tree = {e for e in flood_tree(prev_graph) if graph.has_edge(*e)}
        tree_edges = prev_tree if stage.tree == "prev" else \
            tree_edges & prev_tree if stage.tree == "meet" else tree_edges
        if stage.rank is not None or stage.repair:
            prev = FabricPlan(prev_graph, prev_ports, {}, set(), {}, {})
        for end, peer in stage.prev_links.items():
            if topo.links.get(end) != peer:
                dead[end[0]].add(end[1])
    return FabricPlan(graph, ports_to, {k: sorted(set(v)) for k, v in link_ports.items()},
                      tree_edges, fabric_vlans(intent, set(members)), members,
                      prev=prev, rank=stage.rank if stage is not None else None,
                      repair=stage is not None and stage.repair, dead_ports=dict(dead))


def _next_ports(graph: nx.Graph, ports_to: dict[int, dict[int, list[int]]],
                dist: Mapping[int, int], src: int) -> frozenset[int]:
    here = dist[src]
    return frozenset(p for n in graph[src] if dist.get(n) == here - 1
                     for p in ports_to[src][n])


_STAGES: OrderedDict[tuple[frozenset, frozenset, frozenset, bool],
                     tuple[FabricStage, ...]] = OrderedDict()
_STAGES_LOCK = threading.Lock()
_STAGES_KEPT = 512


def rollout_stages(switches: frozenset[int], before: Links, after: Links,
                   detours: bool = False) -> tuple[FabricStage, ...]:
    """`_rollout_stages`, remembered: the engine works out the loss of each link ahead
    of time (`repair_patches`), so when one is cut its plan is a lookup, not ~15 ms
    of shortest paths on the event thread before the reroute can start."""
    key = (frozenset(switches), frozenset(before.items()), frozenset(after.items()), detours)
    with _STAGES_LOCK:
        stages = _STAGES.get(key)
        if stages is not None:
            _STAGES.move_to_end(key)
            return stages
    stages = _rollout_stages(switches, before, after, detours)
    with _STAGES_LOCK:
        _STAGES[key] = stages
        while len(_STAGES) > _STAGES_KEPT:
            _STAGES.popitem(last=False)
    return stages


def _rollout_stages(switches: frozenset[int], before: Links, after: Links,
                    detours: bool = False) -> tuple[FabricStage, ...]:
    """The steps from the links `before` to the links `after` (the last step, every
    route and the tree new, is implied: no stage).

    Links only added: one step per distance d at which some switch's next hops to
    some destination change, in increasing d (a switch d hops from D turns to its new
    next hops, all d-1 hops from D, once those already have), flooding on the old
    tree. Links removed: routes change at once (the old ones cross a dead link; the
    watched buckets carried the traffic meanwhile). Either way, when the flood tree
    changes shape (edges leave it and others join), a step floods only on the edges
    the two trees share, so no mix of old and new flood groups has a cycle.

    With `detours` (the groups carry them), one cut link whose ends stay connected
    is rolled out like links added, nearest-the-destination first: the switches
    already deliver round it, and changing every broken route at once would mix old
    and new routes that loop for a moment (measured: 240 ms of loss on a 74-switch
    fabric whose detours alone lost nothing). A switch still on its old route only
    ever forwards to one closer on the old graph (a detour too: it ends one hop
    closer), a switch on its new route to one on its new route."""
    if not before:
        return ()  # nothing was forwarded: nothing to protect
    old_graph, old_ports = _links_graph(switches, before)
    new_graph, new_ports = _links_graph(switches, after)
    removed = any(after.get(a) != b for a, b in before.items())
    if removed and detours and _one_detoured_cut(before, after, new_graph):
        removed = False
    steps: list[tuple[Optional[int], str]] = []
    urgent: set[int] = set()
    if removed:
        steps.append((None, "prev"))  # the repair: broken routes only, the tree as it was
        dead: dict[int, set[int]] = defaultdict(set)
        for a, b in before.items():
            if after.get(a) != b:
                dead[a[0]].add(a[1])
        urgent = set(dead)
        for dst in sorted(new_graph):
            new_dist = nx.single_source_shortest_path_length(new_graph, dst)
            old_dist = nx.single_source_shortest_path_length(old_graph, dst)
            for src in new_dist:
                if src == dst or src in urgent or src not in old_dist:
                    continue
                if _next_ports(old_graph, old_ports, old_dist, src) - dead.get(src, set()) \
                        != _next_ports(new_graph, new_ports, new_dist, src):
                    urgent.add(src)
    else:
        ranks: set[int] = set()
        for dst in sorted(new_graph):
            new_dist = nx.single_source_shortest_path_length(new_graph, dst)
            old_dist = nx.single_source_shortest_path_length(old_graph, dst)
            for src, d in new_dist.items():
                if src == dst or src not in old_dist or d in ranks:
                    continue
                if _next_ports(old_graph, old_ports, old_dist, src) != \
                        _next_ports(new_graph, new_ports, new_dist, src):
                    ranks.add(d)
        # The last distance needs no step of its own: every route is new after it,
        # which is the step that follows (the tree's, or the final state).
        steps += [(rank, "prev") for rank in sorted(ranks)[:-1]]
    old_tree = {e for e in flood_tree(old_graph) if new_graph.has_edge(*e)}
    new_tree = flood_tree(new_graph)
    if old_tree - new_tree and new_tree - old_tree:
        steps.append((None, "meet"))
    prev = MappingProxyType(dict(before))
    return tuple(FabricStage(prev, rank, tree, i, len(steps), repair=removed and i == 1,
                             urgent=frozenset(urgent) if removed and i == 1 else frozenset())
                 for i, (rank, tree) in enumerate(steps, start=1))


def _one_detoured_cut(before: Links, after: Links, new_graph: nx.Graph) -> bool:
    """Exactly one link gone (nothing new) and its ends still connected: the groups'
    detours deliver round it until the routes change."""
    gone = [a for a, b in before.items() if after.get(a) != b]
    if len(gone) != 2 or any(a not in before for a in after):
        return False
    a, b = gone
    return before[a] == b and nx.has_path(new_graph, a[0], b[0])


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
    if plan.prev is not None and plan.rank is not None:
        now = plan.distance(src, dst)
        if now is not None and now > plan.rank and plan.prev.distance(src, dst) is not None:
            return next_hop_group(plan.prev, src, dst, group_id, fast_failover)
    if plan.prev is not None and plan.repair:
        new = _next_hop_group(plan, src, dst, group_id, fast_failover)
        old = next_hop_group(plan.prev, src, dst, group_id, fast_failover)
        if new is not None and old is not None:
            live = _primaries(old) - plan.dead_ports.get(src, set())
            if live and live == _primaries(new):
                return old  # the same route: the switch already skips the dead buckets
        return new
    return _next_hop_group(plan, src, dst, group_id, fast_failover)


def link_ports_in(groups: Mapping[int, Group]) -> frozenset[int]:
    """The ports a switch's next-hop groups send on (or watch): the links it was last
    given. After a controller restart they say which ports must be re-learnt as links
    before the switch is given a new state (`Discovery.settled`)."""
    ports: set[int] = set()
    for gid, group in groups.items():
        if gid & pl.FABRIC_GROUP_BASE == 0:
            continue
        for bucket in group.buckets:
            if bucket.watch_port < OFPP_MAX:
                ports.add(bucket.watch_port)
            ports.update(a.port for a in bucket.actions
                         if isinstance(a, Output) and a.port < OFPP_MAX)
    return frozenset(ports)


def regroup(plan: FabricPlan, datapath_id: int, groups: Mapping[int, Group],
            fast_failover: bool = True) -> dict[int, Group]:
    """`groups` (a switch's compiled groups) with every next-hop group recomputed for
    `plan`, same ids; the rest, and any destination now unreachable, kept as they are.

    The first thing pushed after a link is lost: a next-hop group is all that a
    reroute changes on most switches, and recomputing only those is several times
    cheaper than compiling the switch. The full compile follows and holds the same
    groups (it also drops what became unreachable and updates flood groups)."""
    out = dict(groups)
    for gid, group in groups.items():
        kind, dst = pl.cookie_owner(group.cookie_owner)
        if kind != "fabric" or gid & pl.FABRIC_GROUP_BASE == 0:
            continue
        new = next_hop_group(plan, datapath_id, dst, gid, fast_failover)
        if new is not None:
            out[gid] = new
    return out


def routing_plan(switches: frozenset[int], links: Links) -> FabricPlan:
    """A plan with only what next-hop groups need (graph, ports, distances)."""
    graph, ports_to = _links_graph(switches, links)
    return FabricPlan(graph, ports_to, {}, set(), {}, {})


def repair_patches(switches: frozenset[int], links: Links, lost: tuple[int, int],
                   groups: Mapping[int, Mapping[int, Group]], fast_failover: bool = True,
                   current: Optional[FabricPlan] = None) -> dict[int, dict[int, Group]]:
    """Worked out ahead: if the link at `lost` (either end) failed, the next-hop groups
    that the repair step would change, per switch that must reroute, given `groups`
    (what each switch holds now). The same groups `regroup` gives at the time of the
    cut; `current`: `routing_plan(switches, links)`, shared between calls."""
    peer = links[lost]
    after = {a: b for a, b in links.items() if a not in (lost, peer)}
    stages = rollout_stages(switches, links, after)
    if not stages or not stages[0].repair:
        return {}
    graph, ports_to = _links_graph(switches, after)
    dead: dict[int, set[int]] = defaultdict(set)
    for end in (lost, peer):
        dead[end[0]].add(end[1])
    repair = FabricPlan(graph, ports_to, {}, set(), {}, {},
                        prev=current or routing_plan(switches, links), repair=True,
                        dead_ports=dict(dead))
    out: dict[int, dict[int, Group]] = {}
    for dpid in sorted(stages[0].urgent):
        have = groups.get(dpid)
        if have is None:
            continue
        new = regroup(repair, dpid, have, fast_failover)
        out[dpid] = {gid: g for gid, g in new.items() if have.get(gid) != g}
    return out


def _primaries(group: Group) -> set[int]:
    """The ports a group forwards on while they are up (not its backup bucket)."""
    buckets = group.buckets if group.type == "select" else group.buckets[:1]
    return {a.port for b in buckets for a in b.actions if isinstance(a, Output)}


def _next_hop_group(plan: FabricPlan, src: int, dst: int, group_id: int,
                    fast_failover: bool) -> Optional[Group]:
    dist = plan.dist.get(dst)
    if dist is None:  # (FabricPlan.distance, inlined: this runs per switch and destination)
        dist = plan.dist[dst] = nx.single_source_shortest_path_length(plan.graph, dst)
    here = dist.get(src)
    neighbours = plan.ports_to.get(src)
    if not here or not neighbours:
        return None
    ports: list[int] = []
    sideways: Optional[int] = None  # a backup: a neighbour no farther from dst than src
    for n in sorted(neighbours):
        d = dist.get(n)
        if d == here - 1:
            ports += neighbours[n]  # each list is sorted (_links_graph)
        elif sideways is None and d and d <= here:
            sideways = neighbours[n][0]
    cookie = pl.cookie(pl.Owner.FABRIC, dst)
    if len(ports) >= 2:
        return Group(group_id, "select", tuple(
            Bucket((Output(p),), weight=1, watch_port=p if fast_failover else OFPP_ANY)
            for p in ports), cookie_owner=cookie)
    if not ports:
        return None
    if not fast_failover:
        return Group(group_id, "indirect", (Bucket((Output(ports[0]),),
                                                   watch_port=OFPP_ANY),), cookie_owner=cookie)
    buckets = [Bucket((Output(ports[0]),), watch_port=ports[0])]
    if sideways is not None:
        buckets.append(Bucket((Output(sideways),), watch_port=sideways))
    detour = plan.detour(src, ports[0])
    if detour is not None:
        first = detour.hops[0][1]
        # The frame may have come in on the port the detour leaves by (it was routed
        # here the short way from that side): in_port 0 (no port) lets it go back out.
        buckets.append(Bucket((PushVlan(), SetField("vlan_vid", OFPVID_PRESENT | detour.vid),
                               SetField("vlan_pcp", DETOUR_PCP), SetField("in_port", 0),
                               Output(first)), watch_port=first))
    return Group(group_id, "ff", tuple(buckets), cookie_owner=cookie)


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
    if fast_failover:
        flows += plan.transit_flows(datapath_id)
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
                key = (port.id, net_id, vid, gid)
                flow = plan.remote_macs.get(key)
                if flow is None:
                    flow = plan.remote_macs[key] = _remote_mac(port, network, tag, gid)
                flows.append(flow)
        tree = plan.pruned.get(net_id)
        if tree is None:
            tree = plan.pruned[net_id] = _pruned_tree(plan, plan.members[net_id])
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
    """The network's stored flood group id (overlay.flood_group_id), noted in `taken`."""
    gid = flood_group_id(network)
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
