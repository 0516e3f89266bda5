"""Start Loom: check every input first, then bring the parts up in dependency order.

Anything that can be wrong (a flag, a busy port, an unreachable database, a bad
tokens file) is found before os-ken starts, and reported in one line with a
non-zero exit, because os-ken's own failures happen in background threads and
would otherwise leave a half-started process that looks alive.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional

LOG = logging.getLogger("loom")

EXIT_USAGE = 2
EXIT_STARTUP = 1
# The collector stays off after a start until the switches are synced, this long at most
STARTUP_GC_PAUSE_MAX_S = 120.0


class StartupError(Exception):
    """A reason not to start, printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"loom: {message}\n")
        raise SystemExit(EXIT_USAGE)


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise argparse.ArgumentTypeError(f"expected an IP address in {text!r}") from None
    return host, int(port)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def ovsdb_remote(text: str) -> str:
    if not (text.startswith(("unix:", "tcp:", "ssl:"))):
        raise argparse.ArgumentTypeError(
            f"expected an OVSDB remote (unix:PATH, tcp:IP:PORT), got {text!r}")
    return text


def ovsdb_remotes(text: str) -> str:
    """One OVSDB remote, or the members of a clustered database separated by commas
    (`tcp:10.0.0.1:6641,tcp:10.0.0.2:6641,tcp:10.0.0.3:6641`): python-ovs connects to
    them in turn and stays with the cluster's leader."""
    members = text.split(",")
    for member in members:
        ovsdb_remote(member)
    if len(set(members)) != len(members):
        raise argparse.ArgumentTypeError(f"a member is listed twice in {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="loom", description="Loom SDN controller for multi-tenant OVS networks")
    p.add_argument("--state-dir", default="./state", type=Path,
                   help="where the embedded northbound database and logs live")
    p.add_argument("--rest-listen", default=("127.0.0.1", 9696), type=host_port,
                   metavar="HOST:PORT", help="northbound REST API (default 127.0.0.1:9696)")
    p.add_argument("--rest-max-connections", type=positive_int, default=None, metavar="N",
                   help="REST connections held at once; past it the least recently active "
                        "idle one makes room (default 4096)")
    p.add_argument("--rest-max-per-peer", type=positive_int, default=None, metavar="N",
                   help="REST connections one client address (IPv6: /64) may hold "
                        "(default 64; raise it behind a proxy or NAT)")
    p.add_argument("--of-listen", default=("0.0.0.0", 6653), type=host_port,
                   metavar="HOST:PORT", help="OpenFlow listener (default 0.0.0.0:6653)")
    p.add_argument("--of-target", default=None,
                   help="controller target written into each chassis' bridge "
                        "(default tcp:127.0.0.1:<of-listen port>)")
    p.add_argument("--nb-db", type=ovsdb_remotes, default=None, metavar="REMOTE[,REMOTE...]",
                   help="use this northbound OVSDB server instead of an embedded one; "
                        "several, comma-separated, for the members of a clustered one "
                        "(docs/HA.md)")
    p.add_argument("--instance-name", default=None, metavar="NAME",
                   help="share the northbound and the switches with other controller "
                        "instances (docs/HA.md): a name unique among them, the same across "
                        "this instance's restarts; without it this controller assumes it "
                        "is alone")
    p.add_argument("--drift", choices=["repair", "report"], default="repair",
                   help="a switch's flows (or a chassis' OVSDB) changed behind Loom's back: "
                        "put the desired state back (default) or only report it "
                        "(GET /v1/verify)")
    p.add_argument("--chassis", type=ovsdb_remote, action="append", default=[],
                   metavar="REMOTE", help="a chassis' OVSDB remote (repeatable)")
    p.add_argument("--integration-bridge", default="br-int")
    p.add_argument("--datapath-type", default="netdev", choices=["netdev", "system"])
    p.add_argument("--auth-tokens", type=Path, default=None, metavar="FILE",
                   help="YAML/JSON map of token -> {project_id, role}")
    p.add_argument("--no-fast-failover", action="store_true",
                   help="fabric: plain next hops without watched buckets (for comparison)")
    p.add_argument("--dhcp-lease-time", type=positive_int, default=None, metavar="SECONDS",
                   help="lease time Loom's DHCP gives guests (they renew at half of it); "
                        "default 43200 (controller/dhcp.py)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


@dataclass
class Options:
    state_dir: Path
    rest_listen: tuple[str, int]
    rest_max_connections: Optional[int]
    rest_max_per_peer: Optional[int]
    of_listen: tuple[str, int]
    of_target: Optional[str]
    nb_db: Optional[str]
    chassis: list[str]
    integration_bridge: str
    datapath_type: str
    auth_tokens: Optional[Path]
    no_fast_failover: bool
    log_level: str
    dhcp_lease_time: Optional[int] = None
    instance_name: Optional[str] = None
    drift: str = "repair"


def check_port_free(host: str, port: int, what: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StartupError(f"{what} {host}:{port} unavailable: {exc.strerror}") from None


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


class Controller:
    """The running process' parts, so shutdown can stop them in reverse order."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._stops: list[Callable[[], Any]] = []
        self._stopped = threading.Event()
        self.engine: Optional[Any] = None
        self.openflow: Optional[threading.Thread] = None  # os-ken, started first

    def start(self) -> None:
        """Bring the parts up, with the cyclic garbage collector paused meanwhile.

        The first load of the store makes millions of objects that live as long as
        the process (the IDL's replica, the snapshot), and no garbage: collections
        over that ever larger heap were a third of a 10,000-port start (1.6 of
        4.8 s, issue 11). The collector stays off until the switches are synced
        (`Engine.wait_first_sync`, STARTUP_GC_PAUSE_MAX_S at most); then what exists
        is frozen (`gc.freeze`: left out of every later collection, which then scans
        only what came after) and it runs again.
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._start()
        except BaseException:
            if was_enabled:
                gc.enable()
            raise
        if not was_enabled:
            gc.freeze()
            return
        # ...and on until the switches are synced: the chassis' first reads (the IDL's
        # replica of thousands of interfaces), the switches' flow tables read back and
        # the first full compile all make objects that live on, by the million with
        # 100,000 flows, with the same collections over an ever larger heap.
        threading.Thread(target=self._resume_gc, name="gc after start", daemon=True).start()

    def _resume_gc(self) -> None:
        engine = self.engine
        started = time.monotonic()
        synced = engine is not None and engine.wait_first_sync(STARTUP_GC_PAUSE_MAX_S)
        gc.freeze()
        gc.enable()
        LOG.debug("garbage collector back on %.1f s after the start%s",
                  time.monotonic() - started, "" if synced else " (switches not synced yet)")

    def _start(self) -> None:
        from controller.engine import Engine
        from controller.intent import Intent
        from controller.rest.app import make_app
        from controller.rest.auth import TokenAuth
        from controller.rest.server import serve
        from controller.southbound.chassis import BridgeSettings
        from controller.southbound.registry import ChassisRegistry
        from controller.store import EmbeddedOvsdb, NorthboundStore
        from controller.topology import Topology

        o = self.opts
        auth = None
        if o.auth_tokens is not None:
            try:
                auth = TokenAuth.load(o.auth_tokens)
            except Exception as exc:
                raise StartupError(f"--auth-tokens {o.auth_tokens}: {exc}") from None
        elif not is_loopback(o.rest_listen[0]):
            raise StartupError(
                f"refusing to serve the API on {o.rest_listen[0]} without --auth-tokens")
        check_port_free(*o.rest_listen, "REST listen address")
        check_port_free(*o.of_listen, "OpenFlow listen address")
        try:
            o.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"--state-dir {o.state_dir}: {exc.strerror}") from None

        # The OpenFlow side first: a switch that reconnects is read while the store
        # loads (EarlyOpenFlow), and its connection attempts find a listener at once.
        early = EarlyOpenFlow()
        self.openflow = start_openflow(early, *o.of_listen)

        # The chassis named by --chassis are read while the embedded database starts
        # and the store loads: after a restart each takes seconds (thousands of
        # interfaces), much of it the chassis' ovsdb-server sending them, and the
        # engine waits for both.
        topology = Topology(o.integration_bridge)
        target = o.of_target or f"tcp:127.0.0.1:{o.of_listen[1]}"
        settings = BridgeSettings(name=o.integration_bridge, datapath_type=o.datapath_type,
                                  controller_target=target)
        kick = _Kick()
        registry = ChassisRegistry(o.chassis, settings, topology, kick)
        if o.instance_name:  # nothing written to a chassis before its owner is known
            registry.may_write = lambda remote: False
        registry.sync(Intent())  # (the static ones; the store's come with the engine)

        remote = o.nb_db
        supervisor = None
        started = time.monotonic()
        if remote is None:
            embedded = EmbeddedOvsdb(o.state_dir)
            try:
                embedded.start()
            except Exception as exc:
                registry.stop()
                raise StartupError(f"embedded northbound database: {exc}") from None
            self._stops.append(embedded.stop)
            supervisor = embedded.watch()  # restarts it if it dies; health says how it went
            self._stops.append(supervisor.stop)
            remote = embedded.remote
            LOG.debug("embedded northbound database up in %.2f s", time.monotonic() - started)

        store = NorthboundStore(remote, server=supervisor)
        started = time.monotonic()
        try:
            # 5 s to reach the server; once connected, as long as the first load takes
            # (with progress in the log), failing only if nothing moves for a minute.
            store.connect(timeout=5.0)
        except Exception as exc:
            registry.stop()
            raise StartupError(f"northbound database {remote}: {exc}") from None
        self._stops.append(store.stop)
        LOG.info("northbound store loaded in %.2f s: generation %d, %d ports",
                 time.monotonic() - started, store.latest().generation,
                 len(store.latest().ports))

        started = time.monotonic()
        engine = Engine(store, topology, registry, fast_failover=not o.no_fast_failover,
                        dhcp_lease_seconds=o.dhcp_lease_time)
        kick.target = engine.kick
        engine.drift_mode = o.drift
        registry.drift_mode = lambda: o.drift
        store.subscribe(engine.kick)
        if o.instance_name:
            from controller.ownership import Ownership

            ownership = Ownership(
                store, o.instance_name, target, "http://{}:{}".format(*o.rest_listen),
                keys=engine.ownership_keys, on_change=engine.ownership_changed,
                on_view=engine.notify_synced)
            engine.ownership = ownership
            registry.may_write = engine.owns_chassis
            registry.targets = ownership.of_targets
            try:
                ownership.start()
            except Exception as exc:
                registry.stop()
                raise StartupError(f"registering instance {o.instance_name}: {exc}") from None
            self._stops.append(ownership.stop)
        engine.start()
        early.attach(engine)  # the switches connected meanwhile, each with its read
        engine.kick()  # a chassis read before the engine was there kicked no one
        self._stops.append(engine.stop)
        self._stops.append(registry.stop)

        from controller.explain import Tracer

        app = make_app(store, engine, auth, tracer=Tracer(
            store, topology, dhcp_lease_seconds=o.dhcp_lease_time))
        if auth is None:
            LOG.warning("no --auth-tokens: authentication is OFF, API on loopback only")
        server = serve(_with_metrics(app), *o.rest_listen, policy=_connection_policy(o))
        self._stops.append(server.close)
        LOG.debug("engine and REST API started in %.2f s", time.monotonic() - started)
        LOG.info("REST API on http://%s:%d, OpenFlow on %s:%d", *o.rest_listen, *o.of_listen)
        self.engine = engine

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception:
                LOG.debug("stop %s", stop, exc_info=True)


def _connection_policy(o: Options) -> Any:
    """The REST server's connection caps: limits.py's defaults unless a flag says more."""
    from controller.rest.server import ConnectionPolicy

    defaults = ConnectionPolicy()
    return ConnectionPolicy(
        max_connections=o.rest_max_connections or defaults.max_connections,
        max_per_peer=o.rest_max_per_peer or defaults.max_per_peer,
    )


def _raise_open_files() -> None:
    """Before anything opens a socket: the usual soft limit (1024) is less than the REST
    server's connection cap alone; raised towards the hard limit (see limits.py)."""
    from controller.rest.server import raise_nofile_limit

    LOG.debug("open files limit: %d", raise_nofile_limit())


class EarlyOpenFlow:
    """The OpenFlow app's engine until the real one exists (`attach`).

    The OpenFlow side starts before the store loads, so that a switch reconnecting
    after a restart is read (`SwitchSync.read_installed`: seconds at 100,000 flows)
    while the store and the chassis load, not after them (issue 11). Meanwhile the
    switches' arrivals, departures and port changes are kept, to be handed to the
    engine, each connected switch's read with it; from `attach` on every call goes
    to the engine (the app itself then calls the engine directly)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Optional[Any] = None
        self._ports: dict[int, dict[int, tuple[str, bool]]] = {}
        self._channels: dict[int, Any] = {}
        self._reads: dict[int, Callable[[], Any]] = {}

    def bind_app(self) -> None:
        """Make the OpenFlow app call this object, or the engine if already attached.

        The OpenFlow thread binds the app through this, under the lock `attach`
        binds it under: bound unconditionally in that thread, as 01f4f6f did, the
        binding raced `attach`. With an empty store the engine was attached a few
        milliseconds before the thread (importing os-ken meanwhile) got there, and
        the thread then bound the app back to this object for good: the discovery
        hooks this object lacked (`discovery_tick`, `probe_sent`, `urgent_probes`,
        `lldp_suspects`, `port_counters`) fell back to the app's no-op defaults, no
        fabric switch ever settled, none was given a state (test_fabric's pingall
        failed within networks, 726c1a7)."""
        import apps.loom_ofp

        with self._lock:
            apps.loom_ofp.ENGINE = self if self._engine is None else self._engine

    def attach(self, engine: Any) -> None:
        """Hand what happened so far to `engine`, and everything after."""
        import apps.loom_ofp

        with self._lock:
            self._engine = engine
            for dpid, ports in sorted(self._ports.items()):
                engine.of_switch_up(dpid, ports)
            for dpid, channel in sorted(self._channels.items()):
                if not channel.closed.is_set():
                    engine.switch_connected(channel, self._reads.get(dpid))
            self._ports.clear()
            self._channels.clear()
            self._reads.clear()
            apps.loom_ofp.ENGINE = engine

    def __getattr__(self, name: str) -> Any:
        """Any other of the engine's methods the app looks up (its discovery hooks):
        absent until `attach`, so that the app uses its defaults; the engine's after,
        so that a caller still holding this object reaches the engine all the same."""
        engine = self.__dict__.get("_engine")
        if engine is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(engine, name)

    def _read(self, channel: Any) -> Callable[[], Any]:
        """Start reading what the switch holds; returns a wait for the read."""
        from concurrent.futures import Future

        from controller.reconciler import SwitchSync

        done: Future = Future()

        def read() -> None:
            started = time.monotonic()
            try:
                sync = SwitchSync(channel)
                sync.read_installed()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                LOG.debug("switch %#x read before the engine started, in %.2f s",
                          channel.datapath_id, time.monotonic() - started)
                done.set_result(sync)

        threading.Thread(target=read, daemon=True,
                         name=f"early read {channel.datapath_id:#x}").start()
        return done.result

    # ---- the engine's calls from the OpenFlow app (os-ken's event thread)
    def of_switch_up(self, datapath_id: int, ports: dict[int, tuple[str, bool]]) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.of_switch_up(datapath_id, ports)
            else:
                self._ports[datapath_id] = dict(ports)

    def switch_connected(self, channel: Any) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.switch_connected(channel)
            else:
                self._channels[channel.datapath_id] = channel
                self._reads[channel.datapath_id] = self._read(channel)

    def switch_disconnected(self, channel: Any) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.switch_disconnected(channel)
                return
            dpid = channel.datapath_id
            if self._channels.get(dpid) is channel:
                del self._channels[dpid]
                self._reads.pop(dpid, None)

    def of_switch_down(self, datapath_id: int) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.of_switch_down(datapath_id)
            else:
                self._ports.pop(datapath_id, None)

    def of_port(self, datapath_id: int, port_no: int, name: str, up: Optional[bool]) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.of_port(datapath_id, port_no, name, up)
                return
            ports = self._ports.get(datapath_id)
            if ports is None:
                return
            if up is None:
                ports.pop(port_no, None)
            else:
                ports[port_no] = (name, up)

    def lldp_in(self, datapath_id: int, in_port: int, data: bytes) -> bool:
        engine = self._engine
        return True if engine is None else bool(engine.lldp_in(datapath_id, in_port, data))

    def probe_targets(self) -> list[tuple[int, int]]:
        engine = self._engine
        return [] if engine is None else list(engine.probe_targets())


class _Kick:
    """Late-bound engine.kick: the registry exists before the engine it wakes."""

    target: Optional[Callable[[], None]] = None

    def __call__(self) -> None:
        if self.target is not None:
            self.target()


def _with_metrics(app: Callable) -> Callable:
    """Serve Prometheus metrics at /metrics beside the API."""
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app()

    def dispatch(environ: dict, start_response: Callable) -> Any:
        if environ.get("PATH_INFO") == "/metrics":
            return metrics(environ, start_response)
        return app(environ, start_response)

    return dispatch


def start_openflow(early: EarlyOpenFlow, host: str, port: int) -> threading.Thread:
    """Start os-ken's apps in a thread of their own, before the store loads."""
    thread = threading.Thread(target=run_openflow, args=(early, host, port),
                              name="openflow", daemon=True)
    thread.start()
    return thread


def run_openflow(early: EarlyOpenFlow, host: str, port: int) -> None:
    """Run os-ken's apps, blocking for the life of the process. The app is bound to
    `early` (or to the engine, if attached meanwhile: `EarlyOpenFlow.bind_app`)
    before os-ken runs any of its handlers."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from controller.ofwire import oskenfast

    early.bind_app()  # (imports the app, whose os-ken modules declare the options below)
    oskenfast.install_raw_multipart_parsers()
    cfg.CONF(args=[], project="os_ken")
    cfg.CONF.set_override("ofp_listen_host", host)
    cfg.CONF.set_override("ofp_tcp_listen_port", port)
    AppManager.run_apps(["apps.loom_ofp"])


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["nb-cluster"]:  # the clustered northbound's own command
        from controller.store import nb_cluster

        return nb_cluster.main(args[1:])
    ns = build_parser().parse_args(argv)
    opts = Options(**vars(ns))
    logging.basicConfig(
        level=getattr(logging, opts.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("os_ken.controller.controller", "os_ken.base.app_manager",
                  "ovsdbapp.backend.ovs_idl.vlog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _raise_open_files()
    ctl = Controller(opts)
    try:
        ctl.start()
    except StartupError as exc:
        sys.stderr.write(f"loom: {exc}\n")
        ctl.stop()
        return EXIT_STARTUP

    def on_signal(signum: int, _frame: Any) -> None:
        # Flows stay on the switches (fail_mode=secure): stopping never disturbs traffic.
        LOG.info("signal %d: shutting down, flows stay installed", signum)
        ctl.stop()
        logging.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    openflow = ctl.openflow
    assert openflow is not None
    while openflow.is_alive():  # os-ken runs for the life of the process
        openflow.join(timeout=3600)
    LOG.error("the OpenFlow side stopped; exiting")
    ctl.stop()
    return EXIT_STARTUP
