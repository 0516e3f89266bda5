"""A guest (a "VM") as a network namespace plugged into an OVS bridge.

The guest's namespace has one interface, ``eth0``; its veth peer lives in the OVS
instance's namespace and is added to a bridge with the Neutron/OVN binding keys
``external_ids:iface-id`` (the port id), ``attached-mac`` and ``iface-status``, so a
controller binds it exactly as it would a real VM's tap. Offloads are off on both
ends (TCP breaks on the userspace datapath otherwise).

A guest made with ``ip_cidr=None`` has no IPv4 address until `dhcp()` runs a real DHCP
client (ISC dhclient with the stock dhclient-script, see topologies/dhcp_client.py) in
its namespace: address, routes, MTU and the guest's own resolv.conf come from the
server, and the client keeps running (renewing) until `close()`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path

from topologies import dhcp_client as dhcp
from topologies import netns as nsutil
from topologies.dhcp_client import DhcpClient, DhcpError, DhcpLease
from topologies.netns import CommandError, Sandbox
from topologies.ovs_instance import OvsInstance

GUEST_IF = "eth0"


class TcpListener:
    """An ``nc -l`` inside a guest, capturing what it receives to a file.

    One-shot by default; with `keep` it accepts connection after connection (``-k``).
    """

    def __init__(self, guest: Guest, port: int, ipv6: bool = False, timeout: float = 5.0,
                 keep: bool = False):
        self.guest = guest
        self.port = port
        fd, path = tempfile.mkstemp(prefix=f"loom-nc-{guest.name}-{port}-")
        self.path = Path(path)
        with open(fd, "wb") as out:
            argv = ["nc", "-6" if ipv6 else "-4", "-l", *(["-k"] if keep else []), "-n",
                    str(port)]
            self.proc = nsutil.popen(argv, netns=guest.netns, stdout=out, stderr=subprocess.DEVNULL)
        guest.sandbox.record_process(self.proc.pid, "nc")
        guest._listeners.append(self)
        _LISTENERS.add(self)
        self._wait_listening(ipv6, timeout)

    def _wait_listening(self, ipv6: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        flag = "-6" if ipv6 else "-4"
        while True:
            out = self.guest.run(["ss", "-Hltn", flag, f"sport = :{self.port}"], check=False).stdout
            if out.strip():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"nc -l {self.port} in {self.guest.name} exited early")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nc -l {self.port} in {self.guest.name} not listening")
            time.sleep(0.02)

    def data(self) -> bytes:
        """What has arrived so far."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def wait_for(self, payload: bytes, timeout: float = 5.0) -> bool:
        """True once `payload` has arrived (nc exits when the sender closes)."""
        deadline = time.monotonic() + timeout
        while True:
            if payload in self.data():
                return True
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return payload in self.data()
            time.sleep(0.02)

    @property
    def done(self) -> bool:
        return self.proc.poll() is not None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2)
        self.guest.sandbox.forget_process(self.proc.pid)
        self.path.unlink(missing_ok=True)
        if self in self.guest._listeners:
            self.guest._listeners.remove(self)
        _LISTENERS.discard(self)


class Guest:
    """A namespace with one veth (``eth0``) whose peer is a port on an OVS bridge.

    Given `ovs` and `bridge`, the guest is attached at once; otherwise call
    `attach()`. `port_id` (default: a fresh UUID) becomes ``external_ids:iface-id``.
    """

    def __init__(
        self,
        name: str,
        mac: str,
        ip_cidr: str | None,
        ipv6_cidr: str | None = None,
        *,
        ovs: OvsInstance | None = None,
        bridge: str | None = None,
        port_id: str | None = None,
        sandbox: Sandbox | None = None,
        mtu: int = 1500,
        gateway: str | None = None,
        gateway6: str | None = None,
    ):
        self.name = name
        self.mac = mac
        self.ip_cidr = ip_cidr
        self.ipv6_cidr = ipv6_cidr
        self.mtu = mtu
        self.gateway = gateway
        self.gateway6 = gateway6
        self._own_sandbox = sandbox is None
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self.netns = self.sandbox.add_netns(name)
        self.ifname = GUEST_IF
        self.port_id = port_id or str(uuid.uuid4())
        self.ovs: OvsInstance | None = None
        self.bridge: str | None = None
        self.port_name: str | None = None
        self._listeners: list[TcpListener] = []
        self.dhcp_client: DhcpClient | None = None
        # Guests never route or answer router solicitations; keep IPv6 quiet and fast.
        nsutil.sysctl("net.ipv6.conf.all.accept_dad", 0, netns=self.netns)
        nsutil.sysctl("net.ipv6.conf.default.accept_dad", 0, netns=self.netns)
        if ovs is not None:
            if bridge is None:
                raise ValueError("bridge is required with ovs")
            self.attach(ovs, bridge)

    @classmethod
    def existing(
        cls,
        name: str,
        netns: str,
        mac: str,
        ip_cidr: str | None,
        ipv6_cidr: str | None = None,
        *,
        sandbox: Sandbox,
        port_id: str,
        ovs: OvsInstance | None = None,
        bridge: str | None = None,
        port_name: str | None = None,
        mtu: int = 1500,
        dhcp_state_dir: str | Path | None = None,
    ) -> Guest:
        """A handle on a guest made earlier (e.g. by another process, as the lab's CLI
        does): creates nothing; `sandbox` must be the one that recorded it.
        `dhcp_state_dir`: the state dir of the DHCP client `dhcp()` started, which this
        handle then controls (`dhcp_renew()`, `dhcp_release()`)."""
        self = cls.__new__(cls)
        self.name, self.mac, self.ip_cidr, self.ipv6_cidr = name, mac, ip_cidr, ipv6_cidr
        self.mtu, self.gateway, self.gateway6 = mtu, None, None
        self._own_sandbox = False
        self.sandbox = sandbox
        self.netns = netns
        self.ifname = GUEST_IF
        self.port_id = port_id
        self.ovs, self.bridge, self.port_name = ovs, bridge, port_name
        self._listeners = []
        self.dhcp_client = None
        if dhcp_state_dir is not None:
            self.dhcp_client = DhcpClient.adopt(netns, dhcp_state_dir, GUEST_IF,
                                                sandbox=sandbox, label=name)
        return self

    # -- plumbing -----------------------------------------------------------------
    def attach(
        self, ovs: OvsInstance, bridge: str, port_name: str | None = None, ofport: int | None = None
    ) -> int:
        """Create eth0 <-> peer, add the peer to `bridge` with the binding keys; return ofport."""
        if self.ovs is not None:
            raise RuntimeError(f"{self.name} is already attached to {self.ovs.name}/{self.bridge}")
        port = port_name or self.sandbox.name("t" + self.name)
        self.sandbox.add_veth(GUEST_IF, port, self.netns, ovs.netns, mtu=self.mtu)
        # The switch side carries no IP traffic of its own.
        with contextlib.suppress(CommandError):
            nsutil.sysctl(f"net.ipv6.conf.{port}.disable_ipv6", 1, netns=ovs.netns)
        nsutil.set_mac(GUEST_IF, self.mac, netns=self.netns)
        for cidr in (self.ip_cidr, self.ipv6_cidr):
            if cidr:
                nsutil.add_address(GUEST_IF, cidr, netns=self.netns)
        if self.gateway:
            nsutil.add_route("default", via=self.gateway, dev=GUEST_IF, netns=self.netns)
        if self.gateway6:
            nsutil.add_route("default", via=self.gateway6, dev=GUEST_IF, netns=self.netns)
        args = [
            "add-port",
            bridge,
            port,
            "--",
            "set",
            "Interface",
            port,
            f"external_ids:iface-id={self.port_id}",
            f'external_ids:attached-mac="{self.mac}"',
            "external_ids:iface-status=active",
        ]
        if ofport is not None:
            args.append(f"ofport_request={ofport}")
        ovs.vsctl(*args)
        self.ovs, self.bridge, self.port_name = ovs, bridge, port
        return self.ofport

    def detach(self) -> None:
        """Remove the port from its bridge and delete the veth pair (a running DHCP
        client is stopped first: its interface goes away)."""
        if self.ovs is None or self.port_name is None:
            return
        if self.dhcp_client is not None:
            self.dhcp_client.stop()
        if self.ovs.ovsdb_running:
            with contextlib.suppress(CommandError):
                self.ovs.vsctl("--if-exists", "del-port", self.port_name)
        self.sandbox.delete_link(self.port_name, self.ovs.netns)
        if nsutil.link_exists(GUEST_IF, netns=self.netns):
            nsutil.run(["ip", "link", "del", GUEST_IF], netns=self.netns, check=False)
        self.ovs = self.bridge = self.port_name = None

    @property
    def ofport(self) -> int:
        """The OpenFlow port number OVS gave our port (-1 while unassigned)."""
        if self.ovs is None or self.port_name is None:
            return -1
        out = self.ovs.vsctl("get", "Interface", self.port_name, "ofport")
        try:
            return int(out)
        except ValueError:
            return -1

    @property
    def ip(self) -> str | None:
        return str(ipaddress.ip_interface(self.ip_cidr).ip) if self.ip_cidr else None

    @property
    def ipv6(self) -> str | None:
        return str(ipaddress.ip_interface(self.ipv6_cidr).ip) if self.ipv6_cidr else None

    def close(self) -> None:
        """Stop listeners and the DHCP client (removing its /etc/netns/<netns>), detach,
        delete the namespace (only what this guest made)."""
        for listener in list(self._listeners):
            listener.close()
        if self.dhcp_client is not None:
            self.dhcp_client.close()
            self.dhcp_client = None
        self.detach()
        if self.netns in self.sandbox.netns:
            self.sandbox.delete_netns(self.netns)
        if self._own_sandbox:
            self.sandbox.cleanup()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- DHCP and what is configured ------------------------------------------------
    def dhcp(self, timeout: float = 20.0, *, state_dir: str | Path | None = None,
             wait: bool = True) -> DhcpLease | None:
        """Get eth0's IPv4 configuration by DHCP and keep the client running (renewing).

        Returns the lease as the server gave it (address/prefix, routers, dns, mtu,
        classless routes, lease time, server id); the stock dhclient-script has then
        configured it (see `addresses()`, `routes()`, `link_mtu()`, `resolv_conf()`),
        and `ip_cidr` is the leased address. Raises DhcpError (with dhclient's log
        tail) if no server answers within `timeout`. `state_dir`: where dhclient keeps
        its config, lease, pid, log and script records (default
        /run/loom-dhcp/<netns>, removed by `close()`). `wait=False`: return None at
        once, then `dhcp_wait()` (to start several guests' clients together).
        """
        if self.ip_cidr is not None:
            raise ValueError(f"{self.name} has a static IPv4 address {self.ip_cidr}: "
                             "make it with ip_cidr=None to use DHCP")
        if self.dhcp_client is not None and self.dhcp_client.running:
            raise DhcpError(f"{self.name}: its DHCP client already runs")
        if self.dhcp_client is None:
            self.dhcp_client = DhcpClient(self.netns, GUEST_IF, state_dir=state_dir,
                                          sandbox=self.sandbox, label=self.name)
        lease = self.dhcp_client.start(timeout, wait=wait)
        if lease is not None:
            self._leased(lease)
        return lease

    def dhcp_wait(self, timeout: float = 20.0) -> DhcpLease:
        """After `dhcp(wait=False)`: the lease, as `dhcp()` returns it."""
        return self._leased(self._dhcp().wait_acquired(timeout))

    def dhcp_renew(self, timeout: float = 15.0) -> DhcpLease:
        """Make the running client send a DHCPREQUEST for its lease now (dhclient is
        restarted from its lease file: INIT-REBOOT, see `DhcpClient.renew`); return the
        answer's lease (`reason` REBOOT if ACKed, BOUND if NAKed and bound anew)."""
        return self._leased(self._dhcp().renew(timeout))

    def dhcp_wait_renewal(self, timeout: float) -> DhcpLease:
        """The client's own next RENEW (T1, unicast to the server id) or REBIND (T2)."""
        return self._leased(self._dhcp().wait_renewal(timeout))

    def dhcp_release(self, timeout: float = 10.0) -> None:
        """DHCPRELEASE (``dhclient -r``): the client stops, eth0 loses the address."""
        self._dhcp().release(timeout)
        self.ip_cidr = None
        self.gateway = None

    def _dhcp(self) -> DhcpClient:
        if self.dhcp_client is None:
            raise DhcpError(f"{self.name}: no DHCP client (call dhcp() first)")
        return self.dhcp_client

    def _leased(self, lease: DhcpLease) -> DhcpLease:
        self.ip_cidr = lease.cidr
        gateways = [gw for dest, gw in lease.routes if dest == "0.0.0.0/0"] \
            if lease.routes else list(lease.routers)
        self.gateway = gateways[0] if gateways else None
        return lease

    def addresses(self, version: int = 4) -> list[str]:
        """eth0's global addresses (address/prefix) as configured now."""
        return dhcp.addresses(self.netns, GUEST_IF, version)

    def routes(self, version: int = 4) -> list[tuple[str, str | None]]:
        """eth0's routes as (destination/prefix, gateway or None); default is 0.0.0.0/0."""
        return dhcp.routes(self.netns, GUEST_IF, version)

    def resolv_conf(self) -> str:
        """/etc/resolv.conf as the guest sees it (its own once `dhcp()` ran)."""
        return dhcp.resolv_conf(self.netns)

    def link_mtu(self) -> int:
        """eth0's MTU now (`mtu` is the one it was made with, DHCP may change it)."""
        return dhcp.link_mtu(self.netns, GUEST_IF)

    # -- running things -----------------------------------------------------------
    def run(
        self, cmd: str | Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the guest; a string goes through ``sh -c``."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return nsutil.run(argv, netns=self.netns, check=check, timeout=timeout)

    def set_mac(self, mac: str) -> None:
        """Change eth0's MAC (e.g. for spoofing tests); `self.mac` keeps the bound one."""
        nsutil.set_mac(GUEST_IF, mac, netns=self.netns)

    def add_ip(self, cidr: str) -> None:
        """Add another address to eth0 (e.g. for spoofing tests)."""
        nsutil.add_address(GUEST_IF, cidr, netns=self.netns)

    def del_ip(self, cidr: str) -> None:
        nsutil.del_address(GUEST_IF, cidr, netns=self.netns)

    def ping(
        self,
        ip: str,
        count: int = 3,
        interval: float = 0.2,
        timeout: float = 1.0,
        source: str | None = None,
    ) -> tuple[int, int]:
        """Ping `ip` (v4 or v6), from `source` if given; return (sent, received).

        Never raises on loss."""
        family = "-6" if ipaddress.ip_address(ip).version == 6 else "-4"
        deadline = count * interval + timeout + 1
        argv = [
            "ping",
            family,
            "-n",
            "-q",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-W",
            str(timeout),
            *(["-I", source] if source else []),
            ip,
        ]
        out = self.run(argv, check=False, timeout=deadline + 5).stdout
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        if not m:
            return count, 0
        return int(m.group(1)), int(m.group(2))

    def tcp_listen(self, port: int, ipv6: bool = False, keep: bool = False) -> TcpListener:
        """Start ``nc -l PORT`` in the background; returns once it is listening."""
        return TcpListener(self, port, ipv6=ipv6, keep=keep)

    def tcp_connect(
        self,
        ip: str,
        port: int,
        payload: str | bytes,
        timeout: float = 5.0,
        *,
        listener: TcpListener | None = None,
        source: str | None = None,
    ) -> bool:
        """Send `payload` over TCP to ip:port; True only if it arrived at the listener.

        `listener`: the TcpListener expected to receive it. Without one, the payload
        must arrive at some listener on `port` opened through this module in this
        process (use distinct payloads per call to make that meaningful).
        """
        data = payload.encode() if isinstance(payload, str) else payload
        if listener is not None:
            candidates = [listener]
        else:
            candidates = [lst for lst in list(_LISTENERS) if lst.port == port]
            if not candidates:
                raise ValueError(f"no listener on port {port}: call tcp_listen() first")
        argv = ["nc", "-n", "-N", "-w", str(max(1, int(timeout)))]
        if source:
            argv += ["-s", source]
        argv += [ip, str(port)]
        try:
            proc = nsutil.run(argv, netns=self.netns, input=data, check=False, timeout=timeout + 2)
        except CommandError:
            return False
        if proc.returncode != 0:
            return False
        deadline = time.monotonic() + timeout
        while True:
            if any(data in lst.data() for lst in candidates):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def __repr__(self) -> str:
        return f"Guest({self.name!r}, {self.mac!r}, {self.ip_cidr!r}, netns={self.netns!r})"


_LISTENERS: weakref.WeakSet[TcpListener] = weakref.WeakSet()
