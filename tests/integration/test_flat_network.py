"""A flat provider network across two hypervisors, beside a VLAN network, on real OVS.

Two hypervisors (namespaces, each with its own OVS) each have a provider bridge br-ex
(standalone, a plain learning switch) whose uplinks are the two ends of one veth: the
physical network physnet1, mapped on both by `external_ids:loom-bridge-mappings`. On
it, through the REST API: the flat network `ext` (router:external) and the VLAN
network `vl` (VLAN 100), both 192.0.2.0/24 with the same addresses, a guest of each
on each hypervisor.

Checked: flat guests ping each other across the hypervisors, and so do VLAN guests;
the same address on the other network is never reached (ARP resolves to the guest of
the sender's own network, the other guest sees nothing); a tcpdump on the provider
link shows the flat network's frames untagged and the VLAN network's tagged 100; a
flat guest's own 802.1Q-tagged frames never reach the physical network (they would
be VLAN 100's); a controller restart sends no flow_mod (the untagged match and the
tagged drop read back from OVS as compiled).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from topologies.guest import Guest
from topologies.lab import Lab

pytestmark = pytest.mark.integration

SPEC = """
name: flat
hypervisors:
  - name: hv1
  - name: hv2
controller: {}
"""
PROVIDER_BRIDGE = "br-ex"
UPLINK = "phy0"  # the veth end on br-ex, the same name in both namespaces
CIDR = "192.0.2.0/24"
VLAN_ID = 100
# guest -> (network, hypervisor, address): the same addresses on both networks
GUESTS = {
    "f1": ("ext", "hv1", "192.0.2.11"),
    "f2": ("ext", "hv2", "192.0.2.12"),
    "v1": ("vl", "hv1", "192.0.2.11"),
    "v2": ("vl", "hv2", "192.0.2.12"),
}


def _quiet(_line: str) -> None:
    pass


class Flat:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.guests: dict[str, Guest] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.networks: dict[str, dict[str, Any]] = {}


def _created(resp: Any, what: str) -> dict[str, Any]:
    assert resp.status == 201, (what, resp.status, resp.body)
    return dict(next(iter(resp.body.values())))


def _physical_network(lab: Lab) -> None:
    """br-ex on each hypervisor, joined by one veth, and the bridge mapping."""
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    lab.sandbox.add_veth(UPLINK, UPLINK, hv1.netns, hv2.netns)
    for hv in (hv1, hv2):
        hv.ovs.add_bridge(PROVIDER_BRIDGE, fail_mode="standalone")
        hv.ovs.vsctl("--may-exist", "add-port", PROVIDER_BRIDGE, UPLINK)
        hv.ovs.vsctl("set", "Open_vSwitch", ".",
                     f"external_ids:loom-bridge-mappings=physnet1:{PROVIDER_BRIDGE}")
    deadline = time.monotonic() + 30
    for hv in (hv1, hv2):  # the controller makes the patch pair br-int <-> br-ex
        while len(hv.ovs.vsctl("--bare", "--columns=name", "find", "Interface",
                               "type=patch").split()) < 2:
            assert time.monotonic() < deadline, f"{hv.name}: no provider patch in 30 s"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flat]:
    spec = tmp_path_factory.mktemp("flat") / "flat.yaml"
    spec.write_text(SPEC)
    lab = Lab.up(spec, name=f"flat-{secrets.token_hex(3)}", progress=_quiet)
    world = Flat(lab)
    try:
        _physical_network(lab)
        api = lab.api
        world.networks["ext"] = _created(api.post("/v2.0/networks", {"network": {
            "name": "ext", "project_id": "alpha", "router:external": True,
            "provider:network_type": "flat", "provider:physical_network": "physnet1"}}), "ext")
        world.networks["vl"] = _created(api.post("/v2.0/networks", {"network": {
            "name": "vl", "project_id": "alpha", "provider:network_type": "vlan",
            "provider:physical_network": "physnet1",
            "provider:segmentation_id": VLAN_ID}}), "vl")
        subnets = {name: _created(api.post("/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "cidr": CIDR, "ip_version": 4, "project_id": "alpha"}}),
            f"subnet {name}") for name, net in world.networks.items()}
        for name, (net, hv, ip) in GUESTS.items():
            port = _created(api.post("/v2.0/ports", {"port": {
                "network_id": world.networks[net]["id"], "project_id": "alpha",
                "fixed_ips": [{"subnet_id": subnets[net]["id"], "ip_address": ip}]}}),
                f"port {name}")
            world.ports[name] = port
            world.guests[name] = Guest(name, port["mac_address"], f"{ip}/24",
                                       sandbox=lab.sandbox, ovs=lab.hypervisor(hv).ovs,
                                       bridge="br-int", port_id=port["id"])
        lab.wait_ports_active([p["id"] for p in world.ports.values()])
        deadline = time.monotonic() + 30  # flows in place once a cross-chassis ping goes
        while world.guests["f1"].ping("192.0.2.12", count=1, timeout=1)[1] != 1:
            assert time.monotonic() < deadline, "no flat ping across hypervisors in 30 s"
        yield world
    finally:
        for g in world.guests.values():
            g.close()
        problems = lab.down()
        assert not problems, problems


def _capture(netns: str, ifname: str, bpf: str, seconds: int = 6, count: int = 20
             ) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "timeout", str(seconds), "tcpdump", "-l", "-n", "-e",
         "-i", ifname, "-c", str(count), bpf],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)  # tcpdump is listening
    return proc


def _frames(out: str) -> list[str]:
    """tcpdump's packet lines (not its banner and summary)."""
    return [line for line in out.splitlines() if re.match(r"^\d\d:\d\d:\d\d", line)]


def _neigh_mac(g: Guest, ip: str) -> str:
    out = g.run(["ip", "neigh", "show", ip], check=False).stdout.lower()
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else ""


def test_flat_guests_reach_each_other_across_hypervisors(flat: Flat) -> None:
    f1, f2 = flat.guests["f1"], flat.guests["f2"]
    assert f1.ping("192.0.2.12", count=3, interval=0.2) == (3, 3)
    assert f2.ping("192.0.2.11", count=3, interval=0.2) == (3, 3)
    listener = f2.tcp_listen(8080)
    assert f1.tcp_connect("192.0.2.12", 8080, "flat across physnet1 " * 2000,
                          listener=listener)


def test_vlan_guests_on_the_same_physical_network_still_reach_each_other(flat: Flat) -> None:
    v1, v2 = flat.guests["v1"], flat.guests["v2"]
    assert v1.ping("192.0.2.12", count=3, interval=0.2) == (3, 3)
    assert v2.ping("192.0.2.11", count=3, interval=0.2) == (3, 3)


def test_the_other_networks_guest_is_never_reached(flat: Flat) -> None:
    """Both networks have 192.0.2.12 on hv2: each sender resolves and reaches its own."""
    for src, own, other in (("f1", "f2", "v2"), ("v1", "v2", "f2")):
        g = flat.guests[src]
        g.run(["ip", "neigh", "flush", "all"])
        other_g = flat.guests[other]
        cap = _capture(other_g.netns, "eth0", f"ether src {flat.ports[src]['mac_address']}",
                       seconds=5)
        assert g.ping("192.0.2.12", count=3, interval=0.2) == (3, 3), src
        assert _neigh_mac(g, "192.0.2.12") == flat.ports[own]["mac_address"], src
        out, _ = cap.communicate(timeout=15)
        assert _frames(out) == [], f"{other} saw {src}'s frames:\n{out}"


def test_the_provider_link_carries_flat_untagged_and_vlan_tagged(flat: Flat) -> None:
    hv1 = flat.lab.hypervisor("hv1")
    for src, tagged in (("f1", False), ("v1", True)):
        bpf = f"ether src {flat.ports[src]['mac_address']}"
        cap = _capture(hv1.netns, UPLINK, bpf, seconds=6, count=6)
        assert flat.guests[src].ping("192.0.2.12", count=3, interval=0.2) == (3, 3), src
        out, _ = cap.communicate(timeout=15)
        frames = _frames(out)
        assert frames, f"no frame of {src} on the provider link:\n{out}"
        for line in frames:
            if tagged:
                assert re.search(rf"\bvlan {VLAN_ID}\b", line), line
            else:
                assert "802.1Q" not in line and "vlan" not in line, line


_SEND_TAGGED = """
import socket, struct, sys
dst, src, vid, sip, dip = sys.argv[1:6]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"tagged by a guest" + b"\\0"
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                 socket.inet_aton(sip), socket.inet_aton(dip))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
frame = mac(dst) + mac(src) + struct.pack("!HH", 0x8100, int(vid)) + b"\\x08\\x00" + ip + icmp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    s.send(frame)
"""


def test_a_flat_guests_own_vlan_tag_never_reaches_the_physical_network(flat: Flat) -> None:
    """f1 sends ICMP frames tagged with VLAN 100 to v2's MAC, from its own MAC and
    address (so port security lets them in): on physnet1 they would be frames of `vl`,
    delivered to v2."""
    f1, v2 = flat.guests["f1"], flat.guests["v2"]
    f1_mac, v2_mac = flat.ports["f1"]["mac_address"], flat.ports["v2"]["mac_address"]
    link = _capture(flat.lab.hypervisor("hv1").netns, UPLINK, f"ether src {f1_mac} and vlan",
                    seconds=5)
    guest = _capture(v2.netns, "eth0", f"ether src {f1_mac}", seconds=5)
    f1.run(["python3", "-c", _SEND_TAGGED, v2_mac, f1_mac, str(VLAN_ID), "192.0.2.11",
            "192.0.2.12"])
    for cap, where in ((link, "the provider link"), (guest, "v2")):
        out, _ = cap.communicate(timeout=15)
        assert _frames(out) == [], f"f1's tagged frames reached {where}:\n{out}"
    assert f1.ping("192.0.2.12", count=2, interval=0.2) == (2, 2)  # untagged still goes


def test_a_controller_restart_sends_no_flow_mod(flat: Flat) -> None:
    lab = flat.lab
    lab._restart_controller()
    lab._wait_switches(2, timeout=30)
    time.sleep(2.0)  # let any (unwanted) change land before looking
    assert lab.api.metric("loom_flow_mods_total") == 0
    assert flat.guests["f1"].ping("192.0.2.12", count=2, interval=0.2) == (2, 2)
