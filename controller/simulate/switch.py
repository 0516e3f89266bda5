"""A packet through one switch's desired state, as ovs-vswitchd would run it.

Per flow: the apply-actions in order, then write-metadata, then goto. `resubmit`
runs the target table's flow (its goto chain included) in place, and the packet
keeps what it did; a group bucket and a conntrack recirculation (`ct(table=...)`)
work on a copy. Output to the port the packet came in on is dropped unless it names
OFPP_IN_PORT, as OpenFlow says. Every flow hit is kept, so a verdict can name the
flow (and through its cookie the intent object) that made it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

from controller import pipeline as pl
from controller.compiler.core import DesiredSwitch, FlowKey
from controller.compiler.overlay import OFPVID_PRESENT
from controller.flows import (
    FIELD_BITS,
    Action,
    Conjunction,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    GroupAction,
    Output,
    PopVlan,
    PushVlan,
    RegMove,
    Resubmit,
    SetField,
    SetQueue,
)
from controller.ofwire.consts import OFPP_IN_PORT
from controller.simulate.classifier import TableIndex
from controller.simulate.conntrack import Conntrack

MAX_LOOKUPS = 512  # per packet per switch: far above any path Loom compiles


class SimulationError(RuntimeError):
    """The flows loop (more lookups than any real path makes)."""


@dataclass(frozen=True)
class Emitted:
    """A copy that left the switch: through `port` (OFPP_CONTROLLER: punted)."""

    port: int
    packet: Mapping[str, int]
    flow: Flow  # the flow whose action output it


@dataclass
class Run:
    emitted: list[Emitted] = field(default_factory=list)
    hits: list[Flow] = field(default_factory=list)  # every flow hit, in order
    lookups: int = 0


class SwitchModel:
    """One switch's tables, indexed once; `run` sends a packet through them."""

    def __init__(self, desired: DesiredSwitch) -> None:
        self.desired = desired
        by_table: dict[str, list[Flow]] = {}
        for flow in desired.flows.values():
            by_table.setdefault(flow.table, []).append(flow)
        self.tables = {name: TableIndex(flows) for name, flows in by_table.items()}
        self.groups = desired.groups

    def patched(self, desired: DesiredSwitch,
                keys: Optional[Iterable[FlowKey]] = None) -> SwitchModel:
        """The model of `desired`, a later state of the same switch, from this one: the
        flows that differ are taken out and put in; unchanged tables are shared.
        `keys`: the only flow keys that may differ (a plan knows them: what the
        compiler offered as changed); without them every flow is compared (by
        identity first: the compiler keeps unchanged flows as the same objects)."""
        old = self.desired.flows
        new_flows = desired.flows
        removed: dict[str, list[Flow]] = {}
        added: dict[str, list[Flow]] = {}
        if keys is None:
            fresh = 0  # keys the old state did not have
            for key, flow in new_flows.items():
                was = old.get(key)
                if was is flow or was == flow:
                    continue
                added.setdefault(flow.table, []).append(flow)
                if was is None:
                    fresh += 1
                else:
                    removed.setdefault(was.table, []).append(was)
            if len(new_flows) - fresh < len(old):  # some keys are gone
                for key, was in old.items():
                    if key not in new_flows:
                        removed.setdefault(was.table, []).append(was)
        else:
            for key in keys:
                was, now = old.get(key), new_flows.get(key)
                if was is now or was == now:
                    continue
                if was is not None:
                    removed.setdefault(was.table, []).append(was)
                if now is not None:
                    added.setdefault(now.table, []).append(now)
        new = SwitchModel.__new__(SwitchModel)
        new.desired = desired
        new.groups = desired.groups
        new.tables = dict(self.tables)
        for name in set(removed) | set(added):
            base = self.tables.get(name) or TableIndex()
            new.tables[name] = base.patched(removed.get(name, ()), added.get(name, ()))
        return new

    def run(self, packet: dict[str, int], conntrack: Conntrack) -> Run:
        """Send `packet` (in_port set) into table 0."""
        run = Run()
        self._table(pl.PIPELINE[0].name, packet, conntrack, run)
        return run

    # ---- execution
    def _table(self, name: str, packet: dict[str, int], ct: Conntrack, run: Run) -> None:
        run.lookups += 1
        if run.lookups > MAX_LOOKUPS:
            raise SimulationError(f"switch {self.desired.datapath_id:#x}: more than "
                                  f"{MAX_LOOKUPS} table lookups for one packet")
        index = self.tables.get(name)
        flow = index.lookup(packet) if index is not None else None
        if flow is None:
            return  # no flow: OpenFlow drops it
        run.hits.append(flow)
        self._actions(flow.actions, flow, packet, ct, run)
        if flow.write_metadata is not None:
            value, mask = flow.write_metadata
            packet["metadata"] = (packet.get("metadata", 0) & ~mask) | (value & mask)
        if flow.goto is not None:
            self._table(flow.goto, packet, ct, run)

    def _actions(self, actions: tuple[Action, ...], flow: Flow, packet: dict[str, int],
                 ct: Conntrack, run: Run) -> None:
        for act in actions:
            if isinstance(act, Output):
                port = act.port
                if port == OFPP_IN_PORT:
                    port = packet["in_port"]
                elif port == packet.get("in_port"):
                    continue  # OpenFlow never sends a packet back where it came from
                run.emitted.append(Emitted(port, dict(packet), flow))
            elif isinstance(act, SetField):
                packet[act.field] = act.value
            elif isinstance(act, RegMove):
                width = (1 << act.n_bits) - 1
                bits = (packet.get(act.src, 0) >> act.src_ofs) & width
                old = packet.get(act.dst, 0) & ~(width << act.dst_ofs)
                packet[act.dst] = (old | (bits << act.dst_ofs)) & \
                    ((1 << FIELD_BITS.get(act.dst, 64)) - 1)
            elif isinstance(act, Resubmit):
                self._table(act.table, packet, ct, run)
            elif isinstance(act, GroupAction):
                self._group(act.group_id, flow, packet, ct, run)
            elif isinstance(act, PushVlan):
                packet["vlan_vid"] = OFPVID_PRESENT
            elif isinstance(act, PopVlan):
                packet["vlan_vid"] = 0
            elif isinstance(act, Ct):
                self._ct(act, packet, ct, run)
            elif isinstance(act, DecTtl):
                ttl = packet.get("nw_ttl", 64)
                if ttl <= 1:
                    return  # OVS stops the packet here
                packet["nw_ttl"] = ttl - 1
            elif isinstance(act, CtClear):
                packet.update(ct_state=0, ct_zone=0, ct_mark=0)
            elif isinstance(act, (SetQueue, Conjunction)):
                continue  # shaping; a clause does nothing by itself

    def _group(self, group_id: int, flow: Flow, packet: dict[str, int], ct: Conntrack,
               run: Run) -> None:
        group = self.groups.get(group_id)
        if group is None:
            return  # OVS refuses the flow; the reconciler never sends one
        buckets = group.buckets if group.type == "all" else group.buckets[:1]
        for bucket in buckets:
            self._actions(bucket.actions, flow, dict(packet), ct, run)

    def _ct(self, act: Ct, packet: dict[str, int], ct: Conntrack, run: Run) -> None:
        zone = act.zone if act.zone_src is None else packet.get(act.zone_src, 0) & 0xFFFF
        state, mark = ct.state(zone, packet)  # as the packet found it, before its commit
        if act.commit:
            ct.commit(zone, packet, act.set_mark, act.mark_mask, act.nat_spec)
            if act.set_mark is not None:
                mask = 0xFFFFFFFF if act.mark_mask is None else act.mark_mask
                mark = (mark & ~mask) | (act.set_mark & mask)
        if act.table is None:
            return  # commit only: the packet goes on as it was
        again = dict(packet)
        if act.nat or act.nat_spec is not None:
            ct.apply_nat(zone, again)
        again.update(ct_state=state, ct_zone=zone, ct_mark=mark)
        self._table(act.table, again, ct, run)
