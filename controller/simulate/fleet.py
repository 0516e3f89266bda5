"""A packet through the fleet: a switch's copies followed to the next switch.

A copy output to a tunnel port arrives on the remote chassis through its tunnel
back to the sender (in_port that port, tun_id the key it was sent with); one output
to a provider patch port arrives on every other chassis' patch port of the same
physical network (the physical network is one broadcast domain, and the frame keeps
its tag); one output to a fabric link arrives on the link's other end. Registers,
metadata and conntrack state do not cross a wire. Each switch has its own conntrack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

from controller import pipeline as pl
from controller.compiler.core import DesiredSwitch, FlowKey
from controller.flows import Flow
from controller.simulate.conntrack import Conntrack
from controller.simulate.switch import SwitchModel
from controller.topology import TopologyView

MAX_HOPS = 16  # switch visits per packet; no path Loom compiles crosses more
_PER_PACKET = ("metadata", "tunnel_id", "ct_state", "ct_zone", "ct_mark",
               *(f"reg{i}" for i in range(16)))


@dataclass(frozen=True)
class Delivery:
    datapath_id: int
    ofport: int
    port_id: Optional[str]  # the intent port bound there (None: another kind of port)
    packet: Mapping[str, int]


@dataclass(frozen=True)
class Exit:
    """A copy sent onto a physical network (through a provider patch port)."""

    datapath_id: int
    physnet: str
    packet: Mapping[str, int]


@dataclass
class Outcome:
    deliveries: list[Delivery] = field(default_factory=list)
    punted: list[tuple[int, Flow]] = field(default_factory=list)  # (switch, the flow)
    exits: list[Exit] = field(default_factory=list)
    hits: list[tuple[int, Flow]] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        self.deliveries += other.deliveries
        self.punted += other.punted
        self.exits += other.exits
        self.hits += other.hits

    def delivered_to(self, datapath_id: int, ofport: int) -> Optional[Delivery]:
        return next((d for d in self.deliveries
                     if d.datapath_id == datapath_id and d.ofport == ofport), None)


class ModelCache:
    """Switch models by switch, kept from one question to the next. The engine notes
    the flow keys each compile changed (`note`), so the model of the state a switch
    held is patched to the state it holds now by those keys alone, never rebuilt;
    without notes, by comparing every flow (identity first)."""

    def __init__(self) -> None:
        self._models: dict[int, SwitchModel] = {}
        # flow keys changed since the kept model's state (None: unknown)
        self._since: dict[int, Optional[set[FlowKey]]] = {}
        self._noted: dict[int, Optional[DesiredSwitch]] = {}  # the state the notes reach
        self._lock = threading.Lock()

    def note(self, datapath_id: int, keys: Optional[Iterable[FlowKey]],
             now: Optional[DesiredSwitch]) -> None:
        """A compile changed these flow keys of the switch (None: maybe all), which
        holds `now` since. The notes are used only for that very state: a state
        reached some way that was not noted is compared flow by flow."""
        with self._lock:
            if datapath_id not in self._models:
                return
            since = self._since.get(datapath_id, set())
            if since is None or keys is None:
                self._since[datapath_id] = None
            else:
                since.update(keys)
                self._since[datapath_id] = since
            self._noted[datapath_id] = now

    def model(self, desired: DesiredSwitch, keep: bool = True,
              base: Optional[DesiredSwitch] = None,
              keys: Optional[Iterable[FlowKey]] = None) -> SwitchModel:
        """The model of `desired`; `keep`: remember it for the next question. With
        `base`: `desired` differs from `base` by the flows of `keys` alone (a plan's
        what-if state, from the state it starts from, which is kept)."""
        dpid = desired.datapath_id
        with self._lock:
            known = self._models.get(dpid)
            since = self._since.get(dpid, set())
            if known is not None and known.desired is not desired and \
                    self._noted.get(dpid) is not desired:
                since = None  # not reached by noted compiles alone
        if known is not None and known.desired is desired:
            return known
        if base is not None and base is not desired:
            model = self.model(base).patched(desired, keys)
        elif known is not None:
            model = known.patched(desired, since)
        else:
            model = SwitchModel(desired)
        if keep:
            with self._lock:
                self._models[dpid] = model
                self._since[dpid] = set()
                self._noted[dpid] = desired
        return model


def bound_ports(topo: TopologyView) -> dict[tuple[int, int], str]:
    """(switch, ofport) -> the intent port bound there."""
    return {(b.datapath_id, b.ofport): b.port_id for b in topo.bindings.values()}


class Fleet:
    """Desired states of the switches a question needs, and the topology joining them."""

    def __init__(self, models: Mapping[int, SwitchModel], topo: TopologyView,
                 ports: Optional[Mapping[tuple[int, int], str]] = None) -> None:
        self.models = models
        self.topo = topo
        # (switch, ofport) -> bound port id; a plan builds it once for both its fleets
        self._ports = ports if ports is not None else bound_ports(topo)
        self._tunnels = {(t.datapath_id, t.ofport): t for t in topo.tunnels.values()}
        self._providers = {(dpid, ofport): physnet
                           for (dpid, physnet), ofport in topo.provider_ports.items()}

    def send(self, datapath_id: int, in_port: int, packet: Mapping[str, int],
             conntracks: Optional[dict[int, Conntrack]] = None) -> Outcome:
        """Where `packet`, entering switch `datapath_id` at `in_port`, ends up.
        `conntracks` (per switch) carry connections from one packet to the next (a
        reply after its request)."""
        cts = conntracks if conntracks is not None else {}
        out = Outcome()
        queue = [(datapath_id, in_port, dict(packet))]
        visits = 0
        while queue:
            dpid, port, pkt = queue.pop(0)
            visits += 1
            if visits > MAX_HOPS:
                break
            model = self.models.get(dpid)
            if model is None:
                continue  # a switch the question did not need (or not compiled)
            pkt["in_port"] = port
            for name in _PER_PACKET:
                pkt.setdefault(name, 0)
            run = model.run(pkt, cts.setdefault(dpid, Conntrack()))
            out.hits.extend((dpid, f) for f in run.hits)
            for em in run.emitted:
                if em.port == pl.OFPP_CONTROLLER:
                    out.punted.append((dpid, em.flow))
                    continue
                queue.extend(self._across(dpid, em.port, em.packet, out))
        return out

    def from_physnet(self, physnet: str, packet: Mapping[str, int],
                     conntracks: Optional[dict[int, Conntrack]] = None,
                     only: Optional[int] = None) -> Outcome:
        """A frame from the physical network `physnet` (tagged as it says), arriving at
        every chassis' patch port of it (a broadcast), or at switch `only`'s (a unicast:
        the physical network delivers it where its destination MAC was heard)."""
        cts = conntracks if conntracks is not None else {}
        out = Outcome()
        for (dpid, net), ofport in sorted(self.topo.provider_ports.items()):
            if net == physnet and (only is None or dpid == only):
                out.merge(self.send(dpid, ofport, packet, cts))
        return out

    def _across(self, dpid: int, port: int, packet: Mapping[str, int], out: Outcome
                ) -> list[tuple[int, int, dict[str, int]]]:
        wire = {k: v for k, v in packet.items() if k not in _PER_PACKET and k != "in_port"}
        tunnel = self._tunnels.get((dpid, port))
        if tunnel is not None:
            here = self.topo.switches.get(dpid)
            remote = self.topo.chassis.get(tunnel.remote_chassis)
            if here is None or remote is None or remote.datapath_id is None:
                return []
            back = self.topo.tunnels.get((remote.datapath_id, here.chassis,
                                          tunnel.tunnel_type))
            if back is None:
                return []  # nothing on the far side classifies it
            wire["tunnel_id"] = packet.get("tunnel_id", 0)
            return [(remote.datapath_id, back.ofport, wire)]
        physnet = self._providers.get((dpid, port))
        if physnet is not None:
            out.exits.append(Exit(dpid, physnet, packet))
            return [(other, ofport, dict(wire))
                    for (other, net), ofport in sorted(self.topo.provider_ports.items())
                    if net == physnet and other != dpid]
        peer = self.topo.links.get((dpid, port))
        if peer is not None:
            return [(peer[0], peer[1], wire)]
        out.deliveries.append(Delivery(dpid, port, self._ports.get((dpid, port)), packet))
        return []
