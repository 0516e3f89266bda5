"""The global topology: chassis, switches, their ports, and where intent ports are bound.

Held as a networkx graph so later stages (fabric paths, tunnel meshes) ask the
graph rather than keep parallel indexes. The compiler never sees the mutable
graph: `Topology.view()` hands out an immutable `TopologyView`, versioned, which
is what makes compilation a pure function of (intent, topology).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

import networkx as nx


@dataclass(frozen=True)
class Binding:
    """An intent port attached to a switch: OVS Interface external_ids:iface-id=<port id>."""

    port_id: str
    chassis: str
    bridge: str
    datapath_id: int
    ofport: int
    interface: str


@dataclass(frozen=True)
class SwitchView:
    datapath_id: int
    chassis: str
    bridge: str


@dataclass(frozen=True)
class ChassisView:
    name: str
    encap_ip: Optional[str]
    datapath_id: Optional[int]  # its integration bridge, once known


@dataclass(frozen=True)
class TunnelView:
    """A tunnel port on one switch towards one remote chassis."""

    datapath_id: int
    remote_chassis: str
    tunnel_type: str  # vxlan | gre | geneve
    ofport: int


def _empty() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True)
class TopologyView:
    version: int = 0
    switches: Mapping[int, SwitchView] = field(default_factory=_empty)
    bindings: Mapping[str, Binding] = field(default_factory=_empty)
    chassis: Mapping[str, ChassisView] = field(default_factory=_empty)
    # (datapath_id, remote chassis, tunnel type) -> tunnel port
    tunnels: Mapping[tuple[int, str, str], TunnelView] = field(default_factory=_empty)
    # (datapath_id, physical network) -> ofport of the patch port to its provider bridge
    provider_ports: Mapping[tuple[int, str], int] = field(default_factory=_empty)

    def bindings_on(self, datapath_id: int) -> list[Binding]:
        return [b for b in self.bindings.values() if b.datapath_id == datapath_id]

    def tunnels_on(self, datapath_id: int) -> list[TunnelView]:
        return [t for (dpid, _, _), t in sorted(self.tunnels.items()) if dpid == datapath_id]


@dataclass(frozen=True)
class InterfaceState:
    name: str
    ofport: Optional[int]
    iface_id: Optional[str]
    type: str = ""
    remote_ip: Optional[str] = None  # options:remote_ip of a tunnel
    remote_chassis: Optional[str] = None  # external_ids:loom-remote-chassis (ours)
    physnet: Optional[str] = None  # external_ids:loom-physnet: our patch to a provider bridge


@dataclass(frozen=True)
class BridgeState:
    name: str
    datapath_id: Optional[int]
    interfaces: tuple[InterfaceState, ...] = ()


@dataclass(frozen=True)
class ChassisState:
    """What one chassis' OVSDB says, as the southbound reads it."""

    name: str  # system-id, or the remote when the chassis has none
    remote: str
    connected: bool
    encap_ip: Optional[str] = None
    bridges: tuple[BridgeState, ...] = ()
    bridge_mappings: tuple[tuple[str, str], ...] = ()  # (physnet, provider bridge)


TUNNEL_TYPES = ("vxlan", "gre", "geneve")


class Topology:
    """Mutable graph, updated by southbound events; thread-safe; hands out frozen views.

    Nodes: ('chassis', name), ('switch', dpid), ('port', port_id). Edges: chassis
    hosts switch; switch has port (with ofport).
    """

    def __init__(self, integration_bridge: str = "br-int") -> None:
        self._lock = threading.Lock()
        self._graph = nx.MultiDiGraph()
        self._chassis: dict[str, ChassisState] = {}
        self._version = 0
        self._view = TopologyView()
        self._integration_bridge = integration_bridge

    @property
    def graph(self) -> nx.MultiDiGraph:
        return self._graph

    def update_chassis(self, state: ChassisState) -> bool:
        """Replace what we know of one chassis; True if the compiled view changed."""
        with self._lock:
            if self._chassis.get(state.name) == state:
                return False
            self._chassis[state.name] = state
            return self._rebuild()

    def remove_chassis(self, name: str) -> bool:
        with self._lock:
            if self._chassis.pop(name, None) is None:
                return False
            return self._rebuild()

    def chassis_states(self) -> list[ChassisState]:
        with self._lock:
            return list(self._chassis.values())

    def view(self) -> TopologyView:
        with self._lock:
            return self._view

    def _rebuild(self) -> bool:
        graph = nx.MultiDiGraph()
        switches: dict[int, SwitchView] = {}
        bindings: dict[str, Binding] = {}
        chassis: dict[str, ChassisView] = {}
        tunnels: dict[tuple[int, str, str], TunnelView] = {}
        provider_ports: dict[tuple[int, str], int] = {}
        for ch in self._chassis.values():
            graph.add_node(("chassis", ch.name), kind="chassis", connected=ch.connected,
                           encap_ip=ch.encap_ip)
            chassis[ch.name] = ChassisView(ch.name, ch.encap_ip, None)
            for br in ch.bridges:
                if br.name != self._integration_bridge or br.datapath_id is None:
                    continue
                dpid = br.datapath_id
                chassis[ch.name] = ChassisView(ch.name, ch.encap_ip, dpid)
                switches[dpid] = SwitchView(dpid, ch.name, br.name)
                graph.add_node(("switch", dpid), kind="switch", bridge=br.name)
                graph.add_edge(("chassis", ch.name), ("switch", dpid), kind="hosts")
                for iface in br.interfaces:
                    if iface.ofport is None or iface.ofport <= 0:
                        continue
                    if iface.physnet and iface.type == "patch":
                        provider_ports[(dpid, iface.physnet)] = iface.ofport
                        continue
                    if iface.remote_chassis and iface.type in TUNNEL_TYPES:
                        tunnels[(dpid, iface.remote_chassis, iface.type)] = TunnelView(
                            dpid, iface.remote_chassis, iface.type, iface.ofport)
                        graph.add_edge(("switch", dpid), ("chassis", iface.remote_chassis),
                                       kind="tunnel", tunnel_type=iface.type,
                                       ofport=iface.ofport)
                        continue
                    if not iface.iface_id:
                        continue
                    bindings[iface.iface_id] = Binding(
                        iface.iface_id, ch.name, br.name, dpid, iface.ofport, iface.name)
                    graph.add_node(("port", iface.iface_id), kind="port")
                    graph.add_edge(("switch", dpid), ("port", iface.iface_id),
                                   kind="has", ofport=iface.ofport)
        changed = (switches != dict(self._view.switches)
                   or bindings != dict(self._view.bindings)
                   or chassis != dict(self._view.chassis)
                   or tunnels != dict(self._view.tunnels)
                   or provider_ports != dict(self._view.provider_ports))
        self._graph = graph
        if changed:
            self._version += 1
            self._view = TopologyView(self._version, MappingProxyType(switches),
                                      MappingProxyType(bindings), MappingProxyType(chassis),
                                      MappingProxyType(tunnels),
                                      MappingProxyType(provider_ports))
        return changed
