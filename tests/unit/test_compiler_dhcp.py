"""Loom's DHCP in the flows: each served port punts its own DHCP requests through its
own meter, a guest's DHCP server replies are dropped, and turning a subnet's DHCP on or
off changes exactly its ports' flows, incrementally as in full."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from controller import pipeline as pl
from controller.compiler import compile_all
from controller.compiler.incremental import Compiler
from controller.flows import Output
from tests.unit.test_incremental_compile import (
    DPIDS,
    SUBNETS,
    World,
    assert_same,
    intent_delta,
    topology_delta,
)

PUNT = pl.TABLE_IDS["port_security"], pl.PORT_SECURITY.priorities["dhcp_punt"]
ROGUE = pl.TABLE_IDS["port_security"], pl.PORT_SECURITY.priorities["dhcp_server_drop"]


def _flows(desired, table_priority):  # type: ignore[no-untyped-def]
    return [f for f in desired.flows.values()
            if (pl.TABLE_IDS[f.table], f.priority) == table_priority]


def _world() -> World:
    world = World()
    # port 0 on network 0 (DHCP subnet) bound to D1 at ofport 10, port security on;
    # port 1 on network 1 bound to D2, port security off
    world.apply(("port", 0, 0, 5, frozenset(), True, True, None, DPIDS[0]))
    world.apply(("port", 1, 1, 6, frozenset(), False, True, None, DPIDS[1]))
    return world


def test_a_served_port_punts_its_own_dhcp_through_its_own_meter() -> None:
    world = _world()
    full = compile_all(world.intent(), world.view())
    punt = _flows(full[DPIDS[0]], PUNT)
    assert len(punt) == 1
    flow = punt[0]
    assert dict((m.field, m.value) for m in flow.match) == {
        "in_port": 10, "eth_src": 0xFA163E000000, "eth_type": 0x0800, "ip_proto": 17,
        "udp_src": 68, "udp_dst": 67}
    assert flow.actions == (Output(pl.OFPP_CONTROLLER, 0xFFFF),) and flow.goto is None
    assert flow.meter == pl.punt_meter_id(10)
    meter = full[DPIDS[0]].meters[pl.punt_meter_id(10)]
    assert meter.pps and meter.rate_kbps == pl.PUNT_RATE_PPS
    # a port without port security is served too, and may send what it likes
    assert len(_flows(full[DPIDS[1]], PUNT)) == 1
    assert _flows(full[DPIDS[1]], ROGUE) == []
    # with port security, a guest's DHCP server replies drop
    rogue = {dict((m.field, m.value) for m in f.match).get("udp_src"): f
             for f in _flows(full[DPIDS[0]], ROGUE)}
    assert set(rogue) == {67, 547}  # DHCPv4 and DHCPv6 servers
    assert all(f.actions == () and f.goto is None for f in rogue.values())


def test_turning_a_subnets_dhcp_off_and_on_changes_its_ports_incrementally() -> None:
    world = _world()
    compiler = Compiler()
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    for enabled in (False, True):
        sub = world.tables["subnets"][SUBNETS[0].id]
        world.tables["subnets"][sub.id] = dataclasses.replace(sub, enable_dhcp=enabled)
        world.generation += 1
        new = world.intent()
        offers = compiler.update(new, topo, intent_delta(intent, new),
                                 topology_delta(topo, topo))
        intent = new
        assert_same(compiler, intent, topo)
        assert set(offers) == {DPIDS[0]}, "only the switch of the subnet's port"
        desired = compiler.desired(DPIDS[0])
        assert desired is not None
        assert len(_flows(desired, PUNT)) == (1 if enabled else 0)
        assert (pl.punt_meter_id(10) in desired.meters) is enabled
        assert compiler.full_compiles == 1


def test_an_unchanged_meter_set_is_handed_on_as_the_same_object() -> None:
    """The reconciler compares meters only when the map is a new one: a change that
    touches no meter must keep the very same map."""
    world = _world()
    compiler = Compiler()
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    before = compiler.desired(DPIDS[0])
    assert before is not None
    world.apply(("rule", 0, 0, "ingress", "IPv4", "tcp", 22, None))
    world.apply(("port", 0, 0, 5, frozenset({0}), True, True, None, DPIDS[0]))
    new = world.intent()
    compiler.update(new, topo, intent_delta(intent, new), topology_delta(topo, topo))
    after = compiler.desired(DPIDS[0])
    assert after is not None and after.flows != before.flows
    assert after.meters is before.meters


def test_a_push_compares_only_the_meters_its_flows_point_to_and_the_shared_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Punt meters are one per port: a push after a port change sends exactly that
    port's meter change, compares only the meters of the flows it changed (and QoS's),
    and leaves the reconciler's view of the switch equal to what was asked."""
    from test_startup_early_openflow import FakeChannel

    from controller.reconciler import SwitchSync

    world = _world()
    for i in range(2, 7):  # more DHCP ports on D1
        world.apply(("port", i, 0, 10 + i, frozenset(), True, True, None, DPIDS[0]))
    compiler = Compiler()
    intent, topo = world.intent(), world.view()
    compiler.update(intent, topo, None, None)
    sync = SwitchSync(FakeChannel(DPIDS[0]))  # type: ignore[arg-type]
    sent: list[tuple[int, tuple[int, ...]]] = []
    monkeypatch.setattr(sync, "_send_meters", lambda ms, cmd: sent.append(
        (cmd, tuple(m.meter_id for m in ms))) if ms else None)
    monkeypatch.setattr(sync, "_send_bundle", lambda diff: None)
    touched: list[set[int]] = []
    real = sync._meters_touched

    def recorded(desired: Any, keys: Any) -> set[int]:
        touched.append(real(desired, keys))
        return touched[-1]

    monkeypatch.setattr(sync, "_meters_touched", recorded)
    sync.installed = {}
    first = compiler.desired(DPIDS[0])
    assert first is not None
    sync.push(first)
    assert sync.installed_meters == dict(first.meters) and len(first.meters) == 6
    steps: list[tuple[Any, ...]] = [
        ("delete_port", 3), ("port", 7, 0, 30, frozenset(), True, True, None, DPIDS[0]),
        ("rule", 0, 0, "ingress", "IPv4", "tcp", 22, None),
        ("subnet_dhcp", 0, False), ("subnet_dhcp", 0, True)]
    for step in steps:
        sent.clear()
        world.apply(step)
        new, new_topo = world.intent(), world.view()
        offers = compiler.update(new, new_topo, intent_delta(intent, new),
                                 topology_delta(topo, new_topo))
        intent, topo = new, new_topo
        offer = offers.get(DPIDS[0])
        if offer is None:
            continue
        before = dict(sync.installed_meters)
        sync.push(offer.desired, offer.changed_keys)
        want = dict(offer.desired.meters)
        assert sync.installed_meters == want, step
        added = {m for m in want if m not in before}
        gone = {m for m in before if m not in want}
        assert {i for cmd, ids in sent if cmd == 0 for i in ids} == added, step
        assert {i for cmd, ids in sent if cmd == 2 for i in ids} == gone, step
    # a single port's change looked at that port's meter only, not the six
    assert touched[0] == {pl.punt_meter_id(13)}
    assert touched[1] == {pl.punt_meter_id(17)}
