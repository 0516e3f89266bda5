"""`?wait=true` waits for the switches the write changed, and only those (issue 11).

The record of which switches each compile changed (`controller.wait_scope.ChangeLog`)
on its own, then through `Engine.wait_installed` with workers whose offered and
installed states the test sets: a switch stuck on an old state holds up the writes
that change it, not the others. No clock is read beyond the wait's own timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import MappingProxyType, SimpleNamespace
from typing import Any, Optional

import pytest

from controller.compiler import DesiredSwitch
from controller.engine import Engine
from controller.topology import SwitchView, Topology, TopologyView
from controller.wait_scope import ChangeLog, same_state

HEALTHY, STUCK = 0x1, 0x2


def state(dpid: int, generation: int, *flows: str, version: int = 1) -> DesiredSwitch:
    """A desired state whose flows are named by strings (equality is all that counts)."""
    return DesiredSwitch(dpid, generation, version,
                         flows=MappingProxyType({f: f for f in flows}))  # type: ignore[misc]


class Worker:
    """A switch: what it was last offered (`pending`) and what it installed (`synced`)."""

    def __init__(self, dpid: int) -> None:
        self.datapath_id = dpid
        self.channel = SimpleNamespace(closed=threading.Event())
        self.sync = SimpleNamespace(synced=None)
        self.offered: Optional[DesiredSwitch] = None

    def pending(self) -> Optional[DesiredSwitch]:
        return self.offered

    def offer(self, desired: DesiredSwitch, *, installs: bool) -> None:
        self.offered = desired
        if installs:
            self.sync.synced = desired

    def stop(self) -> None:
        pass


def test_same_state_compares_what_the_switch_holds() -> None:
    a = state(1, 5, "f1", "f2")
    assert same_state(a, state(1, 6, "f2", "f1", version=4))
    assert not same_state(a, state(1, 5, "f1"))
    assert not same_state(a, DesiredSwitch(1, 5, 1, flows=a.flows,
                                           groups=MappingProxyType({1: "g"})))  # type: ignore[dict-item]


def test_change_log_names_the_switches_the_compile_of_a_generation_changed() -> None:
    log = ChangeLog(keep=3)
    log.record(4, 5, frozenset({HEALTHY}))
    log.record(5, 5, frozenset({STUCK}))  # topology only: covers no generation
    log.record(5, 8, frozenset({STUCK}))  # three writes compiled at once
    assert log.affected(5) == {HEALTHY}
    assert log.affected(6) == log.affected(8) == {STUCK}
    assert log.affected(9) is None  # not compiled yet
    log.record(8, 9, frozenset())  # a rename: no switch
    log.record(9, 10, frozenset({HEALTHY}))
    assert log.affected(9) == frozenset()
    assert log.affected(5) is None  # fell out of the log: every switch, the safe answer


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(SimpleNamespace(latest=lambda: None), Topology())
    view = TopologyView(version=1, switches=MappingProxyType({
        d: SwitchView(d, f"hv{d}", "br-int") for d in (HEALTHY, STUCK)}))
    eng.topology = SimpleNamespace(view=lambda: view)  # type: ignore[assignment]
    eng._workers = {d: Worker(d) for d in (HEALTHY, STUCK)}  # type: ignore[misc]
    yield eng
    eng.stop()


def _compile(eng: Engine, generation: int, healthy: tuple[str, ...],
             stuck: tuple[str, ...]) -> None:
    """What a compile of `generation` does: offer each switch its state; the healthy
    switch installs it at once, the stuck one never does."""
    workers: Any = eng._workers
    changed = set()
    for dpid, flows, installs in ((HEALTHY, healthy, True), (STUCK, stuck, False)):
        new = state(dpid, generation, *flows)
        before = workers[dpid].offered
        if before is None or not same_state(before, new):
            changed.add(dpid)
            workers[dpid].offer(new, installs=installs)  # unchanged: not offered anything
    eng._compiled(generation, changed)


def test_wait_installed_waits_only_for_the_switches_a_write_changed(engine: Engine) -> None:
    _compile(engine, 1, ("a",), ("b",))
    engine._workers[STUCK].sync.synced = state(STUCK, 1, "b")  # type: ignore[attr-defined]
    assert engine.wait_installed(1, timeout=0.2)  # both run it
    # generation 2 changes the stuck switch: times out
    _compile(engine, 2, ("a",), ("b", "b2"))
    assert not engine.wait_installed(2, timeout=0.2)
    # generations 3 and 4 change only the healthy switch: the stuck one is not waited for
    _compile(engine, 3, ("a", "a3"), ("b", "b2"))
    assert engine.wait_installed(3, timeout=0.2)
    _compile(engine, 4, ("a", "a3", "a4"), ("b", "b2"))
    assert engine.wait_installed(4, timeout=0.2)
    # a write that changes nothing anywhere (a rename) waits for no switch
    _compile(engine, 5, ("a", "a3", "a4"), ("b", "b2"))
    assert engine.wait_installed(5, timeout=0.2)
    # ... and one that changes the stuck switch again still times out
    _compile(engine, 6, ("a", "a3", "a4"), ("b",))
    assert not engine.wait_installed(6, timeout=0.2)
    # a disconnected switch is not waited for (it gets everything when it reconnects)
    engine._workers[STUCK].channel.closed.set()  # type: ignore[attr-defined]
    assert engine.wait_installed(6, timeout=0.2)


def test_wait_starts_before_the_compile_it_waits_for(engine: Engine) -> None:
    """The usual order: the write returns, the wait starts, then the compile lands."""
    _compile(engine, 1, ("a",), ("b",))
    _compile(engine, 2, ("a",), ("b", "b2"))  # the stuck switch is behind from here on
    results: dict[int, bool] = {}

    def wait(generation: int) -> None:
        results[generation] = engine.wait_installed(generation, timeout=5)

    waiter = threading.Thread(target=wait, args=(3,))
    waiter.start()
    threading.Event().wait(0.05)
    _compile(engine, 3, ("a", "a3"), ("b", "b2"))
    waiter.join(10)
    assert results == {3: True}
