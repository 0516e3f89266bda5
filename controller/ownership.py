"""Which controller instance is master of which switch, elected through the northbound.

Several `python -m controller` processes may share one northbound database (issue
14). Each registers a `Controller_Instance` row and bumps its heartbeat every
`heartbeat_s`; an instance whose heartbeat has not moved for `dead_after_s`, as seen
on this instance's own clock (no clock is compared between machines), is dead.

The unit of ownership is a *key*: `chassis:<remote>` for a chassis (its OVSDB
configuration and its integration bridge's flows), or `fabric` for a whole fabric
(every switch, chassis included: LLDP discovery, paths and failover groups are
worked out across all of it, so one instance holds it, and the others stand by).
`Switch_Owner` holds, per key, the owner and the generation of the grant. Every
grant is one transaction that verifies the row it read (OVSDB prerequisites), so of
two instances deciding at once only one wins, and it raises the generation, which
is what the owner puts in its OpenFlow role request: a switch refuses a master whose
generation is older than the last it saw (`OFPRRFC_STALE`), so an instance that was
paused, or cut off, and still believes it is master cannot write to the switch once
another has taken it.

The decision is `plan`, pure: orphaned keys (no owner, or a dead one) go to the
least-loaded live instance; an instance holding more than one key above the least
loaded hands one over (one per tick). Ownership is sticky otherwise: an instance
coming back does not take its keys back, it gets them only by that rebalancing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from prometheus_client import Counter, Gauge

from controller.store.cluster_view import (
    INSTANCE_TABLE,
    OWNER_TABLE,
    ClusterView,
    OwnerRow,
    find_row,
)
from controller.store.errors import StoreError, WriteConflict

LOG = logging.getLogger(__name__)

FABRIC_KEY = "fabric"
HEARTBEAT_S = 1.0
DEAD_AFTER_S = 3.0
FORGET_AFTER_S = 30.0  # an owned key gone from the deployment this long: its row goes

OWNED = Gauge("loom_owned_switches", "Ownership keys (chassis, or the fabric) this "
              "instance is master of")
GRANTS = Counter("loom_ownership_changes_total", "Ownership changes this instance made",
                 ["kind"])  # claim (an orphan), failover (a dead owner's), handover
LIVE_INSTANCES = Gauge("loom_live_instances", "Controller instances this one sees alive")


def chassis_key(remote: str) -> str:
    return f"chassis:{remote}"


@dataclass(frozen=True)
class Grant:
    """A write to `Switch_Owner`: `key` to `to`, on the condition that its row still
    is `expected` (None: that it does not exist yet)."""

    key: str
    to: str
    expected: Optional[OwnerRow]
    kind: str  # "claim" | "failover" | "handover"


def _rank(key: str, instance: str) -> bytes:
    """Rendezvous hashing: a stable, spread choice between equally loaded instances."""
    return hashlib.sha256(f"{key}\0{instance}".encode()).digest()


def plan(view: ClusterView, me: str, alive: set[str], keys: Iterable[str]) -> list[Grant]:
    """The grants this instance should write now (pure; every instance runs it on the
    same view and so agrees on who takes what)."""
    alive = set(alive) | {me}
    keys = set(keys)
    load = {name: 0 for name in alive}
    for owned in view.owners.values():
        if owned.owner in load and owned.switch in keys:
            load[owned.owner] += 1
    grants: list[Grant] = []
    for key in sorted(keys):
        row = view.owners.get(key)
        if row is not None and row.owner in alive:
            continue
        target = min(alive, key=lambda n, k=key: (load[n], _rank(k, n)))  # type: ignore[misc]
        load[target] += 1
        if target == me:
            kind = "claim" if row is None or not row.owner else "failover"
            grants.append(Grant(key, me, row, kind))
    if grants:
        return grants
    least = min(alive, key=lambda n: (load[n], n))
    if load[me] > load[least] + 1:
        mine = [r for r in view.owners.values() if r.owner == me and r.switch in keys]
        given = max(mine, key=lambda r: _rank(r.switch, least))
        return [Grant(given.switch, least, given, "handover")]
    return []


def next_generation(previous: int) -> int:
    """Above `previous`, and above any generation a switch may still remember from a
    database made earlier (ovs-vswitchd keeps the last one per bridge until it
    restarts): the wall clock in milliseconds. OpenFlow compares generations as
    signed 64-bit differences, so these never wrap."""
    return max(previous + 1, int(time.time() * 1000))


class Ownership:
    """This instance's membership and its share of the switches."""

    def __init__(self, store: Any, name: str, of_target: str, rest_url: str,
                 keys: Callable[[], Iterable[str]], on_change: Callable[[], None], *,
                 on_view: Callable[[], None] = lambda: None,
                 heartbeat_s: float = HEARTBEAT_S, dead_after_s: float = DEAD_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.name = name
        self.of_target = of_target
        self.rest_url = rest_url
        self._keys = keys
        self._on_change = on_change
        self._on_view = on_view  # any change of the view (installed generations: waits)
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = dead_after_s
        self._clock = clock
        self._started = clock()
        self._seen: dict[str, tuple[int, float]] = {}  # instance -> (heartbeat, when it moved)
        self._lock = threading.Lock()
        self._view = ClusterView()
        self._mine: dict[str, int] = {}  # key -> generation, as of the last view
        self._installed: dict[str, int] = {}  # key -> generation to report
        self._reported: dict[str, int] = {}
        self._absent: dict[str, float] = {}  # owned key -> since when it is not a key
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ownership", daemon=True)
        self.failovers = 0

    # ---- lifecycle
    def start(self) -> None:
        self.store.subscribe_cluster(self._view_changed)
        self._register()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # ---- answers (any thread)
    def grant(self, key: Optional[str]) -> Optional[int]:
        """The generation of this instance's grant of `key`, None if not its owner."""
        if key is None:
            return None
        with self._lock:
            return self._mine.get(key)

    def owner_of(self, key: Optional[str]) -> Optional[OwnerRow]:
        if key is None:
            return None
        return self._view.owners.get(key)

    def alive(self) -> set[str]:
        now = self._clock()
        with self._lock:
            seen = dict(self._seen)
        out = {self.name}
        for name, (_, moved) in seen.items():
            if now - moved < self.dead_after_s:
                out.add(name)
        return out

    def report_installed(self, key: str, generation: int) -> None:
        """The owner has installed `generation` on the switch(es) of `key`: written to
        the database (soon, coalesced), where `?wait=true` on any instance reads it."""
        with self._lock:
            if generation <= self._installed.get(key, -1):
                return
            self._installed[key] = generation
        self._wake.set()

    def status(self) -> dict[str, Any]:
        view = self._view
        alive = self.alive()
        return {
            "instance": self.name,
            "instances": [
                {"name": row.name, "alive": row.name in alive, "of_target": row.of_target,
                 "rest_url": row.rest_url, "started_at": row.started_at,
                 "owns": sorted(k for k, o in view.owners.items() if o.owner == row.name)}
                for row in sorted(view.instances.values(), key=lambda r: r.name)],
            "owners": {k: {"owner": o.owner, "generation": o.generation,
                           "installed": o.installed} for k, o in sorted(view.owners.items())},
        }

    def of_targets(self) -> tuple[str, ...]:
        """Every instance's OpenFlow target: each integration bridge lists them all."""
        targets = {row.of_target for row in self._view.instances.values() if row.of_target}
        targets.add(self.of_target)
        return tuple(sorted(targets))

    # ---- the ownership thread
    def _view_changed(self, view: ClusterView) -> None:
        targets = self.of_targets()
        self._view = view
        now = self._clock()
        # a new instance's OpenFlow target goes onto the bridges this one owns
        changed = self.of_targets() != targets
        with self._lock:
            for name, row in view.instances.items():
                if name == self.name:
                    continue
                last = self._seen.get(name)
                if last is None:
                    # first seen: give it the time to show it is alive
                    self._seen[name] = (row.heartbeat, max(now, self._started))
                elif last[0] != row.heartbeat:
                    self._seen[name] = (row.heartbeat, now)
            mine = {k: o.generation for k, o in view.owners.items() if o.owner == self.name}
            gained = set(mine) - set(self._mine)
            lost = set(self._mine) - set(mine)
            if mine != self._mine:
                self._mine = mine
                changed = True
        if gained or lost:
            LOG.info("instance %s: owns %s%s%s", self.name, sorted(mine) or "nothing",
                     f"; took {sorted(gained)}" if gained else "",
                     f"; gave up {sorted(lost)}" if lost else "")
            OWNED.set(len(mine))
        if changed:
            self._on_change()
        self._on_view()
        self._wake.set()

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stopping.is_set():
            now = self._clock()
            try:
                if now >= next_beat:
                    next_beat = now + self.heartbeat_s
                    self._beat()
                self._report()
                self._decide()
            except StoreError as exc:
                LOG.debug("ownership: %s", exc)
            except Exception:
                LOG.exception("ownership round failed")
            self._wake.wait(max(0.05, min(self.heartbeat_s, next_beat - self._clock())))
            self._wake.clear()

    def _register(self) -> None:
        name, target, url = self.name, self.of_target, self.rest_url
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def write(idl: Any, txn: Any) -> None:
            row = find_row(idl, INSTANCE_TABLE, "name", name)
            if row is None:
                row = txn.insert(idl.tables[INSTANCE_TABLE])
                row.name = name
                row.heartbeat = 0
            row.of_target = target
            row.rest_url = url
            row.started_at = started

        self.store.transact_raw(write)

    def _beat(self) -> None:
        name = self.name

        def write(idl: Any, txn: Any) -> None:
            row = find_row(idl, INSTANCE_TABLE, "name", name)
            if row is None:
                raise WriteConflict("this instance's row is gone")
            # (python-ovs sends an increment only with another change: set it)
            row.heartbeat = int(row.heartbeat) + 1

        try:
            self.store.transact_raw(write)
        except WriteConflict:
            self._register()
        LIVE_INSTANCES.set(len(self.alive()))

    def _report(self) -> None:
        with self._lock:
            todo = {k: g for k, g in self._installed.items()
                    if self._reported.get(k) != g and k in self._mine}
        if not todo:
            return
        name = self.name

        def write(idl: Any, txn: Any) -> None:
            for key, generation in todo.items():
                row = find_row(idl, OWNER_TABLE, "switch", key)
                if row is not None and row.owner == name and row.installed < generation:
                    row.installed = generation

        self.store.transact_raw(write)
        with self._lock:
            self._reported.update(todo)

    def _decide(self) -> None:
        # (an instance first seen counts as alive for `dead_after_s` from then: a
        # restarted instance never takes the keys of one it has not watched yet)
        keys = set(self._keys())
        grants = plan(self._view, self.name, self.alive(), keys)
        for grant in grants:
            self._write_grant(grant)
        self._forget_gone(keys)

    def _forget_gone(self, keys: set[str]) -> None:
        """Delete this instance's rows of keys gone from the deployment (a chassis
        removed) for `FORGET_AFTER_S`: not at once, since a key is missing for a moment
        while a restarted instance reads its chassis."""
        now = self._clock()
        with self._lock:
            gone = [k for k in self._mine if k not in keys]
            for k in list(self._absent):
                if k not in gone:
                    del self._absent[k]
            for k in gone:
                self._absent.setdefault(k, now)
            due = [k for k, since in self._absent.items() if now - since >= FORGET_AFTER_S]
        if not due:
            return
        name = self.name

        def write(idl: Any, txn: Any) -> None:
            for key in due:
                row = find_row(idl, OWNER_TABLE, "switch", key)
                if row is not None and row.owner == name:
                    row.verify("owner")
                    row.delete()

        try:
            self.store.transact_raw(write)
        except WriteConflict:
            return
        LOG.info("ownership of %s: forgotten (no longer in the deployment)", sorted(due))
        with self._lock:
            for k in due:
                self._absent.pop(k, None)

    def _write_grant(self, grant: Grant) -> None:
        expected = grant.expected

        def write(idl: Any, txn: Any) -> int:
            row = find_row(idl, OWNER_TABLE, "switch", grant.key)
            if expected is None:
                if row is not None:
                    raise WriteConflict("made meanwhile")
                row = txn.insert(idl.tables[OWNER_TABLE])
                row.switch = grant.key
                row.installed = 0
                previous = 0
            else:
                if row is None or row.owner != expected.owner \
                        or row.generation != expected.generation:
                    raise WriteConflict("changed meanwhile")
                row.verify("owner")
                row.verify("generation")
                previous = int(row.generation)
            generation = next_generation(previous)
            row.owner = grant.to
            row.generation = generation
            return generation

        try:
            generation = self.store.transact_raw(write)
        except WriteConflict:
            LOG.debug("ownership of %s: another instance decided first", grant.key)
            return
        GRANTS.labels(grant.kind).inc()
        if grant.kind == "failover":
            self.failovers += 1
        LOG.info("ownership of %s: %s -> %s (%s, generation %d)", grant.key,
                 expected.owner if expected is not None and expected.owner else "nobody",
                 grant.to, grant.kind, generation)


def keys_of(chassis_remotes: Iterable[str], fabric: bool) -> set[str]:
    """The ownership keys of a deployment: the fabric as one, else one per chassis."""
    if fabric:
        return {FABRIC_KEY}
    return {chassis_key(r) for r in chassis_remotes}


def owners_of(view: ClusterView) -> Mapping[str, str]:
    return {k: o.owner for k, o in view.owners.items()}
