"""Router lookups cost the answer, not the fleet (issue 12 follow-up).

Three lookups used to scan whole tables: a router's interfaces (every
Router_Interface row), the router or floating IP whose port a port is (every
interface, router or floating IP: on each update or delete of a router's port), and
a router port's status (every connected switch asked, per port listed). They now
read the per-snapshot index (`rest/index.py`), carried from snapshot to snapshot
by the store's deltas, and the switches the compiler put the port's flows on.

These tests check that the index stays right through every kind of change made
through the API (a stale one refuses or removes the wrong thing), that it equals
one built afresh, and count the rows and switches visited instead of timing.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator, Mapping
from types import MappingProxyType, SimpleNamespace
from typing import Any, Optional

import pytest
from api_harness import Env
from test_compiler_routing import D1, D2, D3, N1, N2, RP1, RP2, world

from controller import intent as m
from controller import pipeline as pl
from controller.compiler.incremental import Compiler
from controller.engine import Engine
from controller.intent_delta import make_delta
from controller.rest import router_interfaces as ri_api
from controller.rest import routers as routers_api
from controller.rest.index import IntentIndex, index_of
from controller.rest.ports import l3_owner
from controller.topology import Topology, TopologyView

R = "/v2.0/routers"


# -- helpers ----------------------------------------------------------------------------
def _l3(idx: IntentIndex) -> dict[str, object]:
    return {
        "router_ifaces": dict(idx.router_ifaces), "port_ifaces": dict(idx.port_ifaces),
        "subnet_ifaces": dict(idx.subnet_ifaces), "gateways": dict(idx.gateway_routers),
        "floating": dict(idx.floating_ports),
    }


def _check(intent: m.Intent) -> IntentIndex:
    """The snapshot's index (carried over from the previous one) equals a fresh one, and
    its answers are what a scan of the tables says."""
    idx = index_of(intent)
    assert _l3(idx) == _l3(IntentIndex(intent))
    for rid in intent.routers:
        want = sorted((i for i in intent.router_interfaces.values() if i.router_id == rid),
                      key=lambda i: i.port_id)
        assert idx.interfaces_of(rid) == want
    for port in intent.ports.values():
        owner: Optional[str] = None
        if port.device_owner == "network:router_interface":
            owner = next((i.router_id for i in intent.router_interfaces.values()
                          if i.port_id == port.id), None)
        elif port.device_owner == "network:router_gateway":
            owner = next((r.id for r in intent.routers.values()
                          if r.gateway_port_id == port.id), None)
        elif port.device_owner == "network:floatingip":
            owner = next((f.id for f in intent.floating_ips.values()
                          if f.floating_port_id == port.id), None)
        assert l3_owner(idx, port) == owner, port
    for sid in intent.subnets:
        assert {i.id for i in idx.interfaces_on_subnet(sid)} == {
            i.id for i in intent.router_interfaces.values() if i.subnet_id == sid}
    return idx


def _router(env: Env, **attrs: Any) -> dict[str, Any]:
    return env.ok("POST", R, {"router": attrs}, 201)["router"]  # type: ignore[no-any-return]


def _add(env: Env, rid: str, **body: str) -> dict[str, Any]:
    return env.ok("PUT", f"{R}/{rid}/add_router_interface", body)  # type: ignore[no-any-return]


def _remove(env: Env, rid: str, **body: str) -> dict[str, Any]:
    return env.ok("PUT", f"{R}/{rid}/remove_router_interface", body)  # type: ignore[no-any-return]


@pytest.fixture
def derives(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts `IntentIndex.derive` (an index carried over instead of built afresh)."""
    calls: list[int] = []
    real = IntentIndex.derive

    def spy(self: IntentIndex, *a: Any) -> IntentIndex:
        calls.append(1)
        return real(self, *a)

    monkeypatch.setattr(IntentIndex, "derive", spy)
    return calls


# -- through the API --------------------------------------------------------------------
def test_lookups_stay_right_through_every_interface_change(env: Env, derives: list[int]
                                                           ) -> None:
    sa = env.subnet(env.network(name="a")["id"], "10.0.1.0/24")
    sb = env.subnet(env.network(name="b")["id"], "10.0.2.0/24")
    sc = env.subnet(env.network(name="c")["id"], "10.0.3.0/24")
    r1, r2 = _router(env, name="r1"), _router(env, name="r2")
    _check(env.store.latest())

    # r1 on subnet a (the gateway port), r2 on subnet a too, by a port of its own
    p1 = _add(env, r1["id"], subnet_id=sa["id"])["port_id"]
    idx = _check(env.store.latest())
    assert [i.port_id for i in idx.interfaces_of(r1["id"])] == [p1]
    q = env.port(sa["network_id"], fixed_ips=[{"subnet_id": sa["id"], "ip_address": "10.0.1.5"}])
    _add(env, r2["id"], port_id=q["id"])
    idx = _check(env.store.latest())
    assert {i.router_id for i in idx.interfaces_on_subnet(sa["id"])} == {r1["id"], r2["id"]}
    assert l3_owner(idx, idx.intent.ports[q["id"]]) == r2["id"]

    # the ports API sees both as router ports; neither router can be deleted
    for pid in (p1, q["id"]):
        env.rejected("DELETE", f"/v2.0/ports/{pid}", status=409, type="ServicePortInUse")
        env.rejected("PUT", f"/v2.0/ports/{pid}", {"port": {"device_id": "x"}}, status=409,
                     type="PortInUse")
    for r in (r1, r2):
        env.rejected("DELETE", f"{R}/{r['id']}", status=409, type="RouterInUse")
    # r1 may not have a second port on subnet a (its interfaces, not r2's, say so)
    env.rejected("PUT", f"{R}/{r1['id']}/add_router_interface", {"subnet_id": sa["id"]},
                 status=400, type="BadRequest")

    # removing r2's interface by subnet takes r2's port, never r1's on the same subnet
    gone = _remove(env, r2["id"], subnet_id=sa["id"])
    assert gone["port_id"] == q["id"]
    idx = _check(env.store.latest())
    assert p1 in idx.intent.ports and q["id"] not in idx.intent.ports
    assert idx.interfaces_of(r2["id"]) == []
    env.ok("DELETE", f"{R}/{r2['id']}", status=204)
    _check(env.store.latest())

    # extra routes see exactly r1's subnets
    _add(env, r1["id"], subnet_id=sb["id"])
    _check(env.store.latest())
    env.rejected("PUT", f"{R}/{r1['id']}", {"router": {"routes": [
        {"destination": "192.168.0.0/24", "nexthop": "10.0.3.9"}]}}, status=400,
        type="InvalidRoutes")
    env.ok("PUT", f"{R}/{r1['id']}", {"router": {"routes": [
        {"destination": "192.168.0.0/24", "nexthop": "10.0.2.9"}]}})
    env.rejected("PUT", f"{R}/{r1['id']}/remove_router_interface", {"subnet_id": sb["id"]},
                 status=409, type="RouterInterfaceInUseByRoute")
    # a subnet r1 is not on: not found, whoever else is on it
    _add(env, _router(env, name="r3")["id"], subnet_id=sc["id"])
    env.rejected("PUT", f"{R}/{r1['id']}/remove_router_interface", {"subnet_id": sc["id"]},
                 status=404, type="RouterInterfaceNotFoundForSubnet")

    # remove by port, then by subnet; the router is free to go
    _remove(env, r1["id"], port_id=p1)
    idx = _check(env.store.latest())
    assert [i.subnet_id for i in idx.interfaces_of(r1["id"])] == [sb["id"]]
    assert [i.subnet_id for i in idx.interfaces_on_subnet(sa["id"])] == []
    env.rejected("PUT", f"{R}/{r1['id']}/remove_router_interface", {"port_id": p1},
                 status=404, type="RouterInterfaceNotFound")
    env.ok("PUT", f"{R}/{r1['id']}", {"router": {"routes": []}})
    _remove(env, r1["id"], subnet_id=sb["id"])
    _check(env.store.latest())
    env.ok("DELETE", f"{R}/{r1['id']}", status=204)
    idx = _check(env.store.latest())
    assert idx.interfaces_of(r1["id"]) == [] and r1["id"] not in idx.router_ifaces
    # re-attached to a new router: the index follows
    r4 = _router(env, name="r4")
    p4 = _add(env, r4["id"], subnet_id=sa["id"])["port_id"]
    idx = _check(env.store.latest())
    assert l3_owner(idx, idx.intent.ports[p4]) == r4["id"]
    assert derives, "the index was rebuilt for every snapshot instead of carried over"


def test_gateway_and_floating_ports_follow_their_rows(env: Env) -> None:
    ext = env.network(name="ext")
    env.subnet(ext["id"], "172.24.4.0/24")
    gw = env.port(ext["id"], device_owner="network:router_gateway")
    fp = env.port(ext["id"], device_owner="network:floatingip")
    r = _router(env, name="r")
    _check(env.store.latest())
    env.ok("DELETE", f"/v2.0/ports/{fp['id']}", status=204)  # no row names it: deletable
    fp = env.port(ext["id"], device_owner="network:floatingip")
    router = env.store.latest().routers[r["id"]]
    fip = m.FloatingIP(str(uuid.uuid4()), router.project_id, ext["id"], "172.24.4.50",
                       floating_port_id=fp["id"])
    env.store.transact(lambda h, i: (h.put(dataclasses.replace(router, gateway_port_id=gw["id"])),
                                     h.put(fip)))
    idx = _check(env.store.latest())
    assert idx.gateway_router(gw["id"]) == r["id"] and idx.floating_ip_of_port(fp["id"]) == fip.id
    env.rejected("DELETE", f"/v2.0/ports/{gw['id']}", status=409, type="ServicePortInUse")
    env.rejected("DELETE", f"/v2.0/ports/{fp['id']}", status=409, type="ServicePortInUse")

    router = env.store.latest().routers[r["id"]]
    env.store.transact(lambda h, i: (h.put(dataclasses.replace(router, gateway_port_id=None)),
                                     h.delete(m.FloatingIP, fip.id)))
    idx = _check(env.store.latest())
    assert idx.gateway_router(gw["id"]) is None and idx.floating_ip_of_port(fp["id"]) is None
    env.ok("DELETE", f"/v2.0/ports/{gw['id']}", status=204)
    env.ok("DELETE", f"/v2.0/ports/{fp['id']}", status=204)
    _check(env.store.latest())


# -- scale: rows visited, not seconds ---------------------------------------------------
class Counted(Mapping[str, Any]):
    """A table that counts the rows a pass over it visits (lookups by id are free)."""

    def __init__(self, rows: Mapping[str, Any], visits: list[int]) -> None:
        self._rows, self._visits = dict(rows), visits

    def __getitem__(self, key: str) -> Any:
        return self._rows[key]

    def __iter__(self) -> Iterator[str]:
        for key in self._rows:
            self._visits[0] += 1
            yield key

    def __len__(self) -> int:
        return len(self._rows)


N = 2000


def _u(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"lookups-{kind}-{n}"))


def _fleet(visits: list[int], extra: Optional[m.RouterInterface] = None,
           drop: Optional[str] = None) -> m.Intent:
    """N routers, each on its own network and subnet by one interface port, with a
    gateway port; N floating IPs with their floating ports."""
    nets, subnets, ports, routers, ifaces, fips = {}, {}, {}, {}, {}, {}
    ext = m.Network(_u("ext", 0), "p", "ext", "vxlan", 1)
    nets[ext.id] = ext
    for n in range(N):
        net = m.Network(_u("net", n), "p", f"n{n}", "vxlan", 100 + n)
        sub = m.Subnet(_u("sub", n), "p", net.id, f"s{n}", 4, f"10.{n // 250}.{n % 250}.0/24",
                       f"10.{n // 250}.{n % 250}.1")
        rp = m.Port(_u("rp", n), "p", net.id, "", f"fa:16:3e:00:{n // 256:02x}:{n % 256:02x}",
                    (m.FixedIP(sub.id, sub.gateway_ip or ""),), port_security_enabled=False,
                    device_owner="network:router_interface", device_id=_u("router", n))
        gw = m.Port(_u("gw", n), "p", ext.id, "", f"fa:16:3e:01:{n // 256:02x}:{n % 256:02x}",
                    (), device_owner="network:router_gateway", device_id=_u("router", n))
        fp = m.Port(_u("fp", n), "p", ext.id, "", f"fa:16:3e:02:{n // 256:02x}:{n % 256:02x}",
                    (), device_owner="network:floatingip", device_id=_u("fip", n))
        nets[net.id], subnets[sub.id] = net, sub
        ports.update({rp.id: rp, gw.id: gw, fp.id: fp})
        routers[_u("router", n)] = m.Router(_u("router", n), "p", f"r{n}", gateway_port_id=gw.id)
        ifaces[_u("iface", n)] = m.RouterInterface(_u("iface", n), _u("router", n), rp.id, sub.id)
        fips[_u("fip", n)] = m.FloatingIP(_u("fip", n), "p", ext.id, f"172.24.{n // 250}.{n % 250}",
                                          floating_port_id=fp.id)
    if extra is not None:
        ifaces[extra.id] = extra
    if drop is not None:
        del ifaces[drop]
    return m.Intent(
        1, networks=MappingProxyType(nets), subnets=MappingProxyType(subnets),
        ports=Counted(ports, visits), routers=Counted(routers, visits),
        router_interfaces=Counted(ifaces, visits), floating_ips=Counted(fips, visits))


def test_lookups_among_2000_routers_visit_only_the_answer() -> None:
    visits = [0]
    intent = _fleet(visits)
    idx = IntentIndex(intent)  # built once per snapshot without a delta: one pass
    assert visits[0] >= 4 * N
    visits[0] = 0
    rid, port = _u("router", 7), intent.ports[_u("rp", 7)]
    router = intent.routers[rid]
    assert [i.port_id for i in ri_api.interfaces_of(idx, rid)] == [port.id]
    assert l3_owner(idx, port) == rid
    assert l3_owner(idx, intent.ports[_u("gw", 9)]) == _u("router", 9)
    assert l3_owner(idx, intent.ports[_u("fp", 11)]) == _u("fip", 11)
    routes = [{"destination": "192.168.0.0/24", "nexthop": "10.0.7.9"}]
    assert routers_api.check_routes(idx, router, routes) == (("192.168.0.0/24", "10.0.7.9"),)
    other = intent.subnets[_u("sub", 8)]
    ri_api.check_router_subnets(idx, router, [other])  # no overlap, not attached
    assert ri_api._find(idx, router, {"subnet_id": _u("sub", 7)}) is not None
    assert ri_api._find(idx, router, {"port_id": port.id}) is not None
    assert ri_api._find(idx, router, {"subnet_id": _u("sub", 8)}) is None
    assert visits[0] == 0, f"{visits[0]} rows visited for answers of one row each"

    # one interface added to router 7 and router 3's removed: carried over, no pass
    extra = m.RouterInterface(_u("iface", N), rid, _u("rp", 8), _u("sub", 8))
    after = dataclasses.replace(_fleet(visits, extra, drop=_u("iface", 3)), generation=2)
    visits[0] = 0
    new = idx.derive(after, make_delta({"router_interfaces": {extra.id, _u("iface", 3)}}))
    assert visits[0] == 0, f"{visits[0]} rows visited to carry the index over one change"
    assert {i.port_id for i in new.interfaces_of(rid)} == {port.id, _u("rp", 8)}
    assert new.interfaces_of(_u("router", 3)) == []
    assert l3_owner(new, after.ports[_u("rp", 3)]) is None
    assert l3_owner(new, after.ports[_u("rp", 8)]) in {rid, _u("router", 8)}
    # the groups nothing touched are shared with the old index, not copied
    assert new.router_ifaces[_u("router", 5)] is idx.router_ifaces[_u("router", 5)]
    assert new.floating_ports is idx.floating_ports and new.gateway_routers is idx.gateway_routers
    assert visits[0] == 0
    assert _l3(new) == _l3(IntentIndex(after))


# -- a router port's status: the switches its flows are on ------------------------------
class Worker:
    """A connected switch holding the flows of `held` port keys; counts the looks."""

    def __init__(self, dpid: int, held: set[int], looks: list[int]) -> None:
        self.datapath_id = dpid
        self.held = held
        self.channel = SimpleNamespace(closed=threading.Event())

        def has_port(key: int) -> bool:
            looks.append(dpid)
            return key in self.held

        self.sync = SimpleNamespace(has_port=has_port, synced=None)


def _port_keys(flows: Mapping[Any, Any]) -> set[int]:
    out = set()
    for f in flows.values():
        kind, key = pl.cookie_owner(f.cookie)
        if kind == "port":
            out.add(key)
    return out


def test_router_port_status_asks_only_the_switches_its_flows_are_on() -> None:
    intent, topo = world()
    compiler = Compiler()
    compiler.update(intent, topo, None, None)
    looks: list[int] = []
    installed = {d: _port_keys(compiler.desired(d).flows)  # type: ignore[union-attr]
                 for d in (D1, D2, D3)}
    workers = {d: Worker(d, set(installed[d]), looks) for d in (D1, D2, D3)}
    idle = {0x1000 + n: Worker(0x1000 + n, set(), looks) for n in range(200)}  # hold nothing
    workers.update(idle)
    engine = Engine(SimpleNamespace(latest=lambda: intent), Topology())
    engine.topology = SimpleNamespace(view=lambda: topo)  # type: ignore[assignment]
    engine._workers = workers  # type: ignore[assignment]
    engine._compiler = compiler

    def old_answer(port: m.Port) -> str:  # what asking every switch says
        return "ACTIVE" if any(port.key in w.held for w in workers.values()) else "DOWN"

    # the compiler's carriers of a router port's network cover every switch its flows are on
    for rp, net in ((RP1, N1), (RP2, N2)):
        carriers = compiler.carriers_of(net.id)
        assert carriers is not None
        holders = {d for d, keys in installed.items() if rp.key in keys}
        assert holders and holders <= set(carriers), (holders, carriers)

    for rp, net in ((RP1, N1), (RP2, N2)):
        looks.clear()
        assert engine.port_status(rp.id) == "ACTIVE" == old_answer(rp)
        assert set(looks) <= set(compiler.carriers_of(net.id) or ()), looks
        looks.clear()
        assert engine.port_status(rp.id) == "ACTIVE"
        assert len(looks) == 1  # the switch last seen holding it, and only that
    assert not set(looks) & set(idle)

    # the hinted switch drops the flows: the other carriers are asked; nowhere: DOWN
    hinted = engine._router_port_seen[RP1.key]  # type: ignore[index]
    workers[hinted].held.discard(RP1.key)
    looks.clear()
    assert engine.port_status(RP1.id) == old_answer(RP1)
    assert not set(looks) & set(idle) and len(looks) <= 1 + len(compiler.carriers_of(N1.id) or ())
    for w in workers.values():
        w.held.discard(RP1.key)
    looks.clear()
    assert engine.port_status(RP1.id) == "DOWN" == old_answer(RP1)
    assert not set(looks) & set(idle)
    workers[D1].held.add(RP1.key)  # installed again
    assert engine.port_status(RP1.id) == "ACTIVE"

    # a router port on a network bound nowhere: DOWN without asking any switch
    lonely_net = dataclasses.replace(N1, id=_u("lonely", 0), segmentation_id=999)
    lonely = dataclasses.replace(RP1, id=_u("lonely-port", 0), network_id=lonely_net.id)
    intent = dataclasses.replace(
        intent, networks=MappingProxyType({**intent.networks, lonely_net.id: lonely_net}),
        ports=MappingProxyType({**intent.ports, lonely.id: lonely}))
    looks.clear()
    assert engine.port_status(lonely.id) == "DOWN" and looks == []

    # without the compiler's unit state (a fabric, or before the first compile) every
    # connected switch may be asked, and the answer is still what the switches hold
    engine._compiler = Compiler()
    engine._router_port_seen = None
    assert engine._compiler.carriers_of(N2.id) is None
    assert engine.port_status(RP2.id) == "ACTIVE" == old_answer(RP2)
    engine._compiler.intent = intent
    engine._compiler.topo = TopologyView(1, fabric_switches=frozenset({0xA1}))
    assert engine._compiler.carriers_of(N2.id) is None
