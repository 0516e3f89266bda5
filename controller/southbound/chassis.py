"""One OVSDB session per chassis, through ovsdbapp: watch it, and keep its bridge right.

The chassis' Open_vSwitch database is read into a frozen `ChassisState` after every
change the IDL sees (bridges, datapath ids, interfaces with iface-id), which feeds
the topology. The integration bridge's settings are corrected only where they
differ from what Loom wants: rewriting an unchanged Controller row would make
ovs-vswitchd drop and re-open its OpenFlow session on every controller restart.
"""

from __future__ import annotations

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
from controller.store.ovs_idl import FastRowUpdate
from controller.topology import BridgeState, ChassisState, InterfaceState

LOG = logging.getLogger(__name__)

REMOTE_CHASSIS_KEY = "loom-remote-chassis"
PHYSNET_KEY = "loom-physnet"
QOS_OWNER_KEY = "loom-owner"  # on QoS rows Loom made
BRIDGE_MAPPINGS_KEY = "loom-bridge-mappings"  # like ovn-bridge-mappings: physnet1:br-phys,...
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
    _seen_seqno = -1

    def cooperative_yield(self) -> None:
        """Nothing. ovsdbapp sleeps 0 s after every row of an update so that eventlet
        green threads get a turn; this session is an OS thread (Loom does not
        monkey-patch), for which that only gave the GIL away once per row: 4,000
        times in a 1,000-port chassis' first read, each a wait for the GIL back
        whenever another thread was busy."""

    def run(self) -> Any:
        result = super().run()
        if self.change_seqno != self._seen_seqno:
            self._seen_seqno = self.change_seqno
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


def _interface_state(iface: Any) -> tuple[InterfaceState, Optional[str]]:
    """One Interface row as an InterfaceState (and its options:tos if it is one of our
    tunnels), kept on the row until one of the columns read changes.

    Every change on the chassis reads the whole state again; converting every column
    of every interface through python-ovs' attribute access cost about 0.25 ms per
    interface (0.5 s per guest plugged in at 2,000 interfaces). The IDL replaces a
    column's datum when it changes, so the datums, compared by identity, say whether
    what was derived from them still holds."""
    data = iface._data
    datums = tuple(data.get(c) for c in _IFACE_COLUMNS)
    cached = iface.__dict__.get("_loom_state")
    if cached is not None and len(cached[0]) == len(datums) \
            and all(a is b for a, b in zip(cached[0], datums, strict=True)):
        return cached[1], cached[2]
    ofport = _single(iface.ofport)
    ext_ids = dict(iface.external_ids)
    options = dict(iface.options)
    state = InterfaceState(
        name=iface.name,
        ofport=int(ofport) if ofport is not None else None,
        iface_id=ext_ids.get("iface-id"),
        type=iface.type,
        remote_ip=options.get("remote_ip"),
        remote_chassis=ext_ids.get(REMOTE_CHASSIS_KEY),
        physnet=ext_ids.get(PHYSNET_KEY),
    )
    tunnel_tos = options.get("tos", "") if REMOTE_CHASSIS_KEY in ext_ids else None
    iface.__dict__["_loom_state"] = (datums, state, tunnel_tos)
    return state, tunnel_tos


def read_state(idl: connection.OvsdbIdl, remote: str, bridge_name: str
               ) -> tuple[ChassisState, _BridgeConfig]:
    """Turn the IDL's tables into a frozen ChassisState (runs in the IDL thread)."""
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
                if dict(qos.external_ids).get(QOS_OWNER_KEY) != "loom":
                    foreign.add(port.name)
                    continue
                queues = tuple(sorted(
                    (int(qid), _rate(q.other_config, "min-rate"), _rate(q.other_config, "max-rate"))
                    for qid, q in dict(qos.queues).items() if int(qid) != 0))
                shaping.append((port.name, (_rate(qos.other_config, "max-rate"), queues)))
        bridges.append(BridgeState(
            name=br.name,
            datapath_id=int(dpid_text, 16) if dpid_text else None,
            interfaces=tuple(sorted(interfaces, key=lambda i: i.name)),
        ))
        if br.name == bridge_name:
            links = tuple(sorted((ControllerLink(
                chassis=name, bridge=br.name,
                datapath_id=int(dpid_text, 16) if dpid_text else None,
                target=c.target, is_connected=bool(c.is_connected),
                state=dict(c.status).get("state"),
                last_error=dict(c.status).get("last_error")) for c in br.controller),
                key=lambda link: link.target))
            ours = frozenset(
                (i.name, i.type, i.remote_chassis, i.remote_ip or "", tos.get(i.name, ""))
                for i in interfaces if i.remote_chassis)
            config = _BridgeConfig(
                tunnels=ours,
                exists=True,
                datapath_type=br.datapath_type,
                fail_mode=_single(br.fail_mode) or "",
                protocols=tuple(sorted(br.protocols)),
                controllers=tuple(sorted(
                    (c.target, _single(c.max_backoff)) for c in br.controller)),
                disable_in_band=dict(br.other_config).get("disable-in-band") == "true",
                controller_links=links,
            )
    state = ChassisState(
        name=name, remote=remote, connected=idl._session.is_connected(),
        encap_ip=ext.get("loom-encap-ip"),
        bridges=tuple(sorted(bridges, key=lambda b: b.name)),
        bridge_mappings=parse_bridge_mappings(ext.get(BRIDGE_MAPPINGS_KEY, "")),
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


def schema_helper(remote: str) -> Any:
    """The Open_vSwitch schema from the chassis' server, every table and column
    registered except `UNWATCHED_COLUMNS` (what `OvsdbIdl.from_server` does, minus
    those)."""
    helper = idlutils.get_schema_helper(remote, "Open_vSwitch")
    for name, table in helper.schema_json["tables"].items():
        skip = UNWATCHED_COLUMNS.get(name, frozenset())
        columns = [c for c in table["columns"] if c not in skip]
        if len(columns) == len(table["columns"]):
            helper.register_table(name)
        else:
            helper.register_columns(name, columns)
    return helper


def _orphan_qos(idl: connection.OvsdbIdl) -> tuple[tuple[str, Any], ...]:
    """Loom's QoS rows no port refers to, and Loom's Queue rows no QoS row refers to.

    QoS and Queue are root tables: OVSDB keeps them when the Port that used them is
    deleted (a VM moved or deleted), so Loom removes its own leftovers itself.
    """
    def ours(row: Any) -> bool:
        return dict(row.external_ids).get(QOS_OWNER_KEY) == "loom"

    qos_rows = list(idl.tables["QoS"].rows.values())
    used_qos = {q.uuid for p in idl.tables["Port"].rows.values()
                for q in ([_single(p.qos)] if _single(p.qos) is not None else [])}
    live_qos = [q for q in qos_rows if q.uuid in used_qos or not ours(q)]
    used_queues = {queue.uuid for q in live_qos for queue in dict(q.queues).values()}
    orphans = [("QoS", q.uuid) for q in qos_rows if ours(q) and q.uuid not in used_qos]
    orphans += [("Queue", q.uuid) for q in idl.tables["Queue"].rows.values()
                if ours(q) and q.uuid not in used_queues]
    return tuple(sorted(orphans, key=lambda o: (o[0], str(o[1]))))


class ChassisSession:
    """Keeps one chassis watched and its integration bridge configured."""

    _count = 0

    def __init__(self, remote: str, settings: BridgeSettings,
                 on_state: Callable[[ChassisState], None], timeout: float = 10.0) -> None:
        self.remote = remote
        self.settings = settings
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
        idl.on_change = self._changed
        conn = connection.Connection(idl=idl, timeout=self._timeout)
        return api_cls(conn)

    def _changed(self, idl: connection.OvsdbIdl) -> None:
        started = time.perf_counter()
        state, config = read_state(idl, self.remote, self.settings.name)
        LOG.debug("chassis %s: read %d interfaces in %.3f s", self.remote,
                  sum(len(b.interfaces) for b in state.bridges), time.perf_counter() - started)
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
            if state.connected:
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
            return
        api = self._api
        assert api is not None
        existing = {name for (name, *_rest) in config.tunnels}
        stale = existing - {t.name for t in wanted}
        changed = [t for t in sorted(wanted) if _tunnel_row(t) not in config.tunnels]
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
        wanted_ctl = ((s.controller_target, CONTROLLER_MAX_BACKOFF_MS),)
        ok = (config.exists and config.datapath_type == s.datapath_type
              and config.fail_mode == s.fail_mode
              and config.protocols == tuple(sorted(s.protocols))
              and config.controllers == wanted_ctl and config.disable_in_band)
        if ok:
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
            if tuple(t for t, _ in config.controllers) != (s.controller_target,):
                txn.add(api.set_controller(s.name, [s.controller_target]))
        # The Controller row exists only after the transaction above.
        with api.transaction(check_error=True) as txn:
            for row in api.db_find("Controller", ("target", "=", s.controller_target)).execute(
                    check_error=True):
                txn.add(api.db_set("Controller", row["_uuid"],
                                   ("max_backoff", CONTROLLER_MAX_BACKOFF_MS),
                                   ("inactivity_probe", CONTROLLER_INACTIVITY_PROBE_MS)))
