"""DHCPv4 (issue 13): DISCOVER->ACK round trip and leases per second, Loom against dnsmasq.

Two servers, set up side by side on this machine in the same run, each with the same
N guests (the same MACs and the same fixed IPs):

- **loom**: the real controller process (``python -m controller``, ``--log-level
  INFO``) managing one private OVS (its own namespace, userspace datapath) as
  tests/integration/harness.py ``single_host`` does; one network with one IPv4 subnet
  with ``enable_dhcp``, N ports made through the REST API (each with its MAC and fixed
  IP) and N guests bound to them (``Guest(ip_cidr=None)``, iface-id). Loom answers:
  each port's DHCP client packets go to the controller through the port's punt meter,
  the controller's reply goes back to the port by packet-out.
- **dnsmasq**: dnsmasq in a namespace of its own (``--keep-in-foreground``, no DNS:
  ``--port=0``, private pid, lease and log files, ``--dhcp-range`` with a
  ``--dhcp-host`` per guest mirroring Loom's fixed IPs, ``--no-ping``, ``--quiet-dhcp``)
  attached by a veth to an OVS bridge in normal mode (a second private OVS, userspace
  datapath, no controller), the N guests attached to that bridge by veth pairs. Its
  lease file is under /tmp (``--lease-dir`` elsewhere, e.g. /dev/shm): dnsmasq
  rewrites it at every lease it hands out, as it does in production; Loom keeps no
  lease state (the address is the port's fixed IP).

The client is this module's own load generator: one raw AF_PACKET socket per guest,
opened inside the guest's namespace (setns), frames built and parsed with os-ken's
packet library (each guest's DISCOVER and REQUEST built once by os-ken, then only the
xid and the UDP checksum patched: the same bytes, checked at start, at a fraction of
the client's CPU); per exchange DISCOVER, wait OFFER, REQUEST (requested address and
server identifier from the OFFER), wait ACK; eth_src and chaddr the guest port's MAC,
a distinct xid per exchange (a retry is a new exchange with a new xid); the ACK's
address is checked against the port's fixed IP. DISCOVER->ACK is timed from just before
the DISCOVER is sent to the ACK's arrival. Before the measures each guest takes one
lease (warm-up; an address other than the fixed IP aborts the run).

1. Latency: one guest per server, ``--rounds`` sequential exchanges, one every
   ``--interval`` s (0.25 s: 8 punted packets per second, within Loom's per-port punt
   meter of PUNT_RATE_PPS with a burst of PUNT_BURST_PACKETS), Loom and dnsmasq
   interleaved round by round (the order alternating) so both see the same load;
   p50/p90/p99/max of DISCOVER->ACK.
2. Throughput: all N guests in parallel, closed loop (each starts its next exchange
   when its ACK arrives), ``--per-guest`` exchanges each (default PUNT_BURST_PACKETS / 2:
   within the meter's burst, so the meter drops nothing and the figure is the
   server's), ``--waves`` times with a pause between waves for the meters to refill;
   leases per second per wave (N x per-guest / time to the last ACK); the guests are
   spread over ``--workers`` client processes. The CPU time the controller (or
   dnsmasq), its ovs-vswitchd and the client processes used during the waves (from
   /proc/<pid>/stat and getrusage), and what the server process uses idle.
3. Past the meter: all N guests closed loop for ``--seconds`` s, an exchange with no
   answer within ``--timeout`` s abandoned and started again. Loom's meter lets a port
   send PUNT_RATE_PPS DHCP packets per second (after its burst), 2 per exchange: one
   guest can get at most PUNT_RATE_PPS / 2 leases per second, N guests N times that;
   a packet past the meter is dropped by design (the guest's retry timer then
   decides; ``ovs-ofctl meter-stats`` counts the drops). dnsmasq has no such limit.

    sudo .venv/bin/python -m bench.bench_dhcp [--guests 20] [--rounds 200]
        [--interval 0.25] [--per-guest 10] [--waves 3] [--seconds 5] [--timeout 0.5]
        [--workers N (default: CPUs, at most 4)] [--servers loom dnsmasq]
        [--bridge ovs|linux] [--lease-dir DIR]

The default (20 guests, 200 rounds) takes about 105 s on 2 vCPUs.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import math
import multiprocessing
import os
import queue
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp

from controller.pipeline import PUNT_BURST_PACKETS, PUNT_RATE_PPS, is_punt_meter
from topologies import netns as nsutil
from topologies.controller_process import ControllerProcess
from topologies.guest import GUEST_IF, Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

CIDR = ipaddress.IPv4Network("10.0.0.0/16")
SERVER_IP = "10.0.0.1"  # dnsmasq's address (Loom's subnet has its gateway there)
FIRST_GUEST = 10  # guest i gets CIDR[FIRST_GUEST + i]
LEASE = "12h"
BOOTP_MIN_LEN = 300
DHCPNAK = 6  # os-ken names DISCOVER, OFFER, REQUEST and ACK only
ETH_P_IP = 0x0800
CLONE_NEWNET = 0x40000000
PARAMS = bytes([1, 3, 6, 15, 26, 28, 51, 54, 58, 59, 121])  # requested options, like dhclient's
SERVERS = ("loom", "dnsmasq")
BRIDGES = {"ovs": "an OVS bridge in normal mode (private OVS, userspace datapath)",
           "linux": "a Linux bridge"}
_libc = ctypes.CDLL(None, use_errno=True)


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return os.getloadavg()[0]


def _mac(i: int) -> str:
    return f"fa:16:3e:d0:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def _ip(i: int) -> str:
    return str(CIDR[FIRST_GUEST + i])


def _revision() -> str:
    """The commit this runs at, and whether the controller's code differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "controller", "apps"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except OSError:
        return "no git"
    changed = [line for line in dirty if line.strip()]
    return f"at {head or '?'}" + (f" ({len(changed)} file(s) of controller/ and apps/ "
                                  f"modified)" if changed else "")


def _cpu(pid: Optional[int]) -> float:
    """utime + stime of `pid` (all its threads), in seconds; nan if unknown."""
    if pid is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ======================================================================== client
@contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """Run the block in network namespace `name` (this thread only), then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(own)
        os.close(target)


# Classic BPF for `udp dst port 68` (IPv4, first fragments: tcpdump -dd): the other
# guests' broadcast DISCOVERs and REQUESTs, which a bridge in normal mode floods to
# every guest, stop in the kernel instead of costing the client's Python.
_BPF_DHCP_REPLY = (
    (0x28, 0, 0, 12), (0x15, 0, 8, ETH_P_IP),    # ethertype IPv4, else drop
    (0x30, 0, 0, 23), (0x15, 0, 6, 17),          # UDP, else drop
    (0x28, 0, 0, 20), (0x45, 4, 0, 0x1FFF),      # a later fragment: drop
    (0xB1, 0, 0, 14), (0x48, 0, 0, 16),          # x = IP header length; UDP dst port
    (0x15, 0, 1, 68),                            # 68: keep, else drop
    (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0),
)
SO_ATTACH_FILTER = 26


def _attach_filter(sock: socket.socket) -> None:
    prog = b"".join(struct.pack("HBBI", *ins) for ins in _BPF_DHCP_REPLY)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(_BPF_DHCP_REPLY), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_raw(netns: str, ifname: str = "eth0") -> socket.socket:
    """A raw socket on `ifname` inside `netns`: DHCP replies only, non-blocking."""
    with _in_netns(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        _attach_filter(sock)
        sock.bind((ifname, ETH_P_IP))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)
    return sock


def client_frame(mac: str, xid: int, kind: int, requested: Optional[str] = None,
                 server: Optional[str] = None) -> bytes:
    """A DHCPDISCOVER or DHCPREQUEST (SELECTING) from `mac`, broadcast, from 0.0.0.0."""
    opts = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([kind]))]
    if requested is not None:
        opts.append(dhcp.option(dhcp.DHCP_REQUESTED_IP_ADDR_OPT,
                                ipaddress.IPv4Address(requested).packed))
    if server is not None:
        opts.append(dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT,
                                ipaddress.IPv4Address(server).packed))
    opts.append(dhcp.option(dhcp.DHCP_PARAMETER_REQUEST_LIST_OPT, PARAMS))
    body = dhcp.dhcp(op=dhcp.DHCP_BOOT_REQUEST, chaddr=mac, xid=xid,
                     options=dhcp.options(opts)).serialize()
    body += bytes(max(0, BOOTP_MIN_LEN - len(body)))  # as dhclient pads (RFC 1542)
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=mac, ethertype=ETH_P_IP))
    pkt.add_protocol(ipv4.ipv4(src="0.0.0.0", dst="255.255.255.255", ttl=64,
                               proto=socket.IPPROTO_UDP))
    pkt.add_protocol(udp.udp(src_port=68, dst_port=67))
    pkt.add_protocol(body)
    pkt.serialize()
    return bytes(pkt.data)


XID_AT = 14 + 20 + 8 + 4  # a client frame's xid (no IP options)
UDP_CSUM_AT = 14 + 20 + 6


def with_xid(template: bytes, xid: int) -> bytes:
    """`template` (a client_frame) with another xid, its UDP checksum updated
    incrementally (RFC 1624): the same bytes client_frame would build, in a fraction of
    the time (the client must not be what limits the servers)."""
    old = template[XID_AT:XID_AT + 4]
    new = xid.to_bytes(4, "big")
    acc = ~int.from_bytes(template[UDP_CSUM_AT:UDP_CSUM_AT + 2], "big") & 0xFFFF
    for i in (0, 2):
        acc += (~int.from_bytes(old[i:i + 2], "big") & 0xFFFF) + int.from_bytes(new[i:i + 2], "big")
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    csum = ~acc & 0xFFFF or 0xFFFF
    return b"".join((template[:UDP_CSUM_AT], csum.to_bytes(2, "big"),
                     template[UDP_CSUM_AT + 2:XID_AT], new, template[XID_AT + 4:]))


def reply_xid(frame: bytes) -> Optional[int]:
    """The xid of a DHCP reply (IPv4, UDP to port 68) in `frame`, else None: a cheap
    look before the full parse."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    u = 14 + (frame[14] & 0x0F) * 4
    if frame[u + 2:u + 4] != b"\x00\x44" or frame[u + 8] != dhcp.DHCP_BOOT_REPLY:
        return None
    return int.from_bytes(frame[u + 12:u + 16], "big")


def parse_reply(frame: bytes) -> Optional[tuple[int, str, Optional[str]]]:
    """(message type, yiaddr, server identifier) of a DHCP reply (a frame reply_xid
    accepted), with os-ken's DHCP parser."""
    reply, _, _ = dhcp.dhcp.parser(frame[14 + (frame[14] & 0x0F) * 4 + 8:])
    if reply.options is None:
        return None
    kind = 0
    server = None
    for opt in reply.options.option_list:
        if not isinstance(opt, dhcp.option):
            continue
        if opt.tag == dhcp.DHCP_MESSAGE_TYPE_OPT and opt.value:
            kind = opt.value[0]
        elif opt.tag == dhcp.DHCP_SERVER_IDENTIFIER_OPT and len(opt.value) == 4:
            server = str(ipaddress.IPv4Address(opt.value))
    return kind, str(reply.yiaddr), server


@dataclass
class Tally:
    """What one set of exchanges gave: (time the ACK came, DISCOVER->ACK s,
    DISCOVER->OFFER s) per lease, and what went wrong."""
    leases: list[tuple[float, float, float]] = field(default_factory=list)
    timeouts: int = 0
    naks: int = 0
    wrong: int = 0  # an ACK with an address other than the port's fixed IP
    cpu: float = 0.0  # the client's own CPU seconds

    def add(self, other: Tally) -> None:
        self.leases += other.leases
        self.timeouts += other.timeouts
        self.naks += other.naks
        self.wrong += other.wrong
        self.cpu += other.cpu


class Exchanger:
    """One guest's DHCP client: DISCOVER, OFFER, REQUEST, ACK, again."""

    def __init__(self, sock: socket.socket, mac: str, ip: str, xid_base: int) -> None:
        self.sock, self.mac, self.ip = sock, mac, ip
        self.xid_base, self.seq = xid_base, 0
        self.xid = 0
        self.waiting = 0  # dhcp.DHCP_OFFER, dhcp.DHCP_ACK or 0 (idle)
        self.t_start = self.t_offer = self.t_sent = 0.0
        self.done = 0
        self.discover = client_frame(mac, 0, dhcp.DHCP_DISCOVER)
        self.requests: dict[tuple[str, Optional[str]], bytes] = {}

    def start(self) -> None:
        self.seq += 1
        self.xid = (self.xid_base + self.seq) & 0xFFFFFFFF
        frame = with_xid(self.discover, self.xid)
        self.waiting = dhcp.DHCP_OFFER
        self.t_start = self.t_sent = time.monotonic()
        self.sock.send(frame)

    def frame(self, data: bytes, tally: Tally) -> bool:
        """Handle one received frame; True when it completed the exchange (ACK)."""
        if not self.waiting or reply_xid(data) != self.xid:
            return False
        now = time.monotonic()
        parsed = parse_reply(data)
        if parsed is None:
            return False
        kind, yiaddr, server = parsed
        if kind == DHCPNAK:
            tally.naks += 1
            self.waiting = 0
            return False
        if kind != self.waiting:
            return False
        if kind == dhcp.DHCP_OFFER:
            self.t_offer = now
            self.waiting = dhcp.DHCP_ACK
            template = self.requests.get((yiaddr, server))
            if template is None:
                template = self.requests[yiaddr, server] = client_frame(
                    self.mac, 0, dhcp.DHCP_REQUEST, requested=yiaddr, server=server)
            frame = with_xid(template, self.xid)
            self.t_sent = time.monotonic()
            self.sock.send(frame)
            return False
        self.waiting = 0
        self.done += 1
        if yiaddr != self.ip:
            tally.wrong += 1
        tally.leases.append((now, now - self.t_start, self.t_offer - self.t_start))
        return True

    def drain(self, tally: Tally) -> bool:
        """Read everything queued on the socket; True if an exchange completed."""
        completed = False
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return completed
            completed |= self.frame(data, tally)


def one_exchange(ex: Exchanger, timeout: float, tally: Tally, tries: int = 5) -> None:
    """One exchange, synchronously (the latency phase); a lost one is tried again."""
    for _ in range(tries):
        ex.start()
        while ex.waiting:
            left = ex.t_sent + timeout - time.monotonic()
            if left <= 0:
                break
            if select.select([ex.sock], [], [], left)[0] and ex.drain(tally):
                return
        tally.timeouts += 1
        ex.waiting = 0
    raise RuntimeError(f"{ex.mac}: no DHCPACK in {tries} tries")


def closed_loop(exchangers: list[Exchanger], t0: float, per_guest: Optional[int],
                seconds: Optional[float], timeout: float) -> Tally:
    """Every exchanger back to back from t0: `per_guest` exchanges each, or as many as
    fit in `seconds`; an exchange with nothing for `timeout` s is abandoned and
    started again (a new xid)."""
    tally = Tally()
    poller = select.epoll()
    by_fd = {ex.sock.fileno(): ex for ex in exchangers}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    stop = t0 + seconds if seconds is not None else float("inf")
    hard = t0 + (seconds if seconds is not None else 0) + 120  # nothing for 2 min: give up
    while time.monotonic() < t0:
        time.sleep(max(0.0, t0 - time.monotonic()))
    active = set(exchangers)
    for ex in exchangers:
        ex.start()
    while active:
        now = time.monotonic()
        if now >= hard:
            raise RuntimeError(f"{len(active)} guest(s) still not done after 120 s")
        wake = min(min(ex.t_sent + timeout for ex in active), stop)
        for fd, _ in poller.poll(max(0.0, wake - now)):
            ex = by_fd[fd]
            if ex in active and ex.drain(tally):
                if (per_guest is not None and ex.done >= per_guest) \
                        or time.monotonic() >= stop:
                    active.discard(ex)
                else:
                    ex.start()
        now = time.monotonic()
        for ex in list(active):
            if now >= stop:
                if ex.waiting:
                    ex.waiting = 0
                active.discard(ex)
            elif ex.waiting and now >= ex.t_sent + timeout:
                tally.timeouts += 1
                ex.start()
            elif not ex.waiting:  # a NAK: start over
                ex.start()
    poller.close()
    return tally


def _worker(guests: list[tuple[str, str, str, int]], per_guest: Optional[int],
            seconds: Optional[float], timeout: float, barrier: Any, start_at: Any,
            out: Any) -> None:
    """One client process: its share of the guests, from the shared start time."""
    try:
        exchangers = [Exchanger(open_raw(netns), mac, ip, xid_base)
                      for netns, mac, ip, xid_base in guests]
        barrier.wait(60)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        tally = closed_loop(exchangers, start_at.value, per_guest, seconds, timeout)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        tally.cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        for ex in exchangers:
            ex.sock.close()
        out.put(tally)
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        out.put(f"{type(exc).__name__}: {exc}")


# ======================================================================== servers
@dataclass
class Server:
    name: str
    guests: list[Guest]
    ips: list[str]
    pids: dict[str, Optional[int]]  # role ("server", "ovs-vswitchd") -> pid
    xid_base: int
    ovs: Optional[OvsInstance] = None  # Loom's: where its punt meters are

    def meter_drops(self) -> Optional[int]:
        """Packets Loom's punt meters on br-int dropped so far (None: no meters here)."""
        if self.ovs is None:
            return None
        return punt_meter_drops(self.ovs.ofctl("meter-stats", "br-int"))

    def targets(self) -> list[tuple[str, str, str, int]]:
        """(netns, mac, ip, xid base) per guest; xid bases 2^20 apart (distinct xids)."""
        return [(g.netns, g.mac, ip, (self.xid_base + (k << 20)) & 0xFFFFFFFF)
                for k, (g, ip) in enumerate(zip(self.guests, self.ips, strict=True))]


def punt_meter_drops(meter_stats: str) -> int:
    """The sum of the band packet counts of the punt meters in `ovs-ofctl meter-stats`."""
    dropped, meter = 0, 0
    for line in meter_stats.splitlines():
        m = re.search(r"meter:(\d+)", line)
        if m:
            meter = int(m.group(1))
        b = re.match(r"\s*\d+: packet_count:(\d+)", line)
        if b and is_punt_meter(meter):
            dropped += int(b.group(1))
    return dropped


def _wait_active(api: Any, port_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(port_ids)
    while pending:
        status = api.get(f"/v2.0/ports/{pending[0]}").ok()["port"]["status"]
        if status == "ACTIVE":
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {pending[0]} still {status} after {timeout:.0f} s")
        time.sleep(0.1)


def loom_server(sandbox: Sandbox, n: int, state: Path, projects: int = 1
                ) -> tuple[Server, Any]:
    """The real controller, one private OVS, a DHCP subnet, n bound guests, spread over
    `projects` projects on one shared network (Loom answers each project's guests
    within its own budget: punt.PROJECT_RATE per second)."""
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-hv1"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance("hv1", netns=sandbox.add_netns("hv1"), workdir=workdir, sandbox=sandbox,
                     system_id="hv1")
    hv.start()
    host_ip, _ = hv.add_mgmt_link()
    # INFO, as an operator runs it (the test harness runs DEBUG)
    ctl = ControllerProcess(state, [hv.db_remote], of_host=host_ip,
                            extra_args=("--log-level", "INFO"))
    ctl.start()
    hv.wait_for_bridge("br-int", timeout=20)
    ctl.wait_switches(1)
    api = ctl.api
    net = api.create("network", name="dhcp-bench", project_id="bench", shared=True)
    sub = api.create("subnet", network_id=net["id"], cidr=str(CIDR), ip_version=4,
                     gateway_ip=SERVER_IP, enable_dhcp=True, project_id="bench")
    if not sub.get("enable_dhcp"):
        raise RuntimeError(f"the subnet came back without enable_dhcp: {sub}")
    guests: list[Guest] = []
    ports = []
    for i in range(n):
        ports.append(api.create("port", network_id=net["id"],
                                project_id=f"bench{i % max(1, projects)}",
                                name=f"dhcp{i}", mac_address=_mac(i),
                                fixed_ips=[{"subnet_id": sub["id"], "ip_address": _ip(i)}]))
    for i, port in enumerate(ports):
        guests.append(Guest(f"l{i}", port["mac_address"], None, sandbox=sandbox, ovs=hv,
                            bridge="br-int", port_id=port["id"]))
    _wait_active(api, [p["id"] for p in ports])
    pids = {"server": ctl.proc.pid if ctl.proc else None, "ovs-vswitchd": hv.vswitchd_pid}
    return (Server("loom", guests, [_ip(i) for i in range(n)], pids, 0x10000000, ovs=hv),
            (hv, ctl, None))


def dnsmasq_server(sandbox: Sandbox, n: int, tmp: Path, lease_dir: Optional[Path],
                   bridge: str = "ovs") -> tuple[Server, Any]:
    """dnsmasq in a namespace on an OVS bridge in normal mode (`bridge` "ovs") or a
    Linux bridge ("linux"), with n guests; its lease file in `lease_dir` (default: with
    its other files under `tmp`)."""
    srv = sandbox.add_netns("srv")
    peer = sandbox.name("tsrv")
    ovs: Optional[OvsInstance] = None
    if bridge == "ovs":
        workdir = DEFAULT_BASE / f"{sandbox.prefix}-dn"
        shutil.rmtree(workdir, ignore_errors=True)
        ovs = OvsInstance("dn", netns=sandbox.add_netns("dn"), workdir=workdir,
                          sandbox=sandbox)
        ovs.start()
        ovs.add_bridge("br-dhcp", fail_mode="standalone")  # no controller: NORMAL
        sandbox.add_veth("eth0", peer, srv, ovs.netns)
        ovs.vsctl("add-port", "br-dhcp", peer)
        guests = [Guest(f"d{i}", _mac(i), None, sandbox=sandbox, ovs=ovs, bridge="br-dhcp")
                  for i in range(n)]
    else:
        dn = sandbox.add_netns("dn")
        nsutil.run(["ip", "link", "add", "br-dhcp", "type", "bridge"], netns=dn)
        nsutil.link_up("br-dhcp", netns=dn)
        guests = []
        for i in range(n + 1):
            if i < n:
                g = Guest(f"d{i}", _mac(i), None, sandbox=sandbox)
                guests.append(g)
                port = sandbox.name(f"td{i}")
                sandbox.add_veth(GUEST_IF, port, g.netns, dn)
                nsutil.set_mac(GUEST_IF, g.mac, netns=g.netns)
            else:
                port = peer
                sandbox.add_veth("eth0", port, srv, dn)
            nsutil.run(["ip", "link", "set", port, "master", "br-dhcp"], netns=dn)
    nsutil.add_address("eth0", f"{SERVER_IP}/{CIDR.prefixlen}", netns=srv)
    d = tmp / "dnsmasq"
    d.mkdir()
    leases = (lease_dir or d) / f"dnsmasq-{sandbox.prefix}.leases"
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--no-resolv", "--no-hosts", "--interface=eth0", "--bind-interfaces",
            "--except-interface=lo", "--user=root", "--group=root",
            f"--pid-file={d / 'dnsmasq.pid'}", f"--dhcp-leasefile={leases}",
            f"--log-facility={d / 'dnsmasq.log'}",
            f"--dhcp-range={CIDR[FIRST_GUEST]},{CIDR[-2]},{CIDR.netmask},{LEASE}",
            "--dhcp-authoritative", "--no-ping", "--quiet-dhcp",
            *(f"--dhcp-host={_mac(i)},{_ip(i)}" for i in range(n))]
    proc = nsutil.popen(argv, netns=srv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sandbox.record_process(proc.pid, "dnsmasq")
    deadline = time.monotonic() + 10
    while not nsutil.run(["ss", "-Hlun", "sport = :67"], netns=srv, check=False).stdout.strip():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"dnsmasq exited {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError("dnsmasq not listening on UDP 67 in 10 s")
        time.sleep(0.05)
    pids = {"server": proc.pid, "ovs-vswitchd": ovs.vswitchd_pid if ovs else None}
    return (Server("dnsmasq", guests, [_ip(i) for i in range(n)], pids, 0x20000000),
            (ovs, proc, leases))


# ======================================================================== phases
def latency(servers: list[Server], args: argparse.Namespace) -> dict[str, Tally]:
    """Guest 0 of each server, `args.rounds` exchanges `args.interval` apart, the
    servers interleaved round by round."""
    exchangers = {}
    for s in servers:
        netns, mac, ip, xid_base = s.targets()[0]
        exchangers[s.name] = Exchanger(open_raw(netns), mac, ip, xid_base + 0x80000)
    tallies = {s.name: Tally() for s in servers}
    order = [s.name for s in servers]
    for r in range(args.rounds):
        began = time.monotonic()
        for name in order if r % 2 == 0 else order[::-1]:
            one_exchange(exchangers[name], args.timeout, tallies[name])
        time.sleep(max(0.0, began + args.interval - time.monotonic()))
    for ex in exchangers.values():
        ex.sock.close()
    return tallies


def parallel(server: Server, args: argparse.Namespace, per_guest: Optional[int],
             seconds: Optional[float], salt: int) -> dict[str, Any]:
    """All the server's guests at once over args.workers client processes."""
    ctx = multiprocessing.get_context("fork")
    targets = [(netns, mac, ip, (base + salt) & 0xFFFFFFFF)
               for netns, mac, ip, base in server.targets()]
    workers = max(1, min(args.workers, len(targets)))
    barrier = ctx.Barrier(workers + 1)
    start_at = ctx.Value("d", 0.0)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(targets[w::workers], per_guest, seconds,
                                               args.timeout, barrier, start_at, out))
             for w in range(workers)]
    for p in procs:
        p.start()
    start_at.value = time.monotonic() + 0.05
    barrier.wait(60)
    cpu0 = {role: _cpu(pid) for role, pid in server.pids.items()}
    drops0 = server.meter_drops()
    t0 = start_at.value
    tally = Tally()
    problems = []
    for _ in procs:
        try:
            got = out.get(timeout=(seconds or 0) + 180)
        except queue.Empty:
            problems.append("a client process sent nothing")
            break
        if isinstance(got, Tally):
            tally.add(got)
        else:
            problems.append(str(got))
    cpu1 = {role: _cpu(pid) for role, pid in server.pids.items()}
    drops1 = server.meter_drops()
    for p in procs:
        p.join(10)
    if problems:
        raise RuntimeError(f"{server.name}: client process failed: {'; '.join(problems)}")
    if seconds is not None:
        counted = [x for x in tally.leases if x[0] <= t0 + seconds]
        span = seconds
    else:
        counted = tally.leases
        span = max(x[0] for x in tally.leases) - t0
    return {"leases": len(counted), "span": span, "rate": len(counted) / span,
            "lat": [x[1] for x in counted], "timeouts": tally.timeouts, "naks": tally.naks,
            "wrong": tally.wrong, "client_cpu": tally.cpu,
            "drops": None if drops0 is None or drops1 is None else drops1 - drops0,
            "cpu": {role: cpu1[role] - cpu0[role] for role in cpu0}}


# ======================================================================== report
def _ms(values: list[float], q: float) -> str:
    return f"{_pct(values, q) * 1000:.2f}"


def _sec(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"  # nan: no ovs-vswitchd (Linux bridge)


def _drops(runs: list[dict[str, Any]]) -> str:
    counts = [r["drops"] for r in runs]
    return "-" if any(c is None for c in counts) else str(sum(counts))


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    names = [n for n in SERVERS if n in res["latency"]]
    if "dnsmasq" in names:
        print(f"# dnsmasq's guests on {BRIDGES[args.bridge]}; its lease file in "
              f"{args.lease_dir or '/tmp'}")
    print(f"# latency: one guest per server, {args.rounds} sequential exchanges (DISCOVER, "
          f"OFFER, REQUEST, ACK), one every {args.interval} s, the servers interleaved "
          f"round by round; DISCOVER->ACK in ms (DISCOVER->OFFER in brackets)")
    print(f"{'server':8} {'n':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'mean':>7}"
          f"  {'(offer p50':>10} {'p99)':>7}  lost naks wrong")
    for name in names:
        t = res["latency"][name]
        tot = [x[1] for x in t.leases]
        off = [x[2] for x in t.leases]
        print(f"{name:8} {len(tot):>5} {_ms(tot, 50):>7} {_ms(tot, 90):>7} {_ms(tot, 99):>7} "
              f"{max(tot) * 1000:>7.2f} {statistics.mean(tot) * 1000:>7.2f}  "
              f"({_ms(off, 50):>9} {_ms(off, 99):>7})  {t.timeouts:>4} {t.naks:>4} "
              f"{t.wrong:>5}")
    if len(names) == 2:
        a, b = (statistics.median([x[1] for x in res["latency"][n].leases]) for n in names)
        print(f"p50 loom / dnsmasq: {a / b:.2f}x")
    print(f"# throughput: {args.guests} guests in parallel over {args.workers} client "
          f"process(es), closed loop, {args.per_guest} exchanges each ({args.per_guest * 2} "
          f"DHCP packets per guest, Loom's punt meter allows a burst of {PUNT_BURST_PACKETS} "
          f"then {PUNT_RATE_PPS}/s), {args.waves} wave(s) {args.pause:.1f} s apart; "
          f"leases/s = leases / time to the last ACK; lost: exchanges abandoned, drops: "
          f"packets Loom's punt meters dropped; CPU s used during the waves (server: the "
          f"controller process or dnsmasq; client: the client processes), and per lease")
    print(f"{'server':8} {'leases':>6} {'median/s':>8}  {'each wave':24} {'p50 ms':>7} "
          f"{'p99 ms':>7} lost naks wrong drops  {'server cpu':>10} {'ms/lease':>8} "
          f"{'vswitchd':>8} {'client':>6}")
    for name in names:
        waves = res["waves"][name]
        lat = [v for w in waves for v in w["lat"]]
        leases = sum(w["leases"] for w in waves)
        srv = sum(w["cpu"]["server"] for w in waves)
        vsd = sum(w["cpu"]["ovs-vswitchd"] for w in waves)
        cli = sum(w["client_cpu"] for w in waves)
        each = ", ".join(f"{w['rate']:.0f}" for w in waves)
        print(f"{name:8} {leases:>6} {statistics.median(w['rate'] for w in waves):>8.0f}  "
              f"{each:24} {_ms(lat, 50):>7} {_ms(lat, 99):>7} "
              f"{sum(w['timeouts'] for w in waves):>4} {sum(w['naks'] for w in waves):>4} "
              f"{sum(w['wrong'] for w in waves):>5} {_drops(waves):>5}  {srv:>10.2f} "
              f"{srv / leases * 1000:>8.2f} {_sec(vsd):>8} {cli:>6.2f}")
    if len(names) == 2:
        a, b = (statistics.median(w["rate"] for w in res["waves"][n]) for n in names)
        print(f"leases/s loom / dnsmasq: {a / b:.2f}x")
    cap = args.guests * PUNT_RATE_PPS / 2
    print(f"# past the meter: {args.guests} guests closed loop for {args.seconds} s, an "
          f"exchange with no answer in {args.timeout} s started again (new xid). Loom's "
          f"per-port punt meter ({PUNT_RATE_PPS} pps, burst {PUNT_BURST_PACKETS}) caps one "
          f"guest at {PUNT_RATE_PPS / 2:.0f} leases/s once its burst is spent ({args.guests} "
          f"guests: {cap:.0f}/s, plus {PUNT_BURST_PACKETS // 2} each from the burst); a "
          f"guest's packets past its meter are dropped by design (lost = exchanges "
          f"abandoned, drops = packets Loom's punt meters dropped, ovs-ofctl meter-stats)")
    print(f"{'server':8} {'leases':>6} {'leases/s':>8} {'lost':>6} {'drops':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7}  {'server cpu':>10} {'vswitchd':>8} {'client':>6}")
    for name in names:
        s = res["sustained"][name]
        print(f"{name:8} {s['leases']:>6} {s['rate']:>8.0f} {s['timeouts']:>6} {_drops([s]):>6} "
              f"{_ms(s['lat'], 50):>7} {_ms(s['lat'], 99):>7}  {s['cpu']['server']:>10.2f} "
              f"{_sec(s['cpu']['ovs-vswitchd']):>8} {s['client_cpu']:>6.2f}")
    idle = ", ".join(f"{n} {res['idle'][n] * 1000:.0f} ms/s" for n in names)
    print(f"server CPU when idle (before the latency phase, from /proc/<pid>/stat): {idle}")
    load = res["load"]
    print(f"1-minute load average: {load[0]:.2f} before, {min(load):.2f}-{max(load):.2f} "
          f"during; set up in {res['setup_s']:.0f} s, measured in {res['measure_s']:.0f} s")


# ======================================================================== main
def run(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"latency": {}, "waves": {}, "sustained": {}, "load": [_load()]}
    started = time.monotonic()
    sandbox = Sandbox()
    cleanup: list[Any] = []
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="loom-bench-dhcp-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if "loom" in args.servers:
                server, parts = loom_server(sandbox, args.guests, tmp / "loom-state",
                                            args.projects or args.guests)
                cleanup.append(parts)
                servers.append(server)
                _say(f"loom: controller pid {server.pids['server']}, {args.guests} guests "
                     f"ACTIVE")
            if "dnsmasq" in args.servers:
                server, parts = dnsmasq_server(sandbox, args.guests, tmp, args.lease_dir,
                                               args.bridge)
                cleanup.append(parts)
                servers.append(server)
                _say(f"dnsmasq: pid {server.pids['server']}, {args.guests} guests attached "
                     f"to {BRIDGES[args.bridge]}")
            res["setup_s"] = time.monotonic() - started
            measure = time.monotonic()
            # warm up: one exchange per guest, sequentially (a first lease per MAC)
            for s in servers:
                warm = Tally()
                for k, (netns, mac, ip, base) in enumerate(s.targets()):
                    ex = Exchanger(open_raw(netns), mac, ip, base + 0xF0000)
                    one_exchange(ex, 2.0, warm, tries=5)
                    ex.sock.close()
                    if k == 0 and s.name == "loom":
                        _say(f"loom: first lease in {warm.leases[0][1] * 1000:.1f} ms")
                _say(f"{s.name}: warm-up, a lease for each of {args.guests} guests "
                     f"({warm.timeouts} lost, {warm.wrong} wrong address)")
                if warm.wrong:
                    raise RuntimeError(f"{s.name} handed out addresses other than the fixed IPs")
            # what each server process uses doing nothing (the controller's periodic work)
            idle0 = {s.name: _cpu(s.pids["server"]) for s in servers}
            t_idle = time.monotonic()
            time.sleep(max(args.pause, 3.0))
            t_idle = time.monotonic() - t_idle
            res["idle"] = {s.name: (_cpu(s.pids["server"]) - idle0[s.name]) / t_idle
                           for s in servers}
            res["load"].append(_load())
            res["latency"] = latency(servers, args)
            for name, t in res["latency"].items():
                _say(f"latency {name}: p50 {_pct([x[1] for x in t.leases], 50) * 1000:.2f} ms")
            res["load"].append(_load())
            for s in servers:
                res["waves"][s.name] = []
            for w in range(args.waves):
                for s in servers if w % 2 == 0 else servers[::-1]:
                    time.sleep(args.pause)  # the meters refill
                    got = parallel(s, args, args.per_guest, None, salt=(w + 1) << 16)
                    res["waves"][s.name].append(got)
                    res["load"].append(_load())
                    _say(f"wave {w + 1} {s.name}: {got['leases']} leases in "
                         f"{got['span']:.3f} s = {got['rate']:.0f}/s, {got['timeouts']} lost, "
                         f"server cpu {got['cpu']['server']:.2f} s, load {res['load'][-1]:.2f}")
            for s in servers:
                time.sleep(args.pause)
                got = parallel(s, args, None, args.seconds, salt=0xE << 16)
                res["sustained"][s.name] = got
                res["load"].append(_load())
                _say(f"past the meter {s.name}: {got['rate']:.0f} leases/s, "
                     f"{got['timeouts']} lost, load {res['load'][-1]:.2f}")
            res["measure_s"] = time.monotonic() - measure
        finally:
            for s in servers:
                for g in s.guests:
                    g.close()
            for parts in cleanup:
                a, b, leases = parts
                if isinstance(b, ControllerProcess):
                    b.stop()
                    if b.proc is not None and b.proc.returncode not in (0, -signal.SIGTERM):
                        _say(f"controller exited {b.proc.returncode}; log tail:\n"
                             + b.log_tail(30))
                    lines = [ln for ln in b.log_tail(400).splitlines()
                             if " ERROR " in ln or "Traceback" in ln]
                    if lines:
                        _say("controller log errors:\n" + "\n".join(lines[-10:]))
                else:
                    b.terminate()
                    try:
                        b.wait(5)
                    except subprocess.TimeoutExpired:
                        b.kill()
                        b.wait(5)
                    sandbox.forget_process(b.pid)
                    leases.unlink(missing_ok=True)
                if a is not None:
                    a.close(remove_workdir=True)
            left = sandbox.cleanup()
            if left:
                _say(f"cleanup: {left}")
    return res


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=20, help="guest ports per server")
    parser.add_argument("--projects", type=int, default=0,
                        help="Loom: the guests' projects (default one per guest: the "
                             "controller's capacity; with 1, one project's budget, "
                             "punt.PROJECT_RATE answers per second)")
    parser.add_argument("--rounds", type=int, default=200,
                        help="latency: sequential exchanges of one guest")
    parser.add_argument("--interval", type=float, default=0.25,
                        help="latency: seconds from one exchange's start to the next's")
    parser.add_argument("--per-guest", type=int, default=PUNT_BURST_PACKETS // 2,
                        help="throughput: exchanges per guest per wave")
    parser.add_argument("--waves", type=int, default=3, help="throughput: waves per server")
    parser.add_argument("--pause", type=float,
                        default=PUNT_BURST_PACKETS / PUNT_RATE_PPS + 0.5,
                        help="seconds of quiet before each wave (the meters refill)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="past the meter: seconds of closed loop")
    parser.add_argument("--timeout", type=float, default=0.5,
                        help="seconds without an answer before an exchange starts again")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="client processes in the parallel phases")
    parser.add_argument("--lease-dir", type=Path,
                        help="where dnsmasq keeps its lease file (default: a temporary "
                             "directory under /tmp)")
    parser.add_argument("--bridge", choices=("ovs", "linux"), default="ovs",
                        help="dnsmasq's guests on an OVS bridge in normal mode (a private "
                             "OVS, userspace datapath, as Loom's) or a Linux bridge")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if os.geteuid() != 0:
        print("needs root (network namespaces, OVS, raw sockets)", file=sys.stderr)
        return 2
    if not 1 <= args.guests <= 60000:
        parser.error("--guests must be 1..60000")
    if "dnsmasq" in args.servers and shutil.which("dnsmasq") is None:
        print("dnsmasq is not installed (apt-get install dnsmasq-base)", file=sys.stderr)
        return 2
    for xid in (0x12345678, 0xFFFFFFFF, 0xEDCBA987, 1):  # the frames on the wire are os-ken's
        for kind, extra in ((dhcp.DHCP_DISCOVER, {}),
                            (dhcp.DHCP_REQUEST, {"requested": _ip(7), "server": SERVER_IP})):
            if with_xid(client_frame(_mac(7), 0, kind, **extra), xid) \
                    != client_frame(_mac(7), xid, kind, **extra):
                raise AssertionError(f"with_xid differs from os-ken's frame for xid {xid:#x}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so everything is torn down
    command = f"sudo .venv/bin/python -m bench.bench_dhcp {' '.join(raw)}".rstrip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs; 1-minute load "
          f"{_load():.2f}; {_revision()}")
    res = run(args)
    report(res, args)
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
