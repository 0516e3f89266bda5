"""The multi-host lab: spec validation, the underlay carrying OVS userspace tunnels by
itself, guests through Loom, adding/removing hypervisors, and teardown that leaves
nothing behind, also after `up` was killed half-way.

Cross-hypervisor connectivity *through Loom* is not asserted here (tests of the
overlay do that); the underlay is proven without the controller, so a failing
overlay test points at the controller.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from topologies import netns as nsutil
from topologies.api_client import ApiClient
from topologies.demo import render, run_matrix
from topologies.guest import Guest
from topologies.lab import Lab, bridge_mac, status_text, tunnel_neighbours, wait_underlay
from topologies.labspec import SpecError, load_spec, parse_spec
from topologies.labstate import LabState, state_path

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "topologies" / "specs" / "small.yaml"
DEMO = ROOT / "topologies" / "specs" / "demo.yaml"
TUNNEL_CAPTURE = {  # tcpdump filter, and what its -v output shows for key 5001
    "vxlan": ("udp port 4789", r"VXLAN.*vni 5001\b"),
    "gre": ("ip proto 47", r"GRE.*key=0x1389\b"),
    "geneve": ("udp port 6081", r"Geneve.*vni 0x1389\b"),
}
TUNNEL_LISTENER = {"vxlan": "vxlan_sys_4789", "gre": "gre_sys", "geneve": "genev_sys_6081"}


def _unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(3)}"


def _quiet(_line: str) -> None:
    pass


# -- spec ------------------------------------------------------------------------------
def test_shipped_specs_are_valid() -> None:
    demo = load_spec(DEMO)
    assert [h.name for h in demo.hypervisors] == ["hv1", "hv2", "hv3"]
    types = {n.type for p in demo.projects for n in p.networks}
    assert types == {"vxlan", "gre", "geneve"}
    cidrs = {p.name: {s.cidr for n in p.networks for s in n.subnets} for p in demo.projects}
    assert len(demo.projects) == 2 and all("10.0.0.0/24" in c for c in cidrs.values())
    assert len({g.spec.hypervisor for g in demo.guests()}) == 3
    assert len(load_spec(SMALL).hypervisors) == 2
    ext = demo.external
    assert ext is not None and ext.physical_network == "physnet1"
    assert ext.hypervisors == ("hv1", "hv2", "hv3") and ext.gateways == ("hv2",)
    assert (ext.outside_ip, ext.cidr, ext.http_port) == ("198.51.100.1", "198.51.100.0/24", 80)
    for p in demo.projects:  # each project's router: gateway, interface on its web subnet
        assert [(r.external_gateway, r.interfaces) for r in p.routers] == [(True, ("web",))]
    assert {g.name for g in demo.guests() if g.spec.floating_ip} == {"a1", "b2"}
    assert load_spec(SMALL).external is None


def test_spec_external_defaults_and_errors() -> None:
    base = {"name": "t", "hypervisors": [{"name": "hv1"}, {"name": "hv2"}]}
    ext = parse_spec({**base, "external": {}}).external
    assert ext is not None
    assert (ext.physical_network, ext.hypervisors, ext.gateways, ext.network, ext.outside,
            ext.allocation_pool, ext.http_port, ext.all_hypervisors) == (
        "physnet1", ("hv1", "hv2"), (), "public", "198.51.100.1/24",
        ("198.51.100.10", "198.51.100.99"), 80, True)
    bad = {**base, "hypervisors": [{"name": "hv1"}, {"name": "ext"}],
           "external": {"hypervisors": ["hv1", "hv1"], "gateways": ["hv9"],
                        "outside": "198.51.100.50/24",
                        "allocation_pool": ["198.51.100.40", "198.51.100.60"],
                        "http_port": 70000, "physical_network": "phys net", "bgp": True},
           "projects": [{"name": "p", "networks": [
               {"name": "web", "type": "vxlan", "subnets": [{"cidr": "10.0.0.0/24"}],
                "guests": [{"name": "g1", "hypervisor": "hv1", "floating_ip": "yes"}]},
               {"name": "db", "type": "vxlan", "subnets": [{"cidr": "10.0.1.0/24"}],
                "guests": [{"name": "g2", "hypervisor": "hv1", "floating_ip": True}]}],
               "routers": [{"name": "r", "external_gateway": True,
                            "interfaces": ["web", "nope"]},
                           {"name": "r", "interfaces": ["web"]}]}]}
    with pytest.raises(SpecError) as err:
        parse_spec(bad, "bad.yaml")
    text = str(err.value)
    for expected in (
        "external: unknown key 'bgp'",
        "external.physical_network: 'phys net' is not a valid name",
        "external.hypervisors[1]: 'hv1' listed twice",
        "external.gateways[0]: 'hv9' is not a hypervisor of this lab",
        "external.allocation_pool: 198.51.100.40-198.51.100.60 holds the outside host's "
        "address 198.51.100.50",
        "external.http_port: 70000 is not a TCP port",
        "hypervisors[1].name: name 'ext' is reserved for the external network's switch",
        "projects[0].networks[0].guests[0].floating_ip: 'yes' is not true or false",
        "projects[0].routers[0].interfaces[1]: 'nope' is not a network of project 'p'",
        "projects[0].routers[1].name: duplicate router 'r' in project 'p'",
        "projects[0].routers[1].interfaces[0]: network 'web' is already an interface of "
        "router 'r'",
        "projects[0].networks[1].guests[0].floating_ip: network 'db' has no router with an "
        "external gateway",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    for external, expected in (
        ({"gateways": ["hv2"], "hypervisors": ["hv1"]},
         "external.gateways[0]: 'hv2' does not map physnet1"),
        ({"hypervisors": []}, "external.hypervisors: must be a non-empty list"),
        ({"outside": "198.51.100.1"}, "external.outside: '198.51.100.1': an IPv4 address "
                                      "with its prefix"),
        ({"outside": "198.51.100.0/24"}, "is the network or broadcast address"),
        ({"outside": "198.51.100.50/24"}, "the default pool 198.51.100.10-198.51.100.99 "
                                          "holds the outside host's address"),
        ({"allocation_pool": ["198.51.100.99", "198.51.100.10"]}, "is after end"),
        ({"allocation_pool": ["198.51.101.10", "198.51.101.20"]}, "is not inside"),
    ):
        with pytest.raises(SpecError, match=re.escape(expected)):
            parse_spec({**base, "external": external})
    no_ext = {**base, "projects": [{"name": "p", "networks": [
        {"name": "web", "type": "vxlan", "subnets": [{"cidr": "10.0.0.0/24"}]}],
        "routers": [{"name": "r", "external_gateway": True, "interfaces": ["web"]}]}]}
    with pytest.raises(SpecError, match=re.escape(
            "projects[0].routers[0].external_gateway: needs a top-level `external`")):
        parse_spec(no_ext)


def test_spec_errors_name_every_problem_and_where() -> None:
    bad = {
        "hypervisors": [{"name": "hv1"}, {"name": "hv1"}, {"name": "Bad_Name"}],
        "projects": [{"name": "p", "networks": [
            {"name": "n", "type": "vxlann", "subnets": [{"cidr": "10.0.0.1/24"}]},
            {"name": "m", "type": "vxlan", "segmentation_id": 1 << 24,
             "subnets": [{"cidr": "10.0.0.0/24"}],
             "guests": [{"name": "g1", "hypervisor": "hv9"},
                        {"name": "g2", "hypervisor": "hv1", "ip": "10.0.1.5"},
                        {"name": "g3", "hypervisor": "hv1", "ip": "10.0.0.1"}]},
        ]}],
        "controler": {},
    }
    with pytest.raises(SpecError) as err:
        parse_spec(bad, "bad.yaml")
    text = str(err.value)
    for expected in (
        "spec: unknown key 'controler'",
        "hypervisors[1].name: name 'hv1' already used at hypervisors[0].name",
        "hypervisors[2].name: 'Bad_Name' is not a valid name",
        "projects[0].networks[0].type: 'vxlann' is not one of",
        "projects[0].networks[0].subnets[0].cidr: '10.0.0.1/24' is not a network",
        "projects[0].networks[1].segmentation_id: 16777216 out of range 1-16777215 for vxlan",
        "projects[0].networks[1].guests[0].hypervisor: 'hv9' is not a hypervisor",
        "projects[0].networks[1].guests[1].ip: 10.0.1.5 is in none of the network's subnets",
        "projects[0].networks[1].guests[2].ip: 10.0.0.1 is reserved for 10.0.0.0/24's gateway",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_spec_auth_tokens_are_checked_and_kept() -> None:
    base = {"name": "t", "hypervisors": [{"name": "hv1"}]}
    spec = parse_spec({**base, "controller": {"auth_tokens": {
        "alpha-member": {"project_id": "alpha"},
        "ops-admin-token": {"project_id": "ops", "role": "admin"}}}})
    assert spec.controller.admin_token == "ops-admin-token"
    assert spec.controller.tokens_file_data() == {
        "alpha-member": {"project_id": "alpha", "role": "member"},
        "ops-admin-token": {"project_id": "ops", "role": "admin"}}
    assert parse_spec(base).controller.auth_tokens == ()
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "controller": {"auth_tokens": {
            "short": {"project_id": "a"},
            "no-project-here": {"role": "member"},
            "bad-role-token": {"project_id": "a", "role": "owner"},
            "extra-key-token": {"project_id": "a", "scope": "x"}}}})
    text = str(err.value)
    for expected in (
        "controller.auth_tokens[shor…]: a token is a string of at least 8 characters",
        "controller.auth_tokens[no-p…]: missing required key 'project_id'",
        "controller.auth_tokens[bad-…].role: 'owner' is not one of admin, member",
        "controller.auth_tokens[extr…]: unknown key 'scope'",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert "no-project-here" not in text  # tokens are secrets: 4 characters at most
    with pytest.raises(SpecError, match="expected a non-empty mapping"):
        parse_spec({**base, "controller": {"auth_tokens": ["a-token-list"]}})


# -- the underlay by itself: OVS userspace tunnels, no controller -----------------------
@pytest.fixture(scope="module")
def underlay_lab() -> Iterator[Lab]:
    lab = Lab.up(SMALL, name=_unique("t-ul"), controller=False, progress=_quiet)
    try:
        yield lab
    finally:
        assert lab.down() == []


def test_hypervisors_have_identity_encap_ip_and_tunnel_route(underlay_lab: Lab) -> None:
    for name, other in (("hv1", "hv2"), ("hv2", "hv1")):
        hv = underlay_lab.hypervisor(name)
        ext = hv.ovs.vsctl("get", "Open_vSwitch", ".", "external_ids")
        assert f"system-id={name}" in ext and f'loom-encap-ip="{hv.encap_ip}"' in ext
        assert "172.31.0.0/24 dev br-phy" in hv.ovs.appctl("ovs/route/show")
        assert hv.ovs.vsctl("get", "Bridge", "br-phy", "fail_mode") == "standalone"
        assert hv.ovs.vsctl("get-controller", "br-phy") == ""
        # the encap IP lives only in the hypervisor's namespace, on br-phy
        addrs = nsutil.run(["ip", "-4", "-o", "addr", "show", "dev", "br-phy"],
                           netns=hv.netns).stdout
        assert f"{hv.encap_ip}/24" in addrs
        peer = underlay_lab.hypervisor(other)
        wait_underlay([hv, peer], timeout=30)  # retried until a deadline, not one try
    assert "172.31.0." not in nsutil.run(["ip", "-4", "-o", "addr", "show"]).stdout


def test_only_br_phy_answers_arp_for_the_encap_ip(underlay_lab: Lab, tmp_path: Path) -> None:
    """arp_ignore/arp_announce in every hypervisor: the kernel no longer answers for
    the encap IP from eth1 (inside br-phy) with eth1's MAC, which made the tunnel
    drop everything whenever OVS's neighbour cache took that MAC."""
    hv1, hv2 = underlay_lab.hypervisor("hv1"), underlay_lab.hypervisor("hv2")
    for hv in (hv1, hv2):
        for scope in ("all", "eth1", "br-phy"):
            for key, want in (("arp_ignore", "1"), ("arp_announce", "2")):
                got = nsutil.run(["sysctl", "-n", f"net.ipv4.conf.{scope}.{key}"],
                                 netns=hv.netns).stdout.strip()
                assert got == want, (hv.name, scope, key, got)
    mac2 = bridge_mac(hv2)
    cap = _Capture(underlay_lab.underlay_netns, "arp", tmp_path / "arp.txt")
    try:
        nsutil.run(["ip", "neigh", "flush", "dev", "br-phy"], netns=hv1.netns)
        assert nsutil.run(["ping", "-c1", "-W2", hv2.encap_ip], netns=hv1.netns).returncode == 0
        time.sleep(0.5)  # a second, late answer would arrive now
    finally:
        text = cap.stop()
    answers = re.findall(rf"Reply {re.escape(hv2.encap_ip)} is-at ([0-9a-f:]+)", text)
    assert answers == [mac2], text


def test_tunnel_neighbours_hold_the_peers_br_phy_macs(underlay_lab: Lab) -> None:
    """Primed by `up` (tnl/neigh/set) and checked with tnl/neigh/show before it
    returned: no tunnel's first packet is dropped while OVS ARPs for the peer."""
    hv1, hv2 = underlay_lab.hypervisor("hv1"), underlay_lab.hypervisor("hv2")
    assert tunnel_neighbours(hv1).get(hv2.encap_ip) == (bridge_mac(hv2), "br-phy")
    assert tunnel_neighbours(hv2).get(hv1.encap_ip) == (bridge_mac(hv1), "br-phy")
    show = hv1.ovs.appctl("tnl/neigh/show")
    assert hv2.encap_ip in show and bridge_mac(hv2) in show, show


class _Capture:
    """tcpdump -v on the underlay bridge, started and known to be listening."""

    def __init__(self, netns: str, bpf: str, path: Path):
        self.path = path
        self.fh = open(path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = nsutil.popen(["tcpdump", "-i", "br-ul", "-nn", "-v", "-l", *bpf.split()],
                                 netns=netns, stdout=self.fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "listening on" not in path.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, path.read_text()
            time.sleep(0.05)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(5)
        self.fh.close()
        return self.path.read_text()


@pytest.mark.parametrize("tunnel_type", ["vxlan", "gre", "geneve"])
def test_underlay_carries_userspace_tunnels_by_itself(
    underlay_lab: Lab, tunnel_type: str, tmp_path: Path
) -> None:
    """br-tt on hv1 and hv2 with a tunnel port and NORMAL + set_field/set_tunnel flows,
    written with ovs-ofctl: guests ping and talk TCP over the tunnel; the underlay
    capture shows the key; a receiver that expects another key gets nothing."""
    hv1, hv2 = underlay_lab.hypervisor("hv1"), underlay_lab.hypervisor("hv2")
    guests: list[Guest] = []
    try:
        for i, (hv, peer) in enumerate(((hv1, hv2), (hv2, hv1)), start=1):
            hv.ovs.add_bridge("br-tt")
            hv.ovs.vsctl("add-port", "br-tt", "tun0", "--", "set", "Interface", "tun0",
                         f"type={tunnel_type}", f"options:remote_ip={peer.encap_ip}",
                         "options:key=flow", "ofport_request=10")
            g = Guest(f"u{i}", f"02:00:00:77:00:0{i}", f"192.168.77.{i}/24",
                      sandbox=underlay_lab.sandbox, ovs=hv.ovs, bridge="br-tt", mtu=1400)
            guests.append(g)
            tag = "set_field:5001->tun_id" if i == 1 else "set_tunnel:5001"
            hv.ovs.ofctl("add-flow", "br-tt",
                         f"priority=10,in_port={g.ofport},actions={tag},NORMAL")
            hv.ovs.ofctl("add-flow", "br-tt", "priority=10,in_port=10,tun_id=5001,actions=NORMAL")
            assert TUNNEL_LISTENER[tunnel_type] in hv.ovs.appctl("tnl/ports/show")
        u1, u2 = guests
        bpf, pattern = TUNNEL_CAPTURE[tunnel_type]
        cap = _Capture(underlay_lab.underlay_netns, bpf, tmp_path / "cap.txt")
        try:
            # the tunnel neighbours were primed by `up`: not even the first packet is lost
            assert u1.ping("192.168.77.2", count=3, interval=0.2, timeout=2) == (3, 3)
            assert u2.ping("192.168.77.1", count=3, interval=0.2, timeout=2) == (3, 3)
            listener = u2.tcp_listen(5000)
            assert u1.tcp_connect("192.168.77.2", 5000, "over the underlay " * 3000,
                                  listener=listener)
        finally:
            text = cap.stop()
        assert re.search(r"172\.31\.0\.11\S* > 172\.31\.0\.12", text), text[:2000]
        assert re.search(r"172\.31\.0\.12\S* > 172\.31\.0\.11", text), text[:2000]
        assert re.search(pattern, text), text[:2000]
        # the key is honoured: hv2 now only accepts key 5002
        hv2.ovs.ofctl("del-flows", "br-tt", "in_port=10")
        hv2.ovs.ofctl("add-flow", "br-tt", "priority=10,in_port=10,tun_id=5002,actions=NORMAL")
        assert u1.ping("192.168.77.2", count=3, interval=0.2, timeout=1)[1] == 0
    finally:
        for g in guests:
            g.close()
        for hv in (hv1, hv2):
            hv.ovs.vsctl("--if-exists", "del-br", "br-tt")


# -- through Loom -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loom_lab() -> Iterator[Lab]:
    lab = Lab.up(SMALL, name=_unique("t-loom"), progress=_quiet)
    try:
        yield lab
    finally:
        if lab.controller is not None:
            print("controller log tail:\n" + lab.controller.log_tail(40))
        assert lab.down() == []


def test_lab_records_everything_it_made(loom_lab: Lab) -> None:
    data = json.loads(state_path(loom_lab.name).read_text())
    assert data["phase"] == "up" and data["prefix"] == loom_lab.prefix
    assert set(data["hypervisors"]) == {"hv1", "hv2"}
    assert set(data["guests"]) == {"s1", "s2", "s3", "t1", "t2"}
    assert set(data["api"]["ports"]) == set(data["guests"])
    assert len(data["api"]["networks"]) == 2 and len(data["api"]["subnets"]) == 2
    assert data["controller"]["of_target"].startswith(f"tcp:{data['mgmt']['host_ip']}:")
    assert data["mgmt"]["host_ip"].startswith("100.") and data["mgmt"]["host_ip"].endswith(".1")
    for ns in data["sandbox"]["netns"]:
        assert nsutil.netns_exists(ns)
    assert nsutil.link_exists(data["mgmt"]["bridge"])
    # another process' view: Lab.load attaches without creating anything
    other = Lab.load(loom_lab.name, progress=_quiet)
    assert other.guest("s2").ping("10.0.0.11", count=2, interval=0.2) == (2, 2)
    assert other.hypervisor("hv2").ovs.vsctl("br-exists", "br-int") == ""
    text = status_text(LabState.load(loom_lab.name))
    assert "controller: pid" in text and "running" in text and "NOT RUNNING" not in text
    assert text.count(" ACTIVE, netns") == 5


def test_controller_knows_every_chassis_and_its_encap_ip(loom_lab: Lab) -> None:
    chassis = {c["name"]: c for c in loom_lab.api.get("/v1/chassis").ok()["chassis"]}
    assert set(chassis) == {"hv1", "hv2"}
    for name, c in chassis.items():
        assert c["connected"] and c["encap_ip"] == loom_lab.hypervisor(name).encap_ip


def test_same_hypervisor_same_network_reach_through_loom(loom_lab: Lab) -> None:
    s1, s2 = loom_lab.guest("s1"), loom_lab.guest("s2")
    assert s1.ping("10.0.0.12", count=3, interval=0.2) == (3, 3)
    listener = s2.tcp_listen(8080)
    assert s1.tcp_connect("10.0.0.12", 8080, "through loom " * 2000, listener=listener)


def test_matrix_isolation_and_same_hypervisor_reach(loom_lab: Lab) -> None:
    """Every pair except same-network pairs across hypervisors (the overlay's tests)."""
    cells = run_matrix(loom_lab)
    print(render(cells))
    checked = [c for c in cells
               if not (c.expected and c.src.hypervisor != c.dst.hypervisor)]
    assert len(checked) == 14
    bad = [f"{c.src.name}->{c.dst.name}: {c.mark()}" for c in checked if not c.ok]
    assert not bad, render(cells)


def _flow_mods_metric(lab: Lab, dpid: str) -> float | None:
    with urllib.request.urlopen(lab.api.base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf'^loom_flow_mods_total{{datapath_id="{dpid}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_switch_counters_survive_an_ovs_vswitchd_restart(loom_lab: Lab) -> None:
    """A restarted ovs-vswitchd holds no flows and reconnects: the same datapath's
    counters go on from where they were instead of starting again from 0."""
    hv = loom_lab.hypervisor("hv2")
    dpid = f"{hv.ovs.wait_for_bridge('br-int'):016x}"

    def switch() -> dict:
        return next((s for s in loom_lab.api.get("/v1/switches").ok()["switches"]
                     if s["datapath_id"] == dpid), {})

    before = switch()
    assert before["connections"] >= 1 and before["flow_mods_sent"] > 0
    assert _flow_mods_metric(loom_lab, dpid) == before["flow_mods_sent"]
    flows = len(hv.ovs.dump_flows("br-int"))
    hv.ovs.kill_vswitchd()
    hv.ovs.start_vswitchd()
    deadline = time.monotonic() + 60
    after: dict = {}
    while time.monotonic() < deadline:
        after = switch()
        if after.get("connections") == before["connections"] + 1 \
                and after.get("synced_generation") is not None \
                and after["flow_mods_sent"] >= before["flow_mods_sent"] + flows:
            break
        time.sleep(0.2)
    assert after.get("connections") == before["connections"] + 1, after
    # everything was sent again, on top of what had been counted
    assert after["flow_mods_sent"] >= before["flow_mods_sent"] + flows, (before, after)
    assert after["bundles"] > before["bundles"]
    assert _flow_mods_metric(loom_lab, dpid) == after["flow_mods_sent"]


def test_add_and_remove_a_hypervisor(loom_lab: Lab) -> None:
    hv3 = loom_lab.add_hypervisor("hv3")
    chassis = {c["name"]: c for c in loom_lab.api.get("/v1/chassis").ok()["chassis"]}
    assert chassis["hv3"]["source"] == "api" and chassis["hv3"]["connected"]
    assert hv3.ovs.wait_for_bridge("br-int", 10)
    loom_lab.remove_hypervisor("hv3")
    assert not nsutil.netns_exists(hv3.netns)
    assert "hv3" not in {c["name"] for c in loom_lab.api.get("/v1/chassis").ok()["chassis"]}
    # hv2 came from the command line: the controller is restarted without it
    old_pid = loom_lab.state.data["controller"]["pid"]
    loom_lab.remove_hypervisor("hv2")
    assert loom_lab.state.data["controller"]["pid"] != old_pid
    assert set(loom_lab.state.data["guests"]) == {"s1", "s2", "t1"}
    assert len(loom_lab.api.get("/v2.0/ports").ok()["ports"]) == 3
    assert loom_lab.guest("s1").ping("10.0.0.12", count=2, interval=0.2) == (2, 2)


# -- teardown ------------------------------------------------------------------------------
def _lab_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topologies.lab", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _leftovers(prefix: str, workdir: str) -> list[str]:
    left = [f"netns {n}" for n in nsutil.netns_list() if n.startswith(f"{prefix}-")]
    links = nsutil.run(["ip", "-o", "link", "show"]).stdout
    left += [f"link {m}" for m in re.findall(rf"\d+: ((?:lm-)?{prefix}[^:@ ]*)", links)]
    procs = subprocess.run(["pgrep", "-af", f"{workdir}/"], capture_output=True, text=True)
    left += [f"process {line}" for line in procs.stdout.splitlines()]
    if Path(workdir).exists():
        left.append(f"workdir {workdir}")
    return left


def _wait_state(name: str, ready: Callable[[dict], object], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(state_path(name).read_text())
            if ready(data):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"state of {name} never got ready")


def test_cli_up_then_down_leaves_nothing() -> None:
    name = _unique("t-cli")
    up = _lab_cli("up", str(SMALL), "--name", name)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "is up in" in up.stdout and "guest s1:" in up.stdout
    data = json.loads(state_path(name).read_text())
    prefix, workdir = data["prefix"], data["workdir"]
    assert _leftovers(prefix, workdir), "nothing was made?"
    status = _lab_cli("status", name)
    assert status.returncode == 0 and "hypervisor hv2" in status.stdout
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []
    assert not state_path(name).exists()
    assert _lab_cli("down", name).returncode == 0  # idempotent


def test_down_after_up_was_killed_half_way() -> None:
    name = _unique("t-kill")
    proc = subprocess.Popen([sys.executable, "-m", "topologies.lab", "up", str(SMALL),
                             "--name", name], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # the controller's pid is recorded the moment it is spawned: health, switch
        # sync, API objects and guests (seconds) are still to come
        data = _wait_state(name, lambda d: d["controller"].get("pid"))
    finally:
        proc.kill()
        proc.wait()
    prefix, workdir = data["prefix"], data["workdir"]
    data = json.loads(state_path(name).read_text())
    assert data["phase"] == "creating"
    assert nsutil.netns_exists(f"{prefix}-hv1")
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []


def test_down_after_half_the_lab_and_half_the_state_vanished() -> None:
    name = _unique("t-half")
    assert _lab_cli("up", str(SMALL), "--name", name).returncode == 0
    state = LabState.load(name)
    prefix, workdir = state.prefix, str(state.workdir)
    # half the objects gone by hand: the controller died, two namespaces deleted ...
    os.kill(int(state.data["controller"]["pid"]), signal.SIGKILL)
    for ns in (f"{prefix}-ul", f"{prefix}-s1"):
        nsutil.run(["ip", "netns", "del", ns])
    # ... and half of every list in the record lost
    rec = state.data["sandbox"]
    for key in ("netns", "links", "processes"):
        rec[key] = rec[key][: len(rec[key]) // 2]
    state.data.pop("controller")
    state.save()
    down = _lab_cli("down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(prefix, workdir) == []


# -- first packets right after `lab up` ----------------------------------------------
def test_first_pings_across_hypervisors_answer_right_after_up() -> None:
    """`lab up` (the CLI), then at once: every OVS holds the peers' br-phy MACs, and
    `ping -c3` across hypervisors answers 3 of 3 in both tunnel directions (the
    first packet used to be dropped while OVS resolved the remote endpoint)."""
    name = _unique("t-first")
    up = _lab_cli("up", str(SMALL), "--name", name)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "tunnel neighbours primed and verified with tnl/neigh/show" in up.stdout
        lab = Lab.load(name, progress=_quiet)
        hv1, hv2 = lab.hypervisor("hv1"), lab.hypervisor("hv2")
        for hv, peer in ((hv1, hv2), (hv2, hv1)):
            held = tunnel_neighbours(hv)
            assert held.get(peer.encap_ip) == (bridge_mac(peer), "br-phy"), (hv.name, held)
        # s1@hv1 -> s3@hv2 (vxlan), t2@hv2 -> t1@hv1 (geneve): first packets each way
        for src, dst_ip in (("s1", "10.0.0.13"), ("t2", "10.0.0.21")):
            out = nsutil.run(["ping", "-n", "-c3", "-i", "0.2", "-W", "1", dst_ip],
                             netns=lab.guest(src).netns, check=False).stdout
            assert "3 packets transmitted, 3 received" in out, out
    finally:
        down = _lab_cli("down", name)
        assert down.returncode == 0, down.stdout + down.stderr


# -- the external network: br-ex, the physical switch, the outside host ------------------
EXTERNAL_SPEC = {
    "hypervisors": [{"name": "hv1"}, {"name": "hv2"}],
    "external": {"gateways": ["hv2"]},
    "projects": [{"name": "alpha", "networks": [
        {"name": "web", "type": "vxlan", "subnets": [{"cidr": "10.0.0.0/24"}],
         "guests": [{"name": "a1", "hypervisor": "hv1", "ip": "10.0.0.11", "floating_ip": True},
                    {"name": "a2", "hypervisor": "hv1", "ip": "10.0.0.12"}]},
        {"name": "db", "type": "vxlan", "subnets": [{"cidr": "10.0.1.0/24"}],
         "guests": [{"name": "a3", "hypervisor": "hv2", "ip": "10.0.1.13"}]}],
        "routers": [{"name": "r1", "external_gateway": True, "interfaces": ["web"]}]}],
}


def _curl(netns: str, url: str, timeout: int = 4) -> str | None:
    proc = nsutil.run(["curl", "-s", "-m", str(timeout), url], netns=netns, check=False,
                      timeout=timeout + 5)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_external_network_snat_floating_ip_and_teardown_leaves_nothing() -> None:
    """The spec's `external`: br-ex on each hypervisor with its uplink into the lab's
    physical switch, mappings and the gateway flag, the outside host with its echo
    HTTP server, the external network through the API; routers and floating IPs of
    the spec; guests routed through their gateway_ip. An added hypervisor maps the
    physnet too. `down` leaves nothing."""
    spec = parse_spec(EXTERNAL_SPEC, "ext.yaml", name=_unique("t-ext"))
    lab = Lab.up(spec, progress=_quiet)
    prefix, workdir = lab.prefix, str(lab.state.workdir)
    try:
        ext = lab.external
        assert set(ext["hypervisors"]) == {"hv1", "hv2"}
        for name, gateway in (("hv1", False), ("hv2", True)):
            ovs = lab.hypervisor(name).ovs
            ids = ovs.vsctl("get", "Open_vSwitch", ".", "external_ids")
            assert "loom-bridge-mappings=\"physnet1:br-ex\"" in ids, ids
            assert ("loom-gateway=\"true\"" in ids) == gateway, ids
            assert "ext0" in ovs.vsctl("list-ports", "br-ex").split()
            assert ovs.vsctl("get", "Bridge", "br-ex", "fail_mode") == "standalone"
        net = lab.api.get(f"/v2.0/networks/{ext['network_id']}").ok()["network"]
        assert (net["router:external"], net["shared"], net["provider:network_type"],
                net["provider:physical_network"]) == (True, True, "flat", "physnet1")
        sub = lab.api.get(f"/v2.0/subnets/{ext['subnet_id']}").ok()["subnet"]
        assert (sub["cidr"], sub["gateway_ip"]) == ("198.51.100.0/24", "198.51.100.1")
        router = lab.router_info("alpha", "r1")
        assert router["gateway_ip"].startswith("198.51.100.")
        fip = lab.guest_info("a1")["floating_ip"]
        assert fip and fip != router["gateway_ip"]
        assert lab.guest_info("a2")["gateway"] == "10.0.0.1"
        assert "default via 10.0.0.1" in lab.guest("a2").run(["ip", "route"]).stdout
        # out: a2 by SNAT (the outside sees the router's address), a1 as its floating IP,
        # a3 (no router) not at all
        deadline = time.monotonic() + 40
        while _curl(lab.guest("a2").netns, "http://198.51.100.1/", 2) is None:
            assert time.monotonic() < deadline, "no SNATed answer from the outside in 40 s"
        assert _curl(lab.guest("a2").netns, "http://198.51.100.1/") == router["gateway_ip"]
        assert _curl(lab.guest("a1").netns, "http://198.51.100.1/") == fip
        assert _curl(lab.guest("a3").netns, "http://198.51.100.1/", 2) is None
        assert lab.outside.ip == "198.51.100.1" and nsutil.netns_exists(lab.outside.netns)
        log = Path(ext["http_log"]).read_text()
        assert router["gateway_ip"] in log and "10.0.0." not in log
        text = status_text(LabState.load(lab.name))
        assert "external: physnet1" in text and "hv2 (gateway)" in text
        assert "HTTP :80 pid" in text and "running" in text and f"floating IP {fip}" in text
        # a hypervisor added later maps the physnet too (external.hypervisors defaulted)
        hv3 = lab.add_hypervisor("hv3")
        assert "ext0" in hv3.ovs.vsctl("list-ports", "br-ex").split()
        assert "physnet1:br-ex" in hv3.ovs.vsctl("get", "Open_vSwitch", ".", "external_ids")
        lab.remove_hypervisor("hv3")
        assert "hv3" not in lab.external["hypervisors"]
    finally:
        assert lab.down() == []
    assert _leftovers(prefix, workdir) == []


# -- a lab whose controller takes --auth-tokens -----------------------------------------
def test_lab_spec_auth_tokens_start_the_controller_with_them() -> None:
    """Members' views can be tried in the lab: the spec's tokens become the
    controller's --auth-tokens; the lab calls the API with its own admin token."""
    spec = parse_spec({
        "hypervisors": [{"name": "hv1"}],
        "controller": {"auth_tokens": {
            "alpha-member-token": {"project_id": "alpha"},
            "beta-member-token": {"project_id": "beta", "role": "member"}}},
        "projects": [
            {"name": "alpha", "networks": [{"name": "n1", "type": "vxlan",
                                            "subnets": [{"cidr": "10.0.0.0/24"}],
                                            "guests": [{"name": "a1", "hypervisor": "hv1"}]}]},
            {"name": "beta", "networks": [{"name": "n1", "type": "geneve",
                                           "subnets": [{"cidr": "10.0.0.0/24"}]}]},
        ]}, "auth.yaml", name=_unique("t-auth"))
    lab = Lab.up(spec, progress=_quiet)
    try:
        ctl = lab.state.data["controller"]
        tokens_file = Path(ctl["auth_tokens_file"])
        assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(ctl["admin_token_file"]).stat().st_mode) == 0o600
        assert "--auth-tokens" in Path(f"/proc/{ctl['pid']}/cmdline").read_text()
        text = tokens_file.read_text()
        assert "alpha-member-token" in text and "beta-member-token" in text
        assert "lab-admin-" in text  # the spec had no admin token: the lab added one
        admin = Path(ctl["admin_token_file"]).read_text().strip()
        assert admin.startswith("lab-admin-") and admin in text
        record = state_path(lab.name).read_text()
        assert "member-token" not in record and admin not in record  # no secret in it

        url = ctl["rest_url"]
        assert ApiClient(url).get("/v2.0/networks").status == 401
        seen = {}
        for token, project in (("alpha-member-token", "alpha"), ("beta-member-token", "beta")):
            nets = ApiClient(url, token=token).get("/v2.0/networks").ok()["networks"]
            seen[project] = {n["project_id"] for n in nets}
        assert seen == {"alpha": {"alpha"}, "beta": {"beta"}}
        assert ApiClient(url, token="beta-member-token").get("/v1/chassis").status == 404
        assert {n["project_id"] for n in lab.api.get("/v2.0/networks").ok()["networks"]} \
            == {"alpha", "beta"}
        # another process' view reads the token from the file, as status does
        assert Lab.load(lab.name, progress=_quiet).api.get("/v1/chassis").status == 200
        assert " ACTIVE, netns" in status_text(LabState.load(lab.name))
    finally:
        assert lab.down() == []
