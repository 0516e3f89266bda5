"""Port status from an index (issue 11): right for unbound, bound and fabric-bound ports,
right again after intent or topology change, and the fabric pass made once per snapshot.

`Engine.port_status` used to run `fabric_bindings` (a pass over every port) for each
unbound port it was asked about, so a list of N ports cost N passes. These tests use
the real engine (not started: no compile thread, no switch) with workers that say
which ports' flows they hold, and count the passes instead of timing anything.
"""

from __future__ import annotations

import threading
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from api_harness import Env

from controller import engine as engine_module
from controller import intent as m
from controller.engine import Engine
from controller.rest import make_app
from controller.topology import Binding, Topology, TopologyView

OVS_DPID, FABRIC_DPID = 0x1, 0xA2


class Worker:
    """A connected switch whose installed flows belong to `ports` (by port key)."""

    def __init__(self, dpid: int, ports: set[int]) -> None:
        self.datapath_id = dpid
        self.channel = SimpleNamespace(closed=threading.Event())
        self.sync = SimpleNamespace(has_port=lambda key: key in ports, synced=None)

    def pending(self) -> None:
        return None

    def stop(self) -> None:
        pass


class Views:
    """A topology whose view the test replaces (a new object per change, as Topology does)."""

    def __init__(self, view: TopologyView) -> None:
        self.current = view

    def view(self) -> TopologyView:
        return self.current


def _view(version: int, *, bound: str, fabric_port: bool) -> TopologyView:
    return TopologyView(
        version=version,
        bindings=MappingProxyType({bound: Binding(bound, "hv1", "br-int", OVS_DPID, 5, "tap5")}),
        fabric_switches=frozenset({FABRIC_DPID}),
        switch_ports=MappingProxyType(
            {FABRIC_DPID: MappingProxyType({"eth3": 3} if fabric_port else {})}),
    )


def _profile(dpid: int, port: str) -> dict[str, Any]:
    return {"local_link_information": [{"switch_id": f"{dpid:016x}", "port_id": port}]}


def test_status_of_unbound_bound_and_fabric_bound_ports_follows_changes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = []
    real = engine_module.fabric_bindings

    def counted(intent: m.Intent, view: Any) -> Any:
        passes.append((intent.generation, view.version))
        return real(intent, view)

    monkeypatch.setattr(engine_module, "fabric_bindings", counted)
    net = env.network(name="n")
    env.subnet(net["id"], "10.0.0.0/24")
    plain = env.port(net["id"], name="plain")
    ovs = env.port(net["id"], name="ovs")
    fab = env.port(net["id"], name="fab", **{"binding:profile": _profile(FABRIC_DPID, "eth3")})
    others = [env.port(net["id"], name=f"x{i}") for i in range(20)]
    intent = env.store.latest()
    keys = {p["id"]: intent.ports[p["id"]].key for p in (plain, ovs, fab)}

    engine = Engine(env.store, Topology())
    views = Views(_view(1, bound=ovs["id"], fabric_port=True))
    engine.topology = views  # type: ignore[assignment]
    engine._workers = {  # type: ignore[assignment]
        OVS_DPID: Worker(OVS_DPID, {keys[ovs["id"]]}),
        FABRIC_DPID: Worker(FABRIC_DPID, {keys[fab["id"]], keys[plain["id"]]}),
    }
    app = make_app(env.store, engine)
    env.app = app

    def statuses() -> dict[str, str]:
        return {p["name"]: p["status"] for p in env.ok("GET", "/v2.0/ports")["ports"]}

    # plain: no binding at all, even though a switch holds flows under its key
    assert statuses() == {"plain": "DOWN", "ovs": "ACTIVE", "fab": "ACTIVE",
                          **{f"x{i}": "DOWN" for i in range(20)}}
    assert len(passes) == 1  # one pass over the ports for 23 statuses
    statuses()
    env.ok("GET", f"/v2.0/ports/{fab['id']}")
    env.ok("GET", "/v2.0/ports?name=fab")
    assert len(passes) == 1  # same snapshot, same view: the index is reused

    # topology: the fabric switch's port goes away -> fabric-bound port DOWN
    views.current = _view(2, bound=ovs["id"], fabric_port=False)
    assert statuses()["fab"] == "DOWN"
    views.current = _view(3, bound=ovs["id"], fabric_port=True)
    assert statuses()["fab"] == "ACTIVE"
    assert [v for _, v in passes] == [1, 2, 3]

    # intent: the binding:profile names another port -> DOWN; back -> ACTIVE
    env.ok("PUT", f"/v2.0/ports/{fab['id']}",
           {"port": {"binding:profile": _profile(FABRIC_DPID, "eth9")}})
    assert statuses()["fab"] == "DOWN"
    env.ok("PUT", f"/v2.0/ports/{fab['id']}",
           {"port": {"binding:profile": _profile(FABRIC_DPID, "eth3")}})
    assert statuses()["fab"] == "ACTIVE"
    assert len(passes) == 5 and len({g for g, _ in passes}) == 3

    # a binding through OVSDB wins over the profile; a port deleted is DOWN
    views.current = _view(4, bound=plain["id"], fabric_port=True)
    got = statuses()
    assert (got["plain"], got["ovs"]) == ("DOWN", "DOWN")  # dpid 1 holds only `ovs`'s flows
    assert engine.port_status(others[0]["id"]) == "DOWN"
    env.ok("DELETE", f"/v2.0/ports/{fab['id']}", status=204)
    assert engine.port_status(fab["id"]) == "DOWN"
    binding = engine.port_binding(plain["id"])
    assert binding is not None and binding["datapath_id"] == f"{OVS_DPID:016x}"
