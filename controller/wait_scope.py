"""Which switches a `?wait=true` write waits for: those whose desired state it changed.

A write committed as generation G is installed once every switch whose desired
state differs because of G runs G or later. A switch whose flows, groups and meters
G did not change is not waited for, so one switch that keeps failing its pushes
holds up only the writes that concern it, not every write on unrelated networks.

The engine says so when it hands states out (`ChangeLog.record`, once per compile):
the compile that took the intent from generation `lo` to `hi` changed these
switches. The incremental compiler knows that for free (it offers nothing to a
switch it did not change); the full compile (with a fabric) compares each switch's
new state with its previous one, which costs what that compile already cost. A
compile covering several writes at once names the switches any of them changed: a
write may then wait for a switch another write of the same compile changed, never
the other way round.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Optional

from controller.compiler import DesiredSwitch

# Compiles remembered: a waiter asks about a generation compiled moments ago.
KEEP = 1024


def same_state(a: DesiredSwitch, b: DesiredSwitch) -> bool:
    """Whether two desired states put the same things on the switch (OpenFlow only:
    shaping goes through the chassis' OVSDB and is not waited for)."""
    return a is b or (a.flows == b.flows and a.groups == b.groups and a.meters == b.meters)


class ChangeLog:
    """Per compile: the generations it covered and the switches it changed."""

    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._log: deque[tuple[int, int, frozenset[int]]] = deque(maxlen=keep)

    def record(self, lo: int, hi: int, changed: frozenset[int]) -> None:
        """A compile took the intent from generation `lo` to `hi` (a topology-only
        compile has lo == hi) and changed the desired state of `changed`."""
        if hi <= lo:
            return
        with self._lock:
            self._log.append((lo, hi, changed))

    def affected(self, generation: int) -> Optional[frozenset[int]]:
        """The switches the compile of `generation` changed; None if no compile kept
        here covered it (too old, or compiled in full before anything was recorded):
        the caller then waits for every switch, the safe answer."""
        with self._lock:
            for lo, hi, changed in reversed(self._log):
                if lo < generation <= hi:
                    return changed
                if hi < generation:
                    break
        return None


__all__ = ["ChangeLog", "KEEP", "same_state"]
