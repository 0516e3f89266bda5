"""LLDP discovery: the link table's timeouts and hold-downs (time is injected), the
fast path for real cuts, and the staged rollout of a link change (no mix of old and
new forwarding state loops)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from pathlib import Path
from types import MappingProxyType

import networkx as nx
import pytest
from os_ken.lib.packet import ethernet, lldp, packet

from controller import discovery as disc
from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.fabric import (
    flood_tree,
    next_hop_group,
    plan,
    regroup,
    repair_patches,
    rollout_stages,
    routing_plan,
)
from controller.discovery import (
    Discovery,
    LinkTable,
    lldp_frame,
    parse_lldp,
    parse_probe,
    restamp,
)
from controller.flows import Group, Output
from controller.intent import FixedIP, Intent, Network, Port
from controller.topology import FabricStage, Topology, TopologyView

A, B, C = (1, 1), (2, 1), (3, 1)  # endpoints (dpid, port)
ZOO = Path(__file__).resolve().parents[2] / "topologies" / "zoo" / "Uninett2010.graphml"


def heard_both_ways(table: LinkTable, a: tuple[int, int], b: tuple[int, int],
                    now: float) -> list[disc.LinkEvent]:
    for end in (a, b):
        table.sent(end, now)
    return table.observe(a, b, now) + table.observe(b, a, now)


def probe_round(table: LinkTable, ends: list[tuple[int, int]], now: float,
                heard: bool = True) -> None:
    """One probe out of each end; heard by its peer (the other end) or lost."""
    for end in ends:
        table.sent(end, now)
    if heard:
        table.observe(ends[0], ends[1], now)
        table.observe(ends[1], ends[0], now)


# ---- frames


def test_probe_frames_round_trip_on_the_fast_and_the_generic_path() -> None:
    frame = lldp_frame(0x0000000003010002, 17, sent_at=12.5)
    assert parse_lldp(frame) == (0x0000000003010002, 17)
    assert parse_probe(frame) == (0x0000000003010002, 17, 12.5)
    assert parse_probe(restamp(b"packet-out header" + frame, 99.25)[17:]).sent_at == 99.25
    # the generic path (a chassis id the fast path does not expect) reads the same
    other = lldp.lldp(tlvs=(
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_MAC_ADDRESS, chassis_id=b"dpid:" + b"0" * 15
                       + b"7"),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=b"3"),
        lldp.TTL(ttl=5),
        lldp.OrganizationallySpecific(oui=b"LOM", subtype=1, info=disc.stamp(4.0)),
        lldp.End()))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=disc.LLDP_MAC_NEAREST_BRIDGE,
                                       ethertype=disc.ETH_TYPE_LLDP))
    pkt.add_protocol(other)
    pkt.serialize()
    assert parse_probe(bytes(pkt.data)) == (7, 3, 4.0)
    assert parse_lldp(frame[:12] + b"\x08\x00" + frame[14:]) is None  # not LLDP
    assert parse_lldp(b"\x00" * 60) is None


# ---- the link table (pure)


def test_a_link_needs_both_directions() -> None:
    t = LinkTable()
    t.sent(A, 0.0)
    assert t.observe(A, B, 0.0) == []
    assert t.links() == {}
    events = t.observe(B, A, 0.1)
    assert [e.kind for e in events] == ["learned"]
    assert t.links() == {A: B, B: A}


# A triangle: switch 1 and 2 joined by A-B (the link under test), and both joined to
# switch 3, whose links vouch for 1 sending and 2 receiving.
A2, C1, B2, C2 = (1, 2), (3, 1), (2, 2), (3, 2)
TRIANGLE = [(A, B), (A2, C1), (B2, C2)]


def triangle_round(table: LinkTable, now: float, quiet: set = frozenset(),
                   send: bool = True) -> None:
    """One probe round at `now`: every probe sent (stamped `now`) and heard, but over
    the links in `quiet`."""
    for a, b in TRIANGLE:
        for src, dst in ((a, b), (b, a)):
            if send:
                table.sent(src, now)
            if (a, b) not in quiet and (src[0], dst[0]) not in quiet:
                table.observe(src, dst, now + 0.01, sent_at=now)


def test_a_link_survives_probe_silence_shorter_than_the_timeout() -> None:
    t = LinkTable()
    triangle_round(t, 0.0)
    now = 0.0
    while now < disc.LINK_TIMEOUT - 0.5:  # every A-B probe lost, but not for long enough
        now += disc.PROBE_INTERVAL
        triangle_round(t, now, quiet={(A, B)})
        assert t.expire(now + 0.02) == []
    assert t.links()[A] == B
    assert disc.LINK_TIMEOUT >= 4 * disc.PROBE_INTERVAL * 2  # far above the old 2 s


def test_a_silent_link_is_lost_after_the_timeout_with_the_reason() -> None:
    t = LinkTable()
    triangle_round(t, 0.0)
    now = 0.0
    events: list[disc.LinkEvent] = []
    while not events:
        now += disc.PROBE_INTERVAL
        triangle_round(t, now, quiet={(A, B)})
        events = t.expire(now + 0.02)
        assert now < disc.LINK_TIMEOUT + 2 * disc.PROBE_INTERVAL
    assert [e.kind for e in events] == ["lost"]
    assert "LLDP timeout" in events[0].reason and "both switches carried" in events[0].reason
    assert A not in t.links() and t.links()[A2] == C1


def test_nothing_heard_anywhere_is_a_stall_not_a_cut() -> None:
    """The controller read no packet-in for a while (or every switch was busy): every
    link went quiet at once, and none is blamed for it."""
    t = LinkTable()
    triangle_round(t, 0.0)
    for k in range(1, int(disc.LINK_TIMEOUT_ALONE / 2)):
        triangle_round(t, float(k), quiet={(A, B), (A2, C1), (B2, C2)})
        assert t.expire(k + 0.02) == []
    # the backlog arrives: stamped with their send times, the probes end the stall
    triangle_round(t, disc.LINK_TIMEOUT_ALONE / 2)
    assert t.expire(disc.LINK_TIMEOUT_ALONE / 2 + 0.02) == []
    assert len(t.links()) == 6


def test_a_switch_that_sends_nothing_does_not_lose_its_links() -> None:
    """Switch 1's packet-outs are stuck (a long push ahead of them): its links are
    quiet, but nothing says the cables failed."""
    t = LinkTable()
    triangle_round(t, 0.0)
    for k in range(1, 3 * int(disc.LINK_TIMEOUT)):
        triangle_round(t, float(k), quiet={(1, 2), (1, 3)})  # nothing *from* switch 1
        assert t.expire(k + 0.02) == []
    assert t.links()[A] == B


def test_a_link_nothing_vouches_for_falls_back_to_a_plain_timeout() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    now = 0.0
    while now < disc.LINK_TIMEOUT_ALONE - 1:
        now += disc.PROBE_INTERVAL
        probe_round(t, [A, B], now, heard=False)
        assert t.expire(now) == []
    now += 2 * disc.PROBE_INTERVAL
    probe_round(t, [A, B], now, heard=False)
    events = t.expire(now)
    assert [e.kind for e in events] == ["lost"] and "probes unanswered" in events[0].reason


def test_a_congested_link_that_still_delivers_frames_is_kept() -> None:
    """Probes over A-B go missing, but B's port keeps counting frames in."""
    t = LinkTable()
    triangle_round(t, 0.0)
    sampled = set()
    for k in range(1, 4 * int(disc.LINK_TIMEOUT)):
        triangle_round(t, float(k), quiet={(A, B)})
        for end in t.suspects(k + 0.02):
            sampled.add(end)
            t.rx_sample(end, 1000 + 50 * k, k + 0.02)
        assert t.expire(k + 0.03) == []
    assert sampled == {A, B}
    assert t.links()[A] == B


def test_a_link_that_delivers_nothing_is_lost_despite_the_counters() -> None:
    t = LinkTable()
    triangle_round(t, 0.0)
    events: list[disc.LinkEvent] = []
    for k in range(1, 3 * int(disc.LINK_TIMEOUT)):
        triangle_round(t, float(k), quiet={(A, B)})
        for end in t.suspects(k + 0.02):
            assert t.rx_sample(end, 1000, k + 0.02) == []  # the counter stands still
        events += t.expire(k + 0.03)
    assert {e.kind for e in events} == {"lost"} and A not in t.links()


def test_with_counters_a_silent_link_waits_for_them_to_stand_still() -> None:
    """The controller's table (confirm_with_rx): LLDP silence alone, however long the
    switches vouch for themselves, loses no link until its counter is seen not moving
    (or LINK_TIMEOUT_ALONE passes with no counter at all)."""
    t = LinkTable(confirm_with_rx=True)
    triangle_round(t, 0.0)
    k = 0
    for k in range(1, int(disc.LINK_TIMEOUT) + 5):  # no counters read at all
        triangle_round(t, float(k), quiet={(A, B)})
        assert t.expire(k + 0.03) == []
    for end in t.suspects(k + 0.02):
        t.rx_sample(end, 1000, k + 0.02)  # a baseline...
    assert t.expire(k + 0.03) == []
    k += 1
    triangle_round(t, float(k), quiet={(A, B)})
    for end in t.suspects(k + 0.02):
        t.rx_sample(end, 1000, k + 0.02)  # ...and it stood still
    assert {e.kind for e in t.expire(k + 0.03)} == {"lost"}


def test_a_counter_baseline_from_before_the_silence_proves_nothing() -> None:
    t = LinkTable()
    t.rx_sample(B, 10, 0.0)  # sampled while the link was still heard
    triangle_round(t, 1.0)
    assert t.rx_sample(B, 500, 9.0) == []


def test_discovery_logs_a_kept_link(caplog: pytest.LogCaptureFixture) -> None:
    d = Discovery(_topology(1, 2, 3), lambda: None)
    caplog.set_level(logging.INFO, logger="controller.discovery")
    triangle_round(d.table, 0.0)
    for k in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        triangle_round(d.table, k, quiet={(A, B)})
        for dpid, ports in d.suspects(k + 0.02).items():
            d.rx_counters(dpid, {p: int(100 * k) for p in ports}, k + 0.02)
    assert "fabric link 0x1:1 <-> 0x2:1 kept: no LLDP from 0x1:1" in caplog.text
    assert caplog.text.count(" kept: ") == 2  # once per direction and episode


def test_silence_while_no_probe_could_be_sent_is_not_the_links_fault() -> None:
    """The controller skipped probes (a busy switch's queue was full): no timeout."""
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    assert t.expire(10 * disc.LINK_TIMEOUT_ALONE) == []
    for k in range(disc.MIN_MISSED_PROBES - 1):
        probe_round(t, [A, B], 10 * disc.LINK_TIMEOUT_ALONE + k, heard=False)
    assert t.expire(10 * disc.LINK_TIMEOUT_ALONE + disc.MIN_MISSED_PROBES) == []
    assert t.links() == {A: B, B: A}


def test_port_down_removes_the_link_at_once() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    events = t.port_down(B, 0.05)
    assert [(e.kind, e.reason) for e in events] == [("lost", "port down")]
    assert t.links() == {} and t.standby() == {}


def test_a_restored_link_is_held_down_then_used() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    t.port_down(A, 5.0)
    events = heard_both_ways(t, A, B, 6.0)
    assert [e.kind for e in events] == ["held"]
    assert t.links() == {} and t.standby() == {A: B, B: A}
    assert t.promote(6.0 + disc.HOLD_DOWN - 0.1) == []  # not up long enough
    probe_round(t, [A, B], 6.0 + disc.HOLD_DOWN)
    events = t.promote(6.0 + disc.HOLD_DOWN)
    assert [e.kind for e in events] == ["restored"]
    assert t.links() == {A: B, B: A} and t.standby() == {}


def test_a_held_link_waits_until_its_switches_accept_traffic_on_it() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    t.port_down(A, 1.0)
    heard_both_ways(t, A, B, 2.0)
    later = 2.0 + disc.HOLD_DOWN
    probe_round(t, [A, B], later)
    assert t.promote(later, ready=lambda _link: False) == []
    assert t.promote(later, ready=lambda _link: True) != []


def test_a_held_link_not_heard_lately_is_not_used() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    t.port_down(A, 1.0)
    heard_both_ways(t, A, B, 2.0)
    assert t.promote(2.0 + disc.HOLD_DOWN + disc.FRESH + 1) == []  # silent since 2.0
    probe_round(t, [A, B], 2.0 + disc.HOLD_DOWN + disc.FRESH + 1)
    assert t.promote(2.0 + disc.HOLD_DOWN + disc.FRESH + 1) != []


def test_a_flapping_link_is_held_longer_each_time_then_forgiven() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    holds = []
    now = 1.0
    for _ in range(6):
        t.port_down(A, now)
        holds.append(t.hold_for(disc.link_key(A, B), now))
        now += 0.5
        heard_both_ways(t, A, B, now)
        now += holds[-1] + 0.1
        probe_round(t, [A, B], now)
        assert t.promote(now) != []
    assert holds[0] == pytest.approx(disc.HOLD_DOWN)
    assert all(later > earlier for earlier, later in zip(holds, holds[1:4], strict=False))
    assert max(holds) <= disc.HOLD_DOWN_MAX
    # quiet for a long time: back to the base hold-down
    assert t.hold_for(disc.link_key(A, B), now + 20 * disc.FLAP_HALF_LIFE) == \
        pytest.approx(disc.HOLD_DOWN, rel=0.01)


def test_a_switch_disconnecting_is_not_a_flap() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    events = t.switch_gone(2, 1.0)
    assert [(e.kind, e.reason) for e in events] == [("lost", "switch disconnected")]
    assert t.hold_for(disc.link_key(A, B), 1.0) == pytest.approx(disc.HOLD_DOWN)


def test_a_recabled_port_drops_its_old_link() -> None:
    t = LinkTable()
    heard_both_ways(t, A, B, 0.0)
    t.sent(C, 1.0)
    events = t.observe(C, B, 1.0)  # B now hears C
    assert [e.kind for e in events] == ["lost"]
    assert "now hears" in events[0].reason
    assert t.links() == {}


# ---- Discovery over a real Topology


def _topology(*dpids: int, ports: int = 3) -> Topology:
    topo = Topology()
    for d in dpids:
        topo.switch_up(d, {p: (f"s{d}-eth{p}", True) for p in range(1, ports + 1)})
    return topo


def test_discovery_logs_and_publishes_links_and_cuts(caplog: pytest.LogCaptureFixture) -> None:
    topo = _topology(1, 2)
    changes: list[int] = []
    d = Discovery(topo, lambda: changes.append(1))
    caplog.set_level(logging.INFO, logger="controller.discovery")
    d.probe_sent(1, [1], 0.0)
    d.probe_sent(2, [1], 0.0)
    assert d.lldp_in(2, 1, lldp_frame(1, 1), 0.0)
    assert d.lldp_in(1, 1, lldp_frame(2, 1), 0.0)
    assert not d.lldp_in(1, 1, b"\x00" * 60, 0.0)
    assert dict(topo.view().links) == {A: B, B: A}
    d.port_down(1, 1, 1.0)
    assert dict(topo.view().links) == {}
    assert len(changes) == 2
    text = caplog.text
    assert "fabric link 0x1:1 <-> 0x2:1 learned" in text
    assert "fabric link 0x1:1 <-> 0x2:1 lost: port down" in text


def test_discovery_uses_a_held_link_only_once_both_switches_run_its_standby() -> None:
    topo = _topology(1, 2)
    installed: dict[int, int] = {}

    def runs(dpids: object, version: int) -> bool:
        return all(installed.get(x, -1) >= version for x in dpids)  # type: ignore[attr-defined]

    d = Discovery(topo, lambda: None, installed=runs)
    for now in (0.0, 1.0):
        d.probe_sent(1, [1], now)
        d.probe_sent(2, [1], now)
        d.lldp_in(2, 1, lldp_frame(1, 1), now)
        d.lldp_in(1, 1, lldp_frame(2, 1), now)
        if now == 0.0:
            d.port_down(1, 1, 0.5)
    view = topo.view()
    assert dict(view.links) == {} and dict(view.standby_links) == {A: B, B: A}
    later = 1.0 + disc.HOLD_DOWN
    d.probe_sent(1, [1], later)
    d.lldp_in(2, 1, lldp_frame(1, 1), later)
    d.lldp_in(1, 1, lldp_frame(2, 1), later)
    d.tick(later)
    assert dict(topo.view().links) == {}  # switches have not installed the standby yet
    installed.update({1: view.version, 2: view.version})
    d.tick(later + 0.01)
    assert dict(topo.view().links) == {A: B, B: A}
    assert dict(topo.view().standby_links) == {}


def test_a_port_up_is_probed_at_once() -> None:
    d = Discovery(_topology(1), lambda: None)
    d.port_up(1, 2)
    d.switch_up(1, [1, 3])
    assert d.take_urgent() == [(1, 1), (1, 2), (1, 3)]
    assert d.take_urgent() == []


# ---- staged rollout


def _ring(n: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Switches 1..n in a ring: port 1 to the next switch, port 2 to the previous."""
    links = {}
    for i in range(1, n + 1):
        j = i % n + 1
        links[(i, 1)], links[(j, 2)] = (j, 2), (i, 1)
    return links


def _without(links: dict, a: tuple[int, int]) -> dict:
    b = links[a]
    return {k: v for k, v in links.items() if k not in (a, b)}


def test_topology_stages_a_restored_link_and_not_a_first_one() -> None:
    topo = _topology(*range(1, 9))
    ring = _ring(8)
    cut = _without(ring, (1, 2))  # the ring opened between 8 and 1: a chain
    assert topo.set_links(cut, staged=False)
    assert topo.view().fabric_stage is None  # a fabric coming up: no steps
    topo.take_touched()
    topo.set_links(ring)  # the link comes back
    stages = []
    while (stage := topo.view().fabric_stage) is not None:
        stages.append(stage)
        assert dict(stage.prev_links) == cut
        assert dict(topo.view().links) == ring  # the view shows the target all along
        assert topo.advance_stage(topo.view().version)
    assert [s.rank for s in stages] == sorted(s.rank for s in stages if s.rank is not None) \
        + [None] * sum(1 for s in stages if s.rank is None)
    assert stages and stages[0].rank == 1
    assert not topo.advance_stage(topo.view().version)
    assert topo.take_touched() == {1, 8}


def test_a_cut_changes_routes_at_once() -> None:
    topo = _topology(*range(1, 9))
    ring = _ring(8)
    topo.set_links(ring, staged=False)
    topo.port_changed(3, 1, "s3-eth1", False)  # the cut: a port went down
    stage = topo.view().fabric_stage
    assert (3, 1) not in topo.view().links
    assert stage is None or stage.rank is None


def test_advance_stage_refuses_a_stale_version() -> None:
    topo = _topology(*range(1, 9))
    topo.set_links(_without(_ring(8), (1, 2)), staged=False)
    topo.set_links(_ring(8))
    version = topo.view().version
    topo.port_changed(5, 4, "s5-eth4", True)  # something else changed meanwhile
    assert not topo.advance_stage(version)


def _zoo_links() -> tuple[frozenset[int], dict[tuple[int, int], tuple[int, int]], nx.Graph]:
    graph = nx.convert_node_labels_to_integers(nx.Graph(nx.read_graphml(ZOO)),
                                               first_label=1, ordering="sorted")
    nxt = dict.fromkeys(graph, 1)
    links = {}
    for a, b in sorted(graph.edges):
        links[(a, nxt[a])], links[(b, nxt[b])] = (b, nxt[b]), (a, nxt[a])
        nxt[a] += 1
        nxt[b] += 1
    return frozenset(graph), links, graph


def _view(switches: frozenset[int], links: dict, stage: FabricStage | None = None
          ) -> TopologyView:
    ports = {(a, p) for a, p in links} | {(d, 99) for d in switches}
    return TopologyView(1, fabric_switches=switches,
                        port_state=MappingProxyType(dict.fromkeys(ports, True)),
                        links=MappingProxyType(dict(links)), fabric_stage=stage)


def _arcs(view: TopologyView, dst: int) -> set[tuple[int, int]]:
    """Where each switch sends traffic for `dst` (primary buckets: no port is down)."""
    fp = plan(Intent(), view, {})
    arcs = set()
    for src in view.fabric_switches:
        group = next_hop_group(fp, src, dst, 1)
        if group is None:
            continue
        buckets = group.buckets if group.type == "select" else group.buckets[:1]
        for bucket in buckets:
            port = bucket.actions[0].port  # type: ignore[attr-defined]
            arcs.add((src, view.links[(src, port)][0]))
    return arcs


@pytest.mark.skipif(not ZOO.exists(), reason="the Topology Zoo graphs are not shipped")
def test_no_mix_of_two_consecutive_rollout_steps_loops_on_a_zoo_network() -> None:
    """Restore each of a few links of Uninett 2010 (74 switches): between any two
    consecutive steps, every switch may run either; no such mix may loop."""
    switches, links, graph = _zoo_links()
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    tried = 0
    for a_end, b_end in sorted(links.items()):
        if a_end > b_end or frozenset((a_end[0], b_end[0])) in bridges:
            continue
        before = _without(links, a_end)
        stages = rollout_stages(switches, before, links)
        views = [_view(switches, before)] + [_view(switches, links, s) for s in stages] \
            + [_view(switches, links)]
        for dst in sorted(switches)[::7]:
            states = [_arcs(v, dst) for v in views]
            for old, new in zip(states, states[1:], strict=False):
                mixed = nx.DiGraph(list(old | new))
                assert nx.is_directed_acyclic_graph(mixed), (a_end, b_end, dst)
        for old, new in zip(views, views[1:], strict=False):
            trees = [plan(Intent(), v, {}).tree_edges for v in (old, new)]
            assert nx.is_forest(nx.Graph([tuple(e) for e in trees[0] | trees[1]]))
        tried += 1
        if tried == 6:
            break
    assert tried == 6


def test_without_steps_the_same_restore_can_loop() -> None:
    """The steps are not decoration: jumping straight to the new routes can loop."""
    switches, links, graph = _zoo_links()
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    loops = 0
    for a_end, b_end in sorted(links.items())[:60]:
        if a_end > b_end or frozenset((a_end[0], b_end[0])) in bridges:
            continue
        before, after = _view(switches, _without(links, a_end)), _view(switches, links)
        for dst in sorted(switches)[::7]:
            mixed = nx.DiGraph(list(_arcs(before, dst) | _arcs(after, dst)))
            loops += not nx.is_directed_acyclic_graph(mixed)
    assert loops > 0


def test_standby_ports_accept_fabric_traffic_but_carry_none() -> None:
    ring = _ring(6)
    held = {(1, 2): ring[(1, 2)], ring[(1, 2)]: (1, 2)}
    active = _without(ring, (1, 2))
    view = TopologyView(1, fabric_switches=frozenset(range(1, 7)),
                        port_state=MappingProxyType(dict.fromkeys(ring, True)),
                        links=MappingProxyType(active), standby_links=MappingProxyType(held))
    fp = plan(Intent(), view, {})
    assert 2 in fp.link_ports[1] and 1 in fp.link_ports[6]  # classify flows: accept
    assert 6 not in fp.ports_to.get(1, {})  # no path uses the held link
    assert all(1 not in e or 6 not in e for e in fp.tree_edges)
    assert flood_tree(fp.graph) == fp.tree_edges


def _groups(view: TopologyView) -> dict[tuple[int, int], Group | None]:
    fp = plan(Intent(), view, {})
    out = {}
    for src in view.fabric_switches:
        for dst in view.fabric_switches:
            out[(src, dst)] = next_hop_group(fp, src, dst, dst)
    return out


def _live_route(group: Group | None, dead: set[tuple[int, int]], src: int) -> frozenset[int]:
    """The ports a group forwards on with the dead ports down: every live bucket of a
    select group, the first live bucket of a failover group."""
    if group is None:
        return frozenset()
    outs = [next(a.port for a in b.actions if isinstance(a, Output)) for b in group.buckets]
    live = [p for p in outs if (src, p) not in dead]
    return frozenset(live if group.type == "select" else live[:1])


@pytest.mark.skipif(not ZOO.exists(), reason="the Topology Zoo graphs are not shipped")
def test_the_repair_step_after_a_cut_forwards_as_the_final_state_with_fewer_changes() -> None:
    switches, links, graph = _zoo_links()
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    cut = next(a for a, b in sorted(links.items())
               if a < b and frozenset((a[0], b[0])) not in bridges and a[0] == 2)
    after = _without(links, cut)
    dead = {cut, links[cut]}
    stages = rollout_stages(switches, links, after)
    assert stages[0].repair and stages[0].rank is None and stages[0].tree == "prev"
    old, final = _groups(_view(switches, links)), _groups(_view(switches, after))
    repair = _groups(_view(switches, after, stages[0]))
    for key, group in repair.items():
        assert _live_route(group, dead, key[0]) == _live_route(final[key], dead, key[0]), key
    changed_now = sum(1 for k in old if repair[k] != old[k])
    changed_final = sum(1 for k in old if final[k] != old[k])
    assert 0 < changed_now < changed_final


def _zoo_intent(switches: frozenset[int]) -> Intent:
    """A host port on port 99 of every switch, alternately on two VLAN networks."""
    def uid(kind: str, n: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"discovery-{kind}-{n}"))

    nets = [Network(uid("net", i), f"p{i}", f"n{i}", "vlan", 101 + i,
                    physical_network="fabric") for i in range(2)]
    ports = []
    for d in sorted(switches):
        net = nets[d % 2]
        ports.append(Port(uid("port", d), net.project_id, net.id, f"h{d}",
                          f"02:00:00:00:{d >> 8:02x}:{d & 0xFF:02x}",
                          (FixedIP(uid("sub", d % 2), f"10.0.{d >> 8}.{d & 0xFF}"),),
                          binding_profile={"local_link_information": [
                              {"switch_id": f"{d:016x}", "port_id": f"s{d}-eth99"}]}))
    return Intent(1, networks=MappingProxyType({n.id: n for n in nets}),
                  ports=MappingProxyType({p.id: p for p in ports}))


@pytest.mark.skipif(not ZOO.exists(), reason="the Topology Zoo graphs are not shipped")
def test_regrouping_the_urgent_switches_gives_the_groups_the_compile_gives() -> None:
    switches, links, graph = _zoo_links()
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    cut = next(a for a, b in sorted(links.items())
               if a < b and frozenset((a[0], b[0])) not in bridges and a[0] == 13)
    after = _without(links, cut)
    stage = rollout_stages(switches, links, after)[0]
    intent = _zoo_intent(switches)

    def named(view: TopologyView) -> TopologyView:
        names = {d: MappingProxyType({f"s{d}-eth{p}": p for (x, p) in view.port_state
                                      if x == d}) for d in switches}
        return dataclasses.replace(view, switch_ports=MappingProxyType(names))

    before = compile_all(intent, named(_view(switches, links)))
    repair_view = named(_view(switches, after, stage))
    repair = compile_all(intent, repair_view)
    fp = plan(intent, repair_view, {n: set(switches) for n in intent.networks})
    assert stage.urgent and len(stage.urgent) < len(switches)
    changed = 0
    for dpid in stage.urgent:
        regrouped = regroup(fp, dpid, before[dpid].groups)
        want = {g: x for g, x in repair[dpid].groups.items() if g & pl.FABRIC_GROUP_BASE}
        assert {g: x for g, x in regrouped.items() if g & pl.FABRIC_GROUP_BASE} == want
        changed += regrouped != dict(before[dpid].groups)
    assert changed
    for dpid in switches - stage.urgent:  # the others' routes do not change at all
        assert {g: x for g, x in repair[dpid].groups.items() if g & pl.FABRIC_GROUP_BASE} \
            == {g: x for g, x in before[dpid].groups.items() if g & pl.FABRIC_GROUP_BASE}


@pytest.mark.skipif(not ZOO.exists(), reason="the Topology Zoo graphs are not shipped")
def test_the_repair_worked_out_ahead_is_the_repair_at_the_time_of_the_cut() -> None:
    switches, links, graph = _zoo_links()
    intent = _zoo_intent(switches)
    view = _view(switches, links)
    names = {d: MappingProxyType({f"s{d}-eth{p}": p for (x, p) in view.port_state if x == d})
             for d in switches}
    before = compile_all(intent, dataclasses.replace(view, switch_ports=MappingProxyType(names)))
    groups = {d: before[d].groups for d in switches}
    current = routing_plan(switches, links)
    bridges = {frozenset(e) for e in nx.bridges(graph)}
    cuts = [a for a, b in sorted(links.items())
            if a < b and frozenset((a[0], b[0])) not in bridges][::9]
    for cut in cuts:
        ahead = repair_patches(switches, links, cut, groups, current=current)
        after = _without(links, cut)
        stage = rollout_stages(switches, links, after)[0]
        fp = plan(intent, _view(switches, after, stage), {})
        assert set(ahead) == set(stage.urgent)
        for dpid in stage.urgent:
            now = regroup(fp, dpid, groups[dpid])
            assert {g: x for g, x in now.items() if groups[dpid].get(g) != x} == ahead[dpid]


def test_a_port_is_settled_by_a_link_or_by_unanswered_probes() -> None:
    """What the engine waits for before it gives a just-connected fabric switch its
    state: without it, a restarted controller deletes the fabric flows every switch
    holds (no links known yet) and puts them back a moment later."""
    table = LinkTable()
    a, b, host = (1, 1), (2, 1), (1, 2)
    assert not table.settled({a, host}, 2)
    heard_both_ways(table, a, b, 0.0)
    assert table.settled({a}, 2) and not table.settled({a, host}, 2)
    table.sent(host, 0.0)
    assert not table.settled({a, host}, 2)
    table.sent(host, 1.0)
    assert table.settled({a, host}, 2)


def test_a_port_that_was_a_link_is_settled_only_by_a_link_again() -> None:
    """After a controller restart a switch's next-hop groups say which ports were
    links; unanswered probes there mean a neighbour not back yet, not a host port."""
    table = LinkTable()
    a, b, host = (1, 1), (2, 1), (1, 2)
    for t in (0.0, 1.0, 2.0):
        table.sent(a, t)
        table.sent(host, t)
    assert table.settled({a, host}, 2)
    assert not table.settled({a, host}, 2, frozenset({a}))
    heard_both_ways(table, a, b, 3.0)
    assert table.settled({a, host}, 2, frozenset({a}))
