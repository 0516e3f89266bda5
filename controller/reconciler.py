"""The only writer to switches: desired vs installed -> the minimal change, one bundle.

On connect it reads what the switch holds (flows, groups, meters) instead of
assuming it is empty or wiping it — the difference between OVN's ofctrl and
Faucet's cold start. Each push is one ONF bundle (atomic, ordered), so a switch
never runs a half-applied change, and a restart with unchanged intent sends
nothing at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Optional, Protocol, TypeVar, Union

from controller import ofwire
from controller import pipeline as pl
from controller.compiler import DesiredSwitch
from controller.compiler.core import FlowKey
from controller.flows import Flow, Group, Meter
from controller.ofwire.model import OpaqueMeter

LOG = logging.getLogger(__name__)


class BundleRefused(RuntimeError):
    """The switch refused part of a bundle, which was therefore discarded whole."""


class Channel(Protocol):
    datapath_id: int
    closed: threading.Event

    def reserve_xids(self, n: int) -> int: ...

    def send(self, data: bytes) -> None: ...

    def call(self, data: bytes, xid: int, timeout: float) -> list: ...

    def take_stray_errors(self, first_xid: int, last_xid: int) -> list: ...


@dataclass(frozen=True)
class FlowDiff:
    adds: tuple[Flow, ...]
    deletes: tuple[Flow, ...]
    group_adds: tuple[Group, ...] = ()
    group_mods: tuple[Group, ...] = ()
    group_deletes: tuple[Group, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.adds or self.deletes or self.group_adds or self.group_mods
                    or self.group_deletes)

    @property
    def size(self) -> int:
        return (len(self.adds) + len(self.deletes) + len(self.group_adds)
                + len(self.group_mods) + len(self.group_deletes))


T = TypeVar("T")


def diff_groups(installed: Mapping[int, T], desired: Mapping[int, T]
                ) -> tuple[tuple[T, ...], tuple[T, ...], tuple[T, ...]]:
    """(adds, mods, deletes) between two maps by id: groups, and meters."""
    adds = tuple(g for gid, g in sorted(desired.items()) if gid not in installed)
    mods = tuple(g for gid, g in sorted(desired.items())
                 if gid in installed and installed[gid] != g)
    deletes = tuple(g for gid, g in sorted(installed.items()) if gid not in desired)
    return adds, mods, deletes


def diff_flows(installed: Mapping[FlowKey, Flow], desired: Mapping[FlowKey, Flow]) -> FlowDiff:
    """What to send: flows to (re)add and flows to delete, each by its OpenFlow key.

    A flow whose key is installed with other actions or cookie is re-added: in
    OpenFlow an add with an existing key replaces it, so there is no window with
    neither version installed.
    """
    adds: list[Flow] = []
    found = 0  # desired keys the switch holds
    have = installed.get
    for k, f in desired.items():
        old = have(k)
        if old is None:
            adds.append(f)
        else:
            found += 1
            if old != f:
                adds.append(f)
    # Every installed key is desired (the usual restart): no second pass, whose hashing
    # of every key was a third of the first diff at 100,000 flows (issue 11).
    deletes: tuple[Flow, ...] = () if found == len(installed) else tuple(
        f for k, f in installed.items() if k not in desired)
    return FlowDiff(tuple(adds), deletes)


def diff_flow_keys(installed: Mapping[FlowKey, Flow], desired: Mapping[FlowKey, Flow],
                   keys: Iterable[FlowKey]) -> FlowDiff:
    """`diff_flows` limited to `keys`, the flow keys whose desired flow may have changed
    since `installed` was the desired state: a change costs what it touched, not what
    the switch holds."""
    adds, deletes = [], []
    for k in keys:
        want, have = desired.get(k), installed.get(k)
        if want is not None:
            if have != want:
                adds.append(want)
        elif have is not None:
            deletes.append(have)
    return FlowDiff(tuple(adds), tuple(deletes))


@dataclass
class SyncStats:
    """What was sent to one switch. The engine hands the same object to every
    SwitchSync of a datapath id, so the counts survive reconnects.

    `flow_mods` counts every modification message: flow, group and meter mods."""

    flow_mods: int = 0
    bundles: int = 0
    last_push_seconds: float = 0.0
    last_push_flows: int = 0
    reads: int = 0
    failures: int = 0


def _modelled(meters: Mapping[int, Union[Meter, OpaqueMeter]]) -> dict[int, Meter]:
    """Meters as the reconciler keeps them: one Loom cannot describe becomes a Meter
    no desired one equals, so that a push replaces it."""
    return {i: m if isinstance(m, Meter) else Meter(i, -1, -1) for i, m in meters.items()}


class SwitchSync:
    """Installed state of one switch and the pushes that move it to the desired state."""

    REPLY_TIMEOUT = 60.0

    def __init__(self, channel: Channel,
                 on_pushed: Optional[Callable[[int, FlowDiff, float], None]] = None,
                 stats: Optional[SyncStats] = None) -> None:
        self.channel = channel
        self.installed: Optional[dict[FlowKey, Flow]] = None
        self.installed_groups: dict[int, Group] = {}
        self.installed_meters: dict[int, Meter] = {}
        self._installed_shared: set[int] = set()  # installed ids not a port punt meter
        # meters found changed behind Loom's back (drift): the next push compares them
        # even when its meter map is the one pushed last (`note_groups_meters`)
        self._meters_drifted: set[int] = set()
        self.cookie_counts: Counter[int] = Counter()
        self.synced: Optional[DesiredSwitch] = None
        # counts carried on from the switch's earlier connections, if any
        self.stats = stats if stats is not None else SyncStats()
        self._bundle_ids = 0
        self._on_pushed = on_pushed

    # ---- reading
    def read_installed(self) -> None:
        xid = self.channel.reserve_xids(1)
        replies = self.channel.call(ofwire.flow_stats_request(xid), xid, self.REPLY_TIMEOUT)
        installed: dict[FlowKey, Flow] = {}
        for item in ofwire.parse_flow_stats_replies([bytes(r.buf) for r in replies]):
            installed[item.flow.key] = item.flow
        groups, held = self.read_groups_meters()
        self.installed_groups = groups
        self._set_installed_meters(_modelled(held))
        self.installed = installed
        self.cookie_counts = Counter(f.cookie for f in installed.values())
        self.stats.reads += 1
        LOG.info("switch %#x holds %d flows", self.channel.datapath_id, len(installed))

    def read_groups_meters(self, timeout: Optional[float] = None
                           ) -> tuple[dict[int, Group], dict[int, Union[Meter, OpaqueMeter]]]:
        """What the switch holds in groups and meters, as read (a meter Loom cannot
        model stays an OpaqueMeter). Changes nothing here: the drift check
        (controller/drift.py) compares it first. Costs what the switch holds in groups
        and meters, not its flows."""
        wait = self.REPLY_TIMEOUT if timeout is None else timeout
        xid = self.channel.reserve_xids(1)
        replies = self.channel.call(ofwire.group_desc_request(xid), xid, wait)
        groups: dict[int, Group] = {}
        for r in replies:
            for g in ofwire.parse_group_desc_reply(bytes(r.buf)):
                groups[g.group_id] = g
        xid = self.channel.reserve_xids(1)
        replies = self.channel.call(ofwire.meter_config_request(xid), xid, wait)
        meters: dict[int, Union[Meter, OpaqueMeter]] = {}
        for r in replies:
            for m in ofwire.parse_meter_config_reply(bytes(r.buf)):
                meters[m.meter_id] = m
        return groups, meters

    def note_groups_meters(self, groups: Mapping[int, Group],
                           meters: Mapping[int, Union[Meter, OpaqueMeter]],
                           drifted_meters: Iterable[int] = ()) -> None:
        """The switch holds `groups` and `meters`, changed by someone else (drift): what
        the next push compares with. Groups are compared in full on every push; meters
        only where a push touches them, so `drifted_meters` (repair) are compared by
        the next push whatever it changes."""
        self.installed_groups = dict(groups)
        self._set_installed_meters(_modelled(meters))
        self._meters_drifted.update(drifted_meters)

    def note_changed(self, key: FlowKey, flow: Optional[Flow]) -> None:
        """The switch now holds `flow` under `key` (None: nothing), changed by someone
        else (controller/drift.py): what the next push compares with."""
        assert self.installed is not None
        old = self.installed.pop(key, None)
        if old is not None:
            self.cookie_counts[old.cookie] -= 1
        if flow is not None:
            self.installed[key] = flow
            self.cookie_counts[flow.cookie] += 1

    def adopt(self, other: SwitchSync) -> None:
        """Take what `other` (of the same switch connection) read the switch holds: a
        read made before this sync existed (the launcher reads a switch that connects
        while the store still loads)."""
        if other.installed is None:
            raise ValueError("nothing read yet")
        self.installed = other.installed
        self.installed_groups = other.installed_groups
        self._set_installed_meters(other.installed_meters)
        self.cookie_counts = other.cookie_counts
        self.stats.reads += other.stats.reads

    # ---- writing
    def push(self, desired: DesiredSwitch,
             changed_keys: Optional[Iterable[FlowKey]] = None) -> FlowDiff:
        """Make the switch hold `desired`; returns what was sent. Raises on failure.

        `changed_keys`: the flow keys whose desired flow may differ from the state
        pushed last (`synced`); only those are compared. Ignored (everything is) when
        what the switch holds was just read or nothing was pushed yet."""
        if self.installed is None:
            self.read_installed()
            changed_keys = None
        assert self.installed is not None
        if changed_keys is not None and self.synced is not None:
            flow_diff = diff_flow_keys(self.installed, desired.flows, changed_keys)
        else:
            flow_diff = diff_flows(self.installed, desired.flows)
        diff = FlowDiff(flow_diff.adds, flow_diff.deletes,
                        *diff_groups(self.installed_groups, desired.groups))
        # the compiler hands the same meter map on while no meter changes (a switch's
        # punt meters are one per DHCP port: comparing them all per push would cost
        # what the switch holds, not what changed)
        incremental = changed_keys is not None and self.synced is not None
        drifted = self._meters_drifted
        meters_same = incremental and self.synced is not None \
            and desired.meters is self.synced.meters and not drifted
        meter_ids: Optional[set[int]] = None
        meter_adds: tuple[Meter, ...] = ()
        meter_mods: tuple[Meter, ...] = ()
        meter_deletes: tuple[Meter, ...] = ()
        if meters_same:
            pass
        elif changed_keys is not None and incremental and desired.shared_meters is not None:
            meter_ids = self._meters_touched(desired, changed_keys) | drifted
            meter_adds, meter_mods, meter_deletes = diff_groups(
                {i: m for i in meter_ids if (m := self.installed_meters.get(i)) is not None},
                {i: m for i in meter_ids if (m := desired.meters.get(i)) is not None})
        else:
            meter_adds, meter_mods, meter_deletes = diff_groups(
                self.installed_meters, desired.meters)
        # Meters cannot go in a bundle (OVS refuses): the ones flows will point to go
        # first, the ones no flow points to any more go after the commit.
        self._send_meters(meter_adds, ofwire.OFPMC_ADD)
        self._send_meters(meter_mods, ofwire.OFPMC_MODIFY)
        if diff:
            started = time.perf_counter()
            self._send_bundle(diff)
            elapsed = time.perf_counter() - started
            self.stats.flow_mods += diff.size  # flow and group mods
            self.stats.bundles += 1
            self.stats.last_push_seconds = elapsed
            self.stats.last_push_flows = len(diff.adds) + len(diff.deletes)
            self.installed_groups = dict(desired.groups)
            for f in diff.deletes:
                del self.installed[f.key]
                self.cookie_counts[f.cookie] -= 1
            for f in diff.adds:
                old = self.installed.get(f.key)
                if old is not None:
                    self.cookie_counts[old.cookie] -= 1
                self.installed[f.key] = f
                self.cookie_counts[f.cookie] += 1
            if self._on_pushed is not None:
                self._on_pushed(self.channel.datapath_id, diff, elapsed)
        self._send_meters(meter_deletes, ofwire.OFPMC_DELETE)
        if meter_ids is not None:
            for i in meter_ids:
                m = desired.meters.get(i)
                if m is None:
                    self.installed_meters.pop(i, None)
                    self._installed_shared.discard(i)
                else:
                    self.installed_meters[i] = m
                    if not pl.is_port_punt_meter(i):
                        self._installed_shared.add(i)
        elif not meters_same:
            self._set_installed_meters(dict(desired.meters))
        self._meters_drifted = set()  # compared (and put right) by this push
        self.synced = desired
        return diff

    def _set_installed_meters(self, meters: dict[int, Meter]) -> None:
        self.installed_meters = meters
        self._installed_shared = {i for i in meters if not pl.is_port_punt_meter(i)}

    def _meters_touched(self, desired: DesiredSwitch, changed_keys: Iterable[FlowKey]
                        ) -> set[int]:
        """The meters a push must compare: the shared ones (QoS, upstream ARP: a few),
        installed or desired, and those the changed flows point to, before or after (a
        port's punt meter, which changes only with its flow). O(change + shared)."""
        assert self.installed is not None and desired.shared_meters is not None
        ids = set(desired.shared_meters)
        ids.update(self._installed_shared)
        for k in changed_keys:
            for f in (self.installed.get(k), desired.flows.get(k)):
                if f is not None and f.meter is not None:
                    ids.add(f.meter)
        return ids

    def _send_meters(self, meters: tuple, command: int) -> None:
        """Meter mods, confirmed by a barrier; any refusal fails the push."""
        if not meters:
            return
        first = self.channel.reserve_xids(len(meters) + 1)
        data = b"".join(ofwire.encode_meter_mod(m, command, (first + i) & 0xFFFFFFFF)
                        for i, m in enumerate(meters))
        barrier = (first + len(meters)) & 0xFFFFFFFF
        try:
            self.channel.call(data + ofwire.barrier_request(barrier), barrier,
                              self.REPLY_TIMEOUT)
            refused = self.channel.take_stray_errors(first, barrier - 1)
            if refused:
                raise BundleRefused(f"{len(refused)} meter mods refused: {refused[0]}")
        except Exception:
            self.stats.failures += 1
            self.installed = None
            raise
        self.stats.flow_mods += len(meters)

    def _send_bundle(self, diff: FlowDiff) -> None:
        """Open, add every change, barrier; commit only if no message was refused.

        OVS refuses a bad message at bundle-add time and would still commit the
        rest; the barrier lets us see every refusal first and discard instead, so
        the switch never holds half a change.
        """
        self._bundle_ids = (self._bundle_ids + 1) & 0xFFFFFFFF
        bundle_id = self._bundle_ids
        flags = ofwire.BUNDLE_FLAGS
        # Order inside the bundle: groups a flow may point to, then flows, then the
        # groups no flow points to any more.
        before = [ofwire.encode_group_mod(g, ofwire.OFPGC_ADD, 0) for g in diff.group_adds]
        before += [ofwire.encode_group_mod(g, ofwire.OFPGC_MODIFY, 0) for g in diff.group_mods]
        after = [ofwire.encode_group_mod(g, ofwire.OFPGC_DELETE, 0) for g in diff.group_deletes]
        n_msgs = diff.size + 2
        first = self.channel.reserve_xids(n_msgs + 1)
        commit_xid = (first + n_msgs - 1) & 0xFFFFFFFF
        barrier_xid = (commit_xid + 1) & 0xFFFFFFFF
        commit = ofwire.bundle_commit(commit_xid, bundle_id, flags)
        try:
            self.channel.send(ofwire.bundle_open(first, bundle_id, flags) + b"".join(
                ofwire.bundle_add((first + 1 + i) & 0xFFFFFFFF, bundle_id, flags, m)
                for i, m in enumerate(before)))
            # Stream the flows: the switch digests early chunks while later ones encode.
            for chunk in ofwire.encode_bundle_chunks(bundle_id, diff.adds, diff.deletes,
                                                     first + len(before), with_open=False):
                self.channel.send(chunk)
            base = first + len(before) + len(diff.adds) + len(diff.deletes) + 1
            if after:
                self.channel.send(b"".join(
                    ofwire.bundle_add((base + i) & 0xFFFFFFFF, bundle_id, flags, m)
                    for i, m in enumerate(after)))
            self.channel.call(ofwire.barrier_request(barrier_xid), barrier_xid,
                              self.REPLY_TIMEOUT)
            refused = self.channel.take_stray_errors(first, commit_xid)
            if refused:
                self.channel.send(ofwire.bundle_discard(commit_xid, bundle_id,
                                                        ofwire.BUNDLE_FLAGS))
                for err in refused[:5]:
                    LOG.error("switch %#x refused a message of bundle %d: %s",
                              self.channel.datapath_id, bundle_id, err)
                raise BundleRefused(f"{len(refused)} messages refused; bundle discarded")
            self.channel.call(commit, commit_xid, self.REPLY_TIMEOUT)
        except Exception:
            self.stats.failures += 1
            self.installed = None  # unknown now: read again before the next push
            raise

    def has_port(self, port_key: int) -> bool:
        return self.cookie_counts.get(pl.cookie(pl.Owner.PORT, port_key), 0) > 0
