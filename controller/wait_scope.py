"""Which switches a `?wait=true` write waits for: those whose desired state it changed.

A write committed as generation G is installed once every switch whose desired
state differs because of G runs G or later. A switch given the same flows, groups
and meters for G as it had before G (it carries nothing the write touched) is not
waited for, so one switch that keeps failing its pushes holds up only the writes
that concern it, not every write on unrelated networks.

The engine hands each switch a new DesiredSwitch on every compile and keeps only
the newest, so the state "just before G" would be gone by the time G is compiled.
`WaitScope` remembers the last few states it saw per switch (`observe`, run on
every compile and push notification by `follow`), and `affected` compares the
state compiled for G with the newest one seen from before G.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Optional

from controller.compiler import DesiredSwitch

# States remembered per switch: the one before a waited-for generation and the few
# compiled since (a rollout step or a regroup offers more than one per generation).
KEEP = 4

Offers = Callable[[], Iterable[tuple[int, Optional[DesiredSwitch]]]]


def same_state(a: DesiredSwitch, b: DesiredSwitch) -> bool:
    """Whether two desired states put the same things on the switch (OpenFlow only:
    shaping goes through the chassis' OVSDB and is not waited for)."""
    return a is b or (a.flows == b.flows and a.groups == b.groups and a.meters == b.meters)


class WaitScope:
    """Recent desired states per switch, and which switches a generation changed."""

    def __init__(self, offers: Offers) -> None:
        self._offers = offers  # (datapath id, a state it was offered or holds), per switch
        self._seen: dict[int, list[DesiredSwitch]] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def observe(self) -> None:
        """Remember the states the switches are offered and hold now."""
        current: dict[int, list[DesiredSwitch]] = {}
        for dpid, desired in self._offers():
            states = current.setdefault(dpid, [])
            if desired is not None:
                states.append(desired)
        with self._lock:
            for dpid in set(self._seen) - set(current):
                del self._seen[dpid]  # gone: a reconnect starts from what it then holds
            for dpid, states in current.items():
                seen = self._seen.setdefault(dpid, [])
                for desired in states:
                    if not any(d is desired for d in seen):
                        seen.append(desired)
                seen.sort(key=lambda d: (d.generation, d.topology_version))  # stable
                del seen[:-KEEP]

    def follow(self, changed: threading.Condition, stopping: threading.Event) -> None:
        """Observe after every notification of `changed` (a compile done, a push done),
        in a daemon thread, so states offered while no write waits are remembered too."""
        def run() -> None:
            while not stopping.is_set():
                with changed:
                    changed.wait(1.0)
                self.observe()

        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=run, daemon=True, name="wait scope")
        self._thread.start()

    def affected(self, dpid: int, generation: int, current: DesiredSwitch) -> bool:
        """Whether `generation` changed what switch `dpid` should hold, given `current`,
        its newest desired state once `generation` is compiled.

        Not offered a state for `generation` at all: not affected. No state seen from
        before `generation` (a switch that just connected): affected, since waiting is
        the safe answer when it cannot be told."""
        if current.generation < generation:
            return False
        with self._lock:
            before = [d for d in self._seen.get(dpid, ()) if d.generation < generation]
        return not before or not same_state(before[-1], current)
