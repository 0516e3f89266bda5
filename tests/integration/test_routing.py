"""Distributed east-west routing through Loom, with real traffic on two hypervisors.

Two hypervisors (namespaces, each with its own OVS). Project alpha has two subnets,
front 10.1.1.0/24 (VXLAN) and back 10.1.2.0/24 (Geneve), with guests on both
hypervisors, joined by one router made through the REST API (POST /v2.0/routers,
PUT .../add_router_interface {"subnet_id"}). Project beta uses back's CIDR too, with a
guest at the very address of an alpha guest. Guests route through their subnet's
gateway (set by hand: no DHCP yet).

Checked: ping and TCP across the router both ways, between hypervisors and on one;
the TTL drops by exactly one per crossing (seen by the receiver and in the reply);
the router answers ping on every interface address, from every hypervisor; beta is
never reached, neither through the router nor by frames forced at its MAC.
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
name: routing
hypervisors:
  - name: hv1
  - name: hv2
controller: {}
projects:
  - name: alpha
    networks:
      - name: front
        type: vxlan
        segmentation_id: 1201
        subnets: [{cidr: 10.1.1.0/24}]
        guests:
          - {name: f1, hypervisor: hv1, ip: 10.1.1.11}
          - {name: f2, hypervisor: hv2, ip: 10.1.1.12}
      - name: back
        type: geneve
        segmentation_id: 1202
        subnets: [{cidr: 10.1.2.0/24}]
        guests:
          - {name: k1, hypervisor: hv2, ip: 10.1.2.12}
          - {name: k2, hypervisor: hv1, ip: 10.1.2.13}
  - name: beta
    networks:
      - name: other
        type: vxlan
        segmentation_id: 1203
        subnets: [{cidr: 10.1.2.0/24}]
        guests:
          - {name: o1, hypervisor: hv1, ip: 10.1.2.12}
          - {name: o2, hypervisor: hv2, ip: 10.1.2.14}
"""
GATEWAY = {"front": "10.1.1.1", "back": "10.1.2.1", "other": "10.1.2.1"}


def _quiet(_line: str) -> None:
    pass


def _ip(lab: Lab, guest: str) -> str:
    return str(lab.guest_info(guest)["ip_cidr"].split("/")[0])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    spec = tmp_path_factory.mktemp("routing") / "routing.yaml"
    spec.write_text(SPEC)
    lab = Lab.up(spec, name=f"rt-{secrets.token_hex(3)}", progress=_quiet)
    try:
        _make_router(lab)
        for name in ("f1", "f2", "k1", "k2", "o1", "o2"):
            gw = GATEWAY[lab.guest_info(name)["network"]]
            lab.guest(name).run(["ip", "route", "replace", "default", "via", gw])
        # the router's flows are in place once a routed ping goes through
        deadline = time.monotonic() + 30
        while lab.guest("f1").ping(_ip(lab, "k1"), count=1, timeout=1)[1] != 1:
            assert time.monotonic() < deadline, "no routed ping within 30 s"
        yield lab
    finally:
        problems = lab.down()
        assert not problems, problems


def _make_router(lab: Lab) -> dict[str, Any]:
    """The router of project alpha, joined to both its subnets, through the REST API."""
    api = lab.api
    resp = api.post("/v2.0/routers", {"router": {"name": "r1", "project_id": "alpha"}})
    assert resp.status == 201, (resp.status, resp.body)
    router = resp.body["router"]
    subnets = lab.state.data["api"]["subnets"]
    for key in ("alpha/front/10.1.1.0/24", "alpha/back/10.1.2.0/24"):
        resp = api.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                       {"subnet_id": subnets[key]})
        assert resp.status == 200, (resp.status, resp.body)
        assert resp.body["subnet_id"] == subnets[key]
    return dict(router)


def _ping_ttl(g: Guest, ip: str) -> int | None:
    """The TTL of the echo reply to one ping, None if none came back."""
    out = g.run(["ping", "-4", "-n", "-c", "1", "-W", "2", ip], check=False, timeout=10).stdout
    m = re.search(r"ttl=(\d+)", out)
    return int(m.group(1)) if m else None


def _capture(g: Guest, bpf: str, count: int = 1, seconds: int = 6) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", g.netns, "timeout", str(seconds), "tcpdump", "-l", "-n", "-v",
         "-i", "eth0", "-c", str(count), bpf],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)  # tcpdump is listening
    return proc


def test_ping_across_the_router_both_ways(lab: Lab) -> None:
    for src, dst in (("f1", "k1"), ("k1", "f1"),  # hv1 <-> hv2
                     ("f1", "k2"), ("k2", "f1"),  # both on hv1
                     ("f2", "k2"), ("k1", "f2")):  # the other way round
        assert lab.guest(src).ping(_ip(lab, dst), count=3, interval=0.2) == (3, 3), (src, dst)


def test_tcp_across_the_router_both_ways(lab: Lab) -> None:
    for src, dst, port in (("f1", "k1", 8081), ("k1", "f1", 8082), ("k2", "f2", 8083)):
        listener = lab.guest(dst).tcp_listen(port)
        payload = f"routed {src}->{dst} " * 2000
        assert lab.guest(src).tcp_connect(_ip(lab, dst), port, payload, listener=listener), \
            (src, dst)


def test_ttl_is_decremented_by_one_per_crossing(lab: Lab) -> None:
    f1, k1 = lab.guest("f1"), lab.guest("k1")
    # the receiver sees 63 (64 - one router)
    cap = _capture(k1, f"icmp and src host {_ip(lab, 'f1')}")
    assert f1.ping(_ip(lab, "k1"), count=1, timeout=2)[1] == 1
    out, _ = cap.communicate(timeout=15)
    assert re.search(r"ttl 63\b", out), out
    # and so does the sender, for the reply routed back the other way
    assert _ping_ttl(f1, _ip(lab, "k1")) == 63
    # on one subnet, no router: nothing is decremented
    assert _ping_ttl(f1, _ip(lab, "f2")) == 64
    # TTL 1 is never forwarded (nor punted: the l3 flow drops it before dec_ttl) ...
    cap = _capture(k1, f"icmp and src host {_ip(lab, 'f1')}", seconds=4)
    out = f1.run(["ping", "-4", "-n", "-c", "2", "-i", "0.2", "-t", "1", "-W", "1",
                  _ip(lab, "k1")], check=False, timeout=10).stdout
    assert " 0 received" in out, out
    seen, _ = cap.communicate(timeout=15)
    assert "ttl" not in seen, seen
    # ... while the router itself still answers it
    assert f1.run(["ping", "-4", "-n", "-c", "1", "-t", "1", "-W", "2", "10.1.1.1"],
                  check=False, timeout=10).returncode == 0


def test_the_router_answers_ping_on_every_interface_address(lab: Lab) -> None:
    for src in ("f1", "f2", "k1", "k2"):
        for addr in ("10.1.1.1", "10.1.2.1"):
            assert lab.guest(src).ping(addr, count=2, interval=0.2) == (2, 2), (src, addr)
    # and the API says so: the router's ports are ACTIVE, as Neutron shows working ones
    ports = lab.api.get("/v2.0/ports?device_owner=network:router_interface").ok()["ports"]
    assert len(ports) == 2 and {p["status"] for p in ports} == {"ACTIVE"}, ports


def test_a_third_project_with_the_same_addresses_is_never_reached(lab: Lab) -> None:
    f1, o1 = lab.guest("f1"), lab.guest("o1")
    # 10.1.2.14 exists only in beta: never answered through alpha's router
    assert f1.ping(_ip(lab, "o2"), count=3, interval=0.2, timeout=1)[1] == 0
    # 10.1.2.12 is k1 in alpha and o1 in beta: only k1 sees f1's packets
    cap = _capture(o1, "icmp or tcp", seconds=5)
    assert f1.ping("10.1.2.12", count=3, interval=0.2) == (3, 3)
    listener = o1.tcp_listen(9090)
    assert not f1.tcp_connect("10.1.2.12", 9090, "cross-project", timeout=2, listener=listener)
    out, _ = cap.communicate(timeout=15)
    assert "10.1.1.11" not in out, out
    assert listener.data() == b""
    # beta cannot use alpha's router either: its gateway address is unanswered there,
    # and frames forced at the router's MAC on back go nowhere from beta's network
    assert o1.ping("10.1.1.11", count=2, interval=0.2, timeout=1)[1] == 0
    router_mac = _router_mac(lab, "10.1.2.1")
    o1.run(["ip", "neigh", "replace", "10.1.2.1", "lladdr", router_mac, "dev", "eth0",
            "nud", "permanent"])
    try:
        assert o1.ping("10.1.1.11", count=3, interval=0.2, timeout=1)[1] == 0
        assert o1.ping("10.1.2.1", count=2, interval=0.2, timeout=1)[1] == 0
    finally:
        o1.run(["ip", "neigh", "del", "10.1.2.1", "dev", "eth0"], check=False)


def _router_mac(lab: Lab, ip: str) -> str:
    ports = lab.api.get("/v2.0/ports").ok()["ports"]
    for p in ports:
        if p["device_owner"] == "network:router_interface" and \
                any(f["ip_address"] == ip for f in p["fixed_ips"]):
            return str(p["mac_address"])
    raise AssertionError(f"no router port holds {ip}: {ports}")


def test_flows_name_the_router(lab: Lab) -> None:
    """Every l3 flow on both chassis is the router's (or the table's miss)."""
    router = lab.api.get("/v2.0/routers").ok()["routers"][0]
    key = int(router["id"].replace("-", ""), 16) & ((1 << 48) - 1)
    for hv in ("hv1", "hv2"):
        lines = [x for x in lab.hypervisor(hv).ovs.dump_flows("br-int") if "table=40" in x]
        cookies = {int(re.search(r"cookie=(0x[0-9a-f]+)", x).group(1), 16)  # type: ignore[union-attr]
                   for x in lines if "priority=0" not in x}
        assert cookies == {(0x05 << 56) | key}, (hv, lines)


def _trace(lab: Lab, src: str, dst_ip: str, **query: Any) -> dict[str, Any]:
    port = lab.guest_info(src)["port_id"]
    params = "&".join(f"{k}={v}" for k, v in {"port": port, "dst_ip": dst_ip, **query}.items())
    resp = lab.api.get(f"/v1/trace?{params}")
    assert resp.status == 200, resp.body
    return dict(resp.body)


def _tables(hop: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["table_name"], t["priority_name"]) for t in hop["tables"]
            if t["bridge"] == hop["bridge"]]


def test_trace_explains_a_routed_packet(lab: Lab) -> None:
    answer = _trace(lab, "f1", _ip(lab, "k1"), protocol="tcp", dst_port=8081)
    assert answer["verdict"] == "allowed", answer["reason"]
    assert answer["packet"]["dst_mac"] == _router_mac(lab, "10.1.1.1")
    first, second = answer["hops"]
    assert first["chassis"] == "hv1" and second["chassis"] == "hv2"
    assert ("l3", "route/24") in _tables(first) and ("l3_resolve", "resolve") in _tables(first)
    [route] = [t for t in first["tables"] if t["table_name"] == "l3"]
    assert route["owner"]["kind"] == "router" and route["owner"]["name"] == "r1"
    [resolve] = [t for t in first["tables"] if t["table_name"] == "l3_resolve"]
    assert resolve["owner"] == {**resolve["owner"], "kind": "port",
                                "id": lab.guest_info("k1")["port_id"]}
    assert second["tun_id"] == 1202 and _tables(second)[0] == ("classify", "tunnel")
    assert answer["delivered_to"] == [{"chassis": "hv2", "ofport": answer["destination"]["ofport"],
                                       "port": lab.guest_info("k1")["port_id"]}]
    # beta's 10.1.2.14: routed into back, where no port holds it
    answer = _trace(lab, "f1", _ip(lab, "o2"))
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "no_next_hop", answer["reason"]


def test_security_groups_hold_across_the_router(lab: Lab) -> None:
    """k2 (back, hv1) allows only TCP 22 in: from front (routed, the same chassis and the
    other) 22 passes and 80 does not; k2's own connections out get their replies back
    (the destination zone saw the request, the source zone sees the reply)."""
    api = lab.api
    sg = api.create("security_group", name="ssh-only", project_id="alpha")
    api.create("security_group_rule", wait=True, security_group_id=sg["id"],
               project_id="alpha", direction="ingress", ethertype="IPv4", protocol="tcp",
               port_range_min=22, port_range_max=22)
    api.put(f"/v2.0/ports/{lab.guest_info('k2')['port_id']}?wait=true",
            {"port": {"security_groups": [sg["id"]]}}).ok()
    k2 = lab.guest("k2")
    ssh, web = k2.tcp_listen(22, keep=True), k2.tcp_listen(80, keep=True)
    for src in ("f1", "f2"):
        g = lab.guest(src)
        assert g.tcp_connect(_ip(lab, "k2"), 22, f"ssh from {src}", listener=ssh), src
        assert not g.tcp_connect(_ip(lab, "k2"), 80, f"web from {src}", timeout=2,
                                 listener=web), src
        assert g.ping(_ip(lab, "k2"), count=2, interval=0.2, timeout=1)[1] == 0, src
    assert b"web from" not in web.data()
    # front's guests (group default) accept ssh-only's members; k2's connections out
    # are then answered, though k2's own group lets no such reply in by a rule
    default = [g for g in api.get("/v2.0/security-groups").ok()["security_groups"]
               if g["name"] == "default" and g["project_id"] == "alpha"][0]
    api.create("security_group_rule", wait=True, security_group_id=default["id"],
               project_id="alpha", direction="ingress", ethertype="IPv4",
               remote_group_id=sg["id"])
    listener = lab.guest("f2").tcp_listen(8090)
    assert k2.tcp_connect(_ip(lab, "f2"), 8090, "k2 out and back " * 500, listener=listener)
    assert k2.ping(_ip(lab, "f1"), count=2, interval=0.2) == (2, 2)


def test_controller_restart_changes_no_flow(lab: Lab) -> None:
    """What the switches report back (dec_ttl, ct_clear, nw_ttl, the echo reply's
    actions) decodes equal to what Loom compiled: a restart sends nothing."""
    before = {hv: len(lab.hypervisor(hv).ovs.dump_flows("br-int")) for hv in ("hv1", "hv2")}
    lab._restart_controller()
    lab._wait_switches(2, timeout=30)
    time.sleep(2.0)  # let any (unwanted) change land before looking
    assert lab.api.metric("loom_flow_mods_total") == 0
    assert {hv: len(lab.hypervisor(hv).ovs.dump_flows("br-int")) for hv in before} == before
    assert lab.guest("f1").ping(_ip(lab, "k1"), count=2, interval=0.2) == (2, 2)
