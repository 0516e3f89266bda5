"""A restart's OpenFlow side starts before the store loads (issue 11): switches that
connect meanwhile are read at once and handed, with their reads, to the engine."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from controller.flows import MatchField
from controller.launcher import EarlyOpenFlow
from controller.reconciler import SwitchSync, diff_flows


class FakeChannel:
    def __init__(self, dpid: int) -> None:
        self.datapath_id = dpid
        self.closed = threading.Event()


class FakeEngine:
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


@pytest.fixture
def early(monkeypatch: pytest.MonkeyPatch) -> EarlyOpenFlow:
    import apps.loom_ofp

    monkeypatch.setattr(apps.loom_ofp, "ENGINE", None)
    e = EarlyOpenFlow()
    monkeypatch.setattr(e, "_read", lambda channel: (lambda: ("read", channel.datapath_id)))
    return e


def test_what_happens_before_the_engine_is_handed_over(early: EarlyOpenFlow) -> None:
    import apps.loom_ofp

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
    assert early.probe_targets() == [] and early.lldp_in(1, 1, b"") is True
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


def test_adopt_takes_an_earlier_read() -> None:
    channel = FakeChannel(7)
    first, second = SwitchSync(channel), SwitchSync(channel)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        second.adopt(first)
    first.installed = {}
    first.stats.reads = 1
    second.adopt(first)
    assert second.installed is first.installed and second.stats.reads == 1


def test_diff_without_the_second_pass_is_the_same() -> None:
    class F:
        def __init__(self, key: Any, v: int) -> None:
            self.key, self.v = key, v

        def __eq__(self, other: object) -> bool:
            return isinstance(other, F) and (self.key, self.v) == (other.key, other.v)

        __hash__ = None  # type: ignore[assignment]

    def ref(installed: dict, desired: dict) -> tuple:
        return (tuple(f for k, f in desired.items() if installed.get(k) != f),
                tuple(f for k, f in installed.items() if k not in desired))

    cases = [
        ({1: F(1, 0), 2: F(2, 0)}, {1: F(1, 0), 2: F(2, 0)}),  # a restart: nothing
        ({1: F(1, 0), 2: F(2, 0)}, {1: F(1, 1), 2: F(2, 0)}),  # changed
        ({1: F(1, 0), 2: F(2, 0)}, {1: F(1, 0), 3: F(3, 0)}),  # one gone, one new
        ({1: F(1, 0)}, {}),
        ({}, {1: F(1, 0)}),
        ({1: F(1, 0), 2: F(2, 0), 3: F(3, 0)}, {1: F(1, 0), 2: F(2, 0)}),
    ]
    for installed, desired in cases:
        d = diff_flows(installed, desired)  # type: ignore[arg-type]
        assert (d.adds, d.deletes) == ref(installed, desired)


def test_match_field_hash_is_the_fields_hash_and_survives_pickling() -> None:
    a, b = MatchField("in_port", 3), MatchField("in_port", 3)
    assert a == b and hash(a) == hash(b) == hash(("in_port", 3, None))
    c = pickle.loads(pickle.dumps(a))
    assert c == a and hash(c) == hash(a)
    assert repr(a) == "MatchField(field='in_port', value=3, mask=None)"
    assert sorted([MatchField("b", 1), a]) == [MatchField("b", 1), a]
