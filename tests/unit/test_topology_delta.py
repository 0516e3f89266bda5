"""Topology deltas (controller.topology.TopologyDelta, Topology.changes_since): which
keys of the view each chassis or fabric event changed, and the incrementally kept
view equal to one built from scratch from the final states."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.ofwire.consts import OFPP_LOCAL
from controller.topology import (
    DELTAS_KEPT,
    TUNNEL_TYPES,
    BridgeState,
    ChassisState,
    InterfaceState,
    Topology,
    TopologyDelta,
    TopologyView,
)


def vif(port_id: str, ofport: int, name: Optional[str] = None) -> InterfaceState:
    return InterfaceState(name or f"tap-{port_id}", ofport, port_id)


def tunnel(remote: str, ofport: int, kind: str = "vxlan") -> InterfaceState:
    return InterfaceState(f"{kind}-{remote}", ofport, None, kind, "192.0.2.1", remote)


def patch(physnet: str, ofport: int) -> InterfaceState:
    return InterfaceState(f"patch-{physnet}", ofport, None, "patch", physnet=physnet)


def chassis(name: str, dpid: Optional[int], *ifaces: InterfaceState, connected: bool = True,
            encap_ip: str = "192.0.2.10") -> ChassisState:
    bridges = (BridgeState("br-int", dpid, tuple(ifaces)),) if dpid is not None or ifaces \
        else ()
    return ChassisState(name, f"tcp:{name}:6640", connected, encap_ip, bridges)


def since(topo: Topology, version: int) -> TopologyDelta:
    delta = topo.changes_since(version)
    assert delta is not None
    return delta


# ---- single events


def test_binding_added_changed_removed() -> None:
    topo = Topology()
    assert topo.changes_since(0) == TopologyDelta() and TopologyDelta().empty
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    v1 = topo.view()
    assert since(topo, 0) == TopologyDelta(bindings=frozenset({"p1"}), switches=frozenset({1}),
                                           chassis=frozenset({"hv1"}))
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5), vif("p2", 6)))
    assert since(topo, v1.version) == TopologyDelta(bindings=frozenset({"p2"}))
    v2 = topo.view()
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 7), vif("p2", 6)))  # new ofport
    assert since(topo, v2.version) == TopologyDelta(bindings=frozenset({"p1"}))
    assert topo.view().bindings["p1"].ofport == 7
    v3 = topo.view()
    assert topo.update_chassis(chassis("hv1", 1, vif("p2", 6)))
    assert since(topo, v3.version) == TopologyDelta(bindings=frozenset({"p1"}))
    assert "p1" not in topo.view().bindings
    # The delta into v1 is kept as it was; views once handed out never change.
    assert set(v1.bindings) == {"p1"} and set(v2.bindings) == {"p1", "p2"}


def test_no_change_no_version() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    view = topo.view()
    assert not topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    # What the view does not show (an unbound interface) changes nothing in it.
    assert not topo.update_chassis(chassis("hv1", 1, vif("p1", 5),
                                           InterfaceState("eth9", 9, None)))
    assert topo.view() is view and since(topo, view.version).empty
    # The OVSDB session shows only as the chassis' liveness (a gateway chassis that
    # does not answer is passed over: compiler/gateway.py), nothing else.
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5), connected=False))
    assert since(topo, view.version) == TopologyDelta(chassis=frozenset({"hv1"}))
    assert not topo.view().chassis["hv1"].connected
    assert topo.view().bindings == view.bindings


def test_binding_moves_to_the_new_host_when_the_old_stops_reporting_it() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    topo.update_chassis(chassis("hv2", 2))
    v = topo.view().version
    # The guest is plugged on hv2 while hv1 still reports it: the lowest name keeps it.
    assert not topo.update_chassis(chassis("hv2", 2, vif("p1", 8)))
    assert topo.view().bindings["p1"].chassis == "hv1" and since(topo, v).empty
    assert topo.update_chassis(chassis("hv1", 1))
    assert since(topo, v) == TopologyDelta(bindings=frozenset({"p1"}))
    b = topo.view().bindings["p1"]
    assert (b.chassis, b.datapath_id, b.ofport) == ("hv2", 2, 8)
    # Back to hv1 (it is ranked first): the binding moves as soon as hv1 reports it,
    # and stays when hv2 stops reporting it.
    v = topo.view().version
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    assert topo.view().bindings["p1"].chassis == "hv1"
    assert since(topo, v) == TopologyDelta(bindings=frozenset({"p1"}))
    assert not topo.update_chassis(chassis("hv2", 2))
    assert topo.view().bindings["p1"].chassis == "hv1"


def test_a_disconnected_chassis_yields_a_shared_binding() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    topo.update_chassis(chassis("hv2", 2, vif("p1", 8)))
    assert topo.view().bindings["p1"].chassis == "hv1"
    v = topo.view().version
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5), connected=False))
    assert topo.view().bindings["p1"].chassis == "hv2"
    assert since(topo, v) == TopologyDelta(bindings=frozenset({"p1"}), chassis=frozenset({"hv1"}))
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    assert topo.view().bindings["p1"].chassis == "hv1"


def test_the_view_does_not_depend_on_the_order_of_updates() -> None:
    states = [chassis("hv1", 1, vif("p1", 5), vif("p2", 6)),
              chassis("hv2", 2, vif("p1", 7), vif("p3", 8)),
              chassis("hv3", 1, vif("p2", 9), tunnel("hv2", 10))]  # hv3: the same dpid
    a, b = Topology(), Topology()
    for s in states:
        a.update_chassis(s)
    for s in reversed(states):
        b.update_chassis(s)
    for name in ("switches", "bindings", "chassis", "tunnels", "provider_ports"):
        assert dict(getattr(a.view(), name)) == dict(getattr(b.view(), name)), name
    assert a.view().switches[1].chassis == "hv1"
    assert a.view().bindings["p2"].chassis == "hv1"


def test_tunnel_and_provider_port_added() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    v = topo.view().version
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5), tunnel("hv2", 10)))
    assert since(topo, v) == TopologyDelta(tunnels=frozenset({1}))
    assert [t.remote_chassis for t in topo.view().tunnels_on(1)] == ["hv2"]
    v = topo.view().version
    assert topo.update_chassis(chassis("hv1", 1, vif("p1", 5), tunnel("hv2", 10),
                                       patch("physnet1", 20)))
    assert since(topo, v) == TopologyDelta(provider_ports=frozenset({1}))
    assert dict(topo.view().provider_ports) == {(1, "physnet1"): 20}
    # Both since the first: the union.
    assert since(topo, v - 1) == TopologyDelta(tunnels=frozenset({1}),
                                               provider_ports=frozenset({1}))


def test_chassis_view_changes() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", None))
    assert topo.view().chassis["hv1"].datapath_id is None and not topo.view().switches
    v = topo.view().version
    assert topo.update_chassis(chassis("hv1", 1))
    assert since(topo, v) == TopologyDelta(switches=frozenset({1}), chassis=frozenset({"hv1"}))
    v = topo.view().version
    assert topo.update_chassis(chassis("hv1", 1, encap_ip="192.0.2.99"))
    assert since(topo, v) == TopologyDelta(chassis=frozenset({"hv1"}))


def test_chassis_removed() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5), tunnel("hv2", 10), patch("ph", 20)))
    topo.update_chassis(chassis("hv2", 2, vif("p2", 5), tunnel("hv1", 10)))
    v = topo.view().version
    assert topo.remove_chassis("hv1")
    assert not topo.remove_chassis("hv1")
    assert since(topo, v) == TopologyDelta(
        bindings=frozenset({"p1"}), switches=frozenset({1}), tunnels=frozenset({1}),
        provider_ports=frozenset({1}), chassis=frozenset({"hv1"}))
    view = topo.view()
    assert set(view.chassis) == {"hv2"} and set(view.switches) == {2}
    assert set(view.bindings) == {"p2"} and set(view.tunnels) == {(2, "hv1", "vxlan")}
    assert not view.provider_ports


def test_fabric_events() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    v = topo.view().version
    assert topo.switch_up(1, {5: ("tap-p1", True)})  # hv1's br-int: not a fabric switch
    assert topo.view().fabric_switches == frozenset()
    # its ports are in the view, but no fabric: nothing for the compiler to redo
    assert since(topo, v) == TopologyDelta()
    v = topo.view().version
    assert topo.port_changed(1, 6, "tap-p2", True)  # a guest plugged into br-int
    assert topo.view().port_state[(1, 6)] is True
    assert dict(topo.view().switch_ports[1]) == {"tap-p1": 5, "tap-p2": 6}
    assert since(topo, v) == TopologyDelta()
    assert not topo.port_changed(1, 6, "tap-p2", True)
    assert topo.port_changed(1, 6, "tap-p2", None)
    assert (1, 6) not in topo.view().port_state
    assert topo.switch_up(10, {1: ("s10-eth1", True), 2: ("s10-eth2", True)})
    assert topo.switch_up(11, {1: ("s11-eth1", True)})
    v = topo.view().version
    links = {(10, 1): (11, 1), (11, 1): (10, 1)}
    assert topo.set_links(links, staged=False)
    assert since(topo, v) == TopologyDelta(fabric=True)
    assert dict(topo.view().links) == links and topo.take_touched() == {10, 11}
    assert not topo.set_links(links, staged=False)
    v = topo.view().version
    assert topo.port_changed(11, 1, "s11-eth1", False)  # the link goes with its port
    assert not topo.view().links and topo.links_lost == 1
    assert since(topo, v) == TopologyDelta(fabric=True)
    # A chassis taking an OpenFlow switch as its br-int takes it out of the fabric.
    v = topo.view().version
    assert topo.update_chassis(chassis("hv2", 11))
    assert topo.view().fabric_switches == frozenset({10})
    assert since(topo, v) == TopologyDelta(switches=frozenset({11}), chassis=frozenset({"hv2"}),
                                           fabric=True)
    v = topo.view().version
    assert topo.remove_chassis("hv2")
    assert topo.view().fabric_switches == frozenset({10, 11})
    assert since(topo, v).fabric


def test_staged_rollout_moves_through_deltas() -> None:
    topo = Topology()
    for d in (1, 2, 3):
        topo.switch_up(d, {p: (f"s{d}-eth{p}", True) for p in (1, 2)})
    ring = {(1, 1): (2, 1), (2, 1): (1, 1), (2, 2): (3, 1), (3, 1): (2, 2)}
    topo.set_links(ring, staged=False)
    v = topo.view().version
    more = dict(ring) | {(3, 2): (1, 2), (1, 2): (3, 2)}
    assert topo.set_links(more)
    stages = 0
    while topo.view().fabric_stage is not None:
        assert topo.advance_stage(topo.view().version)
        stages += 1
    assert since(topo, v) == TopologyDelta(fabric=True)
    assert topo.view().version == v + 1 + stages


def test_changes_since_bounds() -> None:
    topo = Topology()
    assert topo.changes_since(1) is None and topo.changes_since(-1) is None
    for i in range(DELTAS_KEPT + 3):
        assert topo.update_chassis(chassis("hv1", 1, vif(f"p{i % 2}", 5)))
    now = topo.view().version
    assert now == DELTAS_KEPT + 3
    assert since(topo, now).empty
    assert since(topo, now - 1) == TopologyDelta(bindings=frozenset({"p0", "p1"}))
    assert topo.changes_since(now - DELTAS_KEPT) is not None
    assert topo.changes_since(now - DELTAS_KEPT - 1) is None
    assert topo.changes_since(0) is None and topo.changes_since(now + 1) is None


def test_merge() -> None:
    a = TopologyDelta(bindings=frozenset({"p"}), tunnels=frozenset({1}))
    b = TopologyDelta(switches=frozenset({2}), chassis=frozenset({"hv"}), fabric=True)
    m = a.merge(b)
    assert m == TopologyDelta(frozenset({"p"}), frozenset({2}), frozenset({1}), frozenset(),
                              frozenset({"hv"}), True)
    assert not m.empty and a.merge(TopologyDelta()) == a


def test_graph_built_when_read() -> None:
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5), tunnel("hv2", 10)))
    g = topo.graph
    assert g.nodes[("chassis", "hv1")]["kind"] == "chassis"
    assert g.has_edge(("chassis", "hv1"), ("switch", 1))
    assert g.has_edge(("switch", 1), ("port", "p1"))
    assert g.has_edge(("switch", 1), ("chassis", "hv2"))
    assert topo.graph is g  # until something changes
    topo.update_chassis(chassis("hv1", 1, tunnel("hv2", 10)))
    assert ("port", "p1") not in topo.graph
    topo.switch_up(7, {1: ("s7-eth1", True)})
    assert topo.graph.nodes[("switch", 7)].get("fabric")


# ---- random sequences: incremental == from scratch, deltas exact

NAMES = ("hv1", "hv2", "hv3", "hv4")
PORTS = ("p1", "p2", "p3", "p4")
DPIDS = (1, 2, 3, 4, 5, 6)  # chassis and fabric switches share them
CANDIDATE_LINKS = (((1, 1), (5, 1)), ((5, 2), (6, 1)), ((6, 2), (1, 2)), ((2, 1), (5, 3)),
                   ((3, 1), (6, 3)))

ifaces = st.one_of(
    st.builds(vif, st.sampled_from(PORTS), st.sampled_from((1, 2, 3, 4)),
              st.sampled_from(("a", "b"))),
    st.builds(InterfaceState, st.just("gone"), st.sampled_from((None, -1)),
              st.sampled_from(PORTS)),
    st.builds(tunnel, st.sampled_from(NAMES), st.sampled_from((10, 11)),
              st.sampled_from(TUNNEL_TYPES)),
    st.builds(patch, st.sampled_from(("ph1", "ph2")), st.sampled_from((20, 21))),
)
chassis_states = st.builds(
    lambda name, dpid, ifs, connected, ip, extra: ChassisState(
        name, f"tcp:{name}", connected, ip,
        ((BridgeState("br-int", dpid, tuple(ifs)),) if dpid is not None or ifs else ())
        + ((BridgeState("br-ex", 99, (vif("p1", 1),)),) if extra else ())),
    st.sampled_from(NAMES), st.sampled_from((None, *DPIDS)), st.lists(ifaces, max_size=5),
    st.booleans(), st.sampled_from(("192.0.2.1", "192.0.2.2")), st.booleans())
events = st.one_of(
    st.tuples(st.just("chassis"), chassis_states),
    st.tuples(st.just("chassis"), chassis_states),
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
    st.tuples(st.just("session"), st.sampled_from(NAMES)),  # connected flips, nothing else
    st.tuples(st.just("switch_up"), st.sampled_from(DPIDS)),
    st.tuples(st.just("switch_down"), st.sampled_from(DPIDS)),
    st.tuples(st.just("port"), st.sampled_from(DPIDS), st.sampled_from((1, 2, 3)),
              st.sampled_from((True, False, None))),
    st.tuples(st.just("links"), st.lists(st.sampled_from(CANDIDATE_LINKS), max_size=4),
              st.lists(st.sampled_from(CANDIDATE_LINKS), max_size=2), st.booleans()),
)

KEYED = ("switches", "bindings", "chassis", "tunnels", "provider_ports")
FABRIC = ("fabric_switches", "switch_ports", "port_state", "links", "standby_links",
          "fabric_stage")


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _changed(a: Any, b: Any) -> set[Any]:
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def _diff(a: TopologyView, b: TopologyView) -> TopologyDelta:
    return TopologyDelta(
        bindings=frozenset(_changed(a.bindings, b.bindings)),
        switches=frozenset(_changed(a.switches, b.switches)),
        tunnels=frozenset(k[0] for k in _changed(a.tunnels, b.tunnels)),
        provider_ports=frozenset(k[0] for k in _changed(a.provider_ports, b.provider_ports)),
        chassis=frozenset(_changed(a.chassis, b.chassis)),
        fabric=_fabric_changed(a, b))


def _fabric_changed(a: TopologyView, b: TopologyView) -> bool:
    """What the compiler reads of the fabric changed: integration bridges' own ports
    (in port_state and switch_ports too) count only while there is a fabric."""
    if not (a.fabric_switches or b.fabric_switches or a.links or b.links
            or a.fabric_stage or b.fabric_stage):
        return False
    return any(_plain(getattr(a, f)) != _plain(getattr(b, f)) for f in FABRIC)


def _covers(big: TopologyDelta, small: TopologyDelta) -> bool:
    return (small.bindings <= big.bindings and small.switches <= big.switches
            and small.tunnels <= big.tunnels and small.provider_ports <= big.provider_ports
            and small.chassis <= big.chassis and (big.fabric or not small.fabric))


def _symmetric(pairs: Iterable[tuple[tuple[int, int], tuple[int, int]]]
               ) -> dict[tuple[int, int], tuple[int, int]]:
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for a, b in pairs:
        if a not in out and b not in out:
            out[a], out[b] = b, a
    return out


def _graph_signature(topo: Topology) -> tuple[list[str], list[str]]:
    g = topo.graph
    return (sorted(repr((n, sorted(d.items()))) for n, d in g.nodes(data=True)),
            sorted(repr((a, b, sorted(d.items()))) for a, b, d in g.edges(data=True)))


@settings(max_examples=50, deadline=None)
@given(st.lists(events, min_size=1, max_size=25))
def test_incremental_view_equals_scratch(evs: list[tuple[Any, ...]]) -> None:
    topo = Topology()
    states: dict[str, ChassisState] = {}
    ports: dict[int, dict[int, tuple[str, bool]]] = {}  # the fabric as OpenFlow says it
    links: dict[tuple[int, int], tuple[int, int]] = {}
    standby: dict[tuple[int, int], tuple[int, int]] = {}
    first = topo.view()
    union = TopologyDelta()
    for ev in evs:
        before = topo.view()
        if ev[0] == "chassis":
            states[ev[1].name] = ev[1]
            changed = topo.update_chassis(ev[1])
        elif ev[0] == "session":
            if ev[1] not in states:
                continue
            states[ev[1]] = replace(states[ev[1]], connected=not states[ev[1]].connected)
            changed = topo.update_chassis(states[ev[1]])
        elif ev[0] == "remove":
            states.pop(ev[1], None)
            changed = topo.remove_chassis(ev[1])
        elif ev[0] == "switch_up":
            ports[ev[1]] = {p: (f"s{ev[1]}-eth{p}", True) for p in (1, 2, 3)}
            changed = topo.switch_up(ev[1], ports[ev[1]])
        elif ev[0] == "switch_down":
            ports.pop(ev[1], None)
            links = {a: b for a, b in links.items() if ev[1] not in (a[0], b[0])}
            changed = topo.switch_down(ev[1])
        elif ev[0] == "port":
            _, dpid, no, up = ev
            if dpid not in ports:  # OpenFlow reports the ports of switches it knows
                continue
            if up is None:
                ports[dpid].pop(no, None)
            else:
                ports[dpid][no] = (f"s{dpid}-eth{no}", up)
            changed = topo.port_changed(dpid, no, f"s{dpid}-eth{no}", up)
        else:
            _, in_use, held, staged = ev
            links = _symmetric(in_use)
            standby = {a: b for a, b in _symmetric(held).items() if a not in links}
            changed = topo.set_links(links, standby, staged=staged)
        after = topo.view()
        assert changed == (after.version != before.version)
        step = since(topo, before.version)
        # Exactly the keys that differ between the two views, and only if some do.
        assert step == _diff(before, after)
        # (a version may move for integration bridges' ports alone: nothing to compile)
        assert step.empty or changed
        union = union.merge(step)
        assert since(topo, first.version) == union
    last = topo.view()
    assert _covers(union, _diff(first, last))

    scratch = Topology()
    for state in sorted(states.values(), key=lambda s: s.name, reverse=True):
        scratch.update_chassis(state)
    for dpid, p in ports.items():
        scratch.switch_up(dpid, p)
    scratch.set_links(links, standby, staged=False)
    fresh = scratch.view()
    for name in KEYED + FABRIC[:-1]:
        assert _plain(getattr(last, name)) == _plain(getattr(fresh, name)), name
    assert _graph_signature(topo) == _graph_signature(scratch)


def test_an_integration_bridge_is_not_a_fabric_switch_while_its_chassis_is_unread() -> None:
    """After a restart, a chassis with thousands of ports is read after its br-int has
    connected over OpenFlow. Taken for a fabric switch, the bridge was compiled as one
    (a handful of flows) and every guest's flows were deleted until the read arrived."""
    topo = Topology()
    assert topo.switch_up(1, {5: ("tap-p1", True), OFPP_LOCAL: ("br-int", True)})
    assert topo.view().fabric_switches == frozenset() and 1 not in topo.view().switches
    assert topo.switch_up(10, {1: ("s10-eth1", True), OFPP_LOCAL: ("s10", True)})
    assert topo.view().fabric_switches == frozenset({10})  # a real fabric switch
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    assert 1 in topo.view().switches and topo.view().fabric_switches == frozenset({10})


def test_a_chassis_that_becomes_a_gateway_shows_it_in_the_view() -> None:
    """external_ids:loom-gateway set on a running chassis (an in-place update)."""
    topo = Topology()
    topo.update_chassis(chassis("hv1", 1, vif("p1", 5)))
    v = topo.view().version
    flagged = replace(chassis("hv1", 1, vif("p1", 5)), gateway=True)
    assert topo.update_chassis(flagged)
    assert topo.view().chassis["hv1"].gateway
    assert since(topo, v) == TopologyDelta(chassis=frozenset({"hv1"}))
