"""The engine: recompiles on every change and keeps each switch's worker fed.

One compile thread turns (latest intent, latest topology) into desired state per
switch; one worker thread per connected switch pushes its desired state and waits
for the bundle commit reply. Changes arriving while a push is in flight coalesce:
a worker always takes the newest desired state, never a queue of stale ones. The
engine also answers the REST layer's runtime questions (port status, waits).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from prometheus_client import Counter, Gauge, Histogram

from controller import pipeline as pl
from controller.compiler import DesiredSwitch, compile_switch
from controller.compiler.core import Placement
from controller.compiler.fabric import fabric_bindings
from controller.compiler.tunnels import desired_tunnels
from controller.discovery import Discovery
from controller.intent import Intent
from controller.reconciler import Channel, FlowDiff, SwitchSync
from controller.southbound.registry import ChassisRegistry
from controller.topology import Topology
from controller.topoview import model as topoview

LOG = logging.getLogger(__name__)

# How long to wait at startup for every chassis' first read before compiling anyway.
STARTUP_GRACE_SECONDS = 15.0

FLOW_MODS = Counter("loom_flow_mods_total", "Flow mods sent to switches", ["datapath_id"])
BUNDLES = Counter("loom_bundles_total", "ONF bundles committed", ["datapath_id"])
PUSH_FAILURES = Counter("loom_push_failures_total", "Pushes a switch rejected or lost",
                        ["datapath_id"])
COMPILE_SECONDS = Histogram("loom_compile_seconds", "Time to compile all switches")
SWITCHES = Gauge("loom_switches_connected", "OpenFlow switches connected")
INSTALLED_FLOWS = Gauge("loom_installed_flows", "Flows installed per switch", ["datapath_id"])


class SwitchWorker:
    """Pushes the newest desired state to one switch, in its own thread."""

    def __init__(self, engine: Engine, channel: Channel) -> None:
        self.engine = engine
        self.channel = channel
        self.sync = SwitchSync(channel, on_pushed=self._pushed)
        self._desired: Optional[DesiredSwitch] = None
        self._wake = threading.Event()
        self.connected_at = time.time()
        self.error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"switch {channel.datapath_id:#x}")

    @property
    def datapath_id(self) -> int:
        return self.channel.datapath_id

    def start(self) -> None:
        self._thread.start()

    def offer(self, desired: DesiredSwitch) -> None:
        self._desired = desired
        self._wake.set()

    def stop(self) -> None:
        self._wake.set()

    def _pushed(self, dpid: int, diff: FlowDiff, seconds: float) -> None:
        label = f"{dpid:016x}"
        FLOW_MODS.labels(label).inc(diff.size)
        BUNDLES.labels(label).inc()
        LOG.info("switch %#x: +%d -%d flows, %d group changes in %.3f s", dpid,
                 len(diff.adds), len(diff.deletes), diff.size - len(diff.adds) - len(diff.deletes),
                 seconds)

    def _run(self) -> None:
        backoff = 0.2
        while not self.channel.closed.is_set():
            self._wake.wait()
            self._wake.clear()
            if self.channel.closed.is_set():
                break
            desired = self._desired
            if desired is None or desired is self.sync.synced:
                continue
            try:
                self.sync.push(desired)
                self.error = None
                backoff = 0.2
                INSTALLED_FLOWS.labels(f"{self.datapath_id:016x}").set(
                    len(self.sync.installed or ()))
                self.engine.notify_synced()
            except Exception as exc:
                if self.channel.closed.is_set():
                    break
                self.error = str(exc)
                PUSH_FAILURES.labels(f"{self.datapath_id:016x}").inc()
                LOG.exception("switch %#x: push failed; retrying in %.1f s",
                              self.datapath_id, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._wake.set()


class Engine:
    """Implements controller.runtime.Runtime for the REST layer."""

    def __init__(self, store: Any, topology: Topology,
                 registry: Optional[ChassisRegistry] = None, fast_failover: bool = True) -> None:
        self.store = store
        self.topology = topology
        self.registry = registry
        self.fast_failover = fast_failover
        self.discovery = Discovery(topology, self.kick)
        self._workers: dict[int, SwitchWorker] = {}
        self._lock = threading.Lock()
        self._synced = threading.Condition()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._compiled_generation = -1
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="compile")

    # ---- inputs
    def start(self) -> None:
        self._thread.start()
        self.kick()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        with self._lock:
            for w in self._workers.values():
                w.stop()

    def kick(self, *_: Any) -> None:
        """Something changed (intent, topology, a switch): recompile soon."""
        self._dirty.set()

    def switch_connected(self, channel: Channel) -> None:
        worker = SwitchWorker(self, channel)
        with self._lock:
            old = self._workers.get(channel.datapath_id)
            self._workers[channel.datapath_id] = worker
        if old is not None:
            old.stop()
        SWITCHES.set(len(self._workers))
        worker.start()
        LOG.info("switch %#x connected", channel.datapath_id)
        self.kick()

    def switch_disconnected(self, channel: Channel) -> None:
        with self._lock:
            worker = self._workers.get(channel.datapath_id)
            if worker is not None and worker.channel is channel:
                del self._workers[channel.datapath_id]
            else:
                worker = None
        if worker is not None:
            worker.stop()
            LOG.info("switch %#x disconnected", channel.datapath_id)
        SWITCHES.set(len(self._workers))
        self.notify_synced()

    # ---- fabric events from the OpenFlow app (never block: os-ken's event thread)
    def of_switch_up(self, datapath_id: int, ports: dict[int, tuple[str, bool]]) -> None:
        if self.topology.switch_up(datapath_id, ports):
            self.kick()

    def of_switch_down(self, datapath_id: int) -> None:
        self.discovery.switch_gone(datapath_id)
        if self.topology.switch_down(datapath_id):
            self.kick()

    def of_port(self, datapath_id: int, port_no: int, name: str, up: Optional[bool]) -> None:
        if not up:
            self.discovery.port_down(datapath_id, port_no)
        if self.topology.port_changed(datapath_id, port_no, name, up):
            self.kick()

    def lldp_in(self, datapath_id: int, in_port: int, data: bytes) -> bool:
        return self.discovery.lldp_in(datapath_id, in_port, data, time.monotonic())

    def probe_targets(self) -> list[tuple[int, int]]:
        """(dpid, port) pairs to send an LLDP probe out of: up ports of fabric switches."""
        view = self.topology.view()
        self.discovery.expire(time.monotonic())
        return sorted((d, no) for (d, no), up in view.port_state.items()
                      if up and d in view.fabric_switches and no < 0xFFFFFF00)

    def notify_synced(self) -> None:
        with self._synced:
            self._synced.notify_all()

    # ---- the compile loop
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait(timeout=1.0)
            if not self._dirty.is_set():
                waiting = (self.registry is not None and not self.registry.all_reported()
                           and time.monotonic() - self._started < STARTUP_GRACE_SECONDS + 2)
                if not waiting:
                    continue
                # still waiting for a chassis' first read: re-check as the grace runs out
            self._dirty.clear()
            if self._stopping.is_set():
                break
            try:
                self._compile_once()
            except Exception:
                LOG.exception("compile failed")
                time.sleep(0.5)
                self._dirty.set()

    def _compile_once(self) -> None:
        intent: Intent = self.store.latest()
        if self.registry is not None:
            self.registry.sync(intent)
            if not self.registry.all_reported():
                if time.monotonic() - self._started < STARTUP_GRACE_SECONDS:
                    return  # a chassis' state will kick us again when it arrives
                LOG.warning("some chassis never answered; compiling without them")
        topo = self.topology.view()
        with self._lock:
            workers = dict(self._workers)
        started = time.perf_counter()
        placement = Placement(intent, topo, self.fast_failover)
        shaping: dict[str, dict] = {}
        for dpid in sorted(set(topo.switches) | topo.fabric_switches):
            desired = compile_switch(intent, topo, dpid, placement)
            switch = topo.switches.get(dpid)
            if switch is not None:
                shaping.setdefault(switch.chassis, {}).update(desired.shaping)
            worker = workers.get(dpid)
            if worker is not None:
                worker.offer(desired)
        if self.registry is not None:
            self.registry.set_tunnels(desired_tunnels(intent, topo))
            self.registry.set_shaping(shaping)
        COMPILE_SECONDS.observe(time.perf_counter() - started)
        with self._synced:
            self._compiled_generation = intent.generation
            self._synced.notify_all()

    # ---- Runtime protocol
    def _pending_switches(self, generation: int) -> list[int]:
        topo = self.topology.view()
        with self._lock:
            workers = list(self._workers.values())
        pending = []
        for w in workers:
            if w.datapath_id not in topo.switches and w.datapath_id not in topo.fabric_switches:
                continue
            synced = w.sync.synced
            if synced is None or synced.generation < generation \
                    or synced.topology_version < topo.version:
                pending.append(w.datapath_id)
        return pending

    def wait_installed(self, generation: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._synced:
            while True:
                if self._compiled_generation >= generation \
                        and not self._pending_switches(generation):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._synced.wait(min(remaining, 0.5))

    def port_binding(self, port_id: str) -> Optional[dict[str, Any]]:
        b = self.topology.view().bindings.get(port_id)
        if b is None:
            return None
        return {"chassis": b.chassis, "bridge": b.bridge, "ofport": b.ofport,
                "datapath_id": f"{b.datapath_id:016x}", "interface": b.interface}

    def port_status(self, port_id: str) -> str:
        """ACTIVE once the port's own flows are installed on a switch it is bound to."""
        port = self.store.latest().ports.get(port_id)
        if port is None:
            return "DOWN"
        view = self.topology.view()
        b = view.bindings.get(port_id)
        if b is not None:
            candidates = [b.datapath_id]
        else:  # bound by binding:profile on a fabric switch?
            candidates = [dpid for p, dpid, _, _ in fabric_bindings(
                self.store.latest(), view) if p.id == port_id]
        with self._lock:
            workers = [self._workers.get(d) for d in candidates]
        return "ACTIVE" if any(w is not None and w.sync.has_port(port.key)
                               for w in workers) else "DOWN"

    def switches(self) -> list[dict[str, Any]]:
        topo = self.topology.view()
        with self._lock:
            workers = list(self._workers.values())
        out = []
        for w in workers:
            sv = topo.switches.get(w.datapath_id)
            synced = w.sync.synced
            out.append({
                "datapath_id": f"{w.datapath_id:016x}",
                "chassis": sv.chassis if sv else None,
                "bridge": sv.bridge if sv else None,
                "connected": not w.channel.closed.is_set(),
                "installed_flows": len(w.sync.installed or ()),
                "synced_generation": synced.generation if synced else None,
                "flow_mods_sent": w.sync.stats.flow_mods,
                "bundles": w.sync.stats.bundles,
                "last_error": w.error,
            })
        return sorted(out, key=lambda s: s["datapath_id"])

    def chassis(self) -> list[dict[str, Any]]:
        topo = self.topology.view()
        out = []
        for ch in self.topology.chassis_states():
            out.append({
                "name": ch.name, "remote": ch.remote, "connected": ch.connected,
                "encap_ip": ch.encap_ip,
                "bridges": [b.name for b in ch.bridges],
                "ports_bound": sorted(b.port_id for b in topo.bindings.values()
                                      if b.chassis == ch.name),
            })
        return out

    def topology_document(self) -> dict[str, Any]:
        return topoview.build(self.topology.view(), self.store.latest(), self.switches(),
                              self.chassis(), self.port_status)

    def health(self) -> dict[str, Any]:
        return {"switches": self.switches(), "chassis": self.chassis()}

    def installed_flows(self, datapath_id: int) -> Optional[list[dict[str, Any]]]:
        from controller import ofwire  # deferred: only the debug path needs the printer

        with self._lock:
            worker = self._workers.get(datapath_id)
        if worker is None or worker.sync.installed is None:
            return None
        owners = _owner_index(self.store.latest())
        out = []
        for f in sorted(worker.sync.installed.values(),
                        key=lambda f: (pl.TABLE_IDS.get(f.table, 255), -f.priority)):
            kind, key = pl.cookie_owner(f.cookie)
            out.append({
                "table": f.table, "priority": f.priority, "cookie": f"{f.cookie:#x}",
                "owner": {"kind": kind, "id": owners.get((kind, key))},
                "flow": ofwire.to_ofctl(f),
            })
        return out


def _owner_index(intent: Intent) -> dict[tuple[str, int], str]:
    idx: dict[tuple[str, int], str] = {}
    for p in intent.ports.values():
        idx[("port", p.key)] = p.id
    for n in intent.networks.values():
        idx[("network", n.key)] = n.id
    return idx
