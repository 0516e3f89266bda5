"""The engine: recompiles on every change and keeps each switch's worker fed.

One compile thread turns (latest intent, latest topology) into desired state per
switch; one worker thread per connected switch pushes its desired state and waits
for the bundle commit reply. Changes arriving while a push is in flight coalesce:
a worker always takes the newest desired state, never a queue of stale ones. The
engine also answers the REST layer's runtime questions (port status, waits).
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional

from os_ken.ofproto import ofproto_v1_3 as ofp13
from prometheus_client import Counter, Gauge, Histogram

from controller import ofwire, router_advert
from controller import pipeline as pl
from controller.compiler import DesiredSwitch, compile_switch
from controller.compiler.core import FlowKey, Placement
from controller.compiler.fabric import (
    fabric_bindings,
    link_ports_in,
    regroup,
    repair_patches,
    routing_plan,
)
from controller.compiler.gateway import bindings_in, upstream_wanted
from controller.compiler.incremental import Compiler
from controller.compiler.tunnels import desired_tunnels
from controller.dhcp import DEFAULT_LEASE_SECONDS
from controller.discovery import Discovery, LinkTable
from controller.drift import (
    DriftRecord,
    TableDrift,
    describe,
    describe_groups_meters,
    flow_drift,
    group_meter_drift,
)
from controller.flows import Flow, GroupAction, mac_text
from controller.intent import Intent, Port
from controller.ofwire.consts import OFPP_MAX
from controller.ownership import FABRIC_KEY, chassis_key, keys_of
from controller.punt import ROUTER_ADVERTS, PuntService
from controller.reconciler import Channel, FlowDiff, SwitchSync, SyncStats
from controller.simulate.fleet import ModelCache
from controller.southbound.chassis import ControllerLink
from controller.southbound.openflow import SwitchError
from controller.southbound.registry import ChassisRegistry
from controller.southbound.roles import (
    OFPCR_ROLE_MASTER,
    OFPCR_ROLE_SLAVE,
    RoleRefused,
    is_slave_error,
    request_role,
)
from controller.topology import Topology
from controller.topoview import model as topoview
from controller.upstream_arp import UpstreamArp, parse_arp
from controller.wait_scope import ChangeLog, same_state

LOG = logging.getLogger(__name__)

# How long to wait at startup for every chassis' first read before compiling anyway.
STARTUP_GRACE_SECONDS = 15.0
# How long one step of a fabric rollout (controller.topology.FabricStage) waits for
# every fabric switch to confirm it before the next step goes out anyway.
FABRIC_STAGE_TIMEOUT = 3.0
# After a link loss, the switches whose routes must change are compiled and pushed
# first; the rest of the fabric waits this long at most for them to confirm.
URGENT_WAVE_WAIT = 0.5
# The reroute for the loss of each link is worked out ahead (`Protection`) once the
# fabric has been still this long; between two links the worker yields the CPU.
PROTECTION_QUIET = 1.0
# A fabric switch that just connected is given its first state once discovery has
# settled its ports (`Discovery.settled`), or after this long: what it holds (after a
# controller restart, everything) stays untouched until the links are known again.
FABRIC_SETTLE_MAX = 4.0
# ...or, for a switch whose next-hop groups still use links (a controller restart),
# after this long: until then it forwards on what it holds (its failover groups and
# detours cover a link lost meanwhile), and a loaded machine may take more than
# FABRIC_SETTLE_MAX to hear every neighbour again.
FABRIC_RELEARN_MAX = 10.0
PROTECTION_YIELD = 0.002

# How long a chassis' integration bridge may go without an OpenFlow connection to
# this controller before a warning says why (a reconnect takes about 1 s: the
# Controller row's max_backoff; a loaded machine a few more).
OF_CONNECT_GRACE_SECONDS = 10.0

FLOW_MODS = Counter("loom_flow_mods_total",
                    "Flow, group and meter mods sent to switches", ["datapath_id"])
BUNDLES = Counter("loom_bundles_total", "ONF bundles committed", ["datapath_id"])
PUSH_FAILURES = Counter("loom_push_failures_total", "Pushes a switch rejected or lost",
                        ["datapath_id"])
COMPILE_SECONDS = Histogram("loom_compile_seconds", "Time to compile all switches")
SWITCHES = Gauge("loom_switches_connected", "OpenFlow switches connected")
INSTALLED_FLOWS = Gauge("loom_installed_flows", "Flows installed per switch", ["datapath_id"])


@dataclass(frozen=True)
class Protection:
    """The repair of each link's loss, worked out ahead (`fabric.repair_patches`): per
    link (by its lower end), per switch that must reroute, the next-hop groups it will
    get. Valid only while the links, the topology version and the intent generation
    are the ones it was computed from."""

    links: Mapping[tuple[int, int], tuple[int, int]]
    version: int
    generation: int
    patches: Mapping[tuple[int, int], Mapping[int, Mapping[int, Any]]]


def _label(datapath_id: int) -> str:
    return f"{datapath_id:016x}"


@dataclass
class SwitchCounters:
    """One datapath id's counters, kept for the life of the process.

    Every OpenFlow connection gets a new SwitchWorker and SwitchSync; they carry on
    with these counts instead of starting again from 0, so `flow_mods_sent` in
    /v1/switches survives a reconnect. Prometheus is fed from the same numbers
    (`export`), so /metrics and /v1/switches never disagree, and its samples exist,
    at 0, from the moment the switch is first known rather than from its first push.
    """

    datapath_id: int
    stats: SyncStats = field(default_factory=SyncStats)
    connections: int = 0
    _exported_mods: int = 0
    _exported_bundles: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        label = _label(self.datapath_id)
        for metric in (FLOW_MODS, BUNDLES, PUSH_FAILURES):
            metric.labels(label)  # a sample at 0, so rate() and alerts see the switch

    def export(self) -> None:
        """Add to the Prometheus counters what the stats gained since the last export."""
        with self._lock:
            mods, bundles = self.stats.flow_mods, self.stats.bundles
            label = _label(self.datapath_id)
            if mods > self._exported_mods:
                FLOW_MODS.labels(label).inc(mods - self._exported_mods)
            if bundles > self._exported_bundles:
                BUNDLES.labels(label).inc(bundles - self._exported_bundles)
            self._exported_mods = max(self._exported_mods, mods)
            self._exported_bundles = max(self._exported_bundles, bundles)


class SwitchWorker:
    """Pushes the newest desired state to one switch, in its own thread."""

    def __init__(self, engine: Engine, channel: Channel,
                 counters: Optional[SwitchCounters] = None,
                 preread: Optional[Callable[[], SwitchSync]] = None,
                 role_generation: Optional[int] = None) -> None:
        self.engine = engine
        self.channel = channel
        # several instances (controller/ownership.py): the generation of this
        # instance's grant, asked for as the switch's master before anything is written
        self.role_generation = role_generation
        self.retired = threading.Event()  # no longer master: writes nothing more
        # drift (controller/drift.py): the flow monitor's xid once asked for, and when
        # the switch first signalled a change that was not ours (None: none pending)
        self._monitor_xid: Optional[int] = None
        self._suspect: Optional[float] = None
        # raw flow monitor updates, from os-ken's event thread (None: updates paused)
        self._updates: deque[Optional[bytes]] = deque()
        # groups and meters (no monitor for them): when they are read next (None: not
        # watched), what a read found different and was reported (report mode leaves
        # it: reported once), and whether a repair failed (push in full again)
        self._tables_due: Optional[float] = None
        self._tables_reported: frozenset[tuple[str, int, Any]] = frozenset()
        self._repush = False
        # waits for, and returns, a read of the switch begun before the engine existed
        self._preread = preread
        self.counters = counters or SwitchCounters(channel.datapath_id)
        self.sync = SwitchSync(channel, on_pushed=self._pushed, stats=self.counters.stats)
        self._desired: Optional[DesiredSwitch] = None
        # flow keys changed by the offers since the last push began; None: diff it all
        self._changed_keys: Optional[set[FlowKey]] = None
        self._offer_lock = threading.Lock()
        self._wake = threading.Event()
        self.connected_at = time.time()
        self.connected_mono = time.monotonic()
        self._held_links: Optional[frozenset[int]] = None
        self._min_topology = 0  # offers compiled before this topology version wait
        self.error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"switch {channel.datapath_id:#x}")

    @property
    def datapath_id(self) -> int:
        return self.channel.datapath_id

    def start(self) -> None:
        self._thread.start()

    def held_link_ports(self) -> frozenset[int]:
        """The ports the switch's next-hop groups used as links when it connected
        (`link_ports_in`); empty until what it holds has been read."""
        if self._held_links is None:
            if self.sync.installed is None:
                return frozenset()
            self._held_links = link_ports_in(self.sync.installed_groups)
        return self._held_links

    def pending(self) -> Optional[DesiredSwitch]:
        """The newest desired state handed to this worker (pushed or not yet)."""
        return self._desired

    def offer(self, desired: DesiredSwitch,
              changed_keys: Optional[frozenset[FlowKey]] = None) -> None:
        """Hand over a new desired state. `changed_keys`: the flow keys it changed from
        the state offered before (None: unknown, the push compares everything)."""
        with self._offer_lock:
            if changed_keys is None or self._changed_keys is None:
                self._changed_keys = None
            else:
                self._changed_keys.update(changed_keys)
            self._desired = desired
        self._wake.set()

    def _take(self) -> tuple[Optional[DesiredSwitch], Optional[set[FlowKey]]]:
        with self._offer_lock:
            desired, keys = self._desired, self._changed_keys
            self._changed_keys = set()
        return desired, keys

    def stop(self) -> None:
        self._wake.set()

    def release(self, compiled_topology: int) -> None:
        """The engine has compiled topology `compiled_topology`: a worker holding back
        for a version up to it (`relearn_macs`) pushes what it was offered."""
        if self._min_topology and compiled_topology >= self._min_topology:
            self._min_topology = 0
            self._wake.set()

    # ---- drift (controller/drift.py)
    def _start_monitor(self) -> None:
        """Ask the switch to tell us of every flow change that is not ours. Once per
        connection, after the first push (our own flows are in place by then)."""
        xid = self.channel.reserve_xids(1)
        self._monitor_xid = xid
        watch = getattr(self.channel, "watch", None)
        if watch is None:  # a channel without async messages (benchmarks' stand-ins)
            return
        watch(MONITOR_UPDATE_XID, self._drift_signal)
        # the first read of groups and meters at a random point of the first period:
        # the switches connected together do not all read in the same instant after
        self._tables_due = time.monotonic() + random.uniform(0.0, GROUP_METER_PERIOD)
        try:
            self.channel.call(ofwire.flow_monitor_request(xid), xid, timeout=10.0)
            LOG.info("switch %#x: watching its flows for changes not made by Loom",
                     self.datapath_id)
        except SwitchError as exc:
            # refused: most likely the monitor this connection asked for under an
            # earlier grant (the same id) still runs, and its updates come here now
            LOG.info("switch %#x: flow monitor refused (%s); an earlier one still "
                     "reports", self.datapath_id, exc)
        except Exception as exc:
            LOG.warning("switch %#x: no flow monitor (%s): drift goes unnoticed there",
                        self.datapath_id, exc)
            self.channel.unwatch(MONITOR_UPDATE_XID)  # type: ignore[attr-defined]

    def _drift_signal(self, msg: Any) -> None:
        """os-ken's event thread: the switch sent a flow monitor update (kept, to be
        decoded by the worker), or paused them (too many: the whole table is read
        then). Never blocks."""
        kind = getattr(msg, "msg_type", None)
        if kind == OFPT_EXPERIMENTER:
            if getattr(msg, "exp_type", None) == ONFT_FLOW_MONITOR_PAUSED:
                self._updates.append(None)
            else:
                return
        elif kind == OFPT_MULTIPART_REPLY:
            raw = bytes(msg.buf)
            if ofwire.flow_monitor_only_own(raw):
                return  # the echo of our own push: nothing to look at
            self._updates.append(raw)
        else:
            return  # (an error about something else, sent with xid 0)
        if self._suspect is None:
            self._suspect = time.monotonic()
        self._wake.set()

    def _check_drift(self) -> None:
        """Compare what the switch says changed with what was installed, record the
        differences, and (repair mode) push the desired state of those flows again.

        The updates carry the flows: a change by hand costs what it changed, not a
        read of the switch's 100,000 flows. Only if they cannot be used (the switch
        paused them, or one does not decode) is the whole table read and compared."""
        suspect = self._suspect
        assert suspect is not None
        settle = suspect + DRIFT_SETTLE_S - time.monotonic()
        if settle > 0:  # a del-flows sends one update per flow: take them all at once
            time.sleep(settle)
        self._suspect = None
        raws = []
        while self._updates:
            raws.append(self._updates.popleft())
        synced = self.sync.synced
        installed = self.sync.installed
        if synced is None or installed is None:
            return
        # against what was pushed last, not what was last read: in report mode the
        # drift stays installed, and its undoing by hand is then no drift
        believed = synced.flows
        events: Optional[dict[FlowKey, Optional[Flow]]] = None
        try:
            decoded: dict[FlowKey, Optional[Flow]] = {}
            for raw in raws:
                if raw is None:
                    raise ValueError("the switch paused its updates")
                for event, flow in ofwire.parse_flow_monitor_update(raw):
                    decoded[flow.key] = None if event == ONFFME_DELETED else flow
            events = decoded
        except (ValueError, KeyError, IndexError) as exc:
            LOG.info("switch %#x: flow updates not usable (%s): reading every flow",
                     self.datapath_id, exc)
        if events is None:
            self.sync.read_installed()
            missing, extra, modified = flow_drift(believed, self.sync.installed or {})
            keys: Optional[set[FlowKey]] = None
        else:
            missing, extra, modified = [], [], []
            for key, now in events.items():
                want = believed.get(key)
                if now is None:
                    if want is not None:
                        missing.append(want)
                elif want is None:
                    extra.append(now)
                elif want != now:
                    modified.append((want, now))
                self.sync.note_changed(key, now)
            keys = set(events)
        record = self.engine.drift_record(self.datapath_id)
        if not (missing or extra or modified):
            record.checked([], False)
            return
        repair = self.engine.drift_mode == "repair"
        # A meter or group deleted by hand takes the flows that use it with it: those
        # flows are what the monitor signalled. Read the groups and meters now, so
        # that the same push puts the meter or group back before its flows (a flow
        # that names a missing meter or group is refused, and the bundle with it).
        found = time.time()  # stamped before the repair push, not after it
        tables = self._read_groups_meters(repair) if any(
            f.meter is not None or any(isinstance(a, GroupAction) for a in f.actions)
            for f in missing) else None
        LOG.warning("switch %#x: drift found %.3f s after the switch signalled it: %d "
                    "missing, %d extra, %d modified%s%s", self.datapath_id,
                    time.monotonic() - suspect, len(missing), len(extra), len(modified),
                    f" (and {len(tables)} groups or meters)" if tables else "",
                    "; repairing" if repair else " (--drift report: left as is)")
        repaired = False
        try:
            if repair:
                # with what was offered meanwhile: its keys go in the same push
                desired, pending = self._take()
                if desired is None:
                    desired = synced
                if keys is not None and pending is not None:
                    keys |= pending
                self.sync.push(desired, None if keys is None or pending is None else keys)
                repaired = True
        finally:
            # recorded even if the repair failed (then as not repaired, and pushed again
            # in full: `_repush`)
            record.checked(describe(missing, extra, modified, self.engine.owner_lookup(),
                                    ofwire.to_ofctl, repaired, found), repaired)
            if tables is not None:
                self._record_groups_meters(tables, repaired, found)

    # ---- drift of groups and meters: no monitor for them, read every GROUP_METER_PERIOD
    def _read_groups_meters(self, repair: bool) -> Optional[TableDrift]:
        """Read the switch's groups and meters and compare them with the state Loom's
        last completed push left (None: nothing pushed yet, or what the switch holds is
        unknown after a failed push: then there is no belief to compare with).

        Only the worker pushes, and only in this thread, so no push of Loom's is in
        flight while this runs: a difference is someone else's (a switch answers a
        request after everything sent before it on the connection). What the switch
        holds becomes what the next push compares with (`note_groups_meters`); in
        repair mode that push puts the differing meters right whatever else it
        changes (groups are compared in full by every push anyway)."""
        synced = self.sync.synced
        if synced is None or self.sync.installed is None:
            return None
        groups, meters = self.sync.read_groups_meters(GROUP_METER_READ_TIMEOUT)
        drift = group_meter_drift(synced.groups, groups, synced.meters, meters)
        if drift:
            self.sync.note_groups_meters(groups, meters, drift.meter_ids if repair else ())
        return drift

    def _record_groups_meters(self, drift: TableDrift, repaired: bool,
                              found: Optional[float] = None) -> None:
        """Record what a read found: each difference once (report mode leaves it in
        place, and every later read sees it again), with its owner."""
        record = self.engine.drift_record(self.datapath_id)
        signature = drift.signature()
        new = signature - self._tables_reported
        self._tables_reported = frozenset() if repaired else signature
        items = []
        if new:
            synced = self.sync.synced
            flows = synced.flows if synced is not None else {}
            users: Optional[dict[tuple[str, int], int]] = None

            def user_cookie(kind: str, ident: int) -> Optional[int]:
                nonlocal users
                if users is None:
                    users = _flow_users(flows)
                return users.get((kind, ident))

            items = describe_groups_meters(drift, self.engine.owner_lookup(), user_cookie,
                                           repaired, frozenset(new), found)
        record.group_meter_read(items, 0 if repaired else len(drift))

    def _check_groups_meters(self) -> None:
        """The periodic read: record what differs and, in repair mode, push the groups
        and meters Loom wants back (the flows OVS deleted with a meter or group come
        back through the flow monitor's check). Offers made meanwhile are left to the
        loop, which pushes them next."""
        repair = self.engine.drift_mode == "repair"
        drift = self._read_groups_meters(repair)
        found = time.time()
        if drift is None:
            return
        if not drift:
            if self._tables_reported:  # what was reported is gone (undone by hand)
                self._tables_reported = frozenset()
            self.engine.drift_record(self.datapath_id).group_meter_read([], 0)
            return
        LOG.warning("switch %#x: groups and meters differ from what Loom installed: %d "
                    "group(s) missing, %d extra, %d modified; %d meter(s) missing, %d "
                    "extra, %d modified%s", self.datapath_id, len(drift.groups_missing),
                    len(drift.groups_extra), len(drift.groups_modified),
                    len(drift.meters_missing), len(drift.meters_extra),
                    len(drift.meters_modified),
                    "; repairing" if repair else " (--drift report: left as is)")
        repaired = False
        try:
            if repair:
                synced = self.sync.synced
                assert synced is not None
                # the state pushed last, no flow key: only groups and meters change
                self.sync.push(synced, ())
                self.counters.export()
                repaired = True
        finally:
            self._record_groups_meters(drift, repaired, found)

    def _pushed(self, dpid: int, diff: FlowDiff, seconds: float) -> None:
        LOG.info("switch %#x: +%d -%d flows, %d group changes in %.3f s", dpid,
                 len(diff.adds), len(diff.deletes), diff.size - len(diff.adds) - len(diff.deletes),
                 seconds)

    def _run(self) -> None:
        backoff = 0.2
        if self.role_generation is not None:
            try:
                request_role(self.channel, OFPCR_ROLE_MASTER, self.role_generation)
                LOG.info("switch %#x: master at generation %d", self.datapath_id,
                         self.role_generation)
            except (RoleRefused, TimeoutError, ConnectionError) as exc:
                self.error = str(exc)
                self.retired.set()
                LOG.warning("switch %#x: %s; not writing to it", self.datapath_id, exc)
                self.engine.role_lost(self)
                return
        try:
            # What the switch holds, read while the first compile runs (a restart with
            # 100,000 flows reads for about a second), or earlier, while the store
            # loaded (the launcher's early OpenFlow side); a failure is read again on
            # push.
            if self._preread is not None:
                self.sync.adopt(self._preread())
                self._preread = None
            else:
                self.sync.read_installed()
            if self.sync.installed is not None:
                relearnt = self.engine.relearn_macs(self.sync.installed)
                if relearnt is not None:
                    self._min_topology = relearnt
                    self.release(self.engine.compiled_topology)  # (compiled already?)
        except Exception:
            LOG.warning("switch %#x: reading its flows failed; read again on push",
                        self.datapath_id, exc_info=True)
        while not self.channel.closed.is_set():
            due = self._tables_due
            self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))
            self._wake.clear()
            if self.channel.closed.is_set() or self.retired.is_set():
                break
            if self._suspect is not None:
                try:
                    self._check_drift()
                except Exception as exc:
                    if self.channel.closed.is_set():
                        break
                    self._repush = self._repush or self.sync.installed is None
                    LOG.warning("switch %#x: drift check failed (%s); again on the next "
                                "signal", self.datapath_id, exc)
            if self._tables_due is not None and time.monotonic() >= self._tables_due:
                try:
                    self._check_groups_meters()
                except Exception as exc:
                    if self.channel.closed.is_set():
                        break
                    self._repush = self._repush or self.sync.installed is None
                    LOG.warning("switch %#x: reading its groups and meters failed (%s); "
                                "again in %.0f s", self.datapath_id, exc, GROUP_METER_PERIOD)
                self._tables_due = time.monotonic() + GROUP_METER_PERIOD
            desired, keys = self._take()
            if self._repush and self.sync.synced is not None:
                # a drift repair failed: what the switch holds is unknown (`installed`
                # is None); the push reads it and puts everything right, with the newest
                # state if it may go out now, else with the one pushed last
                if desired is None or desired is self.sync.synced or self._min_topology:
                    if desired is not None and desired is not self.sync.synced:
                        with self._offer_lock:
                            self._changed_keys = None  # (compared in full when it goes)
                    desired = self.sync.synced
                keys = None
            elif desired is None or desired is self.sync.synced:
                continue
            elif self._min_topology:
                # compiled before the upstream MACs it holds were taken back: it would
                # delete them; the compile that follows their return is on its way
                # (`release` wakes this worker then, changed or not)
                with self._offer_lock:
                    if self._changed_keys is not None and keys is not None:
                        self._changed_keys.update(keys)
                    else:
                        self._changed_keys = None
                continue
            try:
                self.sync.push(desired, keys)
                self.counters.export()
                self.error = None
                backoff = 0.2
                if self._repush:
                    self._repush = False
                    self.engine.drift_record(self.datapath_id).repaired()
                INSTALLED_FLOWS.labels(f"{self.datapath_id:016x}").set(
                    len(self.sync.installed or ()))
                self.engine.pushed(self)
                self.engine.notify_synced()
                if self._monitor_xid is None and self.engine.drift_mode is not None:
                    self._start_monitor()
            except Exception as exc:
                self.counters.export()  # what was sent before the failure was sent
                if self.channel.closed.is_set() or self.retired.is_set():
                    break
                if is_slave_error(exc):
                    # another instance is master now (its grant is newer): step down,
                    # write nothing more; the database will say so shortly
                    self.error = f"no longer master of switch {self.datapath_id:#x}"
                    self.retired.set()
                    LOG.warning("switch %#x: refused as slave: another instance is master; "
                                "stepping down", self.datapath_id)
                    self.engine.role_lost(self)
                    break
                self.error = str(exc)
                PUSH_FAILURES.labels(f"{self.datapath_id:016x}").inc()
                LOG.exception("switch %#x: push failed; retrying in %.1f s",
                              self.datapath_id, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                with self._offer_lock:
                    self._changed_keys = None  # what the switch holds is read again
                self._wake.set()


def _flow_users(flows: Mapping[FlowKey, Flow]) -> dict[tuple[str, int], int]:
    """("meter" | "group", id) -> the cookie of a flow that uses it: the owner of a
    group or meter that has none of its own (a port's punt meter is its port's).
    O(flows): built only when a group or meter drifted."""
    users: dict[tuple[str, int], int] = {}
    for f in flows.values():
        if f.meter is not None:
            users.setdefault(("meter", f.meter), f.cookie)
        for a in f.actions:
            if isinstance(a, GroupAction):
                users.setdefault(("group", a.group_id), f.cookie)
    return users


DRIFT_SETTLE_S = 0.1  # after a first flow monitor update, wait for the rest this long
# Groups and meters have no monitor: the worker reads them this often. A change by
# hand is found within this (plus the read) — the "few seconds" issue 15 asks for — and
# the read costs what the switch holds in groups and meters: for 10,000 punt meters
# (one per DHCP port) 15-25 ms of the controller's CPU (most of it parsing the 240 kB
# reply, 3 ms comparing) and 2.5 ms of ovs-vswitchd's (bench/bench_group_meter_read.py),
# i.e. under 1 % of a core at that size; a switch with a few meters costs next to
# nothing. A shorter period buys little: a meter or group deleted by hand takes flows
# with it, which the flow monitor reports at once, and that check reads them too.
GROUP_METER_PERIOD = 3.0
# A read the switch does not answer in this long fails (and is tried again next
# period), rather than hold the worker, and its pushes, for the pushes' 60 s.
GROUP_METER_READ_TIMEOUT = 10.0
MONITOR_UPDATE_XID = 0  # OVS sends flow monitor updates with xid 0, not the request's
OFPT_EXPERIMENTER = ofp13.OFPT_EXPERIMENTER
OFPT_MULTIPART_REPLY = ofp13.OFPT_MULTIPART_REPLY
ONFT_FLOW_MONITOR_PAUSED = ofp13.ONFT_FLOW_MONITOR_PAUSED
ONFFME_DELETED = ofp13.ONFFME_DELETED


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a full compile, and what it made frozen
    after (`gc.freeze`: left out of later collections).

    A full compile makes some millions of objects that live on (the desired state of
    every switch) and next to no cyclic garbage; with the collector on, each of its
    full collections went through everything not frozen, the chassis' OVSDB replica
    included. (While the launcher holds the collector off for a start, this does
    nothing: the launcher freezes once the switches are synced.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


class Engine:
    """Implements controller.runtime.Runtime for the REST layer."""

    def __init__(self, store: Any, topology: Topology,
                 registry: Optional[ChassisRegistry] = None, fast_failover: bool = True,
                 dhcp_lease_seconds: Optional[int] = None) -> None:
        self.store = store
        self.punts = PuntService(dhcp_lease_seconds or DEFAULT_LEASE_SECONDS)
        self._ra_next = 0.0  # when the next periodic router advertisements are due
        self.topology = topology
        self.registry = registry
        self.fast_failover = fast_failover
        topology.detours = fast_failover  # failover groups carry detours (compiler/fabric)
        # The OpenFlow app reads rx counters of quiet links (`lldp_suspects`): a silent
        # link is lost only when they confirm that nothing comes in.
        self.discovery = Discovery(topology, self.kick, installed=self._fabric_installed,
                                   table=LinkTable(confirm_with_rx=True))
        self._stage_since: Optional[tuple[int, float]] = None  # (topology version, since)
        self._workers: dict[int, SwitchWorker] = {}
        # several instances (controller/ownership.py; None: this one is alone): every
        # connected switch's channel, a worker only for those this instance owns
        self.ownership: Optional[Any] = None
        self._channels: dict[int, Channel] = {}
        self._slave_at: dict[int, int] = {}  # dpid -> generation it was asked to be slave at
        self._role_lock = threading.Lock()  # one `_reconsider` at a time
        # drift (controller/drift.py): "repair", "report", or None (not watched)
        self.drift_mode: Optional[str] = "repair"
        self._drift: dict[str, DriftRecord] = {}
        self._lock = threading.Lock()
        self._synced = threading.Condition()
        self._dirty = threading.Event()
        self._held_unsettled = False  # a fabric switch waits for discovery to settle
        self._settle_kicked = 0.0
        self._stopping = threading.Event()
        self._compiled_generation = -1
        self.compiled_topology = -1  # the topology version the last compile was of
        self._started = time.monotonic()
        self._counters: dict[int, SwitchCounters] = {}
        # integration bridges without an OpenFlow connection: (chassis, bridge) -> since
        self._of_waiting: dict[tuple[str, str], float] = {}
        self._of_warned: dict[tuple[str, str], bool] = {}  # -> connected since the warning
        self._thread = threading.Thread(target=self._run, daemon=True, name="compile")
        self._protection: Optional[Protection] = None
        self._compiler = Compiler(fast_failover)
        # switch models for the reachability diff of dry runs (controller/plan.py)
        self.plan_models = ModelCache()
        # the compile thread and a write's plan (`plan`, ?dry_run=true) take turns on it
        self._compile_lock = threading.Lock()
        self._upstream_arp = UpstreamArp()
        self._fabric_upstreams: Mapping[tuple[int, int], tuple[Any, int]] = {}
        self._changes = ChangeLog()
        self._protector = threading.Thread(target=self._protect_loop, daemon=True,
                                           name="fabric protection")

    # ---- inputs
    def start(self) -> None:
        self._thread.start()
        self._protector.start()
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

    def counters(self, datapath_id: int) -> SwitchCounters:
        """The switch's counters, made (with Prometheus samples at 0) on first use."""
        with self._lock:
            counters = self._counters.get(datapath_id)
            if counters is None:
                counters = self._counters[datapath_id] = SwitchCounters(datapath_id)
            return counters

    def switch_connected(self, channel: Channel,
                         preread: Optional[Callable[[], SwitchSync]] = None) -> None:
        """`preread`: waits for and returns a read of what the switch holds, begun
        before the engine existed (the launcher's early OpenFlow side)."""
        counters = self.counters(channel.datapath_id)
        counters.connections += 1
        if self.ownership is not None:
            with self._lock:
                self._channels[channel.datapath_id] = channel
                self._slave_at.pop(channel.datapath_id, None)
            self._reconsider(channel.datapath_id)
            self.kick()
            return
        self._start_worker(channel, counters, preread, None)

    def _start_worker(self, channel: Channel, counters: SwitchCounters,
                      preread: Optional[Callable[[], SwitchSync]],
                      role_generation: Optional[int]) -> None:
        worker = SwitchWorker(self, channel, counters, preread, role_generation)
        with self._lock:
            old = self._workers.get(channel.datapath_id)
            self._workers[channel.datapath_id] = worker
        if old is not None:
            if old.channel is channel:  # the same connection, a new grant: one writer
                old.retired.set()
            old.stop()
        SWITCHES.set(len(self._workers))
        worker.start()
        LOG.info("switch %#x connected", channel.datapath_id)
        self.kick()

    def switch_disconnected(self, channel: Channel) -> None:
        with self._lock:
            if self._channels.get(channel.datapath_id) is channel:
                del self._channels[channel.datapath_id]
                self._slave_at.pop(channel.datapath_id, None)
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

    # ---- drift (controller/drift.py)
    def drift_record(self, datapath_id: int) -> DriftRecord:
        """The drift record of a switch (kept across its reconnects)."""
        where = f"{datapath_id:016x}"
        with self._lock:
            record = self._drift.get(where)
            if record is None:
                record = self._drift[where] = DriftRecord(where)
            return record

    def owner_lookup(self) -> Callable[[int], Any]:
        """Cookie -> the intent object it names (the trace's index: built per call, so
        only where something was found)."""
        from controller.explain.trace import owner_index, owner_of

        owners = owner_index(self.store.latest())
        return lambda cookie: owner_of(cookie, owners)

    def verify(self) -> dict[str, Any]:
        """GET /v1/verify: per switch this instance writes, and per chassis, whether it
        holds what Loom installed, and what was found otherwise."""
        with self._lock:
            workers = dict(self._workers)
            records = dict(self._drift)
        switches = []
        for dpid in sorted(workers):
            where = f"{dpid:016x}"
            record = records.get(where) or DriftRecord(where)
            switches.append({"datapath_id": where,
                             "watched": workers[dpid]._monitor_xid is not None,
                             **record.view()})
        chassis = self.registry.drift() if self.registry is not None else []
        return {"mode": self.drift_mode or "off", "switches": switches, "chassis": chassis}

    # ---- several instances (controller/ownership.py)
    def ownership_key(self, datapath_id: int) -> Optional[str]:
        """The ownership key a switch falls under: the fabric as a whole, or its
        chassis (None until the chassis that holds it has been read)."""
        topo = self.topology.view()
        if topo.fabric_switches:
            return FABRIC_KEY
        switch = topo.switches.get(datapath_id)
        if switch is None or self.registry is None:
            return None
        remote = self.registry.remote_of(switch.chassis)
        return None if remote is None else chassis_key(remote)

    def ownership_keys(self) -> set[str]:
        """Every key some instance must own: each chassis, or the fabric."""
        remotes = self.registry.remotes() if self.registry is not None else []
        return keys_of(remotes, bool(self.topology.view().fabric_switches))

    def owns_chassis(self, remote: str) -> bool:
        """May this instance write this chassis' OVSDB (tunnels, QoS, the bridge)?"""
        if self.ownership is None:
            return True
        topo = self.topology.view()
        key = FABRIC_KEY if topo.fabric_switches else chassis_key(remote)
        return self.ownership.grant(key) is not None

    def is_master(self, datapath_id: int) -> bool:
        """May this instance send to the switch (packet-outs: DHCP, probes, ARP)?"""
        if self.ownership is None:
            return True
        with self._lock:
            worker = self._workers.get(datapath_id)
        return worker is not None and not worker.retired.is_set()

    def ownership_changed(self) -> None:
        """This instance's grants changed: become master of the switches it now owns,
        step aside on the others; the chassis' OVSDB follows."""
        with self._lock:
            dpids = list(self._channels)
        for dpid in dpids:
            self._reconsider(dpid)
        if self.registry is not None:
            self.registry.wake()
        self.kick()

    def _reconsider(self, datapath_id: int) -> None:
        """Master or slave of this switch, as the grants now say. Called from the
        OpenFlow thread, the ownership thread and the compile thread: one at a time,
        or two of them could each start a worker."""
        with self._role_lock:
            self._reconsider_locked(datapath_id)

    def _reconsider_locked(self, datapath_id: int) -> None:
        ownership = self.ownership
        if ownership is None:
            return
        key = self.ownership_key(datapath_id)
        generation = ownership.grant(key)
        with self._lock:
            channel = self._channels.get(datapath_id)
            worker = self._workers.get(datapath_id)
        if channel is None or channel.closed.is_set():
            return
        if generation is not None:
            if worker is not None and worker.channel is channel \
                    and worker.role_generation == generation:
                return
            LOG.info("switch %#x: this instance owns it (%s, generation %d)", datapath_id,
                     key, generation)
            self._start_worker(channel, self.counters(datapath_id), None, generation)
            return
        if worker is not None:
            with self._lock:
                if self._workers.get(datapath_id) is worker:
                    del self._workers[datapath_id]
            worker.retired.set()
            worker.stop()
            LOG.info("switch %#x: owned elsewhere now; stepping aside", datapath_id)
        row = ownership.owner_of(key)
        at = row.generation if row is not None else 0
        with self._lock:
            if self._slave_at.get(datapath_id) == at:
                return
            self._slave_at[datapath_id] = at
        threading.Thread(target=self._become_slave, args=(channel, at), daemon=True,
                         name=f"slave {datapath_id:#x}").start()

    def _become_slave(self, channel: Channel, generation: int) -> None:
        try:
            request_role(channel, OFPCR_ROLE_SLAVE, generation)
            LOG.info("switch %#x: slave (generation %d)", channel.datapath_id, generation)
        except (RoleRefused, TimeoutError, ConnectionError) as exc:
            LOG.warning("switch %#x: %s", channel.datapath_id, exc)
            with self._lock:
                self._slave_at.pop(channel.datapath_id, None)

    def role_lost(self, worker: SwitchWorker) -> None:
        """A worker was refused as master (stale, or demoted by a newer master)."""
        with self._lock:
            if self._workers.get(worker.datapath_id) is worker:
                del self._workers[worker.datapath_id]
                self._slave_at.pop(worker.datapath_id, None)
        self.notify_synced()

    def pushed(self, worker: SwitchWorker) -> None:
        """A push completed: the owner reports the intent generation its switch is now
        in step with, which `?wait=true` on every instance reads (`wait_installed`)."""
        if self.ownership is not None:
            self._report_installed([worker])

    def _in_step_with(self, worker: SwitchWorker) -> Optional[int]:
        """The intent generation a switch runs: the last compiled one if it holds the
        newest state it was offered, else that of the state it holds."""
        synced = worker.sync.synced
        if synced is None:
            return None
        if worker.pending() is synced:
            return max(synced.generation, self._compiled_generation)
        return synced.generation

    def _report_installed(self, workers: list[SwitchWorker]) -> None:
        ownership = self.ownership
        if ownership is None:
            return
        topo_fabric = bool(self.topology.view().fabric_switches)
        if topo_fabric:
            with self._lock:
                every = list(self._workers.values())
            steps = [self._in_step_with(w) for w in every]
            if every and all(g is not None for g in steps):
                ownership.report_installed(FABRIC_KEY, min(g for g in steps if g is not None))
            return
        for worker in workers:
            key = self.ownership_key(worker.datapath_id)
            generation = self._in_step_with(worker)
            if key is not None and generation is not None \
                    and not worker.retired.is_set():
                ownership.report_installed(key, generation)

    def _remote_pending(self, generation: int) -> list[int]:
        """Several instances: switches `generation` changed (as compiled here: every
        instance compiles every switch) that do not run it yet, wherever their owner.

        This instance's own: its worker is in step with it. Another live instance's:
        that owner reported it (`Switch_Owner.installed`). A switch without a live
        owner (its owner just died, or nobody took it yet) is waited for: the instance
        that adopts it installs the change, and reports it. A switch not connected to
        this instance is not (as with one instance: it gets everything when it is
        back)."""
        ownership = self.ownership
        if ownership is None:
            return []
        changed = self._changes.affected(generation)
        if changed is None:  # not known here: every switch (owners report every compile)
            changed = frozenset(self.topology.view().switches)
        with self._lock:
            workers = dict(self._workers)
            connected = {d for d, c in self._channels.items() if not c.closed.is_set()}
        alive = ownership.alive()
        pending = []
        for dpid in changed:
            if dpid not in connected:
                continue
            worker = workers.get(dpid)
            if worker is not None and not worker.retired.is_set():
                step = self._in_step_with(worker)
                if step is None or step < generation:
                    pending.append(dpid)
                continue
            row = ownership.owner_of(self.ownership_key(dpid))
            if row is None or not row.owner or row.owner not in alive \
                    or row.owner == ownership.name or row.installed < generation:
                pending.append(dpid)
        return pending

    # ---- fabric events from the OpenFlow app (never block: os-ken's event thread)
    def of_switch_up(self, datapath_id: int, ports: dict[int, tuple[str, bool]]) -> None:
        if self.topology.switch_up(datapath_id, ports):
            self.kick()
        self.discovery.switch_up(datapath_id, [no for no, (_, up) in ports.items() if up])

    def of_switch_down(self, datapath_id: int) -> None:
        self.discovery.switch_gone(datapath_id, time.monotonic())
        if self.topology.switch_down(datapath_id):
            self.kick()

    def of_port(self, datapath_id: int, port_no: int, name: str, up: Optional[bool]) -> None:
        """Port status: the fast path for a cut. The port's state goes into the topology
        first (links over a down port leave the view with it, in one recompile), then
        discovery forgets its links; a port that came up is probed at once."""
        if self.topology.port_changed(datapath_id, port_no, name, up):
            self.kick()
        if up:
            self.discovery.port_up(datapath_id, port_no)
        else:
            self.discovery.port_down(datapath_id, port_no, time.monotonic(),
                                     "port deleted" if up is None else "port down")

    def lldp_in(self, datapath_id: int, in_port: int, data: bytes) -> bool:
        return self.discovery.lldp_in(datapath_id, in_port, data, time.monotonic())

    # ---- what guests punt (controller/punt.py): DHCP, answered from intent
    def punt_in(self, datapath_id: int, cookie: int, data: bytes) -> list[bytes]:
        """The replies to a packet a guest port's flow sent up (cookie of the port), to
        go out of that port. Never blocks (os-ken's event thread)."""
        kind, key = pl.cookie_owner(cookie)
        if kind != "port":
            return []
        compiler = self._compiler
        return self.punts.handle(compiler.port_at(datapath_id, key), compiler.intent, data,
                                 compiler.router_port_on)

    def ra_due(self) -> list[tuple[int, int, bytes]]:
        """(dpid, ofport, frame): the periodic router advertisements due now, to every
        local port of an advertised IPv6 subnet, every router_advert.INTERVAL."""
        now = time.monotonic()
        if now < self._ra_next:
            return []
        self._ra_next = now + router_advert.INTERVAL
        compiler = self._compiler
        intent = compiler.intent
        if intent is None:
            return []
        out = []
        for dpid, pid, ofport in compiler.ra_targets():
            port = intent.ports.get(pid)
            if port is None:
                continue
            for advert in router_advert.adverts_for(port, intent, compiler.router_port_on):
                out.append((dpid, ofport, router_advert.frame(advert)))
        ROUTER_ADVERTS.labels("periodic").inc(len(out))
        return out

    # ---- external gateways: the upstream router's MAC (controller/upstream_arp.py)
    def arp_in(self, datapath_id: int, metadata: Optional[int], data: bytes) -> bool:
        """An ARP packet a gateway chassis punted; True if it was one (learnt or not)."""
        heard = self._upstream_arp.heard(self._upstreams(), datapath_id, metadata, data)
        if heard is None:
            return parse_arp(data) is not None
        net_key, ip, hw = heard
        if self.topology.learn_macs({(net_key, ip): hw}) is not None:
            LOG.info("switch %#x: upstream router %s is at %s", datapath_id,
                     ipaddress.IPv4Address(ip), mac_text(hw))
            self.kick()
        return True

    def _upstreams(self) -> Mapping[tuple[int, int], tuple[Any, int]]:
        """Whom each gateway chassis asks ARP for: from the incremental compiler, or,
        with a fabric (compiled whole each time), from the last compile's placement."""
        if self.topology.view().fabric_switches:
            return self._fabric_upstreams
        return self._compiler.upstreams()

    def relearn_macs(self, installed: Mapping[Any, Any]) -> Optional[int]:
        """What a switch that just connected holds of the upstream MACs it learnt
        (`gateway.bindings_in`), back into the topology: the topology version a compile
        must have reached before this switch is given its state (so that it keeps
        them), or None (it holds none)."""
        heard = bindings_in(installed.values())
        if not heard:
            return None
        version = self.topology.learn_macs(heard)
        if version is None:
            # known already (another gateway taught them first): still, what this
            # switch is offered must come from a compile that knew them
            return self.topology.view().version
        self.kick()
        return version

    def arp_requests(self) -> list[tuple[int, int, bytes]]:
        """(dpid, ofport, frame): ARP requests for the upstream routers, and gratuitous
        ARPs of the distributed floating IPs, due now."""
        topo, now = self.topology.view(), time.monotonic()
        due = self._upstream_arp.due(self._upstreams(), topo, now)
        due += self._upstream_arp.announce(self._compiler.announcements(), topo, now)
        return [(r.datapath_id, r.ofport, r.frame) for r in due]

    def probe_targets(self) -> list[tuple[int, int]]:
        """(dpid, port) pairs to send an LLDP probe out of: up ports of fabric switches."""
        view = self.topology.view()
        return sorted((d, no) for (d, no), up in view.port_state.items()
                      if up and d in view.fabric_switches and no < OFPP_MAX)

    def urgent_probes(self) -> list[tuple[int, int]]:
        """Probes to send now, out of turn: ports that just came up, switches that just
        connected (so a restored link is heard in milliseconds, not a round later)."""
        view = self.topology.view()
        return [(d, no) for d, no in self.discovery.take_urgent()
                if d in view.fabric_switches and no < OFPP_MAX
                and view.port_state.get((d, no), False)]

    def probe_sent(self, datapath_id: int, ports: list[int]) -> None:
        self.discovery.probe_sent(datapath_id, ports, time.monotonic())

    def lldp_suspects(self) -> dict[int, list[int]]:
        """Switch -> ports whose links' probes went missing: the OpenFlow app reads
        their rx counters (`port_counters`) before discovery may blame the links."""
        return self.discovery.suspects(time.monotonic())

    def port_counters(self, datapath_id: int, rx_packets: dict[int, int]) -> None:
        self.discovery.rx_counters(datapath_id, rx_packets, time.monotonic())

    def discovery_tick(self) -> None:
        """LLDP timeouts, hold-downs and the fabric rollout's next step; the probe loop
        calls it many times a second."""
        now = time.monotonic()
        self.discovery.tick(now)
        self._advance_fabric_stage()
        if self._held_unsettled and now - self._settle_kicked > 0.2:
            self._settle_kicked = now  # a held switch's ports may have settled meanwhile
            self._held_unsettled = False
            self.kick()

    @staticmethod
    def _waits_to_settle(worker: SwitchWorker, topo: Any, now: float) -> bool:
        """A fabric switch not yet given a state since it connected, and not waiting
        longer than `FABRIC_SETTLE_MAX` (`FABRIC_RELEARN_MAX` if it holds links)."""
        if worker.datapath_id not in topo.fabric_switches or worker.sync.synced is not None \
                or worker.channel.closed.is_set():
            return False
        cap = FABRIC_RELEARN_MAX if worker.held_link_ports() else FABRIC_SETTLE_MAX
        return now - worker.connected_mono < cap

    def _fabric_ready(self, topo: Any, workers: Mapping[int, SwitchWorker]) -> bool:
        """Whether the fabric switches that just connected may be given their states.

        A fabric switch's flows depend on every link (its next hop to each switch),
        so none is given a state until discovery has settled the ports of every one
        that is waiting (`_waits_to_settle`). After a controller restart each waits
        also for the links its own next-hop groups still use (`link_ports_in`): a
        neighbour that reconnects a moment later must not read as a host port, or
        the switches would be given a state without that link, then the one with it
        (flow_mods for nothing, seen as a flaky test_fabric_detour)."""
        now = time.monotonic()
        waiting = [w for w in workers.values() if self._waits_to_settle(w, topo, now)]
        by_switch: dict[int, list[int]] = {}
        for (d, no), is_up in topo.port_state.items():
            if is_up:
                by_switch.setdefault(d, []).append(no)
        for worker in waiting:
            if worker.sync.installed is None:
                return False  # what it holds is being read: its links are not known yet
            dpid = worker.datapath_id
            up = by_switch.get(dpid, [])
            held = worker.held_link_ports().intersection(up)
            if not self.discovery.settled(dpid, up, held):
                return False
        return True

    def _fabric_installed(self, dpids: Any, version: int) -> bool:
        """Every switch in `dpids` is connected and runs topology `version` or later."""
        with self._lock:
            workers = [self._workers.get(d) for d in dpids]
        return all(w is not None and not w.channel.closed.is_set()
                   and w.sync.synced is not None and w.sync.synced.topology_version >= version
                   for w in workers)

    def _advance_fabric_stage(self) -> None:
        """Next step of a fabric rollout once every connected fabric switch runs this one
        (or FABRIC_STAGE_TIMEOUT passed: a switch that cannot take it holds nobody up)."""
        view = self.topology.view()
        stage = view.fabric_stage
        if stage is None:
            return
        now = time.monotonic()
        since = self._stage_since
        if since is None or since[0] != view.version:
            since = self._stage_since = (view.version, now)
        with self._lock:
            workers = [w for d, w in self._workers.items()
                       if d in view.fabric_switches and not w.channel.closed.is_set()]
        lagging = [w.datapath_id for w in workers if w.sync.synced is None
                   or w.sync.synced.topology_version < view.version]
        if lagging and now - since[1] < FABRIC_STAGE_TIMEOUT:
            return
        if lagging:
            LOG.warning("fabric rollout %s: %d switches (%s) not confirmed after %.1f s; "
                        "going on", stage.describe(), len(lagging),
                        ", ".join(f"{d:#x}" for d in sorted(lagging)[:5]), now - since[1])
        if self.topology.advance_stage(view.version):
            LOG.info("fabric rollout %s installed in %.3f s", stage.describe(), now - since[1])
            self.kick()

    def notify_synced(self) -> None:
        with self._synced:
            self._synced.notify_all()
        self._advance_fabric_stage()

    # ---- the compile loop
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait(timeout=1.0)
            self._watch_openflow()
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
                with self._compile_lock:
                    self._compile_once()
            except Exception:
                LOG.exception("compile failed")
                time.sleep(0.5)
                self._dirty.set()

    def _compile_once(self) -> None:
        if self.ownership is not None:
            with self._lock:
                dpids = list(self._channels)
            for dpid in dpids:
                self._reconsider(dpid)
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
        if not topo.fabric_switches:
            self._compile_incremental(intent, topo, workers)
            return
        self._compiler = Compiler(self.fast_failover)  # unit state is for chassis only
        started = time.perf_counter()
        placement = Placement(intent, topo, self.fast_failover)
        self._fabric_upstreams = upstream_wanted(placement.routing.plans, placement.gateways)
        changed: set[int] = set()
        shaping: dict[str, dict] = {}
        links_lost = self.topology.links_lost
        order = self._compile_order(topo)
        stage = topo.fabric_stage
        urgent = [d for d in order if stage is not None and d in stage.urgent]
        if urgent and placement.fabric is not None:
            self._regroup_urgent(urgent, placement.fabric, workers)
        fabric_ready = self._fabric_ready(topo, workers)
        for n, dpid in enumerate(order):
            if urgent and n == len(urgent):
                self._wait_urgent_wave(urgent, topo.version, workers)
            if self.topology.links_lost != links_lost:
                # A link was lost meanwhile: what is left of this compile is stale, and
                # the switches that must route around the loss should not wait for it.
                LOG.debug("compile: a link was lost; restarting after %d of %d switches",
                          n, len(order))
                self._dirty.set()
                return
            worker = workers.get(dpid)
            if worker is not None and not fabric_ready \
                    and self._waits_to_settle(worker, topo, time.monotonic()):
                self._held_unsettled = True
                continue
            desired = compile_switch(intent, topo, dpid, placement)
            switch = topo.switches.get(dpid)
            if switch is not None:
                shaping.setdefault(switch.chassis, {}).update(desired.shaping)
            if worker is not None:
                before = worker.pending()
                if before is None or not same_state(before, desired):
                    changed.add(dpid)
                worker.offer(desired)
        if self.registry is not None:
            self.registry.set_tunnels(desired_tunnels(intent, topo))
            self.registry.set_shaping(shaping)
        COMPILE_SECONDS.observe(time.perf_counter() - started)
        LOG.debug("compiled %d switches for topology %d in %.3f s%s", len(order), topo.version,
                  time.perf_counter() - started,
                  f" ({topo.fabric_stage.describe()})" if topo.fabric_stage else "")
        self._release_held(topo.version, workers)
        self._compiled(intent.generation, changed)

    def _release_held(self, version: int, workers: Mapping[int, SwitchWorker]) -> None:
        """Topology `version` is compiled and handed out: workers that held back for it
        push what they hold (their switch's state may not have changed with it)."""
        self.compiled_topology = version
        for worker in workers.values():
            worker.release(version)

    def _compiled(self, generation: int, changed: set[int]) -> None:
        """A compile of `generation` is handed out; `changed`: the switches it changed."""
        with self._synced:
            if self._compiled_generation >= 0:
                self._changes.record(self._compiled_generation, generation, frozenset(changed))
            self._compiled_generation = max(self._compiled_generation, generation)
            self._synced.notify_all()
        if self.ownership is not None:  # the switches it left unchanged are in step too
            with self._lock:
                workers = list(self._workers.values())
            self._report_installed(workers)

    def _compile_incremental(self, intent: Intent, topo: Any,
                             workers: dict[int, SwitchWorker]) -> None:
        """Chassis only (no fabric): the units a change touches are compiled again
        (`compiler.incremental`), and only the switches whose state changed are offered
        anything, with the flow keys that changed."""
        started = time.perf_counter()
        inc = self._compiler
        idelta = tdelta = None
        if inc.intent is not None and inc.topo is not None:
            changes_since = getattr(self.store, "changes_since", None)
            idelta = changes_since(inc.generation) if changes_since is not None else None
            tdelta = self.topology.changes_since(inc.topology_version)
        full = idelta is None or tdelta is None
        if full:
            with _gc_paused():
                offers = inc.update(intent, topo, idelta, tdelta)
        else:
            offers = inc.update(intent, topo, idelta, tdelta)
        changed: set[int] = set()
        for dpid, offer in offers.items():
            self.plan_models.note(dpid, offer.changed_keys, offer.desired)
            worker = workers.get(dpid)
            before = worker.pending() if worker is not None else None
            if offer.changed_keys is None or offer.changed_keys or before is None \
                    or before.groups != offer.desired.groups \
                    or before.meters != offer.desired.meters:
                changed.add(dpid)  # (shaping alone goes through OVSDB: not waited for)
            if worker is not None:
                worker.offer(offer.desired, offer.changed_keys)
        for dpid, worker in workers.items():
            if worker.pending() is None:  # connected since: it gets the whole state
                desired = inc.desired(dpid)
                if desired is not None:
                    worker.offer(desired)
        if self.registry is not None:
            if full or idelta is None or idelta.ids("networks") or tdelta is None \
                    or tdelta.chassis or tdelta.switches:
                self.registry.set_tunnels(desired_tunnels(intent, topo))
            if any(o.shaping_changed for o in offers.values()):
                shaping: dict[str, dict] = {}
                for dpid, per_iface in inc.shaping().items():
                    switch = topo.switches.get(dpid)
                    if switch is not None:
                        shaping.setdefault(switch.chassis, {}).update(per_iface)
                self.registry.set_shaping(shaping)
        elapsed = time.perf_counter() - started
        COMPILE_SECONDS.observe(elapsed)
        LOG.debug("compiled %s: %d switches changed, topology %d, generation %d, %.3f s",
                  "in full" if full else "incrementally", len(offers), topo.version,
                  intent.generation, elapsed)
        self._release_held(topo.version, workers)
        self._compiled(intent.generation, changed)

    def _regroup_urgent(self, urgent: list[int], plan: Any,
                        workers: dict[int, SwitchWorker]) -> None:
        """After a loss, before compiling anything: give each switch that must reroute its
        last desired state with the next-hop groups recomputed (`fabric.regroup`), a few
        times cheaper than compiling it. The compile that follows confirms (and owns the
        topology version: this one keeps the old, so no rollout step counts it done)."""
        started = time.perf_counter()
        patched: list[tuple[SwitchWorker, DesiredSwitch]] = []
        ahead = self._protection_for(self.topology.view())
        for dpid in urgent:
            worker = workers.get(dpid)
            desired = worker.pending() if worker is not None else None
            if worker is None or desired is None:
                continue
            if ahead is not None and desired.topology_version == ahead[0] \
                    and desired.generation == ahead[1]:
                groups = dict(desired.groups)
                groups.update(ahead[2].get(dpid, {}))  # worked out before the cut
            else:
                groups = regroup(plan, dpid, desired.groups, self.fast_failover)
            if groups != dict(desired.groups):
                patched.append((worker, dataclasses.replace(
                    desired, groups=MappingProxyType(groups))))
        computed = time.perf_counter() - started
        # All computed first, then handed out at once: a push started early would take
        # the CPU from computing the others, and the last switch of a path is as urgent
        # as the first.
        for worker, desired in patched:
            worker.offer(desired)
        # ...and installed before the compile takes the CPU back (URGENT_WAVE_WAIT at most)
        with self._synced:
            self._synced.wait_for(lambda: all(w.sync.synced is d or w.channel.closed.is_set()
                                              for w, d in patched), URGENT_WAVE_WAIT)
        LOG.debug("repair: %d of %d urgent switches regrouped in %.3f s%s, installed in "
                  "%.3f s", len(patched), len(urgent), computed,
                  " (worked out ahead)" if ahead is not None else "",
                  time.perf_counter() - started - computed)

    def _protection_for(self, topo: Any
                        ) -> Optional[tuple[int, int, Mapping[int, Mapping[int, Any]]]]:
        """(version, generation, patches) worked out ahead for the loss being repaired in
        `topo`'s stage, if there are any: one link lost, from the links they assumed."""
        prot, stage = self._protection, topo.fabric_stage
        if prot is None or stage is None or not stage.repair \
                or dict(stage.prev_links) != dict(prot.links):
            return None
        lost = [a for a, b in stage.prev_links.items() if topo.links.get(a) != b]
        if len(lost) != 2:  # one link: its two ends
            return None
        patches = prot.patches.get(min(lost))
        return None if patches is None else (prot.version, prot.generation, patches)

    def _protect_loop(self) -> None:
        """Keep `Protection` current: once the fabric has been still for
        PROTECTION_QUIET seconds (no rollout step, every switch on the same topology
        version), work out the repair of each link's loss from what the switches hold.

        Not with fast failover: the groups' detours carry a single cut while its
        reroute is rolled out in steps (`rollout_stages`), so there is nothing urgent
        to prepare (and 4-28 s of CPU at 74 switches to save)."""
        still: Optional[tuple[int, float]] = None
        while not self._stopping.is_set():
            time.sleep(0.5)
            if self.fast_failover:
                continue
            try:
                view = self.topology.view()
                if view.fabric_stage is not None or not view.links:
                    still = None
                    continue
                if still is None or still[0] != view.version:
                    still = (view.version, time.monotonic())
                prot = self._protection
                if time.monotonic() - still[1] < PROTECTION_QUIET or (
                        prot is not None and prot.version == view.version
                        and prot.generation == self.store.latest().generation):
                    continue
                self._protection = self._work_out_protection(view)
            except Exception:
                LOG.exception("working out the fabric's protection failed")

    def _work_out_protection(self, view: Any) -> Optional[Protection]:
        generation = self.store.latest().generation
        with self._lock:
            workers = [w for d, w in self._workers.items() if d in view.fabric_switches]
        groups = {}
        for w in workers:
            desired = w.pending()
            if desired is None or desired.topology_version != view.version \
                    or desired.generation != generation:
                return None  # a compile is on its way: next round
            groups[w.datapath_id] = desired.groups
        started = time.perf_counter()
        current = routing_plan(view.fabric_switches, view.links)
        patches = {}
        for end, peer in sorted(view.links.items()):
            if end > peer:
                continue
            if self.topology.view().version != view.version or self._stopping.is_set():
                return None  # the fabric moved: start again when it is still
            patches[end] = MappingProxyType(repair_patches(
                view.fabric_switches, view.links, end, groups, self.fast_failover, current))
            time.sleep(PROTECTION_YIELD)  # background work: let everything else run
        LOG.debug("protection: the loss of each of %d links worked out in %.2f s",
                  len(patches), time.perf_counter() - started)
        return Protection(view.links, view.version, generation, MappingProxyType(patches))

    def _wait_urgent_wave(self, urgent: list[int], version: int,
                          workers: dict[int, SwitchWorker]) -> None:
        """Let the switches that route around a loss finish their push before the rest
        of the fabric is compiled: they then have the CPU (and ovs-vswitchd) to
        themselves instead of sharing it with every backup and flood group update."""
        started = time.monotonic()
        live = [d for d in urgent if d in workers and not workers[d].channel.closed.is_set()]
        with self._synced:
            done = self._synced.wait_for(lambda: self._fabric_installed(live, version),
                                         URGENT_WAVE_WAIT)
        LOG.debug("urgent wave: %d switches %s in %.3f s", len(live),
                  "installed" if done else "not all installed", time.monotonic() - started)

    def _compile_order(self, topo: Any) -> list[int]:
        """Every switch: those a loss forces onto new routes first (`FabricStage.urgent`),
        then by distance from the links that just changed.

        Each switch is handed to its worker as soon as it is compiled, so after a cut
        the switches that must turn traffic around are pushed while the rest of the
        fabric still compiles."""
        dpids = sorted(set(topo.switches) | topo.fabric_switches)
        stage = topo.fabric_stage
        urgent = stage.urgent if stage is not None else frozenset()
        touched = self.topology.take_touched() & set(topo.fabric_switches)
        if not touched:
            return sorted(dpids, key=lambda d: (d not in urgent, d))
        adjacent: dict[int, set[int]] = {}
        for (a, _), (b, _) in topo.links.items():
            adjacent.setdefault(a, set()).add(b)
        dist = dict.fromkeys(touched, 0)
        frontier = sorted(touched)
        while frontier:
            nxt = []
            for d in frontier:
                for n in sorted(adjacent.get(d, ())):
                    if n not in dist:
                        dist[n] = dist[d] + 1
                        nxt.append(n)
            frontier = nxt
        return sorted(dpids, key=lambda d: (d not in urgent, dist.get(d, len(dpids)), d))

    # ---- integration bridges that never reach us
    def _connected_dpids(self) -> set[int]:
        with self._lock:
            return {d for d, w in self._workers.items() if not w.channel.closed.is_set()} | {
                d for d, c in self._channels.items() if not c.closed.is_set()}

    def _watch_openflow(self, now: Optional[float] = None) -> None:
        """Warn, once per bridge, when a chassis' integration bridge has opened no
        OpenFlow connection to this controller OF_CONNECT_GRACE_SECONDS after it was
        first seen.

        Nothing else would say so: the chassis shows as connected (that is its OVSDB)
        while /v1/switches stays empty. The usual cause is a controller target the
        chassis cannot reach, typically the default tcp:127.0.0.1:6653 on a chassis
        that is another host or namespace (--of-target forgotten). Runs on the
        compile thread, about once a second; never raises.
        """
        if self.registry is None:
            return
        try:
            now = time.monotonic() if now is None else now
            connected = self._connected_dpids()
            by_bridge: dict[tuple[str, str], list[ControllerLink]] = {}
            for link in self.registry.controller_links():
                if link.datapath_id is not None:
                    by_bridge.setdefault((link.chassis, link.bridge), []).append(link)
            for key, links in by_bridge.items():
                dpid = links[0].datapath_id
                assert dpid is not None
                self.counters(dpid)
                if dpid in connected:
                    self._of_waiting.pop(key, None)
                    if self._of_warned.get(key) is False:
                        self._of_warned[key] = True
                        LOG.info("chassis %s: bridge %s is now connected to this controller "
                                 "over OpenFlow", *key)
                    continue
                since = self._of_waiting.setdefault(key, now)
                if now - since >= OF_CONNECT_GRACE_SECONDS and key not in self._of_warned:
                    self._of_warned[key] = False
                    LOG.warning("%s", self._not_connected_message(links, now - since))
            for key in set(self._of_waiting) - set(by_bridge):
                del self._of_waiting[key]
        except Exception:
            LOG.exception("checking the switches' OpenFlow connections failed")

    def _not_connected_message(self, links: list[ControllerLink], waited: float) -> str:
        """What is wrong and what to do, in the words an operator will search for."""
        assert self.registry is not None
        ours = self.registry.controller_target
        first = links[0]
        seen = "; ".join(
            f"{link.target} ({'connected' if link.is_connected else 'not connected'}"
            + (f", state {link.state}" if link.state else "")
            + (f", last error \"{link.last_error}\"" if link.last_error else "") + ")"
            for link in links)
        text = (f"chassis {first.chassis}: bridge {first.bridge} (datapath "
                f"{_label(first.datapath_id or 0)}) has made no OpenFlow connection to this "
                f"controller in {waited:.0f} s, so Loom cannot program it (/v1/switches "
                f"will not list it). ovs-vswitchd reports its controller target(s): {seen}. ")
        if any(link.is_connected for link in links):
            text += ("The switch is connected to something else at that address: another "
                     "controller listens there. ")
        else:
            text += "The chassis cannot reach the controller at that address"
            host = first.target.split(":")[1] if first.target.count(":") >= 2 else ""
            if host.startswith("127.") or host in ("localhost", "[::1]"):
                text += (f" ({host} is the chassis' own loopback: it is this controller "
                         "only when the chassis is this host, in this network namespace)")
            text += ". "
        port = ours.rsplit(":", 1)[-1]
        text += (f"Fix: start the controller with --of-target tcp:<an address of this "
                 f"controller that the chassis can reach>:{port} (it listens on "
                 f"--of-listen), or check the route/firewall between them.")
        return text

    # ---- Runtime protocol
    def _pending_switches(self, generation: int,
                          affected: Mapping[int, DesiredSwitch]) -> list[int]:
        """Of the switches `generation` changed (`_affected_switches`), those still
        connected that do not yet run it (the state decided on, or a later one)."""
        with self._lock:
            workers = {d: self._workers.get(d) for d in affected}
        pending = []
        for dpid, decided in affected.items():
            w = workers[dpid]
            if w is None or w.channel.closed.is_set():
                continue  # gone: it gets everything when it reconnects, nothing to wait for
            synced = w.sync.synced
            if synced is None or synced.generation < generation \
                    or synced.topology_version < decided.topology_version:
                pending.append(dpid)
        return pending

    def _affected_switches(self, generation: int) -> dict[int, DesiredSwitch]:
        """Switches whose desired state `generation` changed (`ChangeLog`), each with its
        newest state; asked once `generation` is compiled. Not known (an old
        generation): every switch, the safe answer."""
        changed = self._changes.affected(generation)
        with self._lock:
            workers = list(self._workers.values())
        out = {}
        for w in workers:
            if changed is not None and w.datapath_id not in changed:
                continue
            current = w.pending()
            if current is not None and current.generation >= generation:
                out[w.datapath_id] = current
        return out

    def wait_first_sync(self, timeout: float) -> bool:
        """True once a first compile is handed out and every switch connected then
        has installed a state (the end of a start or restart); False after `timeout`."""
        def done() -> bool:
            with self._lock:
                workers = list(self._workers.values())
            return self._compiled_generation >= 0 and all(
                w.sync.synced is not None or w.channel.closed.is_set() for w in workers)

        with self._synced:
            return self._synced.wait_for(done, timeout)

    def wait_installed(self, generation: int, timeout: float) -> bool:
        """True once every switch whose desired state `generation` changed runs it.

        Which switches that is, the compile of `generation` said when it handed the
        states out (`ChangeLog`): a switch that fails its pushes holds up only the
        writes that change it."""
        deadline = time.monotonic() + timeout
        affected: Optional[dict[int, DesiredSwitch]] = None
        with self._synced:
            while True:
                if affected is None and self._compiled_generation >= generation:
                    affected = self._affected_switches(generation)
                if affected is not None and not self._pending_switches(generation, affected) \
                        and not self._remote_pending(generation):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._synced.wait(min(remaining, 0.5))

    def plan(self, after: Intent) -> dict[str, Any]:
        """What the switches would get if the intent became `after` (a write's dry
        run): controller/plan.py, on this engine's own compiler, costing what the
        change costs."""
        from controller.plan import owner_resolver, what_if

        with self._compile_lock:
            try:
                out, same = what_if(self._compiler, after, owner_resolver, self.plan_models)
            except Exception as exc:
                if type(exc).__name__ != "PlanUnavailable":
                    LOG.exception("plan failed; the next compile is a full one")
                    self._compiler = Compiler(self.fast_failover)
                    self.plan_models = ModelCache()
                    self.kick()
                raise
            if not same:
                LOG.error("a plan's round trip did not give the compiler back the states "
                          "it held; the next compile is a full one")
                self._compiler = Compiler(self.fast_failover)
                self.plan_models = ModelCache()
                self.kick()
        return out

    def port_binding(self, port_id: str) -> Optional[dict[str, Any]]:
        b = self.topology.view().bindings.get(port_id)
        if b is None:
            return None
        return {"chassis": b.chassis, "bridge": b.bridge, "ofport": b.ofport,
                "datapath_id": f"{b.datapath_id:016x}", "interface": b.interface}

    def port_status(self, port_id: str) -> str:
        """ACTIVE once the port's own flows are installed on a switch it is bound to.

        Two dict lookups and one worker's cookie count: a list of N ports asks this N
        times, so nothing here may cost what the fleet costs (`_fabric_bound`)."""
        intent = self.store.latest()
        port = intent.ports.get(port_id)
        if port is None:
            return "DOWN"
        view = self.topology.view()
        b = view.bindings.get(port_id)
        # else bound by binding:profile on a fabric switch?
        dpid = b.datapath_id if b is not None else self._fabric_bound(intent, view).get(port_id)
        if dpid is None:
            if port.device_owner.startswith("network:router"):  # interface, gateway
                return self._router_port_status(port)
            return "DOWN"
        return "ACTIVE" if self._switch_holds_port(dpid, port.key) else "DOWN"

    # router port key -> a switch last seen holding its flows (see _router_port_status)
    _router_port_seen: Optional[dict[int, int]] = None
    _ROUTER_PORT_SEEN_MAX = 65536

    def _router_port_status(self, port: Port) -> str:
        """A router's port is bound nowhere: the router lives on every switch of its
        networks. ACTIVE once some switch holds the port's flows (its ARP answer), as
        Neutron shows a router interface that works.

        A list of N router ports asks this N times, so it never asks every switch: the
        switch last seen holding the port's flows is asked first (O(1) while it still
        does), then the switches the compiler placed a port of the port's network on,
        the only ones its flows are compiled for (`Compiler.carriers_of`). Only without
        the compiler's unit state (a fabric is compiled in full, switch by switch) does
        it ask every connected switch. ACTIVE is always what a switch's installed flows
        say (`has_port`), never what the compiler merely intends."""
        key = port.key
        seen = self._router_port_seen
        if seen is None:
            seen = self._router_port_seen = {}
        hint = seen.get(key)
        if hint is not None and self._switch_holds_port(hint, key):
            return "ACTIVE"
        carriers = self._compiler.carriers_of(port.network_id)
        if carriers is None:
            with self._lock:
                carriers = tuple(self._workers)
        for dpid in carriers:
            if dpid != hint and self._switch_holds_port(dpid, key):
                if len(seen) >= self._ROUTER_PORT_SEEN_MAX:
                    seen.clear()  # deleted ports' hints: forget them all, now and then
                seen[key] = dpid
                return "ACTIVE"
        seen.pop(key, None)
        return "DOWN"

    def _switch_holds_port(self, dpid: int, key: int) -> bool:
        """Whether the connected switch `dpid` has the port's flows installed."""
        with self._lock:
            worker = self._workers.get(dpid)
        if worker is not None:
            return worker.sync.has_port(key)
        return self._owner_holds_port(dpid, key)

    def _owner_holds_port(self, dpid: int, key: int) -> bool:
        """Several instances: a switch another live instance owns holds the port's flows
        when the state compiled here for it has them and its owner reports having
        installed that state's generation (or a later one)."""
        ownership = self.ownership
        if ownership is None:
            return False
        desired = self._compiler.desired(dpid)
        if desired is None or key not in desired.port_keys:
            return False
        row = ownership.owner_of(self.ownership_key(dpid))
        return row is not None and row.owner != ownership.name \
            and row.owner in ownership.alive() and row.installed >= desired.generation

    # (intent snapshot, topology view, port id -> fabric switch), see _fabric_bound
    _fabric_bound_cache: Optional[tuple[Intent, Any, Mapping[str, int]]] = None

    def _fabric_bound(self, intent: Intent, view: Any) -> Mapping[str, int]:
        """Port id -> the fabric switch its binding:profile binds it to, worked out by
        `fabric_bindings` once per (intent snapshot, topology view) and then looked up.

        Both are immutable and replaced whenever intent or topology changes, so the
        pair, compared by identity, is the cache key: a change of either (a new
        binding:profile, a fabric port that appears) makes a new map."""
        if not view.fabric_switches:
            return MappingProxyType({})  # nothing to bind to (and no pass over every port)
        cached = self._fabric_bound_cache
        if cached is not None and cached[0] is intent and cached[1] is view:
            return cached[2]
        bound = MappingProxyType({p.id: dpid for p, dpid, _, _ in fabric_bindings(intent, view)})
        self._fabric_bound_cache = (intent, view, bound)
        return bound

    def switches(self) -> list[dict[str, Any]]:
        topo = self.topology.view()
        with self._lock:
            workers = list(self._workers.values())
            slaves = [c for d, c in self._channels.items() if d not in self._workers]
        ownership = self.ownership
        out = []
        for channel in slaves:  # several instances: connected here, owned elsewhere
            dpid = channel.datapath_id
            sv = topo.switches.get(dpid)
            row = ownership.owner_of(self.ownership_key(dpid)) if ownership else None
            out.append({
                "datapath_id": f"{dpid:016x}",
                "chassis": sv.chassis if sv else None,
                "bridge": sv.bridge if sv else None,
                "connected": not channel.closed.is_set(),
                "role": "slave",
                "owner": row.owner if row is not None else None,
                "owner_generation": row.generation if row is not None else None,
                "installed_generation": row.installed if row is not None else None,
            })
        for w in workers:
            sv = topo.switches.get(w.datapath_id)
            synced = w.sync.synced
            extra: dict[str, Any] = {}
            if ownership is not None:
                extra = {"role": "master", "owner": ownership.name,
                         "owner_generation": w.role_generation}
            out.append({
                **extra,
                "datapath_id": f"{w.datapath_id:016x}",
                "chassis": sv.chassis if sv else None,
                "bridge": sv.bridge if sv else None,
                "connected": not w.channel.closed.is_set(),
                "installed_flows": len(w.sync.installed or ()),
                "synced_generation": synced.generation if synced else None,
                "flow_mods_sent": w.sync.stats.flow_mods,
                "bundles": w.sync.stats.bundles,
                "connections": w.counters.connections,
                "last_error": w.error,
            })
        return sorted(out, key=lambda s: s["datapath_id"])

    def chassis(self) -> list[dict[str, Any]]:
        topo = self.topology.view()
        connected = self._connected_dpids()
        links: dict[str, list[ControllerLink]] = {}
        ours = self.registry.controller_target if self.registry is not None else None
        for row in self.registry.controller_links() if self.registry is not None else []:
            links.setdefault(row.chassis, []).append(row)
        out = []
        for ch in self.topology.chassis_states():
            dpids = [d for d, sv in topo.switches.items() if sv.chassis == ch.name]
            mine = sorted(links.get(ch.name, []), key=lambda row: row.target != ours)
            link: Optional[ControllerLink] = mine[0] if mine else None
            out.append({
                "name": ch.name, "remote": ch.remote, "connected": ch.connected,
                "encap_ip": ch.encap_ip,
                "bridges": [b.name for b in ch.bridges],
                "ports_bound": sorted(b.port_id for b in topo.bindings.values()
                                      if b.chassis == ch.name),
                # OVSDB connected is not enough: the integration bridge must also have
                # opened an OpenFlow connection to this controller
                "openflow_connected": any(d in connected for d in dpids),
                "controller_target": link.target if link else None,
                "controller_status": None if link is None else {
                    "is_connected": link.is_connected, "state": link.state,
                    "last_error": link.last_error},
            })
        return out

    def topology_document(self) -> dict[str, Any]:
        return topoview.build(self.topology.view(), self.store.latest(), self.switches(),
                              self.chassis(), self.port_status)

    def health(self) -> dict[str, Any]:
        out = {"switches": self.switches(), "chassis": self.chassis()}
        if self.ownership is not None:
            out["instances"] = self.ownership.status()
        return out

    def installed_flows(self, datapath_id: int) -> Optional[list[dict[str, Any]]]:
        from controller import ofwire  # deferred: only the debug path needs the printer

        with self._lock:
            worker = self._workers.get(datapath_id)
        if worker is None or worker.sync.installed is None:
            return None
        from controller.explain.trace import owner_index, owner_of

        owners = owner_index(self.store.latest())  # the trace's: every kind a cookie names
        out = []
        for f in sorted(worker.sync.installed.values(),
                        key=lambda f: (pl.TABLE_IDS.get(f.table, 255), -f.priority)):
            out.append({
                "table": f.table, "priority": f.priority, "cookie": f"{f.cookie:#x}",
                "owner": owner_of(f.cookie, owners),
                "flow": ofwire.to_ofctl(f),
            })
        return out
