"""Detours: every single link cut on a two-edge-connected fabric is repaired in the
data plane, before the controller hears of it.

The check walks frames through what the compiler gives each switch (the next-hop
groups and the classify flows for detour tags) with one link dead, as the switches
would: the first live bucket of a failover group, the outer tag followed hop by hop
and popped at the link's far end. No controller is involved, which is the point.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Optional

import networkx as nx
import pytest

from controller import pipeline as pl
from controller.compiler.fabric import (
    DETOUR_PCP,
    OFPVID_PRESENT,
    FabricPlan,
    detours,
    next_hop_group,
    plan,
    rollout_stages,
)
from controller.flows import Flow, Group, Output, PopVlan, PushVlan, Resubmit, SetField
from controller.intent import Intent
from controller.topology import FabricStage, TopologyView

ZOO = Path(__file__).resolve().parents[2] / "topologies" / "zoo" / "Uninett2010.graphml"
Links = dict[tuple[int, int], tuple[int, int]]


def _links_of(graph: nx.Graph) -> Links:
    nxt = dict.fromkeys(graph, 1)
    links: Links = {}
    for a, b in sorted(graph.edges):
        links[(a, nxt[a])], links[(b, nxt[b])] = (b, nxt[b]), (a, nxt[a])
        nxt[a] += 1
        nxt[b] += 1
    return links


def _plan(graph: nx.Graph, links: Links) -> FabricPlan:
    switches = frozenset(graph)
    ports = {(a, p) for a, p in links}
    view = TopologyView(1, fabric_switches=switches,
                        port_state=MappingProxyType(dict.fromkeys(ports, True)),
                        links=MappingProxyType(dict(links)))
    return plan(Intent(), view, {})


def _out(actions: tuple) -> int:
    return next(a.port for a in actions if isinstance(a, Output))


Transit = dict[int, dict[int, Flow]]


def _label(flow: Flow) -> int:
    """The detour a transit flow serves: its outer tag's VLAN id."""
    fields = dict((m.field, m.value) for m in flow.match)
    assert fields["vlan_pcp"] == DETOUR_PCP
    return fields["vlan_vid"] & ~OFPVID_PRESENT


def _walk(groups: dict[tuple[int, int], Optional[Group]], transit: Transit, links: Links,
          dead: set[tuple[int, int]], src: int, dst: int) -> tuple[bool, bool]:
    """(delivered, went on a detour) for a frame from `src` to `dst`."""
    at, label, detoured = src, None, False
    for _ in range(4 * len(transit)):
        if label is None:
            if at == dst:
                return True, detoured
            group = groups[(at, dst)]
            if group is None:
                return False, detoured
            live = [b for b in group.buckets if (at, b.watch_port) not in dead]
            if not live:
                return False, detoured
            actions = live[0].actions
            if any(isinstance(a, PushVlan) for a in actions):
                label = next(a.value for a in actions
                             if isinstance(a, SetField) and a.field == "vlan_vid") & 0xFFF
                detoured = True
        else:
            flow: Optional[Flow] = transit[at].get(label)
            if flow is None:
                return False, detoured  # a table miss: dropped
            actions = flow.actions
            if any(isinstance(a, PopVlan) for a in actions):
                # the far end: handled as come in on the (dead) link, right here
                assert SetField("in_port", next(p for (s, p) in dead if s == at)) in actions
                label = None
                continue
        port = _out(actions)
        if (at, port) in dead:
            return False, detoured
        at = links[(at, port)][0]
    raise AssertionError(f"{src} -> {dst} loops")


def _zoo() -> nx.Graph:
    return nx.convert_node_labels_to_integers(nx.Graph(nx.read_graphml(ZOO)),
                                              first_label=1, ordering="sorted")


def _every_cut_is_repaired(graph: nx.Graph) -> int:
    links = _links_of(graph)
    fp = _plan(graph, links)
    groups = {(s, d): next_hop_group(fp, s, d, d) for s in graph for d in graph if s != d}
    transit = {s: {_label(f): f for f in fp.transit_flows(s)} for s in graph}
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    detoured_pairs = 0
    for a, b in sorted(links.items()):
        if a > b or frozenset((a[0], b[0])) in bridges:
            continue
        dead = {a, b}
        cut = graph.copy()
        cut.remove_edge(a[0], b[0])
        component = {n: i for i, c in enumerate(nx.connected_components(cut)) for n in c}
        for s in graph:
            for d in graph:
                if s == d or component[s] != component[d]:
                    continue
                delivered, detoured = _walk(groups, transit, links, dead, s, d)
                assert delivered, (a, b, s, d)
                detoured_pairs += detoured
    return detoured_pairs


@pytest.mark.skipif(not ZOO.exists(), reason="the Topology Zoo graphs are not shipped")
def test_every_single_cut_of_a_74_switch_network_is_repaired_in_the_data_plane() -> None:
    """Uninett2010: without detours only the pairs with a loop-free neighbour survive
    a cut until the controller reroutes; with them, every pair does."""
    assert _every_cut_is_repaired(_zoo()) > 0  # some pairs are saved by a detour alone


def test_a_ring_needs_the_detour_the_long_way_round() -> None:
    """On a ring no neighbour is loop-free for the far side: every repair is a detour."""
    ring = nx.cycle_graph(range(1, 9))
    assert _every_cut_is_repaired(ring) > 0


def test_detours_pop_before_the_far_end_and_push_on_the_near_one() -> None:
    ring = nx.cycle_graph(range(1, 7))
    links = _links_of(ring)
    fp = _plan(ring, links)
    near = (1, min(p for (s, p), (t, _) in links.items() if s == 1 and t == 2))
    d = fp.detour(*near)
    assert d is not None and 1 <= d.vid <= 4094
    assert [h[0] for h in d.hops] == [1, 6, 5, 4, 3]  # 1 -> 2 the long way round
    flows = {s: [f for f in fp.transit_flows(s) if _label(f) == d.vid] for s in ring}
    assert not flows[1]  # the near end pushes the tag (in its group)
    (last,) = flows[2]  # the far end pops it, as if the frame had come in on the link
    assert last.actions == (PopVlan(), SetField("in_port", links[near][1]),
                            Resubmit("classify"))
    for s in (6, 5, 4, 3):
        (f,) = flows[s]
        assert not any(isinstance(a, PopVlan) for a in f.actions)
        assert f.table == "classify" and f.priority == pl.CLASSIFY.priorities["detour"]
    group = next_hop_group(fp, 1, 2, 7)
    assert group is not None and group.type == "ff"
    assert group.buckets[-1].actions[:3] == (
        PushVlan(), SetField("vlan_vid", OFPVID_PRESENT | d.vid),
        SetField("vlan_pcp", DETOUR_PCP))


def test_labels_do_not_move_when_an_unrelated_link_comes() -> None:
    """A detour's tag is derived from its link: another link joining moves no one's
    (a moved tag would rewrite groups on switches the change does not concern)."""
    graph = _zoo() if ZOO.exists() else nx.cycle_graph(range(1, 30))
    links = _links_of(graph)
    before = detours(*_graph_ports(graph, links))
    a, b = sorted(graph)[0], sorted(graph)[-1]
    bigger = graph.copy()
    bigger.add_edge(a, b)
    after = detours(*_graph_ports(bigger, _links_of(bigger)))
    new_links = _links_of(bigger)
    same = [k for k in before if k in after and links[k] == new_links[k]]
    assert len(same) > len(before) // 2
    assert all(before[k].vid == after[k].vid for k in same)
    assert len({d.vid for d in after.values()}) == len(after)  # ids are unique


def test_a_bridge_has_no_detour() -> None:
    chain = nx.path_graph(range(1, 5))
    assert detours(*_graph_ports(chain, _links_of(chain))) == {}


def _graph_ports(graph: nx.Graph, links: Links
                 ) -> tuple[nx.Graph, dict[int, dict[int, list[int]]]]:
    fp = _plan(graph, links)
    return fp.graph, fp.ports_to



def _stage_view(graph: nx.Graph, links: Links, stage: Optional[FabricStage]) -> TopologyView:
    switches = frozenset(graph)
    return TopologyView(1, fabric_switches=switches,
                        port_state=MappingProxyType(dict.fromkeys(links, True)),
                        links=MappingProxyType(dict(links)), fabric_stage=stage)


@pytest.mark.skipif(not ZOO.exists(), reason="the Topology Zoo graphs are not shipped")
def test_a_detoured_cut_is_rolled_out_in_steps_that_all_deliver() -> None:
    """With detours, a cut is not repaired everywhere at once (a moment's mix of old
    and new routes loops): routes change nearest-the-destination first, and every
    pair is delivered in every step, the cut link dead throughout."""
    graph = _zoo()
    links = _links_of(graph)
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    cuts = [a for a, b in sorted(links.items())
            if a < b and frozenset((a[0], b[0])) not in bridges][::20]
    switches = frozenset(graph)
    for a in cuts:
        b = links[a]
        after = {k: v for k, v in links.items() if k not in (a, b)}
        assert rollout_stages(switches, links, after)[0].repair  # without detours
        stages = rollout_stages(switches, links, after, detours=True)
        assert stages and not any(st.repair or st.urgent for st in stages)
        assert any(st.rank is not None for st in stages)
        views = [_stage_view(graph, links, None)] + \
            [_stage_view(graph, after, st) for st in stages] + [_stage_view(graph, after, None)]
        for view in views:
            fp = plan(Intent(), view, {})
            groups = {(s, d): next_hop_group(fp, s, d, d) for s in graph for d in graph
                      if s != d}
            transit = {s: {_label(f): f for f in fp.transit_flows(s)} for s in graph}
            for s in graph:
                for d in graph:
                    if s != d:
                        assert _walk(groups, transit, links, {a, b}, s, d)[0], (a, s, d)


def test_a_switch_lost_is_still_repaired_at_once() -> None:
    """More than one link gone at once (a switch died): detours may lead through it,
    so the routes that crossed it change in one repair step, as before."""
    ring = nx.cycle_graph(range(1, 7))
    links = _links_of(ring)
    after = {k: v for k, v in links.items() if k[0] != 3 and v[0] != 3}
    stages = rollout_stages(frozenset(ring), links, after, detours=True)
    assert stages[0].repair and stages[0].urgent


def test_detours_are_worked_out_once_per_set_of_links(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """A compile for an intent change (same links) searches no path again: detours
    depend on the links alone, and a write must not cost the fabric's size."""
    import controller.compiler.fabric as fabric_mod

    ring = nx.cycle_graph(range(101, 109))
    links = _links_of(ring)
    calls = []
    real = fabric_mod._detour
    monkeypatch.setattr(fabric_mod, "_detour", lambda *a: calls.append(a) or real(*a))
    first = _plan(ring, links)
    flows = {s: first.transit_flows(s) for s in ring}
    searched = len(calls)
    assert searched == len(links)  # one per link end, the first time
    again = _plan(ring, links)
    assert {s: again.transit_flows(s) for s in ring} == flows
    assert next_hop_group(again, 101, 105, 5) == next_hop_group(first, 101, 105, 5)
    assert len(calls) == searched
    cut = {k: v for k, v in links.items() if k[0] != 101 and v[0] != 101}
    _plan(ring, cut).transit_flows(102)
    assert len(calls) > searched  # other links: worked out afresh
