"""Run a Mininet fabric (topologies.mininet_topos) on a private OVS, with or without Loom.

    python -m topologies.fabric run fattree 4                      # standalone + RSTP
    python -m topologies.fabric run leafspine 2 3 2 --start-controller --pingall
    python -m topologies.fabric run linear n=3 hosts_per_switch=2 --controller tcp:127.0.0.1:6653
    python -m topologies.fabric list

What it does (see docs/FABRIC.md):

- starts a PRIVATE ovsdb-server + ovs-vswitchd (userspace datapath) in the root
  namespace, where Mininet puts its switches' interfaces, and points Mininet's own
  ``ovs-vsctl``/``ovs-ofctl`` calls at it through ``OVS_RUNDIR`` (+ DBDIR, LOGDIR,
  SYSCONFDIR) in ``os.environ`` for the run: Mininet's node shells inherit them, so
  ``ovs-vsctl`` finds ``$OVS_RUNDIR/db.sock`` and ``ovs-ofctl show s1`` finds
  ``$OVS_RUNDIR/s1.mgmt``. The system's OVS (/var/run/openvswitch) is never used;
  Mininet calls nothing else of OVS (no ovs-appctl, no ovs-dpctl);
- builds the network through Mininet's Python API: ``OVSSwitch`` with
  ``datapath='user'`` (datapath_type=netdev), OpenFlow13, explicit dpids, veth links,
  checksum/segmentation offloads off on every interface (TCP hangs on the userspace
  datapath otherwise), IPv6 and ARP replies off on the switch-side veths (they are
  ordinary root-namespace interfaces: the kernel would otherwise send router
  solicitations into the fabric and answer ARP for the machine's own addresses);
- controller mode: ``failMode='secure'`` and a ``RemoteController`` at Loom (given, or
  a `ControllerProcess` it starts); `bind_hosts` then creates networks, subnets and
  one port per host interface through Loom's REST API (binding:profile
  local_link_information, and ``external_ids:iface-id`` on the switch port);
- standalone mode (no controller): ``failMode='standalone'`` (OVS NORMAL learning)
  and RSTP on every bridge when the topology has loops, its timers derived from the
  switch graph (`topologies.graphtopo.rstp_timers`: a fixed Max Age of 6 never
  converges on a network 7 hops deep);
- the kernel's neighbour table limits (shared by every namespace on the machine) are
  raised for the run and restored after it (`topologies.neigh`), and the entries the
  kernel refused meanwhile are counted: `Fabric.neigh_report()`;
- the topology is a built-in one (`topologies.mininet_topos`), a graph file (GraphML
  or networkx node-link JSON: `topologies.graphtopo`) or a ``mn --custom`` file;
- cleanup scoped to what it made: ``net.stop()``, then the private OVS, then anything
  of its own still left (recorded in a `Sandbox`, so a SIGKILLed run is swept by the
  next one), then it checks that nothing of its own is left. ``mn -c`` is never used:
  it deletes every OVS bridge and kills every controller on the machine.

Interface names (``s1``, ``s1-eth1``...) live in the root namespace, so one fabric
runs per machine at a time (a lock under /run/loom-sandbox); a name that already
exists makes the run refuse to start instead of deleting what is there.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from mininet.link import Intf, Link
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host, OVSSwitch, RemoteController

from topologies import netns as nsutil
from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.graphtopo import GraphError, RstpTimers, graph_topo, rstp_timers
from topologies.mininet_topos import TOPOLOGIES, FabricTopo, custom_topo, host_mac, make_topo
from topologies.neigh import NeighLimits, Overflows, overflows, wanted_limits
from topologies.netns import STATE_DIR, Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

OVS_ENV_KEYS = ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR")
SYSTEM_OVS_RUNDIR = Path("/var/run/openvswitch")
LOCK_PATH = STATE_DIR / "fabric.lock"
# Loom-mode addressing: every network gets the same CIDRs (one per interface plane), so
# hosts of different networks share a subnet and only Loom's isolation keeps them apart.
LOOM_SUBNETS = ("10.10.0.0/16", "10.11.0.0/16")
FIRST_VLAN = 101
ZOO_DIR = Path(__file__).resolve().parent / "zoo"
GRAPH_SUFFIXES = (".graphml", ".xml", ".json")
# RSTP for standalone runs: timers from the switch graph (`rstp_timers`: Max Age covers
# the tree's depth, Forward Delay as short as 802.1D allows with it; OVS's RSTP keeps a
# 2 s hello time whatever other_config says). The topology's preferred root (first
# core/spine, a graph's centre) gets the best priority, so the tree is deterministic.
RSTP_ROOT_PRIORITY, RSTP_BACKUP_PRIORITY = 4096, 8192
# OVS applies Max Age before Forward Delay and refuses a Max Age above
# 2 x (Forward Delay - 1) with the Forward Delay it has then (15 s on a new bridge).
# And a bridge keeps the times it recorded from the root until the root's information
# becomes superior: raising the root's Max Age alone reaches nobody.
OVS_FIRST_PASS_MAX_AGE = 28


def rstp_bridge_opts(timers: RstpTimers) -> str:
    """``ovs-vsctl`` bridge options enabling RSTP with `timers` (a Max Age above 28 is
    set to 28 here and raised once the bridge exists: see `Fabric._apply_rstp_max_age`)."""
    return (f"rstp_enable=true other_config:rstp-forward-delay={timers.forward_delay} "
            f"other_config:rstp-max-age={min(timers.max_age, OVS_FIRST_PASS_MAX_AGE)}")


# Run inside each host by `Fabric.pingall`: COUNT TIMEOUT INTERVAL GAP IP...; prints
# "PING <ip> <replies>" per target. Raw ICMP socket, one echo id per process.
PINGER = """\
import os, select, socket, struct, sys, time
count, timeout, interval, gap = (int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                                 float(sys.argv[4]))
targets = sys.argv[5:]
index = {ip: i for i, ip in enumerate(targets)}
ident = os.getpid() & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
got = [set() for _ in targets]
payload = b"loom-fabric-pingall"

def checksum(data):
    data += b"\\0" * (len(data) % 2)
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

def receive(until):
    while time.monotonic() < until and not all(len(g) == count for g in got):
        ready, _, _ = select.select([sock], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            continue
        data, (src, _) = sock.recvfrom(4096)
        ihl = (data[0] & 0x0F) * 4
        kind, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == 0 and rid == ident and src in index and seq % len(targets) == index[src]:
            got[index[src]].add(seq // len(targets))

for n in range(count):
    for i, ip in enumerate(targets):
        seq = (n * len(targets) + i) & 0xFFFF
        head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload
        try:
            sock.sendto(packet, (ip, 0))
        except OSError:
            pass  # e.g. EHOSTUNREACH after a failed ARP: counted as lost
        receive(time.monotonic() + gap)  # pace: no burst of a request per target at once
    receive(time.monotonic() + (interval if n < count - 1 else timeout))
for i, ip in enumerate(targets):
    print("PING", ip, len(got[i]))
"""


class FabricError(RuntimeError):
    pass


class FabricLink(NamedTuple):
    """One inter-switch link; ``(switch, port, ofport, peer, peer_port, peer_ofport)``."""

    switch: str
    port: str
    ofport: int
    peer: str
    peer_port: str
    peer_ofport: int

    def reversed(self) -> FabricLink:
        return FabricLink(self.peer, self.peer_port, self.peer_ofport,
                          self.switch, self.port, self.ofport)


# -- Mininet node and interface classes ----------------------------------------------

def _quiet_root_interface(name: str) -> None:
    """A switch-side veth is a plain root-namespace interface: keep the kernel quiet on it.

    No IPv6 (no link-local address, router solicitations or MLD reports into the
    fabric) and no ARP replies (arp_ignore=8), and offloads off.
    """
    for path, value in ((f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1"),
                        (f"/proc/sys/net/ipv4/conf/{name}/arp_ignore", "8")):
        with contextlib.suppress(FileNotFoundError):
            Path(path).write_text(value)
    nsutil.disable_offloads(name)


class FabricIntf(Intf):
    """A Mininet interface with offloads off; root-namespace ends also quietened.

    Runs before Mininet brings the interface up (Intf.config's ``up``)."""

    def config(self, **params: Any) -> Any:  # type: ignore[override]
        if self.node is not None and self.node.inNamespace:
            features = " ".join(f"{f} off" for f in nsutil.OFFLOAD_FEATURES)
            self.node.cmd(f"ethtool -K {self.name} {features} >/dev/null 2>&1")
            out = self.node.cmd(f"ethtool -k {self.name} | grep '^tx-checksumming:'")
            if "off" not in out:
                raise FabricError(f"{self.node.name}: tx checksumming still on for {self.name}")
        else:
            _quiet_root_interface(self.name)
        return super().config(**params)


class FabricHost(Host):
    """A Mininet host that reports its shell (pid) as soon as it exists."""

    def __init__(self, name: str, on_shell: Any = None, **params: Any) -> None:
        self._on_shell = on_shell
        super().__init__(name, **params)

    def startShell(self, mnopts: Any = None) -> None:  # noqa: N802 (Mininet's name)
        super().startShell(mnopts)
        if self._on_shell is not None:
            self._on_shell(self)

    def config(self, **params: Any) -> Any:  # type: ignore[override]
        r = super().config(**params)
        # Dual-homed hosts: answer ARP only on the interface owning the address.
        self.cmd("sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")
        return r


class FabricSwitch(OVSSwitch):
    """OVSSwitch on the userspace datapath; RSTP (fast timers) when asked, with
    host-facing ports declared edge ports so they forward at once."""

    def __init__(self, name: str, on_shell: Any = None, rstp: RstpTimers | None = None,
                 rstp_priorities: Mapping[str, int] | None = None, **params: Any) -> None:
        self._on_shell = on_shell
        self.rstp = rstp
        self.rstp_priority = (rstp_priorities or {}).get(name)
        super().__init__(name, **params)

    def startShell(self, mnopts: Any = None) -> None:  # noqa: N802 (Mininet's name)
        super().startShell(mnopts)
        if self._on_shell is not None:
            self._on_shell(self)

    def bridgeOpts(self) -> str:  # noqa: N802 (Mininet's name)
        opts = str(super().bridgeOpts())
        if self.rstp is not None:
            opts += " " + rstp_bridge_opts(self.rstp)
            if self.rstp_priority is not None:
                opts += f" other_config:rstp-priority={self.rstp_priority}"
        return opts

    def intfOpts(self, intf: Any) -> str:  # noqa: N802 (Mininet's name)
        opts = str(super().intfOpts(intf))
        link = getattr(intf, "link", None)
        if self.rstp is not None and link is not None:
            peer = link.intf2 if link.intf1 is intf else link.intf1
            if not isinstance(peer.node, OVSSwitch):
                opts += f" -- set Port {intf} other_config:rstp-port-admin-edge=true"
        return opts


# -- helpers -------------------------------------------------------------------------

def _root_links() -> dict[str, dict[str, Any]]:
    out = nsutil.run(["ip", "-j", "link", "show"]).stdout
    return {item["ifname"]: item for item in json.loads(out or "[]")}




def _netns_id(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _pids_in_netns(ns_ids: set[str]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _netns_id(int(entry.name)) in ns_ids:
            pids.append(int(entry.name))
    return pids


def parse_target(target: str) -> tuple[str, int]:
    """``tcp:IP:PORT`` -> (IP, PORT)."""
    m = re.fullmatch(r"tcp:([^:]+):(\d+)", target)
    if not m:
        raise ValueError(f"controller target must be tcp:IP:PORT, not {target!r}")
    return m.group(1), int(m.group(2))


@contextlib.contextmanager
def _machine_lock(timeout: float) -> Iterator[None]:
    """One fabric at a time: its interface names live in the root namespace."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FabricError(f"another fabric run holds {LOCK_PATH}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- the runner ----------------------------------------------------------------------

class Fabric:
    """A Mininet network on a private OVS; standalone (learning + RSTP) or under Loom.

    ``controller='tcp:IP:PORT'`` or ``start_controller=True`` -> controller mode
    (failMode secure); neither -> standalone. `stp`: RSTP on the bridges (default:
    standalone mode and the topology has loops). Use as a context manager, or
    start()/stop(); stop() raises FabricError if anything of the run is left.
    """

    def __init__(
        self,
        topo: FabricTopo,
        *,
        controller: str | None = None,
        start_controller: bool = False,
        stp: bool | None = None,
        lock_timeout: float = 120.0,
        log: TextIO | None = None,
        raise_neigh_limits: bool = True,
    ) -> None:
        if controller and start_controller:
            raise ValueError("give a controller address or start_controller, not both")
        self.topo = topo
        self.controller_target = controller
        self.start_controller = start_controller
        self.standalone = controller is None and not start_controller
        self.stp = (self.standalone and topo.has_loops) if stp is None else stp
        if self.stp and not self.standalone:
            raise ValueError("STP needs standalone switches (no controller)")
        self.rstp_root = topo.rstp_roots()[0] if self.stp and topo.rstp_roots() else None
        self.rstp_timers: RstpTimers | None = None
        if self.stp:
            try:
                self.rstp_timers = rstp_timers(topo.switch_graph(),
                                               self.rstp_root or next(iter(topo.tiers)))
            except GraphError as exc:
                raise FabricError(str(exc)) from None
        self.raise_neigh_limits = raise_neigh_limits
        self.neigh: NeighLimits | None = None
        self._overflows_at_start: Overflows | None = None
        self.lock_timeout = lock_timeout
        self.log = log
        self.net: Any = None  # mininet.net.Mininet once started
        self.ovs: OvsInstance | None = None
        self.sandbox: Sandbox | None = None
        self.ctl: ControllerProcess | None = None
        self.api: ApiClient | None = None
        self.timings: dict[str, float] = {}
        self.bindings: dict[str, dict[str, Any]] = {}  # host interface -> Loom port
        self.host_network: dict[str, str] = {}  # host -> Loom network name
        self._lock: contextlib.ExitStack | None = None
        self._saved_env: dict[str, str | None] | None = None
        self._names: list[str] = []  # root-namespace interfaces this run creates
        self._shells: dict[str, int] = {}  # node -> shell pid
        self._host_netns: set[str] = set()
        self._side: list[subprocess.Popen[bytes]] = []  # background helpers (iperf)
        self.pingall_rounds: list[int] = []  # wrong pairs per round of the last wait_pingall
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> Fabric:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(keep_logs=exc_type is not None)

    def start(self) -> Fabric:
        if os.geteuid() != 0:
            raise FabricError("the fabric needs root (namespaces, veths, OVS)")
        t0 = time.monotonic()
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(_machine_lock(self.lock_timeout))
        try:
            self._start()
        except BaseException:
            self.stop(keep_logs=True, check=False)
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _start(self) -> None:
        nsutil.sweep_stale()  # leftovers of dead runs (only theirs) free their names
        names = self._planned_names()
        present = sorted(set(names) & set(_root_links()))
        if present:
            raise FabricError(
                f"interfaces already exist in the root namespace: {', '.join(present[:10])}; "
                "another Mininet run (not this runner's) may be using these names"
            )
        self._names = names
        _raise_nofile_limit()
        self._overflows_at_start = overflows()
        if self.raise_neigh_limits:
            planes = max((len(v) for v in self.topo.host_links.values()), default=1)
            self.neigh = NeighLimits(wanted_limits(len(self.topo.host_links), planes))
            self.neigh.acquire()
            self._say(self.neigh.describe())
        self.sandbox = box = Sandbox()
        box.links.extend((name, None) for name in self._names)  # deleted only if present
        box._save()  # noqa: SLF001 (recorded before creation so a crash mid-build is swept)
        self.ovs = OvsInstance("fabric", netns=None, workdir=DEFAULT_BASE / f"{box.prefix}-fabric",
                               sandbox=box, system_id="fabric")
        self._say(f"private OVS in {self.ovs.workdir}")
        self.ovs.start()
        if not self.standalone:
            # Loom's detours round a cut link carry a second VLAN tag, and the link's
            # far end must see the inner one when it pops the outer (OVS parses one
            # tag by default): see controller/compiler/fabric.py.
            self.ovs.vsctl("set", "Open_vSwitch", ".", "other_config:vlan-limit=2")
        target = self.controller_target
        if self.start_controller:
            # Before OVS_RUNDIR is set: Loom's own ovsdb-server must not default into ours.
            self.ctl = ControllerProcess(self.ovs.workdir / "loom", chassis=[],
                                         of_host="127.0.0.1")
            self.ctl.start()
            box.record_process(self.ctl.proc.pid if self.ctl.proc else 0, "controller")
            target = self.ctl.of_target
            self.api = self.ctl.api
            self._say(f"Loom: OpenFlow {target}, REST {self.api.base_url}")
        self._saved_env = {k: os.environ.get(k) for k in OVS_ENV_KEYS}
        os.environ.update({k: self.ovs.env[k] for k in OVS_ENV_KEYS})

        # Mininet.init() would raise machine-wide sysctls (tcp_rmem, arp gc, ...): skip it.
        Mininet.inited = True
        switch_opts: dict[str, Any] = dict(
            on_shell=self._record_shell, datapath="user", protocols="OpenFlow13",
            failMode="standalone" if self.standalone else "secure", batch=True,
            rstp=self.rstp_timers, rstp_priorities=self._rstp_priorities(),
        )
        self.net = net = Mininet(
            topo=self.topo, switch=functools.partial(FabricSwitch, **switch_opts),
            host=functools.partial(FabricHost, on_shell=self._record_shell), controller=None,
            link=Link, intf=FabricIntf, build=False, cleanup=False, autoSetMacs=False,
            autoStaticArp=False, waitConnected=False,
        )
        if target is not None:
            ip, port = parse_target(target)
            net.addController("loom", controller=RemoteController, ip=ip, port=port)
        t = time.monotonic()
        net.build()
        self.timings["build"] = time.monotonic() - t
        t = time.monotonic()
        net.start()
        self._check_private_ovs()
        for sw in net.switches:
            self.ovs.wait_for_bridge(sw.name, timeout=30)
            if nsutil.link_exists(sw.name):
                _quiet_root_interface(sw.name)  # the bridge's own tap (down, but still)
        self._apply_rstp_max_age()
        self.timings["switches"] = time.monotonic() - t
        if self.rstp_timers is not None:
            self._say(f"RSTP root {self.rstp_root}: {self.rstp_timers.describe()}")
        mode = ("standalone" + (" + RSTP" if self.stp else "")) if self.standalone else target
        up = self.timings["build"] + self.timings["switches"]
        self._say(f"{self.topo.describe()} up in {up:.1f}s ({mode})")

    def stop(self, keep_logs: bool = False, check: bool = True) -> None:
        """Tear down in order; with `check`, raise FabricError if anything is left."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        problems: list[str] = []
        for proc in self._side:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        net = self.net
        if net is not None:
            try:
                net.stop()
            except Exception as exc:  # keep tearing down
                problems.append(f"net.stop(): {exc!r}")
            for c in net.controllers:  # RemoteController.stop() leaves its shell running
                with contextlib.suppress(Exception):
                    c.terminate()
        if self.ctl is not None:
            self.ctl.stop()
        if self.ovs is not None:
            try:
                self.ovs.close(remove_workdir=False)
            except Exception as exc:
                problems.append(f"private OVS: {exc!r}")
        if self._saved_env is not None:
            for k, v in self._saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self._saved_env = None
        if self.sandbox is not None:
            problems += self.sandbox.cleanup()
        if self.neigh is not None:
            try:
                self.neigh.release()
            except OSError as exc:
                problems.append(f"neighbour table limits: {exc!r}")
        left = self.leftovers()
        self.timings["stop"] = time.monotonic() - t0
        if self.ovs is not None:
            if keep_logs or left or problems:
                self._say(f"logs kept in {self.ovs.workdir}")
            else:
                shutil.rmtree(self.ovs.workdir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if check and (left or problems):
            raise FabricError(f"cleanup: {problems + left}")

    def leftovers(self) -> list[str]:
        """What of this run still exists: interfaces, node shells, processes in host
        namespaces, OVS daemons. Empty after a clean stop()."""
        left: list[str] = []
        existing = set(_root_links())
        left += [f"link {n}" for n in self._names if n in existing]
        left += [f"process {p} ({n})" for n, p in self._shells.items() if nsutil.pid_alive(p)]
        if self._host_netns:
            left += [f"process {p} in a host namespace" for p in _pids_in_netns(self._host_netns)]
        if self.ovs is not None:
            for pidfile in ("ovsdb-server.pid", "ovs-vswitchd.pid"):
                with contextlib.suppress(OSError, ValueError):
                    pid = int((self.ovs.rundir / pidfile).read_text())
                    if nsutil.pid_alive(pid):
                        left.append(f"{pidfile[:-4]} {pid}")
        return left

    # -- names, records, checks -------------------------------------------------------
    def _planned_names(self) -> list[str]:
        names = ["ovs-netdev", *self.topo.tiers]
        for a, pa, b, pb in self.topo.declared:
            for node, port in ((a, pa), (b, pb)):
                if node in self.topo.tiers:
                    names.append(f"{node}-eth{port}")
        return names

    def _rstp_priorities(self) -> dict[str, int]:
        """Root bridge: the topology's first preferred root (first core/spine by dpid, a
        graph's centre); the other preferred roots next. With a two-pass Max Age (see
        `_apply_rstp_max_age`) the root starts among the others and wins in pass two."""
        two_pass = self.rstp_timers is not None and \
            self.rstp_timers.max_age > OVS_FIRST_PASS_MAX_AGE
        return {s: RSTP_ROOT_PRIORITY if i == 0 and not two_pass else RSTP_BACKUP_PRIORITY
                for i, s in enumerate(self.topo.rstp_roots())}

    def _apply_rstp_max_age(self) -> None:
        """Max Age past 28, in a second pass: OVS refused it in the bridges' first
        transaction (their Forward Delay was still 15 s: OVS_FIRST_PASS_MAX_AGE). Every
        bridge gets it now, and the intended root its root priority in the same
        transaction: its information turns superior, so every bridge records the root's
        new times (a mere change of times would be ignored as repeated information)."""
        timers = self.rstp_timers
        if timers is None or timers.max_age <= OVS_FIRST_PASS_MAX_AGE or self.ovs is None:
            return
        args: list[str] = []
        for sw in self.topo.tiers:
            args += ["--", "set", "Bridge", sw, f"other_config:rstp-max-age={timers.max_age}"]
        if self.rstp_root is not None:
            args += ["--", "set", "Bridge", self.rstp_root,
                     f"other_config:rstp-priority={RSTP_ROOT_PRIORITY}"]
        self.ovs.vsctl(*args[1:])

    def neigh_overflows(self) -> Overflows:
        """Neighbour entries the kernel refused since this run started (machine-wide:
        every namespace shares the table, so another lab's overflow counts too)."""
        start = self._overflows_at_start or Overflows(0, 0)
        return overflows() - start

    def neigh_report(self) -> str:
        """One line for next to an all-pairs figure: limits in force, overflows."""
        limits = self.neigh.describe() if self.neigh is not None else \
            "neighbour table limits: not raised (raise_neigh_limits=False)"
        return f"{limits}; {self.neigh_overflows().describe()} during the run"

    def _record_shell(self, node: Any) -> None:
        self._shells[node.name] = node.pid
        if self.sandbox is not None:
            self.sandbox.record_process(node.pid, f"mininet:{node.name}")
        if node.inNamespace:
            ns = _netns_id(node.pid)
            if ns:
                self._host_netns.add(ns)

    def _check_private_ovs(self) -> None:
        """Mininet's shells must see our OVS_RUNDIR (so ovs-vsctl uses our db)."""
        assert self.ovs is not None
        sw = self.net.switches[0] if self.net.switches else None
        if sw is not None:
            seen = sw.cmd("echo $OVS_RUNDIR").strip()
            if seen != str(self.ovs.rundir):
                raise FabricError(f"switch shell sees OVS_RUNDIR={seen!r}, not {self.ovs.rundir}")
        bridges = set(self.ovs.vsctl("list-br").split())
        missing = {s.name for s in self.net.switches} - bridges
        if missing:
            raise FabricError(f"bridges missing from the private OVS: {sorted(missing)}")

    def _say(self, msg: str) -> None:
        if self.log is not None:
            print(f"[fabric] {msg}", file=self.log, flush=True)

    # -- lookups ----------------------------------------------------------------------
    def node(self, name: str) -> Any:
        return self.net.get(name)

    def dpid(self, switch: str) -> str:
        return self.topo.dpid(switch)

    def host_no(self, host: str) -> int:
        """N of host `host`'s addresses (hN -> N; any name for custom topologies)."""
        return self.topo.host_number(host)

    def host_ip(self, host: str, iface: int = 0) -> str:
        return str(self.node(host).intf(f"{host}-eth{iface}").IP())

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.net.hosts]

    # -- convergence ------------------------------------------------------------------
    def wait_converged(self, timeout: float = 60.0) -> float:
        """Wait until the fabric can forward: RSTP settled (standalone with STP) or
        every bridge connected to the controller (controller mode). Returns seconds."""
        assert self.ovs is not None
        t0 = time.monotonic()
        while True:
            if self.standalone and not self.stp:
                break
            if self.standalone:
                if self._rstp_settled():
                    break
            elif self._controllers_connected():
                break
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"fabric not converged after {timeout}s")
            time.sleep(0.2)
        self.timings["converge"] = time.monotonic() - t0
        return self.timings["converge"]

    def _rstp_settled(self) -> bool:
        assert self.ovs is not None
        out = self.ovs.vsctl("--format=json", "--columns=name,rstp_status", "list", "Port")
        for name, status in json.loads(out)["data"]:
            if name in self.topo.tiers:
                continue  # the bridge's internal port
            st = dict(status[1]) if isinstance(status, list) and status[0] == "map" else {}
            role, state = st.get("rstp_port_role"), st.get("rstp_port_state")
            if role in ("Root", "Designated") and state != "Forwarding":
                return False
            if role is None:
                return False
        return True

    def _controllers_connected(self) -> bool:
        assert self.ovs is not None
        out = self.ovs.vsctl("--format=json", "--columns=is_connected", "list", "Controller")
        rows = json.loads(out)["data"]
        return bool(rows) and all(r[0] is True for r in rows)

    # -- traffic ----------------------------------------------------------------------
    def pingall(self, timeout: float = 1.0, count: int = 1, hosts: Sequence[str] | None = None,
                gap: float = 0.002) -> dict[tuple[str, str], float]:
        """Ping every other host's primary address from every host, all hosts at once.

        One small ICMP pinger process per host (not one `ping` per pair: thousands of
        forks at once would measure the machine, not the network). Returns loss per
        ordered pair (src, dst), 0.0..1.0; a pair counts as lost when no reply came
        within `timeout` seconds of the last request."""
        assert self.ovs is not None
        pinger = self.ovs.workdir / "pinger.py"
        if not pinger.exists():
            pinger.write_text(PINGER)
        names = list(hosts) if hosts is not None else self.hosts
        targets = {h: self.host_ip(h) for h in names}
        nodes = [self.node(h) for h in names]
        for node in nodes:
            ips = " ".join(targets[h] for h in names if h != node.name)
            node.sendCmd(f"{sys.executable} {pinger} {count} {timeout:g} 0.2 {gap:g} {ips}")
        by_ip = {ip: h for h, ip in targets.items()}
        result: dict[tuple[str, str], float] = {}
        for node in nodes:
            out = node.waitOutput()
            for m in re.finditer(r"PING (\S+) (\d+)", out):
                result[(node.name, by_ip[m.group(1)])] = 1.0 - int(m.group(2)) / count
            for h in names:
                if h != node.name:
                    result.setdefault((node.name, h), 1.0)
        return result

    def wait_pingall(self, deadline: float = 60.0, timeout: float = 1.0,
                     expect: Mapping[tuple[str, str], float] | None = None
                     ) -> dict[tuple[str, str], float]:
        """Repeat `pingall` until every pair has no loss (or the loss in `expect`);
        returns the last result. Records how long it took in timings['pingall'] and the
        pairs wrong in each round in `pingall_rounds` (the first round is the honest
        first-packet figure; later rounds find warm ARP caches and learned MACs)."""
        t0 = time.monotonic()
        self.pingall_rounds = []
        while True:
            res = self.pingall(timeout)
            want = expect or {}
            wrong = sum(1 for pair, loss in res.items() if loss != want.get(pair, 0.0))
            self.pingall_rounds.append(wrong)
            if not wrong:
                break
            if time.monotonic() - t0 > deadline:
                break
        self.timings["pingall"] = time.monotonic() - t0
        return res

    def expected_loss(self) -> dict[tuple[str, str], float]:
        """Loss `pingall` should see: 0.0 within a Loom network (or everywhere before
        `bind_hosts`), 1.0 between hosts of different networks."""
        nets = self.host_network
        return {(a, b): 0.0 if nets.get(a) == nets.get(b) else 1.0
                for a in self.hosts for b in self.hosts if a != b}

    def ping(self, src: str, dst_ip: str, count: int = 3, timeout: float = 1.0) -> float:
        """Loss (0.0..1.0) of `count` pings from host `src` to `dst_ip`."""
        out = self.node(src).cmd(f"ping -n -q -c {count} -i 0.2 -W {timeout:g} {dst_ip}")
        m = re.search(r"(\d+) received", out)
        return 1.0 - (int(m.group(1)) if m else 0) / count

    def iperf(self, h1: str, h2: str, seconds: float = 2.0, port: int = 5201) -> float:
        """TCP throughput from `h1` to `h2` in bits/s (iperf3)."""
        server = self.node(h2).popen(["iperf3", "-s", "-1", "-p", str(port)])
        self._side.append(server)
        if self.sandbox is not None:
            self.sandbox.record_process(server.pid, "iperf3")
        try:
            dst = self.host_ip(h2)
            for _ in range(50):
                if f":{port} " in self.node(h2).cmd("ss -ltnH"):
                    break
                time.sleep(0.05)
            out = self.node(h1).cmd(f"iperf3 -c {dst} -p {port} -t {seconds:g} -J")
            data = json.loads(out[out.index("{"):])
            if "error" in data:
                raise FabricError(f"iperf3 {h1} -> {h2}: {data['error']}")
            return float(data["end"]["sum_received"]["bits_per_second"])
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(5)
            if self.sandbox is not None:
                self.sandbox.forget_process(server.pid)

    # -- links --------------------------------------------------------------------------
    def _connections(self, a: str, b: str) -> list[tuple[Any, Any]]:
        conns = self.node(a).connectionsTo(self.node(b))
        if not conns:
            raise FabricError(f"{a} and {b} are not linked")
        return list(conns)

    def cut_link(self, a: str, b: str) -> None:
        """Take every link between nodes `a` and `b` down (both veth ends)."""
        self._set_link(a, b, "down")

    def restore_link(self, a: str, b: str) -> None:
        self._set_link(a, b, "up")

    def _set_link(self, a: str, b: str, state: str) -> None:
        for ia, ib in self._connections(a, b):
            for intf in (ia, ib):
                out = intf.node.cmd(f"ip link set dev {intf.name} {state}")
                if out.strip():
                    raise FabricError(f"ip link set {intf.name} {state}: {out.strip()}")

    def api_links(self) -> set[tuple[tuple[int, int], tuple[int, int]]]:
        """Fabric links up in Loom's /v1/topology, each once as ((dpid, port), (dpid,
        port)), lower end first: what the controller believes, to set beside `links`."""
        if self.api is None:
            raise FabricError("api_links needs Loom (controller mode with a REST API)")
        out = set()
        for link in self.api.get("/v1/topology").ok()["links"]:
            if link["kind"] != "fabric" or link["state"] != "up":
                continue
            a = (int(link["src"]["node"].split(":")[1], 16), int(link["src"]["port_no"]))
            b = (int(link["dst"]["node"].split(":")[1], 16), int(link["dst"]["port_no"]))
            out.add((min(a, b), max(a, b)))
        return out

    def links(self, up_only: bool = True) -> list[FabricLink]:
        """Inter-switch links as OVS and the kernel see them: each veth pair whose two
        ends are ports of two of our bridges, once, as (switch, port, ofport, peer...)
        with switch < peer; ofports from the private OVSDB. With `up_only`, only links
        with carrier on both ends (what LLDP can see)."""
        assert self.ovs is not None
        bridges = json.loads(self.ovs.vsctl("--format=json", "--columns=name,ports", "list",
                                            "Bridge"))["data"]
        ports = json.loads(self.ovs.vsctl("--format=json", "--columns=_uuid,name", "list",
                                          "Port"))["data"]
        ifaces = json.loads(self.ovs.vsctl("--format=json", "--columns=name,ofport", "list",
                                           "Interface"))["data"]
        port_name = {row[0][1]: row[1] for row in ports}
        owner: dict[str, str] = {}
        for name, plist in bridges:
            uuids = [u[1] for u in plist[1]] if plist[0] == "set" else [plist[1]]
            for u in uuids:
                owner[port_name[u]] = name
        ofport = {name: int(of) for name, of in ifaces if isinstance(of, int)}
        result = set()
        kernel = _root_links()
        for ifname, item in kernel.items():
            peer = item.get("link")
            if ifname not in owner or peer not in owner:
                continue
            carrier = all("LOWER_UP" in kernel[n].get("flags", ()) for n in (ifname, peer))
            if up_only and not carrier:
                continue
            link = FabricLink(owner[ifname], ifname, ofport.get(ifname, -1),
                              owner[peer], peer, ofport.get(peer, -1))
            result.add(link if link.switch <= link.peer else link.reversed())
        return sorted(result)

    def declared_links(self) -> list[FabricLink]:
        """The topology's inter-switch links in the same shape (ofport = ethN)."""
        out = set()
        for a, pa, b, pb in self.topo.declared:
            if a in self.topo.tiers and b in self.topo.tiers:
                link = FabricLink(a, f"{a}-eth{pa}", pa, b, f"{b}-eth{pb}", pb)
                out.add(link if link.switch <= link.peer else link.reversed())
        return sorted(out)

    def edge_ports(self) -> dict[str, tuple[str, str]]:
        """Host interface -> (switch, switch port) it is plugged into."""
        result = {}
        for host in self.net.hosts:
            for intf in host.intfList():
                if intf.link is None:
                    continue
                peer = intf.link.intf2 if intf.link.intf1 is intf else intf.link.intf1
                result[intf.name] = (peer.node.name, peer.name)
        return result

    # -- Loom bindings --------------------------------------------------------------------
    def bind_hosts(self, networks: Mapping[str, str] | None = None, *, split: bool = False,
                   wait: bool = False) -> dict[str, dict[str, Any]]:
        """Put hosts on Loom networks through the REST API; return host interface -> port.

        `networks`: host -> network name (default: every host on ``net1``; with
        `split`, odd hosts on ``net1`` of project ``project1`` and even hosts on
        ``net2`` of project ``project2``). Each network is a VLAN network (explicit
        segmentation ids from 101) with subnets 10.10.0.0/16 (eth0) and 10.11.0.0/16
        (eth1 of dual-homed hosts), the same CIDRs for every network. Each host
        interface gets a port with its MAC, IP 10.1x.HH.LL and binding:profile
        local_link_information (switch_id = dpid as 16 hex digits, port_id = switch
        interface); the switch interface gets external_ids:iface-id=<port id>; the host
        interface is readdressed to the port's IP.
        """
        if self.api is None:
            if self.controller_target is None:
                raise FabricError("bind_hosts needs Loom (controller mode with a REST API)")
            raise FabricError("no REST API known: set fabric.api = ApiClient(url)")
        assert self.ovs is not None
        api = self.api
        hosts = self.hosts
        if networks is None:
            if split:
                networks = {h: f"net{1 + (self.host_no(h) + 1) % 2}" for h in hosts}
            else:
                networks = {h: "net1" for h in hosts}
        self.host_network.update(networks)
        order = sorted(set(networks.values()), key=lambda n: (len(n), n))
        edge = self.edge_ports()
        for k, net_name in enumerate(order):
            project = f"project{k + 1}" if split else None
            body: dict[str, Any] = {"name": net_name, "provider:network_type": "vlan",
                                    "provider:segmentation_id": FIRST_VLAN + k}
            if project:
                body["project_id"] = project
            net = api.create("network", **body)
            subnets = []
            for plane, cidr in enumerate(LOOM_SUBNETS):
                sbody: dict[str, Any] = {"network_id": net["id"], "cidr": cidr, "ip_version": 4,
                                         "name": f"{net_name}-plane{plane}", "gateway_ip": None,
                                         "enable_dhcp": False}
                if project:
                    sbody["project_id"] = project
                subnets.append(api.create("subnet", **sbody))
            for host in [h for h in hosts if networks.get(h) == net_name]:
                n = self.host_no(host)
                node = self.node(host)
                for intf in node.intfList():
                    if intf.name not in edge:
                        continue
                    plane = int(intf.name.rsplit("eth", 1)[1])
                    switch, switch_port = edge[intf.name]
                    ip = str(ipaddress.ip_network(LOOM_SUBNETS[plane]).network_address + n)
                    pbody: dict[str, Any] = {
                        "network_id": net["id"], "name": intf.name,
                        "mac_address": host_mac(n, plane),
                        "fixed_ips": [{"subnet_id": subnets[plane]["id"], "ip_address": ip}],
                        "binding:profile": {"local_link_information": [{
                            "switch_id": self.dpid(switch), "port_id": switch_port,
                            "switch_info": switch}]},
                    }
                    if project:
                        pbody["project_id"] = project
                    port = api.create("port", wait=wait, **pbody)
                    self.bindings[intf.name] = port
                    self.ovs.vsctl("set", "Interface", switch_port,
                                   f"external_ids:iface-id={port['id']}",
                                   f'external_ids:attached-mac="{port["mac_address"]}"',
                                   "external_ids:iface-status=active")
                    if intf.MAC() != port["mac_address"]:
                        intf.setMAC(port["mac_address"])
                    intf.setIP(f"{ip}/16")
            self._say(f"network {net_name}: vlan {FIRST_VLAN + k}, "
                      f"{sum(1 for h in hosts if networks.get(h) == net_name)} hosts")
        return dict(self.bindings)


def _raise_nofile_limit(want: int = 16384) -> None:
    """Mininet keeps a pty per node; raise this process's own fd limit (not the
    machine's sysctls, which Mininet.init() would change)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


# -- command line ------------------------------------------------------------------------

def _value(text: str) -> Any:
    """A topology parameter as ``mn --topo`` reads it: int, else float, else text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _topo_args(values: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for v in values:
        for part in v.split(","):
            if not part:
                continue
            if "=" in part:
                key, _, val = part.partition("=")
                kwargs[key] = _value(val)
            else:
                args.append(_value(part))
    return args, kwargs


def zoo_graphs() -> dict[str, Path]:
    """The graph files shipped in topologies/zoo, by name (``Abilene``)."""
    return {p.stem: p for p in sorted(ZOO_DIR.glob("*.graphml"))}


def resolve_topo(spec: str, params: Sequence[str] = (), custom: Sequence[str] = ()
                 ) -> FabricTopo:
    """The runner's topology argument: with `custom` files, a name from their `topos`
    (``mn --custom FILE --topo NAME,ARGS``); else a built-in name, a graph file
    (.graphml/.xml/.json), or the name of a shipped zoo graph (case-insensitive).
    ``NAME,ARG,...`` works as with ``mn --topo``. Graphs take one parameter,
    hosts_per_switch (positional or ``hosts_per_switch=N``)."""
    name, values = spec, list(params)
    if not Path(spec).exists() and "," in spec:
        name, _, rest = spec.partition(",")
        values.insert(0, rest)
    targs, tkwargs = _topo_args(values)
    if custom:
        return custom_topo(custom, name, *targs, **tkwargs)
    if name in TOPOLOGIES:
        return make_topo(name, *targs, **tkwargs)
    zoo = {k.lower(): v for k, v in zoo_graphs().items()}
    path = Path(name)
    if not path.exists() and name.lower() in zoo:
        path = zoo[name.lower()]
    if path.exists() or path.suffix.lower() in GRAPH_SUFFIXES:
        unknown = set(tkwargs) - {"hosts_per_switch"}
        if len(targs) > 1 or unknown or (targs and tkwargs):
            raise ValueError("a graph takes one parameter: hosts_per_switch (e.g. 2 or "
                             "hosts_per_switch=2)")
        per = targs[0] if targs else tkwargs.get("hosts_per_switch", 1)
        return graph_topo(path, hosts_per_switch=int(per))
    raise ValueError(f"unknown topology {name!r}: not one of {', '.join(TOPOLOGIES)}, not a "
                     f"graph file, not a zoo graph ({', '.join(zoo_graphs())}); a name from a "
                     "Mininet custom file needs --custom FILE")


def _print_list() -> None:
    for name, cls in TOPOLOGIES.items():
        print(f"{name:12} {(cls.__doc__ or '').strip().splitlines()[0]}")
    for name, path in zoo_graphs().items():
        try:
            topo = graph_topo(path, hosts_per_switch=0)
            desc = (f"{topo.name} (Topology Zoo): {len(topo.tiers)} switches, "
                    f"{len(topo.switch_links())} links")
        except GraphError as exc:
            desc = str(exc)
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"{name:12} {desc} [{shown}]")
    print("any GraphML or node-link JSON file: run FILE [hosts_per_switch]; "
          "a Mininet custom topology: run --custom FILE NAME [ARGS]")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m topologies.fabric", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the topologies and shipped graphs")
    r = sub.add_parser("run", help="run a topology")
    r.add_argument("topo", help="a built-in name (see `list`), a graph file (.graphml, "
                   "node-link .json) or shipped zoo graph name, or with --custom a name "
                   "from the file's `topos`; NAME,ARGS like mn --topo")
    r.add_argument("params", nargs="*", help="topology parameters: 4, or k=4, or 2,3,2")
    r.add_argument("--custom", action="append", default=[], metavar="FILE",
                   help="Mininet custom topology file defining `topos` (as mn --custom); "
                   "it is run as Python")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--controller", metavar="tcp:IP:PORT", help="use a running Loom")
    mode.add_argument("--start-controller", action="store_true", help="start Loom itself")
    r.add_argument("--rest", metavar="URL", help="Loom's REST API (with --controller)")
    r.add_argument("--split", action="store_true", help="hosts on 2 networks / projects")
    r.add_argument("--no-stp", action="store_true", help="standalone without RSTP")
    r.add_argument("--pingall", action="store_true", help="pingall (repeat until clean)")
    r.add_argument("--iperf", metavar="H1,H2", help="iperf3 between two hosts")
    r.add_argument("--cli", action="store_true", help="Mininet's CLI (no `mn`)")
    r.add_argument("--hold", action="store_true", help="keep running until Ctrl-C")
    r.add_argument("--deadline", type=float, default=60.0, help="pingall deadline (s)")
    r.add_argument("--lock-timeout", type=float, default=120.0,
                   help="wait this long (s) for another fabric run on this machine to end")
    r.add_argument("--keep-neigh-limits", action="store_true",
                   help="do not raise the kernel's neighbour table limits (shared by every "
                   "namespace on the machine: big fabrics then overflow them)")
    r.add_argument("-v", "--verbose", action="store_true", help="Mininet's info log")
    args = p.parse_args(argv)
    if args.cmd == "list":
        _print_list()
        return 0
    setLogLevel("info" if args.verbose else "output")
    try:
        topo = resolve_topo(args.topo, args.params, args.custom)
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` runs
    fabric = Fabric(topo, controller=args.controller, start_controller=args.start_controller,
                    stp=False if args.no_stp else None, log=sys.stdout,
                    raise_neigh_limits=not args.keep_neigh_limits,
                    lock_timeout=args.lock_timeout)
    with fabric:
        if args.rest:
            fabric.api = ApiClient(args.rest)
        if not fabric.standalone:
            fabric.wait_converged()
            if fabric.api is not None:
                fabric.bind_hosts(split=args.split)
        else:
            fabric.wait_converged()
            print(f"[fabric] forwarding after {fabric.timings['converge']:.1f}s")
        for link in fabric.links():
            print(f"  {link.switch}:{link.port}({link.ofport}) <-> "
                  f"{link.peer}:{link.peer_port}({link.peer_ofport})")
        rc = 0
        if args.pingall:
            want = fabric.expected_loss()
            res = fabric.wait_pingall(args.deadline, expect=want)
            bad = sorted(pair for pair, loss in res.items() if loss != want[pair])
            isolated = sum(1 for loss in want.values() if loss)
            rounds = fabric.pingall_rounds
            print(f"[fabric] pingall: {len(res) - len(bad)}/{len(res)} pairs as expected "
                  f"({isolated} isolated by design) in {fabric.timings['pingall']:.1f}s, "
                  f"{len(rounds)} round(s), first round {rounds[0]} wrong"
                  + (f"; wrong: {bad[:20]}" if bad else ""))
            print(f"[fabric] {fabric.neigh_report()}")
            rc = 1 if bad else 0
        if args.iperf:
            h1, h2 = args.iperf.split(",")
            print(f"[fabric] iperf3 {h1} -> {h2}: {fabric.iperf(h1, h2) / 1e6:.0f} Mbit/s")
        if args.cli:
            from mininet.cli import CLI

            CLI(fabric.net)
        elif args.hold:
            print("[fabric] running; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    print("[fabric] stopped; nothing left behind")
    return rc


if __name__ == "__main__":
    sys.exit(main())
