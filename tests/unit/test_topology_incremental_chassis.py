"""A chassis update costs the interfaces that changed, and gives the same view.

The chassis reader hands the topology a new ChassisState after every change, in
which an unchanged interface is the very same InterfaceState object as before;
`Topology.update_chassis` then derives the chassis' share of the view from the
interfaces that are new objects only (`_ChassisPart.update`). Here random changes
are made that way (one interface changed, added or removed, iface-ids claimed
twice, tunnels, provider patches, a datapath id, a connection flapping, two chassis
reporting the same port) and after each one the view must equal that of a topology
built from scratch from the same states, and the delta must name every key that
changed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.topology import (
    BridgeState,
    ChassisState,
    InterfaceState,
    Topology,
    TopologyView,
)

NAMES = ("hv1", "hv2")
KEYED = ("switches", "bindings", "chassis", "tunnels", "provider_ports")


def _iface(kind: str, n: int, ofport: int) -> InterfaceState:
    name = f"i{n:02d}"
    if kind == "vif":
        return InterfaceState(name, ofport, f"port-{n % 7}")  # iface-ids claimed twice
    if kind == "tunnel":
        return InterfaceState(name, ofport, None, type="vxlan", remote_ip="192.0.2.9",
                              remote_chassis=f"hv{n % 3}")
    if kind == "patch":
        return InterfaceState(name, ofport, None, type="patch", physnet=f"phys{n % 2}")
    return InterfaceState(name, ofport, None)  # a port of no interest


class Host:
    """One chassis as the reader keeps it: interfaces by name, unchanged ones kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ifaces: dict[str, InterfaceState] = {}
        self.other: tuple[InterfaceState, ...] = (InterfaceState("x", 1, "port-1"),)
        self.dpid = 1 if name == "hv1" else 2
        self.connected = True
        self.encap = "10.0.0.1"
        self.bridge: BridgeState | None = None
        self.sink = BridgeState("br-sink", 77, self.other)

    def state(self) -> ChassisState:
        interfaces = tuple(self.ifaces[n] for n in sorted(self.ifaces))
        b = self.bridge
        if b is None or b.interfaces != interfaces or b.datapath_id != self.dpid:
            b = self.bridge = BridgeState("br-int", self.dpid, interfaces)
        return ChassisState(self.name, f"tcp:{self.name}", self.connected, self.encap,
                            (b, self.sink))


events = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(NAMES),
              st.sampled_from(("vif", "vif", "tunnel", "patch", "plain")),
              st.integers(0, 19), st.sampled_from((None, -1, 0, 3, 4, 5))),
    st.tuples(st.just("del"), st.sampled_from(NAMES), st.integers(0, 19)),
    st.tuples(st.just("many"), st.sampled_from(NAMES), st.integers(0, 19), st.integers(1, 9)),
    st.tuples(st.just("dpid"), st.sampled_from(NAMES), st.sampled_from((1, 2, 3))),
    st.tuples(st.just("connected"), st.sampled_from(NAMES)),
    st.tuples(st.just("encap"), st.sampled_from(NAMES)),
    st.tuples(st.just("same"), st.sampled_from(NAMES)),
)


def _plain(view: TopologyView) -> dict[str, Any]:
    return {k: dict(getattr(view, k)) for k in KEYED}


def _changed(a: Any, b: Any) -> set[Any]:
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


@settings(max_examples=150, deadline=None)
@given(st.lists(events, min_size=1, max_size=40))
def test_in_place_updates_give_the_view_built_from_scratch(script: list[Any]) -> None:
    hosts = {n: Host(n) for n in NAMES}
    topo = Topology()
    for h in hosts.values():
        topo.update_chassis(h.state())
    for ev in script:
        h = hosts[ev[1]]
        if ev[0] == "set":
            _, _, kind, n, ofport = ev
            h.ifaces[f"i{n:02d}"] = _iface(kind, n, ofport)
        elif ev[0] == "del":
            h.ifaces.pop(f"i{ev[2]:02d}", None)
        elif ev[0] == "many":
            for n in range(ev[2], ev[2] + ev[3]):
                h.ifaces[f"i{n % 20:02d}"] = _iface("vif", n, 3)
        elif ev[0] == "dpid":
            h.dpid = ev[2]
        elif ev[0] == "connected":
            h.connected = not h.connected
        elif ev[0] == "encap":
            h.encap = "10.0.0.2" if h.encap == "10.0.0.1" else "10.0.0.1"
        before = topo.view()
        topo.update_chassis(h.state())
        after = topo.view()
        fresh = Topology()
        for other in hosts.values():  # states built anew: nothing shared
            st_ = other.state()
            fresh.update_chassis(replace(st_, bridges=tuple(
                replace(b, interfaces=tuple(replace(i) for i in b.interfaces))
                for b in st_.bridges)))
        assert _plain(after) == _plain(fresh.view())
        delta = topo.changes_since(before.version)
        assert delta is not None
        assert _changed(before.bindings, after.bindings) <= delta.bindings
        assert _changed(before.switches, after.switches) <= delta.switches
        assert {k[0] for k in _changed(before.tunnels, after.tunnels)} <= delta.tunnels
        assert {k[0] for k in _changed(before.provider_ports, after.provider_ports)} \
            <= delta.provider_ports
        assert _changed(before.chassis, after.chassis) <= delta.chassis
        assert delta.bindings <= _changed(before.bindings, after.bindings)  # and no more


def test_one_interface_changed_is_the_only_one_looked_at() -> None:
    """At 1,000 interfaces, plugging one in derives that one's binding only: the part
    is updated in place, and the delta names that port alone."""
    h = Host("hv1")
    for n in range(1000):
        h.ifaces[f"v{n:04d}"] = InterfaceState(f"v{n:04d}", n + 1, f"port-{n}")
    topo = Topology()
    topo.update_chassis(h.state())
    part = topo._parts["hv1"]
    version = topo.view().version
    h.ifaces["v9999"] = InterfaceState("v9999", 5000, "port-new")
    assert topo.update_chassis(h.state())
    assert topo._parts["hv1"] is part  # updated in place, not built again
    delta = topo.changes_since(version)
    assert delta is not None and delta.bindings == frozenset({"port-new"})
    assert topo.view().bindings["port-new"].ofport == 5000
    assert len(topo.view().bindings) == 1001
