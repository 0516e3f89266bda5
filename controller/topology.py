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
class FabricStage:
    """One step of a staged change of the fabric's links (`compiler.fabric.rollout_stages`).

    A change of links is not installed on every switch at the same instant, and a
    mix of old and new forwarding state can loop or drop. So the topology hands the
    compiler the change a step at a time, and the engine moves to the next step only
    once every switch runs the current one:
    - `rank` (links added): routes to a destination D from switches at most `rank`
      hops from D (in the new graph) use the new links; the others keep the routes
      of `prev_links`. Raising the rank one hop at a time means a switch turns to a
      new path only once every switch down that path is on it already: no loop, no
      black hole. None: every route is new (links removed: the old routes are dead).
    - `tree`: "prev" floods on the old flood tree (what is left of it), "meet" only
      on the edges the old and new trees share (a forest; any mix of it and either
      tree has no cycle).
    - `repair` (links lost, the first step): every route is new, but a switch whose
      route to D is the old one minus the dead ports keeps its old group (the switch
      already skips the dead buckets). The urgent push after a cut then carries only
      the groups that must change; new backups and trimmed buckets follow a step later.
      `urgent`: the switches whose routes that step changes (the engine compiles and
      pushes them first, and lets them finish before the rest of the fabric).
    """

    prev_links: Mapping[tuple[int, int], tuple[int, int]]
    rank: Optional[int]
    tree: str  # "prev" | "meet" | "new"
    step: int = 1
    steps: int = 1
    repair: bool = False
    urgent: frozenset[int] = frozenset()

    def describe(self) -> str:
        routes = "all routes new" if self.rank is None else f"new routes up to {self.rank} hops"
        if self.repair:
            routes = "repair (only broken routes change)"
        return f"step {self.step}/{self.steps}: {routes}, flood tree {self.tree}"


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
    # Fabric: OpenFlow switches that are not a chassis' integration bridge, their
    # ports (from OpenFlow port descriptions) and the links LLDP found between them.
    fabric_switches: frozenset[int] = frozenset()
    switch_ports: Mapping[int, Mapping[str, int]] = field(default_factory=_empty)
    port_state: Mapping[tuple[int, int], bool] = field(default_factory=_empty)
    links: Mapping[tuple[int, int], tuple[int, int]] = field(default_factory=_empty)
    # Links heard both ways but held down (see controller.discovery): their ports
    # accept fabric traffic so that switching paths onto them is make-before-break.
    standby_links: Mapping[tuple[int, int], tuple[int, int]] = field(default_factory=_empty)
    # A change of `links` being rolled out in steps; None once every switch has it.
    fabric_stage: Optional[FabricStage] = None

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
        self._of_switches: set[int] = set()
        self._ports: dict[int, dict[int, tuple[str, bool]]] = {}  # dpid -> no -> (name, up)
        self._links: dict[tuple[int, int], tuple[int, int]] = {}
        self._standby: dict[tuple[int, int], tuple[int, int]] = {}
        self._stage: Optional[FabricStage] = None
        self._next_stages: list[FabricStage] = []
        self._touched: set[int] = set()  # switches at the ends of links that changed
        self._staged = True  # plan steps for the next change of links (set_links)
        # The fabric's groups carry detours round a dead link (the engine's fast
        # failover): one cut is rolled out like links added, not as a repair.
        self.detours = False
        self.links_lost = 0  # grows each time links in use are lost: a compile may restart
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

    # ---- fabric (OpenFlow side)
    def switch_up(self, datapath_id: int, ports: dict[int, tuple[str, bool]]) -> bool:
        with self._lock:
            self._of_switches.add(datapath_id)
            self._ports[datapath_id] = dict(ports)
            return self._rebuild()

    def switch_down(self, datapath_id: int) -> bool:
        with self._lock:
            self._of_switches.discard(datapath_id)
            self._ports.pop(datapath_id, None)
            self._links = {a: b for a, b in self._links.items()
                           if a[0] != datapath_id and b[0] != datapath_id}
            return self._rebuild()

    def port_changed(self, datapath_id: int, port_no: int, name: str, up: Optional[bool]
                     ) -> bool:
        """up=None: the port was deleted."""
        with self._lock:
            ports = self._ports.setdefault(datapath_id, {})
            if up is None:
                ports.pop(port_no, None)
            else:
                ports[port_no] = (name, up)
            return self._rebuild()

    def set_links(self, links: dict[tuple[int, int], tuple[int, int]],
                  standby: Optional[dict[tuple[int, int], tuple[int, int]]] = None,
                  staged: bool = True) -> bool:
        """Links in use and links held down (symmetric maps); True if the view changed.

        `staged`: roll a change of the links in use out in steps (`FabricStage`);
        False for links heard for the first time (a fabric coming up wants its paths
        at once, and there is no traffic on them to protect)."""
        standby = {} if standby is None else standby
        with self._lock:
            if links == self._links and standby == self._standby:
                return False
            self._links = dict(links)
            self._standby = dict(standby)
            self._staged = staged
            try:
                return self._rebuild()
            finally:
                self._staged = True

    def advance_stage(self, version: int) -> bool:
        """Go to the next step of the fabric rollout if the view is still `version`
        (every switch runs it: the caller checked). True if the view changed."""
        with self._lock:
            if self._stage is None or self._view.version != version:
                return False
            self._stage = self._next_stages.pop(0) if self._next_stages else None
            return self._rebuild()

    def take_touched(self) -> set[int]:
        """Switches at the ends of links that changed since the last call: the compile
        starts nearest them."""
        with self._lock:
            touched, self._touched = self._touched, set()
        return touched

    def is_fabric(self, datapath_id: int) -> bool:
        view = self.view()
        return datapath_id in view.fabric_switches

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
        fabric = frozenset(self._of_switches - set(switches))
        switch_ports = {d: MappingProxyType({name: no for no, (name, _) in ports.items()})
                        for d, ports in self._ports.items()}
        port_state = {(d, no): up for d, ports in self._ports.items()
                      for no, (_, up) in ports.items()}
        links = {a: b for a, b in self._links.items()
                 if port_state.get(a, False) and port_state.get(b, False)}
        standby = {a: b for a, b in self._standby.items()
                   if port_state.get(a, False) and port_state.get(b, False) and a not in links
                   and b not in links}
        if links != dict(self._view.links):
            self._stage_links(fabric, dict(self._view.links), links)
        for d in fabric:
            graph.add_node(("switch", d), kind="switch", fabric=True)
        for (a, pa), (b, pb) in links.items():
            graph.add_edge(("switch", a), ("switch", b), kind="fabric", src_port=pa,
                           dst_port=pb)
        changed = (fabric != self._view.fabric_switches
                   or links != dict(self._view.links)
                   or standby != dict(self._view.standby_links)
                   or self._stage != self._view.fabric_stage
                   or port_state != dict(self._view.port_state)
                   or {d: dict(p) for d, p in switch_ports.items()}
                   != {d: dict(p) for d, p in self._view.switch_ports.items()}
                   or switches != dict(self._view.switches)
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
                                      MappingProxyType(provider_ports),
                                      fabric, MappingProxyType(switch_ports),
                                      MappingProxyType(port_state), MappingProxyType(links),
                                      MappingProxyType(standby), self._stage)
        return changed

    def _stage_links(self, fabric: frozenset[int],
                     before: dict[tuple[int, int], tuple[int, int]],
                     after: dict[tuple[int, int], tuple[int, int]]) -> None:
        """The links in use change: plan the steps from `before` to `after`.

        A change arriving mid-rollout starts again from the last target (`before` is
        always the previous view's links, never a half-applied step)."""
        from controller.compiler.fabric import rollout_stages  # the compiler plans them

        for a, b in set(before.items()) ^ set(after.items()):
            self._touched.update((a[0], b[0]))
        if any(after.get(a) != b for a, b in before.items()):
            self.links_lost += 1
        stages = list(rollout_stages(fabric, before, after, self.detours)) \
            if self._staged else []
        self._stage = stages.pop(0) if stages else None
        self._next_stages = stages
