"""The engine's per-switch counters and its watch on switches that never reach it.

Counters: `flow_mods_sent` in /v1/switches and `loom_flow_mods_total` in /metrics
count the same thing, start at 0 the moment a switch is first known (not at its
first push), and carry on across reconnects instead of starting again.

The watch: an integration bridge that opens no OpenFlow connection within
OF_CONNECT_GRACE_SECONDS gets one WARNING naming its target and the fix, and
/v1/chassis says `openflow_connected: false`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional, cast

import pytest
from prometheus_client import REGISTRY

from controller import engine as engine_mod
from controller.compiler import compile_switch
from controller.engine import OF_CONNECT_GRACE_SECONDS, Engine, SwitchCounters
from controller.intent import Intent
from controller.southbound.chassis import ControllerLink
from controller.southbound.registry import ChassisRegistry
from controller.topology import BridgeState, ChassisState, Topology


class FakeStore:
    def __init__(self, intent: Intent) -> None:
        self.intent = intent

    def latest(self) -> Intent:
        return self.intent


class FakeChannel:
    """A switch that accepts everything: no flows installed, every call answered."""

    def __init__(self, datapath_id: int) -> None:
        self.datapath_id = datapath_id
        self.closed = threading.Event()
        self._xid = 0

    def reserve_xids(self, n: int) -> int:
        first = self._xid + 1
        self._xid += n
        return first

    def send(self, data: bytes) -> None:
        pass

    def call(self, data: bytes, xid: int, timeout: float) -> list:
        return []

    def take_stray_errors(self, first_xid: int, last_xid: int) -> list:
        return []


class FakeRegistry:
    def __init__(self, target: str) -> None:
        self.controller_target = target
        self.links: list[ControllerLink] = []

    def controller_links(self) -> list[ControllerLink]:
        return list(self.links)


def _topology(dpid: int, chassis: str = "hv1") -> Topology:
    topo = Topology()
    topo.update_chassis(ChassisState(chassis, f"unix:/run/{chassis}/db.sock", True,
                                     "192.0.2.1", (BridgeState("br-int", dpid, ()),)))
    return topo


def _sample(name: str, dpid: int) -> Optional[float]:
    return REGISTRY.get_sample_value(name, {"datapath_id": f"{dpid:016x}"})


def _push_and_wait(engine: Engine, dpid: int, timeout: float = 10.0) -> None:
    desired = compile_switch(engine.store.latest(), engine.topology.view(), dpid)
    worker = engine._workers[dpid]
    worker.offer(desired)
    deadline = time.monotonic() + timeout
    while worker.sync.synced is not desired:
        assert time.monotonic() < deadline, worker.error
        time.sleep(0.01)


def test_counters_start_at_zero_and_survive_a_reconnect() -> None:
    dpid = 0x10C0_0001
    engine = Engine(FakeStore(Intent(generation=1)), _topology(dpid))
    first = FakeChannel(dpid)
    engine.switch_connected(first)
    try:
        # samples exist, at 0, before anything was pushed
        for name in ("loom_flow_mods_total", "loom_bundles_total", "loom_push_failures_total"):
            assert _sample(name, dpid) == 0.0, name
        (view,) = engine.switches()
        assert view["flow_mods_sent"] == 0 and view["bundles"] == 0
        assert view["connections"] == 1

        _push_and_wait(engine, dpid)
        (view,) = engine.switches()
        sent = view["flow_mods_sent"]
        assert sent > 0 and view["bundles"] == 1
        assert _sample("loom_flow_mods_total", dpid) == sent

        # the switch reconnects (ovs-vswitchd restarted: it holds nothing again)
        first.closed.set()
        engine.switch_disconnected(first)
        second = FakeChannel(dpid)
        engine.switch_connected(second)
        (view,) = engine.switches()
        assert view["flow_mods_sent"] == sent and view["connections"] == 2  # not reset
        _push_and_wait(engine, dpid)
        (view,) = engine.switches()
        assert view["flow_mods_sent"] == 2 * sent and view["bundles"] == 2
        assert _sample("loom_flow_mods_total", dpid) == 2 * sent
        assert _sample("loom_bundles_total", dpid) == 2
        second.closed.set()
    finally:
        engine.stop()


def test_export_adds_only_what_is_new() -> None:
    dpid = 0x10C0_0002
    counters = SwitchCounters(dpid)
    counters.stats.flow_mods, counters.stats.bundles = 7, 1
    counters.export()
    counters.export()  # nothing new: nothing added
    assert _sample("loom_flow_mods_total", dpid) == 7
    counters.stats.flow_mods += 3
    counters.export()
    assert _sample("loom_flow_mods_total", dpid) == 10
    assert _sample("loom_bundles_total", dpid) == 1


def _link(dpid: int, target: str, connected: bool = False) -> ControllerLink:
    return ControllerLink("hv1", "br-int", dpid, target, connected,
                          None if connected else "BACKOFF",
                          None if connected else "Connection refused")


def test_a_bridge_that_never_connects_is_warned_once_and_shown(
        caplog: pytest.LogCaptureFixture) -> None:
    dpid = 0x10C0_0003
    target = "tcp:127.0.0.1:6653"
    registry = FakeRegistry(target)
    registry.links = [_link(dpid, target)]
    engine = Engine(FakeStore(Intent(generation=1)), _topology(dpid),
                    cast(ChassisRegistry, registry))
    caplog.set_level(logging.INFO, logger=engine_mod.__name__)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    engine._watch_openflow(now=100.0)
    engine._watch_openflow(now=100.0 + OF_CONNECT_GRACE_SECONDS - 1)
    assert warnings() == []  # still within the grace
    assert _sample("loom_flow_mods_total", dpid) == 0.0  # known, so counted from 0
    engine._watch_openflow(now=100.0 + OF_CONNECT_GRACE_SECONDS)
    engine._watch_openflow(now=100.0 + 5 * OF_CONNECT_GRACE_SECONDS)
    (text,) = warnings()  # once
    for part in ("chassis hv1", "bridge br-int", target, "Connection refused",
                 "cannot reach", "loopback", "--of-target tcp:", ":6653"):
        assert part in text, (part, text)

    (ch,) = engine.chassis()
    assert ch["connected"] is True and ch["openflow_connected"] is False
    assert ch["controller_target"] == target
    assert ch["controller_status"] == {"is_connected": False, "state": "BACKOFF",
                                       "last_error": "Connection refused"}

    # the fix lands: the switch connects, one INFO says so, no further warning
    channel = FakeChannel(dpid)
    engine.switch_connected(channel)
    registry.links = [_link(dpid, target, connected=True)]
    engine._watch_openflow(now=200.0)
    engine._watch_openflow(now=300.0)
    assert len(warnings()) == 1
    assert sum("now connected" in r.getMessage() for r in caplog.records) == 1
    (ch,) = engine.chassis()
    assert ch["openflow_connected"] is True
    channel.closed.set()
    engine.stop()


def test_connected_elsewhere_is_told_apart(caplog: pytest.LogCaptureFixture) -> None:
    """ovs-vswitchd connected to the target, yet no connection reached us: another
    controller answers at that address."""
    dpid = 0x10C0_0004
    registry = FakeRegistry("tcp:192.0.2.10:6653")
    registry.links = [_link(dpid, "tcp:192.0.2.10:6653", connected=True)]
    engine = Engine(FakeStore(Intent(generation=1)), _topology(dpid),
                    cast(ChassisRegistry, registry))
    caplog.set_level(logging.WARNING, logger=engine_mod.__name__)
    engine._watch_openflow(now=0.0)
    engine._watch_openflow(now=OF_CONNECT_GRACE_SECONDS + 1)
    (record,) = caplog.records
    assert "another controller" in record.getMessage()
    assert "loopback" not in record.getMessage()


def test_no_registry_no_watch() -> None:
    engine = Engine(FakeStore(Intent()), Topology())
    engine._watch_openflow(now=0.0)  # fabric-only: nothing to watch, nothing raised
    assert engine.chassis() == []
