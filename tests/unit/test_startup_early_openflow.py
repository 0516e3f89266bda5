"""A restart's OpenFlow side starts before the store loads (issue 11): switches that
connect meanwhile are read at once and handed, with their reads, to the engine; and
the OpenFlow app ends up calling the engine, whichever of the OpenFlow thread and the
store gets there first (726c1a7 withdrew the early start because it did not: with an
empty store the engine came first, and the fabric never settled)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import apps.loom_ofp
from controller import launcher
from controller.launcher import EarlyOpenFlow


class FakeChannel:
    def __init__(self, dpid: int) -> None:
        self.datapath_id = dpid
        self.closed = threading.Event()


class FakeEngine:
    """The engine's side the OpenFlow app calls, discovery hooks included."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def of_switch_up(self, dpid: int, ports: dict) -> None:
        self.calls.append(("up", dpid, dict(ports)))

    def switch_connected(self, channel: Any, preread: Any = None) -> None:
        self.calls.append(("connected", channel, preread))

    def switch_disconnected(self, channel: Any) -> None:
        self.calls.append(("disconnected", channel))

    def of_switch_down(self, dpid: int) -> None:
        self.calls.append(("down", dpid))

    def of_port(self, dpid: int, port_no: int, name: str, up: Any) -> None:
        self.calls.append(("port", dpid, port_no, name, up))

    def lldp_in(self, dpid: int, in_port: int, data: bytes) -> bool:
        self.calls.append(("lldp", dpid, in_port))
        return True

    def probe_targets(self) -> list[tuple[int, int]]:
        return [(1, 1)]

    def urgent_probes(self) -> list[tuple[int, int]]:
        return [(1, 2)]

    def discovery_tick(self) -> None:
        self.calls.append(("tick",))

    def probe_sent(self, dpid: int, ports: list[int]) -> None:
        self.calls.append(("sent", dpid, tuple(ports)))

    def lldp_suspects(self) -> dict[int, list[int]]:
        return {1: [2]}

    def port_counters(self, dpid: int, rx: dict[int, int]) -> None:
        self.calls.append(("rx", dpid, dict(rx)))


@pytest.fixture(autouse=True)
def unbound(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(apps.loom_ofp, "ENGINE", None)
    yield


@pytest.fixture
def early(monkeypatch: pytest.MonkeyPatch) -> EarlyOpenFlow:
    e = EarlyOpenFlow()
    monkeypatch.setattr(e, "_read", lambda channel: (lambda: ("read", channel.datapath_id)))
    return e


@pytest.fixture
def os_ken_run(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """os-ken's AppManager.run_apps replaced: records what the app is bound to when
    os-ken would start calling it, and returns at once."""
    from os_ken.base.app_manager import AppManager

    from controller.ofwire import oskenfast

    seen: list[Any] = []
    monkeypatch.setattr(AppManager, "run_apps",
                        staticmethod(lambda names: seen.append(apps.loom_ofp.ENGINE)))
    monkeypatch.setattr(oskenfast, "install_raw_multipart_parsers", lambda: None)
    return seen


def test_an_engine_attached_before_the_openflow_thread_binds_the_app_stays_bound(
        early: EarlyOpenFlow, os_ken_run: list[Any]) -> None:
    # An empty store loads in milliseconds: the engine is attached while the OpenFlow
    # thread is still importing os-ken. The thread must not bind the app back to the
    # EarlyOpenFlow (it did, in 01f4f6f: test_fabric's switches never got a state).
    engine = FakeEngine()
    early.attach(engine)
    launcher.run_openflow(early, "127.0.0.1", 0)
    assert os_ken_run == [engine]
    assert apps.loom_ofp.ENGINE is engine


def test_the_app_is_bound_to_the_early_side_then_to_the_engine(
        early: EarlyOpenFlow, os_ken_run: list[Any]) -> None:
    launcher.run_openflow(early, "127.0.0.1", 0)  # a big store: the thread comes first
    assert os_ken_run == [early]
    assert apps.loom_ofp.ENGINE is early
    engine = FakeEngine()
    early.attach(engine)
    assert apps.loom_ofp.ENGINE is engine


def test_the_thread_and_the_attach_race_to_the_same_end(
        monkeypatch: pytest.MonkeyPatch, os_ken_run: list[Any]) -> None:
    # The two bindings from two threads, each let go first in turn: the OpenFlow
    # thread held back just before it binds the app (importing os-ken, under load).
    for thread_first in (True, False):
        monkeypatch.setattr(apps.loom_ofp, "ENGINE", None)
        os_ken_run.clear()
        early = EarlyOpenFlow()
        engine = FakeEngine()
        go = threading.Event()
        bind = early.bind_app
        monkeypatch.setattr(early, "bind_app", lambda go=go, bind=bind: (go.wait(5), bind()))
        thread = launcher.start_openflow(early, "127.0.0.1", 0)
        if thread_first:
            go.set()
            thread.join(5)
            early.attach(engine)
        else:
            early.attach(engine)
            go.set()
            thread.join(5)
        assert not thread.is_alive()
        assert os_ken_run == [early if thread_first else engine]
        assert apps.loom_ofp.ENGINE is engine, f"thread first: {thread_first}"


def test_the_discovery_hooks_reach_the_engine_once_attached(early: EarlyOpenFlow) -> None:
    # The probe loop looks the hooks up on whatever the app is bound to; before the
    # engine exists they are absent (the app's no-op defaults), after it the engine's,
    # even through the EarlyOpenFlow.
    apps.loom_ofp.ENGINE = early
    hooks = ("discovery_tick", "probe_sent", "urgent_probes", "lldp_suspects",
             "port_counters")
    default = object()
    for name in hooks:
        assert apps.loom_ofp._hook(name, default) is default  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        early._private_thing  # noqa: B018
    engine = FakeEngine()
    early.attach(engine)
    apps.loom_ofp.ENGINE = early  # someone still holding the early side
    for name in hooks:
        assert apps.loom_ofp._hook(name, default) == getattr(engine, name)
    apps.loom_ofp._hook("discovery_tick", default)()
    assert ("tick",) in engine.calls
    assert early.urgent_probes() == [(1, 2)] and early.lldp_suspects() == {1: [2]}


def test_before_the_engine_no_probe_goes_out_and_lldp_is_dropped_quietly(
        early: EarlyOpenFlow) -> None:
    assert early.probe_targets() == [] and early.lldp_in(1, 1, b"") is True
    engine = FakeEngine()
    early.attach(engine)
    assert early.probe_targets() == [(1, 1)]
    assert early.lldp_in(1, 3, b"") is True and ("lldp", 1, 3) in engine.calls


def test_what_happens_before_the_engine_is_handed_over(early: EarlyOpenFlow) -> None:
    a, b, b2 = FakeChannel(1), FakeChannel(2), FakeChannel(2)
    early.of_switch_up(1, {1: ("tap1", True)})
    early.switch_connected(a)
    early.of_port(1, 2, "tap2", True)
    early.of_port(1, 1, "tap1", None)
    early.of_switch_up(2, {})
    early.switch_connected(b)
    early.switch_disconnected(b)
    early.of_switch_down(2)
    early.of_switch_up(2, {5: ("tap5", False)})
    early.switch_connected(b2)
    engine = FakeEngine()
    early.attach(engine)
    assert apps.loom_ofp.ENGINE is engine
    ups = [c for c in engine.calls if c[0] == "up"]
    assert ups == [("up", 1, {2: ("tap2", True)}), ("up", 2, {5: ("tap5", False)})]
    connected = [(c[1], c[2]()) for c in engine.calls if c[0] == "connected"]
    assert connected == [(a, ("read", 1)), (b2, ("read", 2))]
    # after the hand-over, calls go to the engine as they come
    engine.calls.clear()
    early.of_port(1, 3, "tap3", True)
    early.switch_disconnected(a)
    assert engine.calls == [("port", 1, 3, "tap3", True), ("disconnected", a)]


def test_a_switch_gone_before_the_hand_over_is_not_handed(early: EarlyOpenFlow) -> None:
    a = FakeChannel(1)
    early.switch_connected(a)
    a.closed.set()
    engine = FakeEngine()
    early.attach(engine)
    assert [c for c in engine.calls if c[0] == "connected"] == []
