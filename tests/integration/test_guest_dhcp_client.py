"""The guest's DHCP client (topologies/dhcp_client.py, `Guest.dhcp()`) against a real
dnsmasq, without Loom or OVS: a guest namespace and a server namespace joined by a veth.

Proves what the lab relies on once Loom answers DHCP: the stock dhclient-script really
configures address, default route, classless routes (option 121), MTU (option 26) and
the guest's own resolv.conf, never the host's; a forced renew really sends a
DHCPREQUEST that the server answers; the client's own RENEW at T1 goes unicast to the
server; release gives the address back; close leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_for
from topologies import netns as nsutil
from topologies.dhcp_client import (
    DhcpError,
    decode_classless_routes,
    netns_etc,
    parse_lease_file,
)
from topologies.guest import Guest
from topologies.lab import dhcp_problems
from topologies.netns import Sandbox

pytestmark = pytest.mark.integration

MAC = "02:dc:00:00:00:01"
SERVER = "10.77.0.1"
LEASED = "10.77.0.50"
DNS = ("10.77.0.53", "10.77.0.54")
ROUTES = (("192.168.77.0/24", "10.77.0.254"), ("0.0.0.0/0", SERVER))
LEASE_TIME = 120  # dnsmasq's minimum
T1 = 3            # option 58: the client's own RENEW comes after 3-4 s


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        reason = f"needs {', '.join(missing)}: run `sudo make deps`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


@dataclass
class Dnsmasq:
    netns: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))


def _host_resolv() -> tuple[bytes, int, int]:
    st = os.stat("/etc/resolv.conf")
    return Path("/etc/resolv.conf").read_bytes(), st.st_ino, st.st_mtime_ns


def _stray_resolv_temps() -> list[str]:
    return sorted(p.name for p in Path("/etc").glob("resolv.conf.dhclient-new*"))


def _plug(sandbox: Sandbox, guest: Guest, peer_ns: str) -> str:
    """guest eth0 (its MAC) <-> a peer interface in `peer_ns`; returns the peer's name."""
    peer = sandbox.name("sv")
    sandbox.add_veth("eth0", peer, guest.netns, peer_ns)
    nsutil.set_mac("eth0", guest.mac, netns=guest.netns)
    return peer


@pytest.fixture
def server(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Dnsmasq, str]]:
    """dnsmasq in its own namespace on a Linux bridge there, DHCP only (port=0: no
    DNS), one address to hand out; yields it and the bridge guests' veths join."""
    _need("dhclient", "dnsmasq", "unshare")
    ns = sandbox.add_netns("dsrv")
    dev = "br0"  # inside the server's namespace, removed with it
    nsutil.run(["ip", "link", "add", dev, "type", "bridge"], netns=ns)
    nsutil.run(["ip", "addr", "add", f"{SERVER}/24", "dev", dev], netns=ns)
    nsutil.link_up(dev, netns=ns)
    log = tmp_path / "dnsmasq.log"
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        "--no-resolv", "--no-hosts", f"--interface={dev}", "--bind-interfaces",
        f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
        "--dhcp-authoritative", "--no-ping", "--log-dhcp", f"--log-facility={log}",
        f"--dhcp-range={LEASED},{LEASED},255.255.255.0,{LEASE_TIME}",
        f"--dhcp-option=option:router,{SERVER}",
        f"--dhcp-option=option:dns-server,{','.join(DNS)}",
        "--dhcp-option=option:mtu,1400",
        "--dhcp-option=option:classless-static-route,"
        + ",".join(f"{d},{g}" for d, g in ROUTES),
        f"--dhcp-option=option:T1,{T1}",
    ]
    with open(tmp_path / "dnsmasq.out", "wb") as out:
        proc = nsutil.popen(argv, netns=ns, stdout=out)
    sandbox.record_process(proc.pid, str(log))
    try:
        wait_for("dnsmasq listening on :67",
                 lambda: nsutil.run(["ss", "-Hlun", "sport = :67"], netns=ns).stdout.strip()
                 or proc.poll() is not None, timeout=10)
        assert proc.poll() is None, (tmp_path / "dnsmasq.out").read_text()
        yield Dnsmasq(ns, log), dev
    finally:
        proc.terminate()
        proc.wait(5)
        sandbox.forget_process(proc.pid)


def _attach_to_bridge(sandbox: Sandbox, guest: Guest, server_ns: str, bridge: str) -> None:
    peer = _plug(sandbox, guest, server_ns)
    nsutil.run(["ip", "link", "set", peer, "master", bridge], netns=server_ns)


def test_classless_route_and_lease_file_parsing() -> None:
    assert decode_classless_routes([24, 192, 168, 77, 10, 77, 0, 254, 0, 10, 77, 0, 1]) == \
        list(ROUTES)
    assert decode_classless_routes([32, 10, 1, 2, 3, 10, 0, 0, 1, 9, 10, 128, 10, 0, 0, 2]) == \
        [("10.1.2.3/32", "10.0.0.1"), ("10.128.0.0/9", "10.0.0.2")]
    with pytest.raises(ValueError):
        decode_classless_routes([24, 192, 168])
    text = """default-duid "\\000\\001";
lease {
  interface "eth0";
  fixed-address 10.77.0.50;
  option subnet-mask 255.255.255.0;
  option routers 10.77.0.1;
  option dhcp-lease-time 120;
  option domain-name-servers 10.77.0.53,10.77.0.54;
  option dhcp-server-identifier 10.77.0.1;
  option interface-mtu 1400;
  option rfc3442-classless-static-routes 24,192,168,77,10,77,0,254,0,10,77,0,1;
  renew 3 2026/12/02 03:01:41;
  expire 3 2026/12/02 03:03:37;
}
"""
    (lease,) = parse_lease_file(text)
    assert (lease.cidr, lease.routers, lease.dns, lease.mtu, lease.routes, lease.lease_time,
            lease.server_id) == (f"{LEASED}/24", (SERVER,), DNS, 1400, ROUTES, 120, SERVER)
    assert lease.expiry == 1796180617.0


def test_dhcp_configures_guest_renews_and_releases(sandbox: Sandbox,
                                                   server: tuple[Dnsmasq, str]) -> None:
    dnsmasq, bridge = server
    host_before, temps_before = _host_resolv(), _stray_resolv_temps()
    guest = Guest("g1", MAC, None, sandbox=sandbox)
    _attach_to_bridge(sandbox, guest, dnsmasq.netns, bridge)
    try:
        lease = guest.dhcp(timeout=15)
        assert lease is not None and lease.reason == "BOUND"
        # What the server handed out, as dhclient received it.
        assert (lease.cidr, lease.routers, lease.dns, lease.mtu, lease.routes, lease.lease_time,
                lease.server_id, lease.renewal_time) == \
            (f"{LEASED}/24", (SERVER,), DNS, 1400, ROUTES, LEASE_TIME, SERVER, T1)
        assert guest.ip == LEASED and guest.gateway == SERVER
        # What the stock dhclient-script configured in the guest.
        assert guest.addresses() == [f"{LEASED}/24"]
        routes = guest.routes()
        assert ("0.0.0.0/0", SERVER) in routes, routes
        assert ("192.168.77.0/24", "10.77.0.254") in routes, routes
        assert ("10.77.0.0/24", None) in routes, routes
        assert guest.link_mtu() == 1400
        resolv = guest.resolv_conf()
        assert [ln.split()[1] for ln in resolv.splitlines()
                if ln.startswith("nameserver")] == list(DNS), resolv
        assert guest.ping(SERVER, count=1) == (1, 1)
        # The guest's resolv.conf is its /etc/netns file; the host's is untouched.
        assert (netns_etc(guest.netns) / "resolv.conf").read_text() == resolv
        assert _host_resolv() == host_before
        assert sorted(os.listdir(netns_etc(guest.netns) / "dhcp" / "dhclient-exit-hooks.d")) \
            == ["rfc3442-classless-routes"]
        client = guest.dhcp_client
        assert client is not None and client.running
        assert client.lease_file()[-1].routes == ROUTES
        # The lab's check of a lease against the API, on this real one.
        subnet = {"cidr": "10.77.0.0/24", "gateway_ip": SERVER, "dns_nameservers": list(DNS),
                  "host_routes": [{"destination": ROUTES[0][0], "nexthop": ROUTES[0][1]}]}
        assert dhcp_problems(lease, LEASED, subnet, 1400, guest.addresses()) == []
        wrong = dhcp_problems(lease, "10.77.0.51", {**subnet, "dns_nameservers": []}, 1450)
        assert len(wrong) == 3 and "fixed IP is 10.77.0.51/24" in wrong[0], wrong

        # Forced renew: a fresh dhclient from the lease file asks for the same address
        # (INIT-REBOOT: broadcast DHCPREQUEST, no DISCOVER) and the server ACKs it again.
        acks = dnsmasq.count(rf"DHCPACK\(\S+\) {LEASED} {MAC}")
        renewed = guest.dhcp_renew(timeout=10)
        assert renewed.reason == "REBOOT" and renewed.cidr == lease.cidr
        current = client.log(current=True)
        assert f"DHCPREQUEST for {LEASED} on eth0 to 255.255.255.255 port 67" in current
        assert f"DHCPACK of {LEASED} from {SERVER}" in current
        assert "DHCPDISCOVER" not in current, current
        assert dnsmasq.count(rf"DHCPACK\(\S+\) {LEASED} {MAC}") > acks
        lifetime = nsutil.run(["ip", "-4", "addr", "show", "dev", "eth0"],
                              netns=guest.netns).stdout
        valid = int(re.search(r"valid_lft (\d+)sec", lifetime).group(1))  # type: ignore[union-attr]
        assert valid >= LEASE_TIME - 5, lifetime  # reset by renew(), not the old lifetime

        # The client's own RENEW at T1: a DHCPREQUEST unicast to the server id.
        mark = len(client.log())
        own = guest.dhcp_wait_renewal(timeout=3 * T1 + 2)
        assert own.reason == "RENEW" and own.cidr == lease.cidr
        assert f"DHCPREQUEST for {LEASED} on eth0 to {SERVER} port 67" in client.log()[mark:]

        # Release: DHCPRELEASE reaches the server, the address and its routes go.
        guest.dhcp_release()
        assert not client.running
        assert guest.addresses() == [] and guest.ip is None
        assert not [r for r in guest.routes() if r[0] == "0.0.0.0/0"]
        wait_for("DHCPRELEASE at the server",
                 lambda: dnsmasq.count(rf"DHCPRELEASE\(\S+\) {LEASED} {MAC}"), timeout=5)
        assert _host_resolv() == host_before
    finally:
        state_dir = guest.dhcp_client.state_dir if guest.dhcp_client else None
        guest.close()
    assert not netns_etc(guest.netns).exists()
    assert state_dir is not None and not state_dir.exists()
    assert _host_resolv() == host_before
    assert _stray_resolv_temps() == temps_before


def test_dhcp_without_server_fails_loudly(sandbox: Sandbox) -> None:
    _need("dhclient", "unshare")
    void = sandbox.add_netns("void")
    guest = Guest("g2", "02:dc:00:00:00:02", None, sandbox=sandbox)
    _plug(sandbox, guest, void)
    try:
        with pytest.raises(DhcpError, match="no lease on the first try|nothing in"):
            guest.dhcp(timeout=2)
        assert guest.ip is None and guest.addresses() == []
        assert guest.dhcp_client is not None and not guest.dhcp_client.running
        assert "DHCPDISCOVER on eth0" in guest.dhcp_client.log()
    finally:
        guest.close()
    assert not netns_etc(guest.netns).exists()
