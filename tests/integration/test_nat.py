"""The way out: SNAT, floating IPs and port forwarding through a router's gateway, on
real OVS with real traffic.

Two hypervisors (namespaces, each with its own OVS). The physical network physnet1:
a provider bridge br-ex on each (standalone, a learning switch), joined by one veth,
mapped by `loom-bridge-mappings`; hv2 is the only gateway chassis
(`external_ids:loom-gateway=true`). On physnet1 sits the "outside" host, 198.51.100.1,
the external subnet's gateway (the upstream router, as far as Loom knows).

Through the REST API: the flat external network `public` (198.51.100.0/24), and two
projects that both use 10.0.0.0/24 on a VXLAN network, each with a router whose
gateway is on `public`. alpha has a1 (hv1) and a2 (hv2); beta has b1 (hv1), at a1's
very address. Guests route through 10.0.0.1 (set by hand: no DHCP yet).

Checked: both projects reach the outside at once, each seen there from its own
router's gateway address, each getting its own replies (a1 and b1 transit to hv2,
the gateway chassis, through their tunnel); a floating IP brings the outside host
to a1 with its real source address, and stops doing so once disassociated, live
connection included; a port forwarding maps one external port to a2's port and
nothing else; a security group still holds behind a floating IP; a controller
restart sends no flow_mod and a ping through the floating IP loses nothing.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from topologies.guest import Guest
from topologies.lab import Lab

pytestmark = pytest.mark.integration

SPEC = """
name: nat
hypervisors:
  - name: hv1
  - name: hv2
controller: {}
"""
PROVIDER_BRIDGE = "br-ex"
UPLINK = "phy0"
OUTSIDE_IP = "198.51.100.1"
OUTSIDE_MAC = "02:00:5e:00:51:01"
# guest -> (project, hypervisor, address)
GUESTS = {"a1": ("alpha", "hv1", "10.0.0.11"), "a2": ("alpha", "hv2", "10.0.0.12"),
          "b1": ("beta", "hv1", "10.0.0.11")}


def _quiet(_line: str) -> None:
    pass


def _created(resp: Any, what: str) -> dict[str, Any]:
    assert resp.status in (200, 201), (what, resp.status, resp.body)
    return dict(next(iter(resp.body.values())))


class World:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.guests: dict[str, Guest] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.routers: dict[str, dict[str, Any]] = {}
        self.public: dict[str, Any] = {}
        self.outside: Guest | None = None

    def gateway_ip(self, project: str) -> str:
        info = self.routers[project]["external_gateway_info"]
        return str(info["external_fixed_ips"][0]["ip_address"])


def _physical_network(lab: Lab, gateways: tuple[str, ...] = ("hv2",)) -> None:
    """br-ex on both hypervisors, joined by a veth, mapped as physnet1; `gateways`
    flagged loom-gateway; returns once Loom has patched br-int to br-ex on both."""
    hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
    lab.sandbox.add_veth(UPLINK, UPLINK, hv1.netns, hv2.netns)
    for hv in (hv1, hv2):
        hv.ovs.add_bridge(PROVIDER_BRIDGE, fail_mode="standalone")
        hv.ovs.vsctl("--may-exist", "add-port", PROVIDER_BRIDGE, UPLINK)
        hv.ovs.vsctl("set", "Open_vSwitch", ".",
                     f"external_ids:loom-bridge-mappings=physnet1:{PROVIDER_BRIDGE}")
    for name in gateways:
        lab.hypervisor(name).ovs.vsctl("set", "Open_vSwitch", ".",
                                       "external_ids:loom-gateway=true")
    deadline = time.monotonic() + 30
    for hv in (hv1, hv2):
        while len(hv.ovs.vsctl("--bare", "--columns=name", "find", "Interface",
                               "type=patch").split()) < 2:
            assert time.monotonic() < deadline, f"{hv.name}: no provider patch in 30 s"
            time.sleep(0.2)


def _build(world: World) -> None:
    lab, api = world.lab, world.lab.api
    world.public = _created(api.post("/v2.0/networks", {"network": {
        "name": "public", "project_id": "admin", "router:external": True, "shared": True,
        "provider:network_type": "flat", "provider:physical_network": "physnet1"}}), "public")
    _created(api.post("/v2.0/subnets", {"subnet": {
        "network_id": world.public["id"], "cidr": "198.51.100.0/24", "ip_version": 4,
        "gateway_ip": OUTSIDE_IP, "enable_dhcp": False, "project_id": "admin",
        "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.100.99"}]}}), "public v4")
    subnets, mtu = {}, {}
    for project in ("alpha", "beta"):
        net = _created(api.post("/v2.0/networks", {"network": {
            "name": f"{project}-net", "project_id": project,
            "provider:network_type": "vxlan"}}), f"{project} net")
        mtu[project] = int(net["mtu"])  # what VXLAN leaves of the underlay's 1500
        subnets[project] = _created(api.post("/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4,
            "project_id": project}}), f"{project} subnet")
        # the project's default group lets in what the checks below send from outside
        sgs = api.get(f"/v2.0/security-groups?project_id={project}&name=default").ok()
        for sg in sgs["security_groups"]:
            for proto, lo, hi in (("tcp", 1, 65535), ("icmp", None, None)):
                rule = {"security_group_id": sg["id"], "direction": "ingress",
                        "ethertype": "IPv4", "protocol": proto,
                        "remote_ip_prefix": "0.0.0.0/0"}
                if lo is not None:
                    rule.update(port_range_min=lo, port_range_max=hi)
                _created(api.post("/v2.0/security-group-rules",
                                  {"security_group_rule": rule}), "rule")
        router = _created(api.post("/v2.0/routers", {"router": {
            "name": f"{project}-router", "project_id": project,
            "external_gateway_info": {"network_id": world.public["id"]}}}), "router")
        resp = api.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                       {"subnet_id": subnets[project]["id"]})
        assert resp.status == 200, (resp.status, resp.body)
        world.routers[project] = router
    for name, (project, hv, ip) in GUESTS.items():
        port = _created(api.post("/v2.0/ports", {"port": {
            "network_id": subnets[project]["network_id"], "project_id": project,
            "fixed_ips": [{"subnet_id": subnets[project]["id"], "ip_address": ip}]}}), name)
        world.ports[name] = port
        world.guests[name] = Guest(name, port["mac_address"], f"{ip}/24", sandbox=lab.sandbox,
                                   ovs=lab.hypervisor(hv).ovs, bridge="br-int",
                                   port_id=port["id"], mtu=mtu[project])
        world.guests[name].run(["ip", "route", "replace", "default", "via", "10.0.0.1"])
    lab.wait_ports_active([p["id"] for p in world.ports.values()])
    # the outside host: on physnet1, through hv2's provider bridge (not Loom's)
    world.outside = Guest("outside", OUTSIDE_MAC, f"{OUTSIDE_IP}/24",
                          sandbox=lab.sandbox, ovs=lab.hypervisor("hv2").ovs,
                          bridge=PROVIDER_BRIDGE)


@contextmanager
def nat_lab(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[World]:
    """The lab above, up and built, the way out working (the upstream's MAC learnt, the
    flows in place); taken down after. Shared with test_trace_nat.py."""
    spec = tmp_path_factory.mktemp(name) / "nat.yaml"
    spec.write_text(SPEC)
    lab = Lab.up(spec, name=f"{name}-{secrets.token_hex(3)}", progress=_quiet)
    w = World(lab)
    try:
        _physical_network(lab)
        _build(w)
        deadline = time.monotonic() + 40
        while w.guests["a1"].ping(OUTSIDE_IP, count=1, timeout=1)[1] != 1:
            assert time.monotonic() < deadline, "no SNATed ping to the outside in 40 s"
        yield w
    finally:
        for g in w.guests.values():
            g.close()
        if w.outside is not None:
            w.outside.close()
        problems = lab.down()
        assert not problems, problems


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with nat_lab(tmp_path_factory, "nat") as w:
        yield w


def _capture(g: Guest, bpf: str, seconds: int = 6, count: int = 20) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", g.netns, "timeout", str(seconds), "tcpdump", "-l", "-n",
         "-i", "eth0", "-c", str(count), bpf],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    return proc


def _fip(world: World, port: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"floating_network_id": world.public["id"], "project_id": "alpha"}
    if port is not None:
        body["port_id"] = world.ports[port]["id"]
    return _created(world.lab.api.post("/v2.0/floatingips", {"floatingip": body}), "fip")


def test_both_projects_go_out_at_once_each_from_its_own_gateway_address(world: World) -> None:
    outside = world.outside
    assert outside is not None
    cap = _capture(outside, "tcp dst port 7001 and tcp[tcpflags] & tcp-syn != 0", seconds=8)
    listener = outside.tcp_listen(7001, keep=True)
    results: dict[str, bool] = {}

    def send(name: str) -> None:
        results[name] = world.guests[name].tcp_connect(
            OUTSIDE_IP, 7001, f"from {name} " * 500, listener=listener)

    threads = [threading.Thread(target=send, args=(n,)) for n in ("a1", "b1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a1": True, "b1": True}
    out, _ = cap.communicate(timeout=20)
    sources = set(re.findall(r"IP (\d+\.\d+\.\d+\.\d+)\.\d+ > ", out))
    assert sources == {world.gateway_ip("alpha"), world.gateway_ip("beta")}, out
    assert "10.0.0." not in out  # no private address ever reaches the outside
    for name in ("a1", "a2", "b1"):  # a2 sits on the gateway chassis itself
        assert world.guests[name].ping(OUTSIDE_IP, count=3, interval=0.2) == (3, 3), name


def test_a_floating_ip_brings_the_outside_in_until_disassociated(world: World) -> None:
    api, a1, outside = world.lab.api, world.guests["a1"], world.outside
    assert outside is not None
    fip = _fip(world, "a1")
    address = fip["floating_ip_address"]
    assert fip["router_id"] == world.routers["alpha"]["id"]
    assert fip["fixed_ip_address"] == "10.0.0.11"
    try:
        cap = _capture(a1, "tcp dst port 7002 and tcp[tcpflags] & tcp-syn != 0")
        listener = a1.tcp_listen(7002, keep=True)
        deadline = time.monotonic() + 20
        while not outside.tcp_connect(address, 7002, "in through the floating ip",
                                      listener=listener, timeout=2):
            assert time.monotonic() < deadline, "the floating IP never answered"
        out, _ = cap.communicate(timeout=15)
        assert f"IP {OUTSIDE_IP}." in out, out  # the guest sees the real source
        # going out, a1 now shows its floating address, not the router's
        cap = _capture(outside, "icmp and icmp[icmptype] == icmp-echo", seconds=5, count=2)
        assert a1.ping(OUTSIDE_IP, count=2, interval=0.2) == (2, 2)
        out, _ = cap.communicate(timeout=15)
        assert f"IP {address} > {OUTSIDE_IP}" in out, out
        # a live connection through it, then the association goes
        live = subprocess.Popen(
            ["ip", "netns", "exec", outside.netns, "nc", "-n", address, "7002"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert live.stdin is not None
        live.stdin.write(b"before\n")
        live.stdin.flush()
        assert listener.wait_for(b"before", timeout=5)
        # what a dry run of the disassociation says (simulated on the compiled tables,
        # the outside's way in found by the ARP the physical network would send): the
        # connection just made works before and not after; then the real one agrees
        dry = api.put(f"/v2.0/floatingips/{fip['id']}?dry_run=true",
                      {"floatingip": {"port_id": None}})
        assert dry.status == 200, dry.body
        reach = dry.body["plan"]["reachability"]
        assert any(c["from"].get("via") == address
                   and c["to"].get("port") == world.ports["a1"]["id"]
                   and c["protocol"] == "tcp" and c["port_range"][0] <= 7002
                   <= c["port_range"][1] and (c["before"], c["after"]) == ("allowed", "denied")
                   for c in reach["changes"]), reach
        resp = api.put(f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
        assert resp.status == 200 and resp.body["floatingip"]["port_id"] is None
        time.sleep(1.0)
        live.stdin.write(b"after\n")
        live.stdin.flush()
        assert not listener.wait_for(b"after", timeout=3)
        live.kill()
        fresh = a1.tcp_listen(7003)
        assert not outside.tcp_connect(address, 7003, "no longer", listener=fresh, timeout=2)
    finally:
        api.delete(f"/v2.0/floatingips/{fip['id']}")


def test_guests_reach_their_own_and_a_neighbours_floating_ip_from_inside(world: World
                                                                         ) -> None:
    """Hairpin, in the gateway chassis' pipeline: the upstream (the outside host, which
    does not forward) is never asked to send the packets back."""
    api, a1, a2, outside = world.lab.api, world.guests["a1"], world.guests["a2"], world.outside
    assert outside is not None
    fips = {name: _fip(world, name) for name in ("a1", "a2")}
    try:
        # never sent to the upstream (the outside host) to be sent back: frames the
        # physical network floods before it learns a floating IP's MAC do not count
        cap = _capture(outside, f"ether dst {OUTSIDE_MAC} and (icmp or tcp port 7004)",
                       seconds=8)
        for src in (a1, a2):  # a1 crosses the tunnel to the gateway chassis, a2 is on it
            for name, fip in fips.items():
                address = fip["floating_ip_address"]
                deadline = time.monotonic() + 15
                while src.ping(address, count=1, timeout=1)[1] != 1:
                    assert time.monotonic() < deadline, f"{src.name} -> {name}'s fip"
        listener = a2.tcp_listen(7004)
        assert a1.tcp_connect(fips["a2"]["floating_ip_address"], 7004, "hairpin " * 500,
                              listener=listener)
        out, _ = cap.communicate(timeout=20)
        frames = [line for line in out.splitlines() if re.match(r"^\d\d:\d\d:\d\d", line)]
        assert frames == [], out
    finally:
        for fip in fips.values():
            api.delete(f"/v2.0/floatingips/{fip['id']}")


def _nat_flows(world: World, hv: str, address: str) -> int:
    """Flows on `hv`'s integration bridge that DNAT to or match floating IP `address`."""
    rows = world.lab.hypervisor(hv).ovs.dump_flows("br-int", "table=40", stats=False)
    return sum(1 for r in rows if f"nw_dst={address}" in r and "nat" in r)


def test_a_floating_ip_runs_on_its_guests_chassis_or_else_on_the_gateway(world: World
                                                                         ) -> None:
    """Distributed where the guest's chassis maps the physical network (hv1 does: a1's
    floating IP is NATed there, not on hv2, the gateway); moved to the gateway chassis
    when that mapping goes, and back when it returns; reachable from outside each time."""
    lab, api, a1, outside = world.lab, world.lab.api, world.guests["a1"], world.outside
    assert outside is not None
    fip = _fip(world, "a1")
    address = fip["floating_ip_address"]
    hv1 = lab.hypervisor("hv1").ovs
    mappings = f"external_ids:loom-bridge-mappings=physnet1:{PROVIDER_BRIDGE}"
    try:
        for where, other in (("hv1", "hv2"), ("hv2", "hv1"), ("hv1", "hv2")):
            if where == "hv2":
                hv1.vsctl("remove", "Open_vSwitch", ".", "external_ids",
                          "loom-bridge-mappings")
            else:
                hv1.vsctl("set", "Open_vSwitch", ".", mappings)
            deadline = time.monotonic() + 20
            while _nat_flows(world, where, address) == 0 or \
                    _nat_flows(world, other, address) != 0:
                assert time.monotonic() < deadline, f"{address}'s NAT never moved to {where}"
                time.sleep(0.2)
            deadline = time.monotonic() + 20
            while outside.ping(address, count=1, timeout=1)[1] != 1:
                assert time.monotonic() < deadline, f"{address} unreachable on {where}"
            assert a1.ping(OUTSIDE_IP, count=2, interval=0.2) == (2, 2), where
    finally:
        hv1.vsctl("set", "Open_vSwitch", ".", mappings)
        api.delete(f"/v2.0/floatingips/{fip['id']}")


def test_a_port_forwarding_maps_one_port_and_nothing_else(world: World) -> None:
    api, a2, outside = world.lab.api, world.guests["a2"], world.outside
    assert outside is not None
    fip = _fip(world, None)
    address = fip["floating_ip_address"]
    pf: dict[str, Any] = {}
    try:
        pf = _created(api.post(f"/v2.0/floatingips/{fip['id']}/port_forwardings", {
            "port_forwarding": {"protocol": "tcp", "external_port": 10080, "internal_port": 80,
                                "internal_ip_address": "10.0.0.12",
                                "internal_port_id": world.ports["a2"]["id"]}}), "pf")
        listener = a2.tcp_listen(80, keep=True)
        deadline = time.monotonic() + 20
        while not outside.tcp_connect(address, 10080, "forwarded", listener=listener,
                                      timeout=2):
            assert time.monotonic() < deadline, "the port forwarding never answered"
        other = a2.tcp_listen(10081)
        assert not outside.tcp_connect(address, 10081, "not forwarded", listener=other,
                                       timeout=2)
        assert not outside.tcp_connect(address, 80, "not forwarded", listener=listener,
                                       timeout=2)
    finally:
        if pf:  # a floating IP with port forwardings cannot be deleted (Neutron's 409)
            api.delete(f"/v2.0/floatingips/{fip['id']}/port_forwardings/{pf['id']}")
        api.delete(f"/v2.0/floatingips/{fip['id']}")


def test_a_security_group_still_holds_behind_a_floating_ip(world: World) -> None:
    api, a2, outside = world.lab.api, world.guests["a2"], world.outside
    assert outside is not None
    sg = _created(api.post("/v2.0/security-groups", {"security_group": {
        "name": "ssh-only", "project_id": "alpha"}}), "sg")
    _created(api.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv4",
        "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
        "remote_ip_prefix": "0.0.0.0/0"}}), "rule")
    port = world.ports["a2"]
    default = port["security_groups"]
    fip = _fip(world, "a2")
    try:
        resp = api.put(f"/v2.0/ports/{port['id']}", {"port": {"security_groups": [sg["id"]]}})
        assert resp.status == 200, resp.body
        ssh = a2.tcp_listen(22, keep=True)
        deadline = time.monotonic() + 20
        while not outside.tcp_connect(fip["floating_ip_address"], 22, "ssh", listener=ssh,
                                      timeout=2):
            assert time.monotonic() < deadline, "port 22 never answered through the fip"
        web = a2.tcp_listen(80)
        assert not outside.tcp_connect(fip["floating_ip_address"], 80, "web", listener=web,
                                       timeout=2)
    finally:
        api.put(f"/v2.0/ports/{port['id']}", {"port": {"security_groups": default}})
        api.delete(f"/v2.0/floatingips/{fip['id']}")


def test_a_controller_restart_sends_no_flow_mod_and_loses_no_ping(world: World) -> None:
    lab, outside = world.lab, world.outside
    assert outside is not None
    fip = _fip(world, "a1")
    try:
        deadline = time.monotonic() + 20
        while outside.ping(fip["floating_ip_address"], count=1, timeout=1)[1] != 1:
            assert time.monotonic() < deadline, "the floating IP never answered ping"
        time.sleep(1.0)
        before = {hv: set(lab.hypervisor(hv).ovs.dump_flows("br-int", stats=False))
                  for hv in ("hv1", "hv2")}
        pinger = subprocess.Popen(
            ["ip", "netns", "exec", outside.netns, "ping", "-n", "-i", "0.05", "-w", "12",
             fip["floating_ip_address"]], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        lab._restart_controller()
        lab._wait_switches(2, timeout=30)
        out, _ = pinger.communicate(timeout=30)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m and m.group(1) == m.group(2), out
        time.sleep(2.0)
        after = {hv: set(lab.hypervisor(hv).ovs.dump_flows("br-int", stats=False))
                 for hv in ("hv1", "hv2")}
        changed = {hv: (sorted(before[hv] - after[hv]), sorted(after[hv] - before[hv]))
                   for hv in before if before[hv] != after[hv]}
        assert lab.api.metric("loom_flow_mods_total") == 0, changed
    finally:
        lab.api.delete(f"/v2.0/floatingips/{fip['id']}")
