"""Overlays across hypervisors, through Loom, on the multi-host lab.

Three hypervisors (namespaces, each with its own OVS), two projects both on
10.0.0.0/24, one network per tunnel type. Guests on different hypervisors reach each
other within a network over VXLAN, GRE and Geneve, and never across projects; the
underlay shows the segmentation id as the VNI/key; hypervisors come and go with
their tunnels; restarts of the controller or of one ovs-vswitchd neither change
nor lose anything.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import assert_resolved_in_pipeline
from topologies.demo import render, run_matrix
from topologies.lab import Lab

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "topologies" / "specs" / "demo.yaml"
CAPTURE = {  # tcpdump filter, and the -v text naming the key for each tunnel type
    "vxlan": ("udp port 4789", lambda k: rf"VXLAN.*vni {k}\b"),
    "gre": ("ip proto 47", lambda k: rf"GRE.*key=0x{k:x}\b"),
    "geneve": ("udp port 6081", lambda k: rf"Geneve.*vni 0x{k:x}\b"),
}


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab.up(DEMO, name=f"ovl-{secrets.token_hex(3)}", progress=_quiet)
    try:
        yield lab
    finally:
        problems = lab.down()
        assert not problems, problems


def _tunnel_ports(lab: Lab, hv: str) -> set[str]:
    out = lab.hypervisor(hv).ovs.vsctl("--bare", "--columns=name,type", "list", "Interface")
    fields = out.split()
    return {
        fields[i]
        for i in range(0, len(fields) - 1, 2)
        if fields[i + 1] in ("vxlan", "gre", "geneve")
    } | {n for n in fields if re.match(r"^l[vgn]-[0-9a-f]{10}$", n)}


def _flows(lab: Lab, hv: str) -> dict[str, float]:
    out = {}
    for line in lab.hypervisor(hv).ovs.dump_flows("br-int"):
        dur = float(re.search(r"duration=([\d.]+)s", line).group(1))  # type: ignore[union-attr]
        key = re.sub(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[\d.]+s?,\s*", "", line)
        out[key.strip()] = dur
    return out


def test_connectivity_matrix_within_networks_only(lab: Lab) -> None:
    """Every ordered pair of guests: reach iff same network, by ping and by TCP."""
    cells = run_matrix(lab)
    report = render(cells)
    assert report.rstrip().splitlines()[-1].startswith("PASS"), report
    cross = [c for c in cells if c.expected and c.tested and c.src.hypervisor != c.dst.hypervisor]
    assert len(cross) >= 6, "the matrix must exercise cross-hypervisor pairs"


@pytest.mark.parametrize(
    "net_type,src,dst,key",
    [("vxlan", "a1", "a2", 1001), ("gre", "a5", "a4", 2002), ("geneve", "b1", "b2", 3003)],
)
def test_underlay_carries_the_segmentation_id(
    lab: Lab, net_type: str, src: str, dst: str, key: int
) -> None:
    bpf, pattern = CAPTURE[net_type]
    cap = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.underlay_netns,
            "timeout",
            "6",
            "tcpdump",
            "-l",
            "-n",
            "-v",
            "-i",
            "any",
            "-c",
            "4",
            bpf,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    dst_ip = lab.guest_info(dst)["ip_cidr"].split("/")[0]
    lab.guest(src).ping(dst_ip, count=3, interval=0.2)
    out, _ = cap.communicate(timeout=15)
    assert re.search(pattern(key), out), out


def test_restart_changes_no_tunnel_and_no_flow(lab: Lab) -> None:
    hvs = ["hv1", "hv2", "hv3"]
    tunnels = {hv: _tunnel_ports(lab, hv) for hv in hvs}
    flows = {hv: _flows(lab, hv) for hv in hvs}
    uuids = {
        hv: lab.hypervisor(hv).ovs.vsctl("--bare", "--columns=_uuid", "list", "Interface")
        for hv in hvs
    }
    lab._restart_controller()
    lab._wait_switches(3, timeout=30)
    time.sleep(2.0)  # let any (unwanted) change land before looking
    assert lab.api.metric("loom_flow_mods_total") == 0
    for hv in hvs:
        assert _tunnel_ports(lab, hv) == tunnels[hv]
        assert (
            lab.hypervisor(hv).ovs.vsctl("--bare", "--columns=_uuid", "list", "Interface")
            == uuids[hv]
        )
        after = _flows(lab, hv)
        assert set(after) == set(flows[hv])
        assert all(after[f] >= flows[hv][f] for f in after), "a flow was re-installed"
    assert (
        lab.guest("a1").ping(lab.guest_info("a2")["ip_cidr"].split("/")[0], count=2, interval=0.2)[
            1
        ]
        == 2
    )


def test_killed_vswitchd_is_reprogrammed(lab: Lab) -> None:
    hv = lab.hypervisor("hv2")
    before = len(hv.ovs.dump_flows("br-int"))
    hv.ovs.kill_vswitchd()
    hv.ovs.start_vswitchd()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if len(hv.ovs.dump_flows("br-int")) >= before:
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert len(hv.ovs.dump_flows("br-int")) == before
    a2_ip = lab.guest_info("a2")["ip_cidr"].split("/")[0]
    got = 0
    for _ in range(10):  # the first packets may go while OVS re-learns the underlay
        got = lab.guest("a1").ping(a2_ip, count=2, interval=0.2, timeout=1)[1]
        if got == 2:
            break
    assert got == 2


def test_fourth_hypervisor_joins_and_leaves_the_mesh(lab: Lab) -> None:
    lab.add_hypervisor("hv4")
    try:
        deadline = time.monotonic() + 30
        want = {"hv1", "hv2", "hv3"}
        while time.monotonic() < deadline:
            if (
                all(_remote_chassis(lab, hv) >= (want - {hv}) | {"hv4"} for hv in want)
                and _remote_chassis(lab, "hv4") >= want
            ):
                break
            time.sleep(0.2)
        for hv in want:
            assert "hv4" in _remote_chassis(lab, hv), hv
        assert _remote_chassis(lab, "hv4") == want
    finally:
        lab.remove_hypervisor("hv4")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        "hv4" in _remote_chassis(lab, hv) for hv in ("hv1", "hv2", "hv3")
    ):
        time.sleep(0.2)
    for hv in ("hv1", "hv2", "hv3"):
        assert "hv4" not in _remote_chassis(lab, hv)


def _remote_chassis(lab: Lab, hv: str) -> set[str]:
    out = lab.hypervisor(hv).ovs.vsctl(
        "--bare",
        "--columns=external_ids",
        "find",
        "Interface",
        'external_ids:loom-remote-chassis!=""',
    )
    return set(re.findall(r"loom-remote-chassis=\"?([\w-]+)", out))


def test_neighbour_discovery_across_hypervisors_is_answered_without_flooding(
        lab: Lab) -> None:
    """Two guests of one network on two hypervisors: the asker's switch answers its
    IPv6 neighbour solicitation (arp_responder, nd_reply), so the solicitation never
    crosses a tunnel, and the neighbour never sees it."""
    api = lab.api
    a1, a2 = lab.guest("a1"), lab.guest("a2")
    info = {n: lab.guest_info(n) for n in ("a1", "a2")}
    assert info["a1"]["hypervisor"] != info["a2"]["hypervisor"]
    first = api.get(f"/v2.0/ports/{info['a1']['port_id']}").ok()["port"]
    sub = api.post("/v2.0/subnets", {"subnet": {
        "network_id": first["network_id"], "cidr": "2001:db8:5::/64", "ip_version": 6,
        "project_id": first["project_id"]}}).ok()["subnet"]
    ips = {}
    try:
        for name, guest in (("a1", a1), ("a2", a2)):
            port = api.get(f"/v2.0/ports/{info[name]['port_id']}").ok()["port"]
            got = api.put(f"/v2.0/ports/{port['id']}?wait=true", {"port": {"fixed_ips": [
                *port["fixed_ips"], {"subnet_id": sub["id"]}]}}).ok()["port"]
            ips[name] = next(f["ip_address"] for f in got["fixed_ips"]
                             if f["subnet_id"] == sub["id"])
            guest.run(["ip", "-6", "addr", "add", f"{ips[name]}/64", "dev", "eth0",
                       "nodad"])
        assert_resolved_in_pipeline(a1, a2.netns, ips["a2"], info["a2"]["mac"])
    finally:
        for name, guest in (("a1", a1), ("a2", a2)):
            if name in ips:
                guest.run(["ip", "-6", "addr", "del", f"{ips[name]}/64", "dev", "eth0"],
                          check=False)
            port = api.get(f"/v2.0/ports/{info[name]['port_id']}").ok()["port"]
            api.put(f"/v2.0/ports/{port['id']}", {"port": {"fixed_ips": [
                f for f in port["fixed_ips"] if f["subnet_id"] != sub["id"]]}})
        api.delete(f"/v2.0/subnets/{sub['id']}")


def test_a_tunnel_deleted_by_hand_is_put_back_and_reported(lab: Lab) -> None:
    """Drift on a chassis' OVSDB (issue 15): `ovs-vsctl del-port` of a tunnel Loom made
    is found by the chassis' session, reported by /v1/verify, and the tunnel comes back."""
    from tests.waiting import wait_for

    name = sorted(_tunnel_ports(lab, "hv1"))[0]
    started = time.monotonic()
    lab.hypervisor("hv1").ovs.vsctl("del-port", "br-int", name)
    wait_for("the tunnel back", lambda: name in _tunnel_ports(lab, "hv1"), timeout=20)
    print(f"tunnel {name} back {time.monotonic() - started:.2f} s after its del-port")
    chassis = lab.api.get("/v1/verify").ok()["chassis"]
    found = [d for c in chassis for d in c["drift"] if d["what"] == name]
    assert found and found[0]["kind"] == "tunnel-missing" and found[0]["repaired"], chassis
    out = lab.guest("a1").run(["ping", "-c", "2", "-i", "0.2", "-W", "2",
                               lab.guest_info("a2")["ip_cidr"].split("/")[0]], check=False)
    assert " 0% packet loss" in out.stdout, out.stdout
