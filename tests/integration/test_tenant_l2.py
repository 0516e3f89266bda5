"""Tenant L2 through the real controller, a private OVS and guests in namespaces.

One controller process manages one chassis (its own ovsdb-server and ovs-vswitchd
in a namespace, reached over a management veth). Projects, networks and ports are
created through the REST API; guests are bound by iface-id; everything asserted
is what a tenant would notice: who can ping whom, whose TCP payload arrives.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import single_host, wait_active
from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.guest import Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import OvsInstance

pytestmark = pytest.mark.integration


@dataclass
class Lab:
    sandbox: Sandbox
    hv: OvsInstance
    ctl: ControllerProcess
    api: ApiClient
    guests: dict[str, Guest]
    ports: dict[str, dict]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with single_host(tmp_path_factory.mktemp("loom-state")) as host:
        api = host.api
        ports: dict[str, dict] = {}
        # Two projects, both 10.0.0.0/24, the same guest IPs in each.
        for project, suffix in (("project-a", "a"), ("project-b", "b")):
            net = api.create("network", name=f"net-{suffix}", project_id=project)
            sub = api.create("subnet", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4,
                             project_id=project)
            for i, ip in ((1, "10.0.0.11"), (2, "10.0.0.12")):
                ports[f"{suffix}{i}"] = api.create(
                    "port", wait=True, network_id=net["id"], project_id=project,
                    fixed_ips=[{"subnet_id": sub["id"], "ip_address": ip}])
        # project-b also has a third guest whose address exists only there
        ports["b3"] = api.create("port", wait=True, network_id=ports["b1"]["network_id"],
                                 project_id="project-b",
                                 fixed_ips=[{"ip_address": "10.0.0.13"}])
        for name, port in ports.items():
            host.guest_for(name, port)
        yield Lab(host.sandbox, host.hv, host.ctl, api, host.guests, ports)


def test_guests_on_one_network_ping_and_talk_tcp(lab: Lab) -> None:
    a1, a2 = lab.guests["a1"], lab.guests["a2"]
    assert a1.ping("10.0.0.12", count=3, interval=0.2) == (3, 3)
    assert a2.ping("10.0.0.11", count=3, interval=0.2) == (3, 3)
    listener = a2.tcp_listen(8080)
    assert a1.tcp_connect("10.0.0.12", 8080, "hello over loom " * 2000, listener=listener)


def test_arp_is_answered_with_the_right_tenants_mac(lab: Lab) -> None:
    """Both projects have a 10.0.0.12; each guest must learn its own project's MAC."""
    for asker, target in (("a1", "a2"), ("b1", "b2")):
        g = lab.guests[asker]
        g.run(["ip", "neigh", "flush", "all"])
        assert g.ping("10.0.0.12", count=1, timeout=2)[1] == 1
        neigh = g.run(["ip", "neigh", "show", "10.0.0.12"]).stdout
        assert lab.ports[target]["mac_address"] in neigh.lower(), neigh


def test_overlapping_projects_never_reach_each_other(lab: Lab) -> None:
    a1, b2, b3 = lab.guests["a1"], lab.guests["b2"], lab.guests["b3"]
    # 10.0.0.13 exists only in project-b: project-a cannot reach it at all.
    assert a1.ping("10.0.0.13", count=3, interval=0.2, timeout=1)[1] == 0
    # Force frames at project-b's MAC for 10.0.0.12 from project-a: still nothing.
    a1.run(["ip", "neigh", "replace", "10.0.0.13", "lladdr", lab.ports["b3"]["mac_address"],
            "dev", "eth0", "nud", "permanent"])
    assert a1.ping("10.0.0.13", count=3, interval=0.2, timeout=1)[1] == 0
    a1.run(["ip", "neigh", "del", "10.0.0.13", "dev", "eth0"])
    # TCP to the other project's listener never arrives, even at the same IP.
    listener = b2.tcp_listen(9090)
    assert not a1.tcp_connect("10.0.0.12", 9090, "cross-tenant", timeout=2, listener=listener)
    assert listener.data() == b""
    # ... while project-b's own guest reaches it.
    assert b3.tcp_connect("10.0.0.12", 9090, "same-tenant", timeout=5, listener=listener)


def test_spoofed_mac_or_ip_gets_nothing_through(lab: Lab) -> None:
    a1, a2 = lab.guests["a1"], lab.guests["a2"]
    assert a2.ping("10.0.0.11", count=1, timeout=2)[1] == 1
    real_mac = a2.mac
    try:
        a2.set_mac("fa:16:3e:66:66:66")
        a2.run(["ip", "neigh", "flush", "all"])
        assert a2.ping("10.0.0.11", count=3, interval=0.2, timeout=1)[1] == 0
    finally:
        a2.set_mac(real_mac)
    assert a2.ping("10.0.0.11", count=2, interval=0.2, timeout=2)[1] == 2
    # A source IP that is not the port's own: nothing arrives, ARP or IP.
    a2.add_ip("10.0.0.99/24")
    try:
        listener = a1.tcp_listen(7070)
        a2.run(["ip", "neigh", "flush", "all"])
        sent, received = a2.ping("10.0.0.11", count=3, interval=0.2, timeout=1,
                                 source="10.0.0.99")
        assert received == 0
        assert not a2.tcp_connect("10.0.0.11", 7070, "spoofed", timeout=2, listener=listener,
                                  source="10.0.0.99")
        assert listener.data() == b""
    finally:
        a2.del_ip("10.0.0.99/24")


def _flows(hv: OvsInstance) -> dict[str, tuple[float, int]]:
    """Installed flows of br-int: flow text (without stats) -> (duration, n_packets)."""
    out = {}
    for line in hv.dump_flows("br-int"):
        dur = float(re.search(r"duration=([\d.]+)s", line).group(1))  # type: ignore[union-attr]
        pkts = int(re.search(r"n_packets=(\d+)", line).group(1))  # type: ignore[union-attr]
        key = re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[\d.]+s?,\s*", "", line)
        out[key.strip()] = (dur, pkts)
    return out


def test_no_packet_ins_in_steady_state(lab: Lab) -> None:
    """The only flows that reach the controller are the ports' metered punts of what
    Loom answers (DHCP requests, router solicitations), and guests with addresses
    typed in send none: nothing came up."""
    flows = lab.hv.dump_flows("br-int")
    up = [f for f in flows if "CONTROLLER" in f]
    assert flows and up
    for f in up:
        assert "table=10" in f and "meter:" in f and (
            "tp_src=68,tp_dst=67" in f or "tp_src=546,tp_dst=547" in f
            or "icmp_type=133" in f), f
    assert lab.ctl.api.metric("loom_packet_ins_total") == 0


def test_restart_sends_zero_flow_mods_and_loses_no_packets(lab: Lab) -> None:
    a1 = lab.guests["a1"]
    before = _flows(lab.hv)
    ping = subprocess.Popen(
        ["ip", "netns", "exec", a1.netns, "ping", "-q", "-i", "0.05", "-c", "120", "10.0.0.12"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    assert lab.ctl.stop() == 0  # SIGTERM: clean exit
    time.sleep(0.5)
    lab.ctl.start()
    lab.ctl.wait_switches(1)
    out, _ = ping.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    assert m.group(1) == m.group(2) == "120", out
    assert lab.ctl.api.metric("loom_flow_mods_total") == 0
    after = _flows(lab.hv)
    assert set(after) == set(before)
    for flow, (dur, _) in after.items():
        assert dur >= before[flow][0], f"flow was re-installed: {flow}"


def test_status_follows_binding_and_delete_removes_exactly_the_ports_flows(lab: Lab) -> None:
    api, hv = lab.api, lab.hv
    net_id = lab.ports["a1"]["network_id"]
    port = api.create("port", wait=True, network_id=net_id, project_id="project-a")
    assert api.get(f"/v2.0/ports/{port['id']}").ok()["port"]["status"] == "DOWN"
    ip = port["fixed_ips"][0]["ip_address"]
    g = Guest("a9", port["mac_address"], f"{ip}/24", sandbox=lab.sandbox, ovs=hv,
              bridge="br-int", port_id=port["id"])
    try:
        wait_active(api, port["id"])
        assert g.ping("10.0.0.11", count=2, interval=0.2)[1] == 2
        before = _flows(hv)
        cookie = _cookie_of(api, port["id"])
        assert api.delete(f"/v2.0/ports/{port['id']}?wait=true").status == 204
        after = _flows(hv)
        removed = set(before) - set(after)
        added = set(after) - set(before)
        # Everything removed is the port's own (its cookie), or a security-group rule's
        # clause guarding exactly this port's ofport (owned by the rule, for explain).
        ofport = g.ofport
        mine = {f for f in removed if f"cookie={cookie}" in f
                or re.search(rf"(in_port={ofport}|reg7=0x{ofport:x})\b", f)}
        assert removed and mine == removed - _flood(removed), removed - mine
        # the only other change: the network's flood set lost this port
        assert len(_flood(removed)) == 1 and len(added) == 1 and _flood(added) == added
        assert not [f for f in after if f"cookie={cookie}" in f]
        assert g.ping("10.0.0.11", count=2, interval=0.2, timeout=1)[1] == 0
    finally:
        g.close()


def _flood(flows: set[str]) -> set[str]:
    return {f for f in flows if "resubmit(,60)" in f}


def _cookie_of(api: ApiClient, port_id: str) -> str:
    switches = api.get("/v1/switches").ok()
    switches = switches.get("switches", switches) if isinstance(switches, dict) else switches
    dpid = switches[0]["datapath_id"]
    flows = api.get(f"/v1/switches/{dpid}/flows").ok()
    flows = flows.get("flows", flows) if isinstance(flows, dict) else flows
    cookies = {f["cookie"] for f in flows if f["owner"]["id"] == port_id}
    assert len(cookies) == 1, cookies
    return cookies.pop()


def test_state_dir_holds_the_intent(lab: Lab) -> None:
    assert (Path(lab.ctl.state_dir) / "nb.db").exists()
