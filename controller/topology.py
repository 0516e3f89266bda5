"""The global topology: chassis, switches, their ports, and where intent ports are bound.

The compiler never sees the mutable state: `Topology.view()` hands out an immutable
`TopologyView`, versioned, which is what makes compilation a pure function of
(intent, topology); `Topology.changes_since(version)` says which keys of the view
changed since an earlier version (`TopologyDelta`), for the incremental compile.
A networkx graph of it all (`Topology.graph`) is built when asked for.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import compress, islice
from types import MappingProxyType
from typing import Any, Optional

import networkx as nx

from controller.frozen import copy_of
from controller.ofwire.consts import OFPP_LOCAL  # the bridge's own port, named after it


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
    # external_ids:loom-gateway=true: may carry routers' external gateways (SNAT)
    gateway: bool = False
    connected: bool = True  # its OVSDB answers (a gateway that does not is passed over)


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
    # What the gateway chassis heard from the physical network: (external network key,
    # IPv4 address) -> MAC, of the upstream routers external subnets name as gateway_ip
    # (OVN's MAC_Binding). Learnt from the ARP replies punted by l3 "gateway_arp".
    mac_bindings: Mapping[tuple[int, int], int] = field(default_factory=_empty)

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
    gateway: bool = False  # external_ids:loom-gateway=true


TUNNEL_TYPES = ("vxlan", "gre", "geneve")


@dataclass(frozen=True)
class TopologyDelta:
    """What changed between two topology versions (`Topology.changes_since`).

    Keys only: the new values are in the view (a key in the delta but not in the view
    was removed). A key is in the delta if its entry in the view was added, changed or
    removed; merged deltas may name a key whose entry changed and changed back.
    """

    bindings: frozenset[str] = frozenset()  # intent port ids whose Binding changed
    switches: frozenset[int] = frozenset()  # chassis switches (TopologyView.switches)
    tunnels: frozenset[int] = frozenset()  # datapath ids whose tunnel ports changed
    provider_ports: frozenset[int] = frozenset()  # datapath ids whose provider patches changed
    chassis: frozenset[str] = frozenset()  # chassis whose ChassisView changed
    # any of fabric_switches, switch_ports, port_state, links, standby_links, fabric_stage
    fabric: bool = False
    mac_bindings: frozenset[tuple[int, int]] = frozenset()  # keys of mac_bindings changed

    def merge(self, other: TopologyDelta) -> TopologyDelta:
        return TopologyDelta(self.bindings | other.bindings, self.switches | other.switches,
                             self.tunnels | other.tunnels,
                             self.provider_ports | other.provider_ports,
                             self.chassis | other.chassis, self.fabric or other.fabric,
                             self.mac_bindings | other.mac_bindings)

    @property
    def empty(self) -> bool:
        return not (self.bindings or self.switches or self.tunnels or self.provider_ports
                    or self.chassis or self.fabric or self.mac_bindings)


DELTAS_KEPT = 4096  # versions whose delta `Topology.changes_since` can still answer for

_MISSING: Any = object()
# The mappings of a view that chassis report, by index in `_ChassisPart.maps` and
# `Topology._maps`. Two chassis may report the same key (see `Topology`).
_SWITCHES, _BINDINGS, _TUNNELS, _PROVIDER = range(4)
_KINDS = 4


class _ChassisPart:
    """What one chassis contributes to the view, derived from its ChassisState alone.

    Only the integration bridge contributes: each of its interfaces at most one entry
    (`_contribution`). Two interfaces may claim the same key (two iface-ids alike):
    the one last in name order has it, as a walk through the (name-sorted) interfaces
    would leave it; `counts` says how many claim each key, so that `update` knows
    when a key's holder must be looked for again."""

    __slots__ = ("view", "rank", "maps", "counts", "bridge", "dpid")

    def __init__(self, state: ChassisState, integration_bridge: str) -> None:
        switches: dict[int, SwitchView] = {}
        maps: tuple[dict[Any, Any], ...] = (switches, {}, {}, {})
        counts: tuple[dict[Any, int], ...] = ({}, {}, {}, {})
        name = state.name
        self.view = ChassisView(name, state.encap_ip, None, state.gateway, state.connected)
        # The claim of a disconnected chassis (what it said last may be stale) yields
        # to a connected one's; then the lowest chassis name wins.
        self.rank = (not state.connected, name)
        self.bridge: Optional[BridgeState] = None
        self.dpid: Optional[int] = None
        for br in state.bridges:
            if br.name != integration_bridge or br.datapath_id is None:
                continue
            dpid = br.datapath_id
            self.bridge, self.dpid = br, dpid
            self.view = ChassisView(name, state.encap_ip, dpid, state.gateway, state.connected)
            switches[dpid] = SwitchView(dpid, name, br.name)
            for iface in br.interfaces:
                c = _contribution(iface, name, br.name, dpid)
                if c is not None:
                    kind, key, value = c
                    maps[kind][key] = value
                    counts[kind][key] = counts[kind].get(key, 0) + 1
        self.maps = maps
        self.counts = counts

    def update(self, old: ChassisState, new: ChassisState, integration_bridge: str
               ) -> Optional[list[set[Any]]]:
        """Follow `old` -> `new` in place, from the interfaces of the integration bridge
        that changed (told apart by identity: the chassis reader hands out the same
        InterfaceState for an unchanged interface; states built anew all look changed,
        and cost what a full derivation does). Returns the keys whose entry may have
        changed, per kind; None if this cannot be done in place (the chassis' name,
        connection, encap IP, gateway flag or integration bridge changed): then build a
        new part."""
        if old.name != new.name or old.connected != new.connected \
                or old.encap_ip != new.encap_ip or old.gateway != new.gateway \
                or self.bridge is None:
            return None
        bridge = next((b for b in new.bridges if b.name == integration_bridge), None)
        if bridge is None or bridge.datapath_id != self.dpid:
            return None
        affected: list[set[Any]] = [set(), set(), set(), set()]
        before, self.bridge = self.bridge, bridge
        if bridge is before or bridge.interfaces is before.interfaces:
            return affected
        # (C-level walks: no Python code runs per unchanged interface)
        old_ids = set(map(id, before.interfaces))
        new_ids = set(map(id, bridge.interfaces))
        gone_ids, came_ids = old_ids - new_ids, new_ids - old_ids
        if len(gone_ids) + len(came_ids) > 16 + len(new_ids) // 4:
            self.bridge = before
            return None  # most of it (or states made anew, sharing nothing): build it all
        gone = list(compress(before.interfaces, map(gone_ids.__contains__,
                                                    map(id, before.interfaces))))
        came = list(compress(bridge.interfaces, map(came_ids.__contains__,
                                                    map(id, bridge.interfaces))))
        name, dpid, maps, counts = new.name, bridge.datapath_id, self.maps, self.counts
        assert dpid is not None
        holders: dict[tuple[int, Any], list[tuple[str, Any]]] = {}
        for iface in gone:
            c = _contribution(iface, name, bridge.name, dpid)
            if c is not None:
                kind, key, _ = c
                affected[kind].add(key)
                counts[kind][key] -= 1
        for iface in came:
            c = _contribution(iface, name, bridge.name, dpid)
            if c is not None:
                kind, key, value = c
                affected[kind].add(key)
                counts[kind][key] = counts[kind].get(key, 0) + 1
                holders.setdefault((kind, key), []).append((iface.name, value))
        rescan: list[tuple[int, Any]] = []
        for kind in range(_KINDS):
            for key in affected[kind]:
                n = counts[kind][key]
                if n == 0:
                    del counts[kind][key]
                    maps[kind].pop(key, None)
                elif n == 1 and (kind, key) in holders:
                    maps[kind][key] = holders[(kind, key)][0][1]
                else:  # claimed twice, or its holder went and another stayed: look
                    rescan.append((kind, key))
        if rescan:
            wanted = set(rescan)
            for iface in bridge.interfaces:  # in name order: the last claim holds
                c = _contribution(iface, name, bridge.name, dpid)
                if c is not None and (c[0], c[1]) in wanted:
                    maps[c[0]][c[1]] = c[2]
        return affected


def _contribution(iface: InterfaceState, chassis: str, bridge: str, dpid: int
                  ) -> Optional[tuple[int, Any, Any]]:
    """The entry (kind, key, value) an interface of a chassis' integration bridge
    adds to the view, if any."""
    if iface.ofport is None or iface.ofport <= 0:
        return None
    if iface.physnet and iface.type == "patch":
        return _PROVIDER, (dpid, iface.physnet), iface.ofport
    if iface.remote_chassis and iface.type in TUNNEL_TYPES:
        return _TUNNELS, (dpid, iface.remote_chassis, iface.type), TunnelView(
            dpid, iface.remote_chassis, iface.type, iface.ofport)
    if not iface.iface_id:
        return None
    return _BINDINGS, iface.iface_id, Binding(
        iface.iface_id, chassis, bridge, dpid, iface.ofport, iface.name)


_NO_PART: tuple[dict[Any, Any], ...] = ({}, {}, {}, {})


class Topology:
    """What the chassis' OVSDBs and the fabric's OpenFlow say; thread-safe; hands out
    frozen, versioned views and the delta between them (`changes_since`).

    A chassis' event costs what that chassis reports: each chassis' share of the view
    (`_ChassisPart`) is derived from its state alone, and the view's mappings are the
    previous ones (a dict copy) with that chassis' keys replaced. The fabric's events
    rebuild the fabric's part only.

    Two chassis can report the same key of `switches`, `bindings`, `tunnels` or
    `provider_ports` (a guest moving: the old chassis reports its port until its
    OVSDB update arrives). Every chassis reporting a key is kept; the view has the
    entry of the one ranked first: a connected chassis before a disconnected one, then
    the lowest chassis name. The view is a function of the chassis' current states
    (not of the order their updates came in), and a binding follows its new host once
    the old one stops reporting it.

    `graph` (networkx) is built when read: nodes ('chassis', name), ('switch', dpid),
    ('port', port_id); edges: chassis hosts switch, switch has port (with ofport),
    switch tunnels to chassis, fabric links.
    """

    def __init__(self, integration_bridge: str = "br-int") -> None:
        self._lock = threading.Lock()
        self._graph: Optional[nx.MultiDiGraph] = None  # built on demand (`graph`)
        self._chassis: dict[str, ChassisState] = {}
        self._parts: dict[str, _ChassisPart] = {}
        # key -> the chassis reporting it, per kind (_SWITCHES ...)
        self._claims: tuple[dict[Any, set[str]], ...] = tuple({} for _ in range(_KINDS))
        # The dicts under the view's mappings, per kind, and its chassis; never changed
        # once published (a change copies them).
        self._maps: tuple[dict[Any, Any], ...] = tuple({} for _ in range(_KINDS))
        self._chassis_views: dict[str, ChassisView] = {}
        self._deltas: deque[TopologyDelta] = deque(maxlen=DELTAS_KEPT)  # the last is `_version`'s
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
        with self._lock:
            if self._graph is None:
                self._graph = self._build_graph()
            return self._graph

    def update_chassis(self, state: ChassisState) -> bool:
        """Replace what we know of one chassis; True if the compiled view changed.

        Costs what changed in it: its share of the view is updated from the interfaces
        that changed (`_ChassisPart.update`), unless the chassis itself (its name,
        connection, encap IP, integration bridge) changed."""
        with self._lock:
            old = self._chassis.get(state.name)
            if old == state:
                return False
            self._chassis[state.name] = state
            self._graph = None
            part = self._parts.get(state.name)
            if old is not None and part is not None:
                affected = part.update(old, state, self._integration_bridge)
                if affected is not None:
                    return self._chassis_changed(state.name, part, affected)
            return self._chassis_changed(state.name,
                                         _ChassisPart(state, self._integration_bridge))

    def remove_chassis(self, name: str) -> bool:
        with self._lock:
            if self._chassis.pop(name, None) is None:
                return False
            self._graph = None
            return self._chassis_changed(name, None)

    # ---- fabric (OpenFlow side)
    def switch_up(self, datapath_id: int, ports: dict[int, tuple[str, bool]]) -> bool:
        with self._lock:
            self._of_switches.add(datapath_id)
            self._ports[datapath_id] = dict(ports)
            return self._rebuild_fabric()

    def switch_down(self, datapath_id: int) -> bool:
        with self._lock:
            self._of_switches.discard(datapath_id)
            self._ports.pop(datapath_id, None)
            self._links = {a: b for a, b in self._links.items()
                           if a[0] != datapath_id and b[0] != datapath_id}
            return self._rebuild_fabric()

    def port_changed(self, datapath_id: int, port_no: int, name: str, up: Optional[bool]
                     ) -> bool:
        """up=None: the port was deleted."""
        with self._lock:
            ports = self._ports.setdefault(datapath_id, {})
            if up is None:
                ports.pop(port_no, None)
            else:
                ports[port_no] = (name, up)
            if datapath_id in self._maps[_SWITCHES]:
                return self._chassis_port_changed(datapath_id, port_no)
            return self._rebuild_fabric()

    def _chassis_port_changed(self, datapath_id: int, port_no: int) -> bool:
        """A port of an integration bridge (a guest plugged in, a tunnel added): one
        entry of `port_state` and the bridge's `switch_ports` change, nothing of the
        fabric, so the delta says nothing to the compiler (bindings come from OVSDB)."""
        view = self._view
        now = self._ports.get(datapath_id, {}).get(port_no)
        key = (datapath_id, port_no)
        if view.port_state.get(key) == (None if now is None else now[1]) \
                and (now is None or view.switch_ports.get(datapath_id, {}).get(now[0])
                     == port_no) and (now is not None or key not in view.port_state):
            return False
        port_state = copy_of(view.port_state)
        if now is None:
            port_state.pop(key, None)
        else:
            port_state[key] = now[1]
        switch_ports = copy_of(view.switch_ports)
        switch_ports[datapath_id] = MappingProxyType(
            {name: no for no, (name, _) in self._ports.get(datapath_id, {}).items()})
        self._graph = None
        self._publish(TopologyDelta(), switch_ports=MappingProxyType(switch_ports),
                      port_state=MappingProxyType(port_state))
        return True

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
                return self._rebuild_fabric()
            finally:
                self._staged = True

    def advance_stage(self, version: int) -> bool:
        """Go to the next step of the fabric rollout if the view is still `version`
        (every switch runs it: the caller checked). True if the view changed."""
        with self._lock:
            if self._stage is None or self._view.version != version:
                return False
            self._stage = self._next_stages.pop(0) if self._next_stages else None
            return self._rebuild_fabric()

    def take_touched(self) -> set[int]:
        """Switches at the ends of links that changed since the last call: the compile
        starts nearest them."""
        with self._lock:
            touched, self._touched = self._touched, set()
        return touched

    def learn_macs(self, heard: Mapping[tuple[int, int], int]) -> Optional[int]:
        """A gateway chassis heard (external network key, IPv4) at MAC: the new view's
        version if that is news, else None."""
        with self._lock:
            news = {k: v for k, v in heard.items() if self._view.mac_bindings.get(k) != v}
            if not news:
                return None
            bindings = dict(self._view.mac_bindings)
            bindings.update(news)
            self._publish(TopologyDelta(mac_bindings=frozenset(news)),
                          mac_bindings=MappingProxyType(bindings))
            return self._version

    def is_fabric(self, datapath_id: int) -> bool:
        view = self.view()
        return datapath_id in view.fabric_switches

    def chassis_states(self) -> list[ChassisState]:
        with self._lock:
            return list(self._chassis.values())

    def view(self) -> TopologyView:
        with self._lock:
            return self._view

    def changes_since(self, version: int) -> Optional[TopologyDelta]:
        """The union of the deltas of every version after `version` up to the current
        view's; empty if `version` is the current one; None if it is unknown (older than
        the last DELTAS_KEPT versions, or newer than the current one)."""
        with self._lock:
            behind = self._version - version
            if behind < 0 or behind > len(self._deltas):
                return None
            if behind == 0:
                return TopologyDelta()
            if behind == 1:
                return self._deltas[-1]
            deltas = list(islice(self._deltas, len(self._deltas) - behind, None))
        sets: tuple[set[Any], ...] = (set(), set(), set(), set(), set(), set())
        fabric = False
        for d in deltas:
            sets[5].update(d.mac_bindings)
            sets[0].update(d.bindings)
            sets[1].update(d.switches)
            sets[2].update(d.tunnels)
            sets[3].update(d.provider_ports)
            sets[4].update(d.chassis)
            fabric = fabric or d.fabric
        return TopologyDelta(bindings=frozenset(sets[0]), switches=frozenset(sets[1]),
                             tunnels=frozenset(sets[2]), provider_ports=frozenset(sets[3]),
                             chassis=frozenset(sets[4]), fabric=fabric,
                             mac_bindings=frozenset(sets[5]))

    # ---- building the view
    def _publish(self, delta: TopologyDelta, **changes: Any) -> None:
        self._version += 1
        self._view = replace(self._view, version=self._version, **changes)
        self._deltas.append(delta)

    def _chassis_changed(self, name: str, part: Optional[_ChassisPart],
                         keys: Optional[list[set[Any]]] = None) -> bool:
        """Chassis `name` now contributes `part` (None: it is gone): replace its keys.
        `keys`: the part was updated in place and these keys (per kind) are all that
        may have changed (its rank did not)."""
        old = self._parts.pop(name, None)
        if part is not None:
            self._parts[name] = part
        before = old.maps if old is not None else _NO_PART
        after = part.maps if part is not None else _NO_PART
        rank_moved = old is not None and part is not None and old.rank != part.rank
        maps = list(self._maps)
        changed: list[frozenset[Any]] = [frozenset()] * _KINDS
        for kind in range(_KINDS):
            if keys is not None:
                affected = keys[kind]
            else:
                affected = {key for key, _ in before[kind].items() ^ after[kind].items()}
            if rank_moved:  # it may win or lose the keys it shares with other chassis
                claims = self._claims[kind]
                affected.update(key for key in after[kind] if len(claims.get(key, ())) > 1)
            if not affected:
                continue
            updates = self._claim(kind, name, affected, after[kind])
            if updates:
                new = dict(maps[kind])
                for key, value in updates.items():
                    if value is _MISSING:
                        del new[key]
                    else:
                        new[key] = value
                maps[kind] = new
                changed[kind] = frozenset(updates)
        old_cv = self._chassis_views.get(name)
        new_cv = part.view if part is not None else None
        chassis: Optional[dict[str, ChassisView]] = None
        if old_cv != new_cv:
            chassis = dict(self._chassis_views)
            if new_cv is None:
                del chassis[name]
            else:
                chassis[name] = new_cv
        fabric = self._view.fabric_switches
        if any((dpid in maps[_SWITCHES]) != (dpid in self._maps[_SWITCHES])
               for dpid in changed[_SWITCHES]):  # fabric switches: OpenFlow's but no chassis'
            fabric = frozenset(self._of_switches.difference(maps[_SWITCHES]))
        delta = TopologyDelta(
            bindings=changed[_BINDINGS], switches=changed[_SWITCHES],
            tunnels=frozenset(key[0] for key in changed[_TUNNELS]),
            provider_ports=frozenset(key[0] for key in changed[_PROVIDER]),
            chassis=frozenset((name,)) if chassis is not None else frozenset(),
            fabric=fabric != self._view.fabric_switches)
        if delta.empty:
            return False
        fields: dict[str, Any] = {}
        for kind, field_name in enumerate(("switches", "bindings", "tunnels", "provider_ports")):
            if changed[kind]:
                fields[field_name] = MappingProxyType(maps[kind])
        if chassis is not None:
            self._chassis_views = chassis
            fields["chassis"] = MappingProxyType(chassis)
        if delta.fabric:
            fields["fabric_switches"] = fabric
        self._maps = tuple(maps)
        self._publish(delta, **fields)
        return True

    def _claim(self, kind: int, name: str, keys: set[Any], reported: dict[Any, Any]
               ) -> dict[Any, Any]:
        """Chassis `name` reports `reported` (of `kind`): record its claims on `keys`
        (those whose value it reports changed) and return the view's entries that
        change: key -> new value, or _MISSING if none."""
        claims = self._claims[kind]
        view = self._maps[kind]
        parts = self._parts
        updates: dict[Any, Any] = {}
        for key in keys:
            owners = claims.get(key)
            if key in reported:
                if owners is None:
                    owners = claims[key] = {name}
                else:
                    owners.add(name)
            elif owners is not None:
                owners.discard(name)
                if not owners:
                    del claims[key]
                    owners = None
            if owners is None:
                value = _MISSING
            else:
                first = (min(owners, key=lambda c: parts[c].rank) if len(owners) > 1
                         else next(iter(owners)))
                value = parts[first].maps[kind][key]
            if view.get(key, _MISSING) != value:
                updates[key] = value
        return updates

    def _is_integration_bridge(self, datapath_id: int) -> bool:
        """An OpenFlow switch whose local port bears the integration bridge's name is a
        chassis' bridge whose OVSDB has not been read yet (after a restart, a chassis
        with thousands of ports takes longer to read than its bridge takes to connect),
        not a fabric switch: compiled as one it would be wiped. It waits for its chassis."""
        local = self._ports.get(datapath_id, {}).get(OFPP_LOCAL)
        return local is not None and local[0] == self._integration_bridge

    def _rebuild_fabric(self) -> bool:
        """The fabric's part of the view, from what OpenFlow and LLDP say."""
        view = self._view
        fabric = frozenset(d for d in self._of_switches.difference(self._maps[_SWITCHES])
                           if not self._is_integration_bridge(d))
        switch_ports = {d: MappingProxyType({name: no for no, (name, _) in ports.items()})
                        for d, ports in self._ports.items()}
        port_state = {(d, no): up for d, ports in self._ports.items()
                      for no, (_, up) in ports.items()}
        links = {a: b for a, b in self._links.items()
                 if port_state.get(a, False) and port_state.get(b, False)}
        standby = {a: b for a, b in self._standby.items()
                   if port_state.get(a, False) and port_state.get(b, False) and a not in links
                   and b not in links}
        if links != dict(view.links):
            self._stage_links(fabric, dict(view.links), links)
        changed = (fabric != view.fabric_switches
                   or links != dict(view.links)
                   or standby != dict(view.standby_links)
                   or self._stage != view.fabric_stage
                   or port_state != dict(view.port_state)
                   or {d: dict(p) for d, p in switch_ports.items()}
                   != {d: dict(p) for d, p in view.switch_ports.items()})
        if changed:
            self._graph = None
            # Without a fabric (before or after), only integration bridges' ports moved:
            # nothing the compiler reads (chassis bindings come from OVSDB).
            relevant = bool(fabric or view.fabric_switches or links or view.links
                            or self._stage or view.fabric_stage)
            self._publish(TopologyDelta(fabric=relevant), fabric_switches=fabric,
                          switch_ports=MappingProxyType(switch_ports),
                          port_state=MappingProxyType(port_state),
                          links=MappingProxyType(links), standby_links=MappingProxyType(standby),
                          fabric_stage=self._stage)
        return changed

    def _build_graph(self) -> nx.MultiDiGraph:
        graph = nx.MultiDiGraph()
        for ch in self._chassis.values():
            graph.add_node(("chassis", ch.name), kind="chassis", connected=ch.connected,
                           encap_ip=ch.encap_ip)
            for br in ch.bridges:
                if br.name != self._integration_bridge or br.datapath_id is None:
                    continue
                dpid = br.datapath_id
                graph.add_node(("switch", dpid), kind="switch", bridge=br.name)
                graph.add_edge(("chassis", ch.name), ("switch", dpid), kind="hosts")
                for iface in br.interfaces:
                    if iface.ofport is None or iface.ofport <= 0:
                        continue
                    if iface.physnet and iface.type == "patch":
                        continue
                    if iface.remote_chassis and iface.type in TUNNEL_TYPES:
                        graph.add_edge(("switch", dpid), ("chassis", iface.remote_chassis),
                                       kind="tunnel", tunnel_type=iface.type,
                                       ofport=iface.ofport)
                        continue
                    if not iface.iface_id:
                        continue
                    graph.add_node(("port", iface.iface_id), kind="port")
                    graph.add_edge(("switch", dpid), ("port", iface.iface_id),
                                   kind="has", ofport=iface.ofport)
        for d in self._view.fabric_switches:
            graph.add_node(("switch", d), kind="switch", fabric=True)
        for (a, pa), (b, pb) in self._view.links.items():
            graph.add_edge(("switch", a), ("switch", b), kind="fabric", src_port=pa,
                           dst_port=pb)
        return graph

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
