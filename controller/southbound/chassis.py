"""One OVSDB session per chassis, through ovsdbapp: watch it, and keep its bridge right.

The chassis' Open_vSwitch database is read into a frozen `ChassisState` after every
change the IDL sees (bridges, datapath ids, interfaces with iface-id), which feeds
the topology. The integration bridge's settings are corrected only where they
differ from what Loom wants: rewriting an unchanged Controller row would make
ovs-vswitchd drop and re-open its OpenFlow session on every controller restart.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from controller.compiler.qos import Shaping
from controller.compiler.tunnels import TunnelPort
from controller.drift import DriftItem, DriftRecord, iso
from controller.store.ovs_idl import FastRowUpdate
from controller.topology import BridgeState, ChassisState, InterfaceState

LOG = logging.getLogger(__name__)

REMOTE_CHASSIS_KEY = "loom-remote-chassis"
PHYSNET_KEY = "loom-physnet"
QOS_OWNER_KEY = "loom-owner"  # on QoS rows Loom made
BRIDGE_MAPPINGS_KEY = "loom-bridge-mappings"  # like ovn-bridge-mappings: physnet1:br-phys,...
# like ovn-cms-options=enable-chassis-as-gw: this chassis may carry routers' gateways
GATEWAY_KEY = "loom-gateway"


def is_gateway(ext: dict[str, str]) -> bool:
    return ext.get(GATEWAY_KEY, "").lower() in ("true", "yes", "1")
CONTROLLER_MAX_BACKOFF_MS = 1000  # DESIGN.md: otherwise a reconnect waits 5-8 s
CONTROLLER_INACTIVITY_PROBE_MS = 5000


@dataclass(frozen=True)
class BridgeSettings:
    """How Loom wants every chassis' integration bridge configured."""

    name: str = "br-int"
    datapath_type: str = "netdev"
    controller_target: str = "tcp:127.0.0.1:6653"
    fail_mode: str = "secure"
    protocols: tuple[str, ...] = ("OpenFlow13",)


@dataclass(frozen=True)
class ControllerLink:
    """One Controller row of a chassis' integration bridge, as ovs-vswitchd reports it.

    Read so that a bridge that never reaches this controller (its target names an
    address the chassis cannot reach, the usual slip when --of-target is forgotten)
    can be reported instead of leaving /v1/switches silently empty.
    """

    chassis: str
    bridge: str
    datapath_id: Optional[int]
    target: str
    is_connected: bool  # ovs-vswitchd's view: connected to *a* controller at `target`
    state: Optional[str] = None  # status:state, e.g. ACTIVE, BACKOFF, CONNECTING
    last_error: Optional[str] = None  # status:last_error, e.g. "Connection refused"


def _single(value: Any) -> Any:
    """python-ovs IDL gives optional columns as lists of zero or one element."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class _WatchedIdl(FastRowUpdate, connection.OvsdbIdl):
    """An IDL that calls back with the new database state after every change (and
    applies the server's rows with less work: store/ovs_idl.py)."""

    on_change: Optional[Callable[[_WatchedIdl], None]] = None
    reader: Optional[ChassisReader] = None  # told of every row changed
    _seen_seqno = -1
    _seen_connected = False

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if self.reader is not None:
            self.reader.note(row._table.name, row.uuid)

    def _Idl__clear(self) -> None:
        """python-ovs drops every row (a reconnection the server could not resume):
        no notice is given for the rows that are gone, so the next read is a full one."""
        if self.reader is not None:
            self.reader.reset()
        super()._Idl__clear()  # type: ignore[misc]

    def cooperative_yield(self) -> None:
        """Nothing. ovsdbapp sleeps 0 s after every row of an update so that eventlet
        green threads get a turn; this session is an OS thread (Loom does not
        monkey-patch), for which that only gave the GIL away once per row: 4,000
        times in a 1,000-port chassis' first read, each a wait for the GIL back
        whenever another thread was busy."""

    def run(self) -> Any:
        result = super().run()
        # a lost session is news too (no row changes with it): a gateway chassis whose
        # OVSDB stops answering is passed over at once (compiler/gateway.py)
        connected = self._session.is_connected()
        if self.change_seqno != self._seen_seqno or connected != self._seen_connected:
            self._seen_seqno = self.change_seqno
            self._seen_connected = connected
            if self.on_change is not None:
                try:
                    self.on_change(self)
                except Exception:  # a bug here must not kill the IDL thread
                    LOG.exception("chassis change handler failed")
        return result


@dataclass(frozen=True)
class _BridgeConfig:
    exists: bool
    datapath_type: str = ""
    fail_mode: str = ""
    protocols: tuple[str, ...] = ()
    controllers: tuple[tuple[str, Optional[int]], ...] = ()  # (target, max_backoff)
    disable_in_band: bool = False
    # our tunnel ports as (name, type, remote chassis, remote_ip, options:tos)
    tunnels: frozenset[tuple[str, str, str, str, str]] = frozenset()
    physnet_ports: frozenset[tuple[str, str]] = frozenset()  # (bridge, port name) ours
    bridges: frozenset[str] = frozenset()
    mappings: tuple[tuple[str, str], ...] = ()
    # port name -> (max bps, ((queue id, min bps, max bps), ...)) for QoS rows Loom owns
    shaping: tuple[tuple[str, tuple[int, tuple[tuple[int, int, int], ...]]], ...] = ()
    foreign_qos: frozenset[str] = frozenset()  # ports whose QoS someone else set
    ports: frozenset[str] = frozenset()  # port names on the integration bridge
    # QoS and Queue rows Loom made that nothing refers to any more (a port deleted
    # under its QoS row, as when a VM moves away): (table, uuid), to destroy
    orphans: tuple[tuple[str, Any], ...] = ()
    controller_links: tuple[ControllerLink, ...] = ()  # the bridge's Controller rows


def _rate(other_config: Any, key: str) -> int:
    try:
        return int(dict(other_config).get(key, 0))
    except ValueError:
        return 0


def tunnel_options(t: TunnelPort) -> dict[str, str]:
    """Interface options of one tunnel port: the key comes from the flow (set_field
    tunnel_id), the outer DSCP from the inner packet (tos=inherit)."""
    return {"remote_ip": t.remote_ip, "key": "flow", "tos": t.tos}


def _tunnel_row(t: TunnelPort) -> tuple[str, str, str, str, str]:
    """A wanted tunnel as `_BridgeConfig.tunnels` holds one read from the database."""
    return (t.name, t.tunnel_type, t.remote_chassis, t.remote_ip, t.tos)


def parse_bridge_mappings(text: str) -> tuple[tuple[str, str], ...]:
    """'physnet1:br-phys,physnet2:br-ex' -> (('physnet1', 'br-phys'), ...); junk ignored."""
    pairs = []
    for item in text.split(","):
        physnet, sep, bridge = item.strip().partition(":")
        if sep and physnet and bridge:
            pairs.append((physnet, bridge))
    return tuple(sorted(pairs))


def patch_names(physnet: str) -> tuple[str, str]:
    """(port on br-int, port on the provider bridge), within 15 characters."""
    tag = physnet[:11]
    return f"lpi-{tag}", f"lpp-{tag}"


_IFACE_COLUMNS = ("name", "ofport", "external_ids", "type", "options")


def _raw_map(datum: Any) -> dict[Any, Any]:
    """A map column's datum as a dict, straight from its atoms (what `to_python` gives
    for a map of strings, without its conversions)."""
    return {} if datum is None else {k.value: v.value for k, v in datum.values.items()}


def _raw_scalar(datum: Any) -> Any:
    """The value of a zero-or-one-value column's datum (None if empty)."""
    if datum is None or not datum.values:
        return None
    return next(iter(datum.values)).value


def _refs(row: Any, column: str) -> tuple[Any, ...]:
    """The UUIDs a reference column of `row` names, from its datum: `row.ports` would
    turn every one into its row and sort them (0.1 ms per 100 references)."""
    datum = row._data.get(column)
    return () if datum is None else tuple(atom.value for atom in datum.values)


def _interface_state(iface: Any) -> tuple[InterfaceState, Optional[str]]:
    """One Interface row as an InterfaceState (and its options:tos if it is one of our
    tunnels), kept on the row until one of the columns read changes.

    Converting every column through python-ovs' attribute access cost about 0.25 ms
    per interface (0.5 s per guest plugged in at 2,000 interfaces, when every change
    read every interface); the columns are read from their datums' atoms instead.
    The IDL replaces a column's datum when it changes, so the datums, compared by
    identity, say whether what was derived from them still holds."""
    data = iface._data
    datums = tuple(data.get(c) for c in _IFACE_COLUMNS)
    cached = iface.__dict__.get("_loom_state")
    if cached is not None and len(cached[0]) == len(datums) \
            and all(a is b for a, b in zip(cached[0], datums, strict=True)):
        return cached[1], cached[2]
    name, ofport, ext_ids, type_, options = (
        _raw_scalar(datums[0]), _raw_scalar(datums[1]), _raw_map(datums[2]),
        _raw_scalar(datums[3]), _raw_map(datums[4]))
    if type_ is None:
        type_ = ""
    if not isinstance(name, str) or not isinstance(type_, str) or not (
            ofport is None or isinstance(ofport, int)):
        # not what the server sends (a default datum): python-ovs' own conversion
        ofport = _single(iface.ofport)
        name, type_ = iface.name, iface.type
        ext_ids, options = dict(iface.external_ids), dict(iface.options)
    state = InterfaceState(
        name=name,
        ofport=int(ofport) if ofport is not None else None,
        iface_id=ext_ids.get("iface-id"),
        type=type_,
        remote_ip=options.get("remote_ip"),
        remote_chassis=ext_ids.get(REMOTE_CHASSIS_KEY),
        physnet=ext_ids.get(PHYSNET_KEY),
    )
    tunnel_tos = options.get("tos", "") if REMOTE_CHASSIS_KEY in ext_ids else None
    iface.__dict__["_loom_state"] = (datums, state, tunnel_tos)
    return state, tunnel_tos


def _port_qos(port_name: str, qos: Any,
              shaping: list[tuple[str, tuple[int, tuple[tuple[int, int, int], ...]]]],
              foreign: set[str]) -> None:
    """One integration-bridge port's QoS row: its shaping if Loom made it, else the
    port is someone else's to shape."""
    if dict(qos.external_ids).get(QOS_OWNER_KEY) != "loom":
        foreign.add(port_name)
        return
    queues = tuple(sorted(
        (int(qid), _rate(q.other_config, "min-rate"), _rate(q.other_config, "max-rate"))
        for qid, q in dict(qos.queues).items() if int(qid) != 0))
    shaping.append((port_name, (_rate(qos.other_config, "max-rate"), queues)))


def _controller_links(br: Any, chassis: str, datapath_id: Optional[int]
                      ) -> tuple[ControllerLink, ...]:
    return tuple(sorted((ControllerLink(
        chassis=chassis, bridge=br.name, datapath_id=datapath_id,
        target=c.target, is_connected=bool(c.is_connected),
        state=dict(c.status).get("state"),
        last_error=dict(c.status).get("last_error")) for c in br.controller),
        key=lambda link: link.target))


def _bridge_config(br: Any, chassis: str, datapath_id: Optional[int],
                   tunnels: frozenset[tuple[str, str, str, str, str]]) -> _BridgeConfig:
    """The integration bridge's own settings (`br` its Bridge row)."""
    return _BridgeConfig(
        tunnels=tunnels,
        exists=True,
        datapath_type=br.datapath_type,
        fail_mode=_single(br.fail_mode) or "",
        protocols=tuple(sorted(br.protocols)),
        controllers=tuple(sorted(
            (c.target, _single(c.max_backoff)) for c in br.controller)),
        disable_in_band=dict(br.other_config).get("disable-in-band") == "true",
        controller_links=_controller_links(br, chassis, datapath_id),
    )


def read_state(idl: connection.OvsdbIdl, remote: str, bridge_name: str
               ) -> tuple[ChassisState, _BridgeConfig]:
    """Turn the IDL's tables into a frozen ChassisState, reading every row (runs in
    the IDL thread). The session keeps its state with `ChassisReader`, which reads
    only the rows that changed; this is what it must always equal."""
    ovs_rows = list(idl.tables["Open_vSwitch"].rows.values())
    ext = dict(ovs_rows[0].external_ids) if ovs_rows else {}
    name = ext.get("system-id") or remote
    bridges = []
    config = _BridgeConfig(exists=False)
    physnet_ports = set()
    shaping: list[tuple[str, tuple[int, tuple[tuple[int, int, int], ...]]]] = []
    foreign: set[str] = set()
    tos: dict[str, str] = {}  # interface name -> options:tos (our tunnels)
    for br in idl.tables["Bridge"].rows.values():
        dpid_text = _single(br.datapath_id)
        interfaces = []
        for port in br.ports:
            for iface in port.interfaces:
                iface_state, tunnel_tos = _interface_state(iface)
                if tunnel_tos is not None:
                    tos[iface_state.name] = tunnel_tos
                interfaces.append(iface_state)
        physnet_ports |= {(br.name, i.name) for i in interfaces if i.physnet}
        if br.name == bridge_name:
            for port in br.ports:
                qos = _single(port.qos)
                if qos is None:
                    continue
                _port_qos(port.name, qos, shaping, foreign)
        bridges.append(BridgeState(
            name=br.name,
            datapath_id=int(dpid_text, 16) if dpid_text else None,
            interfaces=tuple(sorted(interfaces, key=lambda i: i.name)),
        ))
        if br.name == bridge_name:
            ours = frozenset(
                (i.name, i.type, i.remote_chassis, i.remote_ip or "", tos.get(i.name, ""))
                for i in interfaces if i.remote_chassis)
            config = _bridge_config(br, name, int(dpid_text, 16) if dpid_text else None, ours)
    state = ChassisState(
        name=name, remote=remote, connected=idl._session.is_connected(),
        encap_ip=ext.get("loom-encap-ip"),
        bridges=tuple(sorted(bridges, key=lambda b: b.name)),
        bridge_mappings=parse_bridge_mappings(ext.get(BRIDGE_MAPPINGS_KEY, "")),
        gateway=is_gateway(ext),
    )
    config = dataclasses.replace(config, physnet_ports=frozenset(physnet_ports),
                                 bridges=frozenset(b.name for b in bridges),
                                 mappings=state.bridge_mappings,
                                 shaping=tuple(sorted(shaping)),
                                 foreign_qos=frozenset(foreign),
                                 ports=frozenset(
                                     i.name for b in bridges if b.name == bridge_name
                                     for i in b.interfaces),
                                 orphans=_orphan_qos(idl))
    return state, config


# Columns ovs-vswitchd rewrites every few seconds (stats-update-interval, 5 s) and
# Loom never reads: not replicated, so that counters ticking over are no change to
# read the chassis again for (at 1,000 ports, 0.2-0.4 s of CPU every 5 s), and a
# first read does not parse them.
UNWATCHED_COLUMNS: dict[str, frozenset[str]] = {
    "Interface": frozenset({"statistics"}),
    "Port": frozenset({"statistics", "rstp_statistics"}),
    "Mirror": frozenset({"statistics"}),
    "Open_vSwitch": frozenset({"statistics"}),
}

# The tables with a row per port (thousands) replicate only the columns Loom reads or
# writes (here and through ovsdbapp's add_port, del_port, db_set, db_clear, lookup):
# an Interface row has some 45 columns, and parsing them all was most of a chassis'
# first read after a restart (about 10 s for 9,000 interfaces, issue 11). Every
# other table (a handful of rows each) is replicated whole, but UNWATCHED_COLUMNS.
WATCHED_COLUMNS: dict[str, frozenset[str]] = {
    "Interface": frozenset({"name", "type", "options", "ofport", "external_ids"}),
    "Port": frozenset({"name", "interfaces", "qos", "external_ids"}),
}


def schema_helper(remote: str) -> Any:
    """The Open_vSwitch schema from the chassis' server, every table registered with
    its columns but `UNWATCHED_COLUMNS`, or only `WATCHED_COLUMNS` where given."""
    helper = idlutils.get_schema_helper(remote, "Open_vSwitch")
    for name, table in helper.schema_json["tables"].items():
        skip = UNWATCHED_COLUMNS.get(name, frozenset())
        columns = [c for c in table["columns"] if c not in skip]
        only = WATCHED_COLUMNS.get(name)
        if only is not None:
            columns = [c for c in columns if c in only]
        if len(columns) == len(table["columns"]):
            helper.register_table(name)
        else:
            helper.register_columns(name, columns)
    return helper


def _orphan_qos(idl: connection.OvsdbIdl, used_qos: Optional[set[Any]] = None
                ) -> tuple[tuple[str, Any], ...]:
    """Loom's QoS rows no port refers to, and Loom's Queue rows no QoS row refers to.

    QoS and Queue are root tables: OVSDB keeps them when the Port that used them is
    deleted (a VM moved or deleted), so Loom removes its own leftovers itself.
    `used_qos`: the UUIDs of the QoS rows ports refer to, if the caller knows them
    (else every Port row is read).
    """
    def ours(row: Any) -> bool:
        return dict(row.external_ids).get(QOS_OWNER_KEY) == "loom"

    qos_rows = list(idl.tables["QoS"].rows.values())
    if used_qos is None:
        used_qos = {q.uuid for p in idl.tables["Port"].rows.values()
                    for q in ([_single(p.qos)] if _single(p.qos) is not None else [])}
    live_qos = [q for q in qos_rows if q.uuid in used_qos or not ours(q)]
    used_queues = {queue.uuid for q in live_qos for queue in dict(q.queues).values()}
    orphans = [("QoS", q.uuid) for q in qos_rows if ours(q) and q.uuid not in used_qos]
    orphans += [("Queue", q.uuid) for q in idl.tables["Queue"].rows.values()
                if ours(q) and q.uuid not in used_queues]
    return tuple(sorted(orphans, key=lambda o: (o[0], str(o[1]))))


class _BridgeIndex:
    """The interfaces one Bridge row holds (through its ports), kept as they change."""

    __slots__ = ("members", "by_name", "names", "physnet", "tunnels", "interfaces",
                 "port_names", "state")

    def __init__(self) -> None:
        self.members: dict[Any, InterfaceState] = {}  # Interface UUID -> its state
        self.by_name: dict[str, InterfaceState] = {}
        self.names: list[str] = []  # sorted
        self.physnet: set[str] = set()  # names of our patches to provider bridges
        # our tunnels by name: (name, type, remote chassis, remote_ip, options:tos)
        self.tunnels: dict[str, tuple[str, str, str, str, str]] = {}
        self.interfaces: Optional[tuple[InterfaceState, ...]] = None  # None: to build
        self.port_names: Optional[frozenset[str]] = None  # None: to build
        self.state: Optional[BridgeState] = None  # the last one handed out

    def remove(self, uuid: Any) -> None:
        state = self.members.pop(uuid)
        if self.by_name.get(state.name) is state:
            del self.by_name[state.name]
            self.physnet.discard(state.name)
            self.tunnels.pop(state.name, None)

    def add(self, uuid: Any, state: InterfaceState, tos: Optional[str]) -> None:
        self.members[uuid] = state
        self.by_name[state.name] = state
        if state.physnet:
            self.physnet.add(state.name)
        if state.remote_chassis:
            self.tunnels[state.name] = (state.name, state.type, state.remote_chassis,
                                        state.remote_ip or "", tos or "")

    def resort(self, removed: list[str], added: list[str]) -> None:
        """Keep `names` sorted after `removed` and `added` (names) changed."""
        if len(removed) + len(added) > 32:
            self.names = sorted(self.by_name)
        else:
            names = self.names
            for name in removed:
                if name not in self.by_name:
                    i = bisect.bisect_left(names, name)
                    if i < len(names) and names[i] == name:
                        del names[i]
            for name in added:
                i = bisect.bisect_left(names, name)
                if i == len(names) or names[i] != name:
                    names.insert(i, name)
        self.interfaces = None
        self.port_names = None


_TRACKED = ("Interface", "Port", "Bridge", "QoS", "Queue")


class ChassisReader:
    """A chassis' ChassisState and _BridgeConfig, kept up to date from the rows that
    changed (issue 11: binding one port cost 0.25 s at 1,000 bound ports, reading
    every bridge, port and interface again).

    The IDL tells `note` of every row it creates, updates or deletes (its `notify`);
    `read` then derives again only what those rows feed: the state of the
    interfaces that changed, the interfaces of the ports that changed, the ports of the
    bridges that changed, and where each of those interfaces now belongs. The bridges'
    own settings (a handful of rows) and the Open_vSwitch row are read every time; the
    QoS part (shaping, foreign QoS, leftover rows) only when a QoS or Queue row, or a
    port's QoS, changed. Everything is read in full on the first read and after the
    IDL lost its rows (a reconnection): `read` always equals `read_state` (tests
    compare them after random changes).
    """

    def __init__(self, remote: str, bridge_name: str) -> None:
        self.remote = remote
        self.bridge_name = bridge_name
        self.reads = 0
        self.full_reads = 0
        self._full = True
        self._seqno: Optional[int] = None  # the session's, at the last read
        self._dirty: dict[str, set[Any]] = {t: set() for t in _TRACKED}
        self._clear()

    def _clear(self) -> None:
        """Forget every row read (before a full read)."""
        self._iface: dict[Any, tuple[InterfaceState, Optional[str]]] = {}
        self._iface_port: dict[Any, Any] = {}
        self._port_ifaces: dict[Any, tuple[Any, ...]] = {}
        self._port_name: dict[Any, str] = {}
        self._port_qos: dict[Any, Any] = {}  # ports with a QoS row: its UUID
        self._port_bridge: dict[Any, Any] = {}
        self._bridge_ports: dict[Any, frozenset[Any]] = {}
        self._where: dict[Any, Any] = {}  # Interface UUID -> the bridge index holding it
        self._bridges: dict[Any, _BridgeIndex] = {}
        self._integration: Any = None  # the integration bridge's UUID at the last read
        self._shaping: tuple[tuple[str, tuple[int, tuple[tuple[int, int, int], ...]]], ...] = ()
        self._foreign: frozenset[str] = frozenset()
        self._orphans: tuple[tuple[str, Any], ...] = ()

    def note(self, table: str, uuid: Any) -> None:
        """Row `uuid` of `table` was created, updated or deleted (IDL thread)."""
        dirty = self._dirty.get(table)
        if dirty is not None:
            dirty.add(uuid)

    def reset(self) -> None:
        """The IDL's rows were replaced without notices: read everything next time."""
        self._full = True

    def read(self, idl: connection.OvsdbIdl) -> tuple[ChassisState, _BridgeConfig]:
        tables = idl.tables
        seqno = idl._session.get_seqno()
        if seqno != self._seqno:  # reconnected (or first): the rows may all be new
            self._seqno = seqno
            self._full = True
        full, self._full = self._full, False
        dirty, self._dirty = self._dirty, {t: set() for t in _TRACKED}
        self.reads += 1
        if full:
            self.full_reads += 1
            self._clear()
            dirty = {t: set(tables[t].rows) for t in _TRACKED}
        iface_rows = tables["Interface"].rows
        port_rows = tables["Port"].rows
        bridge_rows = tables["Bridge"].rows
        touched: set[Any] = set()  # interfaces whose state or place may have changed
        qos_touched = full or bool(dirty["QoS"]) or bool(dirty["Queue"])
        for uuid in dirty["Interface"]:
            row = iface_rows.get(uuid)
            if row is None:
                self._iface.pop(uuid, None)
            else:
                self._iface[uuid] = _interface_state(row)
            touched.add(uuid)
        for uuid in dirty["Port"]:
            row = port_rows.get(uuid)
            old_ifaces = self._port_ifaces.pop(uuid, ())
            for i in old_ifaces:
                if self._iface_port.get(i) == uuid:
                    del self._iface_port[i]
            touched.update(old_ifaces)
            old_qos = self._port_qos.pop(uuid, None)
            old_name = self._port_name.pop(uuid, None)
            new_qos = None
            if row is not None:
                ifaces = _refs(row, "interfaces")
                self._port_ifaces[uuid] = ifaces
                for i in ifaces:
                    self._iface_port[i] = uuid
                touched.update(ifaces)
                name = _raw_scalar(row._data.get("name"))
                self._port_name[uuid] = name if isinstance(name, str) else row.name
                qos = _refs(row, "qos")
                if qos:
                    new_qos = self._port_qos[uuid] = qos[0]
            if old_qos != new_qos or (new_qos is not None
                                      and old_name != self._port_name.get(uuid)):
                qos_touched = True
        for uuid in dirty["Bridge"]:
            row = bridge_rows.get(uuid)
            old_ports = self._bridge_ports.pop(uuid, frozenset())
            new_ports = frozenset(_refs(row, "ports")) if row is not None else frozenset()
            if row is not None:
                self._bridge_ports[uuid] = new_ports
            if row is None or not old_ports:
                qos_touched = True  # a bridge made or gone (it may be the integration one)
            for p in old_ports - new_ports:
                if self._port_bridge.get(p) == uuid:
                    del self._port_bridge[p]
                touched.update(self._port_ifaces.get(p, ()))
                qos_touched = qos_touched or p in self._port_qos
            for p in new_ports - old_ports:
                self._port_bridge[p] = uuid
                touched.update(self._port_ifaces.get(p, ()))
                qos_touched = qos_touched or p in self._port_qos
        self._place(touched)
        for uuid in dirty["Bridge"]:
            if uuid not in bridge_rows and not self._bridges.get(uuid, _NO_INDEX).members:
                self._bridges.pop(uuid, None)
        return self._assemble(idl, qos_touched)

    def _place(self, touched: set[Any]) -> None:
        """Put each interface in `touched` where it now belongs (removals first: a
        name may pass from one interface to another in one transaction)."""
        moves: list[tuple[Any, Any, InterfaceState, Optional[str]]] = []
        removed: dict[Any, list[str]] = {}
        for i in touched:
            port = self._iface_port.get(i)
            bridge = self._port_bridge.get(port) if port is not None else None
            entry = self._iface.get(i) if bridge is not None else None
            was = self._where.get(i)
            if was is not None:
                index = self._bridges[was]
                if was == bridge and entry is not None and index.members[i] is entry[0]:
                    continue
                name = index.members[i].name
                index.remove(i)
                del self._where[i]
                removed.setdefault(was, []).append(name)
            if entry is not None:
                moves.append((i, bridge, entry[0], entry[1]))
        added: dict[Any, list[str]] = {}
        for i, bridge, state, tos in moves:
            into = self._bridges.get(bridge)
            if into is None:
                into = self._bridges[bridge] = _BridgeIndex()
            into.add(i, state, tos)
            self._where[i] = bridge
            added.setdefault(bridge, []).append(state.name)
        for bridge in removed.keys() | added.keys():
            self._bridges[bridge].resort(removed.get(bridge, []), added.get(bridge, []))

    def _assemble(self, idl: connection.OvsdbIdl, qos_touched: bool
                  ) -> tuple[ChassisState, _BridgeConfig]:
        tables = idl.tables
        ovs_rows = list(tables["Open_vSwitch"].rows.values())
        ext = dict(ovs_rows[0].external_ids) if ovs_rows else {}
        name = ext.get("system-id") or self.remote
        bridges: list[BridgeState] = []
        config = _BridgeConfig(exists=False)
        physnet_ports: set[tuple[str, str]] = set()
        integration = None
        port_names: frozenset[str] = frozenset()
        for uuid, br in tables["Bridge"].rows.items():
            index = self._bridges.get(uuid)
            if index is None:
                index = self._bridges[uuid] = _BridgeIndex()
            if index.interfaces is None:
                by_name = index.by_name
                index.interfaces = tuple(map(by_name.__getitem__, index.names))
            dpid_text = _single(br.datapath_id)
            dpid = int(dpid_text, 16) if dpid_text else None
            br_name = br.name
            bridge = index.state
            if bridge is None or bridge.name != br_name or bridge.datapath_id != dpid \
                    or bridge.interfaces is not index.interfaces:
                bridge = index.state = BridgeState(br_name, dpid, index.interfaces)
            bridges.append(bridge)
            physnet_ports.update((br_name, n) for n in index.physnet)
            if br_name == self.bridge_name:
                integration = uuid
                if index.port_names is None:
                    index.port_names = frozenset(index.by_name)
                port_names = index.port_names
                config = _bridge_config(br, name, dpid, frozenset(index.tunnels.values()))
        if qos_touched or integration != self._integration:
            self._integration = integration
            self._read_qos(idl, integration)
        bridges.sort(key=lambda b: b.name)
        mappings = parse_bridge_mappings(ext.get(BRIDGE_MAPPINGS_KEY, ""))
        state = ChassisState(
            name=name, remote=self.remote, connected=idl._session.is_connected(),
            encap_ip=ext.get("loom-encap-ip"), bridges=tuple(bridges),
            bridge_mappings=mappings, gateway=is_gateway(ext))
        config = dataclasses.replace(
            config, physnet_ports=frozenset(physnet_ports),
            bridges=frozenset(b.name for b in bridges), mappings=mappings,
            shaping=self._shaping, foreign_qos=self._foreign, ports=port_names,
            orphans=self._orphans)
        return state, config

    def _read_qos(self, idl: connection.OvsdbIdl, integration: Any) -> None:
        """The integration bridge's ports' QoS, and Loom's leftover QoS and Queue rows:
        read over the ports that have a QoS row only."""
        shaping: list[tuple[str, tuple[int, tuple[tuple[int, int, int], ...]]]] = []
        foreign: set[str] = set()
        qos_rows = idl.tables["QoS"].rows
        if integration is not None:
            for port, qos_uuid in self._port_qos.items():
                qos = qos_rows.get(qos_uuid)
                if qos is not None and self._port_bridge.get(port) == integration:
                    _port_qos(self._port_name[port], qos, shaping, foreign)
        self._shaping = tuple(sorted(shaping))
        self._foreign = frozenset(foreign)
        self._orphans = _orphan_qos(idl, set(self._port_qos.values()))


_NO_INDEX = _BridgeIndex()


class ChassisSession:
    """Keeps one chassis watched and its integration bridge configured."""

    _count = 0

    def __init__(self, remote: str, settings: BridgeSettings,
                 on_state: Callable[[ChassisState], None], timeout: float = 10.0,
                 may_write: Callable[[], bool] = lambda: True,
                 targets: Optional[Callable[[], tuple[str, ...]]] = None) -> None:
        self.remote = remote
        self.settings = settings
        # only the chassis' owner writes its OVSDB (controller/ownership.py); every
        # instance reads it
        self._may_write = may_write
        self._targets = targets or (lambda: (settings.controller_target,))
        # drift (controller/drift.py): what this session last made hold, so that a
        # difference found while the wish is unchanged is told apart from a new wish
        self.drift = DriftRecord(f"chassis {remote}")
        self.drift_mode: Callable[[], Optional[str]] = lambda: "repair"
        self._applied_tunnels: Optional[frozenset[TunnelPort]] = None
        self._applied_shaping: Optional[dict[str, Any]] = None
        self._bridge_applied: Optional[tuple[str, ...]] = None  # the targets it was set to
        self._on_state = on_state
        self._timeout = timeout
        self._api: Optional[impl_idl.OvsdbIdl] = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._latest: Optional[tuple[ChassisState, _BridgeConfig]] = None
        self._tunnels: Optional[frozenset[TunnelPort]] = None
        self._shaping: Optional[dict[str, Shaping]] = None
        self._lock = threading.Lock()
        self.state: Optional[ChassisState] = None
        self._thread = threading.Thread(target=self._run, name=f"chassis {remote}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._api is not None:
            try:
                self._api.ovsdb_connection.stop(timeout=2)
            except Exception:
                LOG.debug("stopping chassis session %s", self.remote, exc_info=True)

    def controller_links(self) -> tuple[ControllerLink, ...]:
        """The integration bridge's Controller rows as last read ((): none, or the
        chassis' OVSDB is not connected, so what it said last may be stale)."""
        with self._lock:
            latest = self._latest
        if latest is None or not latest[0].connected:
            return ()
        return latest[1].controller_links

    def wake(self) -> None:
        self._wake.set()

    def _drifted(self, found: list[tuple[str, str]]) -> bool:
        """What Loom had made hold changed while its wish did not: someone else changed
        the chassis' OVSDB. Recorded; True if it is to be left as it is (report mode)."""
        repair = self.drift_mode() != "report"
        now = iso(time.time())
        self.drift.checked([DriftItem(kind, name, now, repaired=repair)
                            for kind, name in found], repair)
        LOG.warning("chassis %s: drift: %s%s", self.remote,
                    ", ".join(f"{k} {n}" for k, n in found),
                    "; repairing" if repair else " (--drift report: left as is)")
        return not repair

    def set_tunnels(self, tunnels: frozenset[TunnelPort]) -> None:
        """The tunnel ports this chassis should hold; applied by the session thread."""
        with self._lock:
            if tunnels == self._tunnels:
                return
            self._tunnels = tunnels
        self._wake.set()

    def set_shaping(self, shaping: dict[str, Shaping]) -> None:
        """linux-htb per interface name; applied by the session thread."""
        with self._lock:
            if shaping == self._shaping:
                return
            self._shaping = dict(shaping)
        self._wake.set()

    def _connect(self) -> impl_idl.OvsdbIdl:
        # ovsdbapp keeps a backend's connection on its class: one class per chassis.
        ChassisSession._count += 1
        api_cls = type(f"ChassisApi{ChassisSession._count}", (impl_idl.OvsdbIdl,), {})
        idl = _WatchedIdl(self.remote, schema_helper(self.remote))
        idl.reader = ChassisReader(self.remote, self.settings.name)
        idl.on_change = self._changed
        conn = connection.Connection(idl=idl, timeout=self._timeout)
        # No name indexes (ovsdbapp's auto_index makes them on Bridge, Port, Interface
        # and more): each is a sorted list every row of every update goes into, about
        # 3 s of a 10,000-port chassis' first read (issue 11). Loom's own reads go
        # through ChassisReader; ovsdbapp's lookups by name (a tunnel or QoS change, a
        # bridge to configure: rare) scan the table instead (idlutils.rows_by_value).
        return api_cls(conn, auto_index=False)

    def _changed(self, idl: _WatchedIdl) -> None:
        started = time.perf_counter()
        reader = idl.reader
        assert reader is not None
        full = reader.full_reads
        state, config = reader.read(idl)
        LOG.log(logging.INFO if reader.full_reads != full else logging.DEBUG,
                "chassis %s: read %d interfaces in %.3f s (%s)", self.remote,
                sum(len(b.interfaces) for b in state.bridges),
                time.perf_counter() - started,
                "in full" if reader.full_reads != full else "rows changed")
        with self._lock:
            self._latest = (state, config)
        self._wake.set()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                started = time.monotonic()
                self._api = self._connect()
                LOG.info("chassis %s: connected and read in %.2f s", self.remote,
                         time.monotonic() - started)
                break
            except Exception as exc:
                LOG.warning("chassis %s unreachable (%s); retrying", self.remote, exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                latest = self._latest
            if latest is None:
                continue
            state, config = latest
            self.state = state
            try:
                self._on_state(state)
            except Exception:
                LOG.exception("topology update from chassis %s failed", self.remote)
            if state.connected and self._may_write():
                try:
                    self._ensure_bridge(config)
                    self._ensure_tunnels(config)
                    self._ensure_provider_patches(config)
                    self._ensure_shaping(config)
                except Exception:
                    LOG.exception("configuring %s on %s failed", self.settings.name, self.remote)
                    self._stopping.wait(1.0)
                    self._wake.set()

    def _ensure_tunnels(self, config: _BridgeConfig) -> None:
        """Add missing tunnel ports, remove ours that are no longer wanted, and correct
        the settings of the others in place (e.g. a tunnel made before options:tos was
        set): one transaction, and none at all when everything holds."""
        with self._lock:
            wanted = self._tunnels
        if wanted is None or not config.exists:
            return  # nothing decided yet: never remove on a guess
        want = {_tunnel_row(t) for t in wanted}
        if want == set(config.tunnels):
            self._applied_tunnels = wanted
            return
        api = self._api
        assert api is not None
        existing = {name for (name, *_rest) in config.tunnels}
        stale = existing - {t.name for t in wanted}
        changed = [t for t in sorted(wanted) if _tunnel_row(t) not in config.tunnels]
        if wanted == self._applied_tunnels and self._drifted([
                ("tunnel-extra", n) for n in sorted(stale)] + [
                ("tunnel-missing" if t.name not in existing else "tunnel-modified", t.name)
                for t in changed]):
            return
        LOG.info("chassis %s: tunnels +%d ~%d -%d", self.remote,
                 sum(t.name not in existing for t in changed),
                 sum(t.name in existing for t in changed), len(stale))
        with api.transaction(check_error=True) as txn:
            for name in sorted(stale):
                txn.add(api.del_port(name, bridge=self.settings.name, if_exists=True))
            for t in changed:
                if t.name not in existing:
                    txn.add(api.add_port(self.settings.name, t.name, may_exist=True))
                txn.add(api.db_set(
                    "Interface", t.name, ("type", t.tunnel_type),
                    ("options", tunnel_options(t)),
                    ("external_ids", {REMOTE_CHASSIS_KEY: t.remote_chassis})))
        self._applied_tunnels = wanted

    def _ensure_provider_patches(self, config: _BridgeConfig) -> None:
        """A patch pair br-int <-> provider bridge per bridge mapping, as Neutron does."""
        if not config.exists:
            return
        want: set[tuple[str, str]] = set()
        peers: dict[tuple[str, str], tuple[str, str]] = {}
        for physnet, bridge in config.mappings:
            if bridge not in config.bridges:
                continue  # the operator has not made the provider bridge (yet)
            inner, outer = patch_names(physnet)
            want |= {(self.settings.name, inner), (bridge, outer)}
            peers[(self.settings.name, inner)] = (outer, physnet)
            peers[(bridge, outer)] = (inner, physnet)
        if want == set(config.physnet_ports):
            return
        api = self._api
        assert api is not None
        with api.transaction(check_error=True) as txn:
            for bridge, name in sorted(set(config.physnet_ports) - want):
                txn.add(api.del_port(name, bridge=bridge, if_exists=True))
            for bridge, name in sorted(want - set(config.physnet_ports)):
                peer, physnet = peers[(bridge, name)]
                txn.add(api.add_port(bridge, name, may_exist=True))
                txn.add(api.db_set("Interface", name, ("type", "patch"),
                                   ("options", {"peer": peer}),
                                   ("external_ids", {PHYSNET_KEY: physnet})))

    def _ensure_shaping(self, config: _BridgeConfig) -> None:
        """QoS linux-htb rows on guest ports: create, update, or remove what Loom made."""
        with self._lock:
            wanted = self._shaping
        if wanted is None or not config.exists:
            return
        # a port not (or no longer) on the bridge gets nothing: a QoS row made for it
        # would be left behind, referred to by nothing
        want = {name: (sh.max_bps, sh.queues) for name, sh in wanted.items()
                if name not in config.foreign_qos and name in config.ports}
        have = dict(config.shaping)
        if want == have and not config.orphans:
            self._applied_shaping = want
            return
        if want == self._applied_shaping and self._drifted(
                [("qos-missing", n) for n in sorted(set(want) - set(have))]
                + [("qos-modified", n) for n in sorted(set(want) & set(have))
                   if want[n] != have[n]]
                + [("qos-extra", n) for n in sorted(set(have) - set(want))]):
            return
        api = self._api
        assert api is not None
        LOG.info("chassis %s: shaping on %d ports (was %d), %d leftover rows removed",
                 self.remote, len(want), len(have), len(config.orphans))
        with api.transaction(check_error=True) as txn:
            for table, uuid in config.orphans:
                txn.add(api.db_destroy(table, uuid))
            for name in sorted(set(have) - set(want)) + sorted(
                    n for n in set(have) & set(want) if have[n] != want[n]):
                self._clear_qos(txn, api, name)
            for name in sorted(n for n in want if have.get(n) != want[n]):
                max_bps, queues = want[name]
                queue_rows = {0: txn.add(api.db_create(
                    "Queue", other_config={"max-rate": str(max_bps)},
                    external_ids={QOS_OWNER_KEY: "loom"}))}
                for qid, min_bps, qmax in queues:
                    queue_rows[qid] = txn.add(api.db_create(
                        "Queue", other_config={"min-rate": str(min_bps), "max-rate": str(qmax)},
                        external_ids={QOS_OWNER_KEY: "loom"}))
                qos = txn.add(api.db_create(
                    "QoS", type="linux-htb", other_config={"max-rate": str(max_bps)},
                    queues=queue_rows, external_ids={QOS_OWNER_KEY: "loom",
                                                     "loom-port": wanted[name].port_id}))
                txn.add(api.db_set("Port", name, ("qos", qos)))
        self._applied_shaping = want

    @staticmethod
    def _clear_qos(txn: Any, api: Any, port_name: str) -> None:
        """Detach and destroy the QoS row Loom put on a port, and its queues."""
        port = api.lookup("Port", port_name, default=None)
        qos = _single(port.qos) if port is not None else None
        txn.add(api.db_clear("Port", port_name, "qos"))
        if qos is not None:
            txn.add(api.db_destroy("QoS", qos.uuid))
            for queue in dict(qos.queues).values():
                txn.add(api.db_destroy("Queue", queue.uuid))

    def _ensure_bridge(self, config: _BridgeConfig) -> None:
        """Correct only what differs, in one transaction."""
        s = self.settings
        api = self._api
        assert api is not None
        targets = tuple(sorted(self._targets()))
        wanted_ctl = tuple((t, CONTROLLER_MAX_BACKOFF_MS) for t in targets)
        ok = (config.exists and config.datapath_type == s.datapath_type
              and config.fail_mode == s.fail_mode
              and config.protocols == tuple(sorted(s.protocols))
              and config.controllers == wanted_ctl and config.disable_in_band)
        if ok:
            self._bridge_applied = targets
            return
        if targets == self._bridge_applied and self._drifted([("bridge-settings", s.name)]):
            return
        LOG.info("configuring bridge %s on chassis %s", s.name, self.remote)
        with api.transaction(check_error=True) as txn:
            if not config.exists:
                txn.add(api.add_br(s.name, may_exist=True, datapath_type=s.datapath_type))
            txn.add(api.db_set("Bridge", s.name,
                               ("datapath_type", s.datapath_type),
                               ("fail_mode", s.fail_mode),
                               ("protocols", list(s.protocols)),
                               ("other_config", {"disable-in-band": "true"})))
            if tuple(t for t, _ in config.controllers) != targets:
                txn.add(api.set_controller(s.name, list(targets)))
        self._bridge_applied = targets
        # The Controller rows exist only after the transaction above.
        with api.transaction(check_error=True) as txn:
            for target in targets:
                for row in api.db_find("Controller", ("target", "=", target)).execute(
                        check_error=True):
                    txn.add(api.db_set("Controller", row["_uuid"],
                                       ("max_backoff", CONTROLLER_MAX_BACKOFF_MS),
                                       ("inactivity_probe", CONTROLLER_INACTIVITY_PROBE_MS)))
