"""`?wait=true` waits for the switches the write changed, and only those (issue 11).

The affected-switch computation (`controller.wait_scope`) on its own, then through
`Engine.wait_installed` with workers whose offered and installed states the test
sets: a switch stuck on an old state holds up the writes that change it, not the
others. No clock is read beyond the wait's own timeout.
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
from controller.wait_scope import WaitScope, same_state

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


def test_affected_compares_the_state_for_a_generation_with_the_one_before() -> None:
    workers = {d: Worker(d) for d in (HEALTHY, STUCK)}
    scope = WaitScope(lambda: [(w.datapath_id, w.pending()) for w in workers.values()])
    workers[HEALTHY].offer(state(HEALTHY, 5, "a"), installs=True)
    workers[STUCK].offer(state(STUCK, 5, "b", "b-new"), installs=False)
    scope.observe()
    # generation 6 changes the healthy switch only
    workers[HEALTHY].offer(state(HEALTHY, 6, "a", "a6"), installs=False)
    workers[STUCK].offer(state(STUCK, 6, "b", "b-new"), installs=False)
    assert scope.affected(HEALTHY, 6, workers[HEALTHY].offered)  # type: ignore[arg-type]
    assert not scope.affected(STUCK, 6, workers[STUCK].offered)  # type: ignore[arg-type]
    scope.observe()
    # generation 7 changes the stuck one
    workers[STUCK].offer(state(STUCK, 7, "b", "b-new", "b7"), installs=False)
    assert scope.affected(STUCK, 7, workers[STUCK].offered)  # type: ignore[arg-type]
    # not offered anything for generation 8 (an incremental compile): not affected
    assert not scope.affected(HEALTHY, 8, workers[HEALTHY].offered)  # type: ignore[arg-type]
    # nothing seen from before: cannot tell, so it is waited for
    fresh = WaitScope(lambda: [])
    assert fresh.affected(STUCK, 7, state(STUCK, 7, "b"))


def test_scope_keeps_a_few_states_per_switch_and_forgets_gone_switches() -> None:
    offers: list[tuple[int, Any]] = []
    scope = WaitScope(lambda: list(offers))
    for g in range(1, 10):
        offers[:] = [(HEALTHY, state(HEALTHY, g, f"f{g}")), (STUCK, state(STUCK, 1, "s"))]
        scope.observe()
    # the state before 9 is 8's; a generation older than anything kept cannot be told
    assert not scope.affected(HEALTHY, 9, state(HEALTHY, 9, "f8"))
    assert scope.affected(HEALTHY, 9, state(HEALTHY, 9, "f9"))
    assert scope.affected(HEALTHY, 2, state(HEALTHY, 9, "f1"))
    offers[:] = [(HEALTHY, None)]
    scope.observe()
    assert scope.affected(STUCK, 2, state(STUCK, 2, "s"))  # forgotten: waited for again


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
    workers[HEALTHY].offer(state(HEALTHY, generation, *healthy), installs=True)
    workers[STUCK].offer(state(STUCK, generation, *stuck), installs=False)
    with eng._synced:
        eng._compiled_generation = generation
        eng._synced.notify_all()


def test_wait_installed_waits_only_for_the_switches_a_write_changed(engine: Engine) -> None:
    _compile(engine, 1, ("a",), ("b",))
    engine._workers[STUCK].sync.synced = state(STUCK, 1, "b")  # type: ignore[attr-defined]
    assert engine.wait_installed(1, timeout=0.2)  # both run it
    # generation 2 changes the stuck switch: times out
    engine.wait_installed(1, 0.01)  # (the scope follows compiles from now on)
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
    while 3 not in results and engine._scope is None:
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)
    _compile(engine, 3, ("a", "a3"), ("b", "b2"))
    waiter.join(10)
    assert results == {3: True}
