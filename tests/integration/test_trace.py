"""GET /v1/trace against a real controller, two hypervisors and guests.

Two chassis (each its own OVS in a namespace, joined by a VXLAN underlay through
br-phy as in OVS's userspace-tunnelling how-to), one tenant network with a "web"
security group that allows TCP 8080 in, and a guest of another project. Every
verdict the trace gives is checked against real traffic between the guests: the
trace explains what the switches do, so it must agree with what the packets do.

With LOOM_TRACE_FIXTURES=DIR the raw ofproto/trace outputs of each scenario are
written to DIR as JSON (that is how tests/unit/fixtures/ofproto_trace was made).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for
from topologies import netns as nsutil
from topologies.api_client import ApiClient
from topologies.controller_process import ControllerProcess
from topologies.guest import Guest
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance

pytestmark = pytest.mark.integration

UNDERLAY = "172.31.0.0/24"
ENCAP = {"hv1": "172.31.0.11", "hv2": "172.31.0.12"}

@dataclass
class Lab:
    sandbox: Sandbox
    hvs: dict[str, OvsInstance]
    ctl: ControllerProcess
    api: ApiClient
    guests: dict[str, Guest]
    ports: dict[str, dict[str, Any]]
    web_rule: dict[str, Any]
    network: dict[str, Any]


def _security_group_api(api: ApiClient) -> bool:
    """The security-group API may still be on its way; poll for it briefly."""
    return wait_for("security-group API", lambda: api.get("/v2.0/security-groups").status == 200,
                    timeout=10)


def _make_hv(sandbox: Sandbox, name: str) -> OvsInstance:
    workdir = DEFAULT_BASE / f"{sandbox.prefix}-{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    hv = OvsInstance(name, netns=sandbox.add_netns(name), workdir=workdir, sandbox=sandbox,
                     system_id=name)
    hv.start()
    hv.vsctl("set", "Open_vSwitch", ".", f"external_ids:loom-encap-ip={ENCAP[name]}")
    return hv


def _underlay(sandbox: Sandbox, hvs: dict[str, OvsInstance]) -> None:
    """eth1 <-> eth1 between the two namespaces, each a port of a standalone br-phy that
    holds the encap IP (userspace tunnelling routes through it)."""
    sandbox.add_veth("eth1", "eth1", hvs["hv1"].netns, hvs["hv2"].netns)
    for name, hv in hvs.items():
        hv.add_bridge("br-phy", fail_mode="standalone")
        hv.vsctl("--may-exist", "add-port", "br-phy", "eth1")
        nsutil.add_address("br-phy", f"{ENCAP[name]}/24", netns=hv.netns)
        nsutil.link_up("br-phy", netns=hv.netns)
        if f"{UNDERLAY} dev br-phy" not in hv.appctl("ovs/route/show"):
            hv.appctl("ovs/route/add", UNDERLAY, "br-phy")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    sandbox = Sandbox()
    hvs: dict[str, OvsInstance] = {}
    guests: dict[str, Guest] = {}
    ctl = None
    try:
        for name in ("hv1", "hv2"):
            hvs[name] = _make_hv(sandbox, name)
        _underlay(sandbox, hvs)
        h1, _ = hvs["hv1"].add_mgmt_link()
        h2, _ = hvs["hv2"].add_mgmt_link()
        # One OpenFlow target for every chassis: hv2 reaches hv1's host address through
        # its own management link (the root namespace answers on any interface).
        nsutil.run(["ip", "route", "add", f"{h1}/32", "via", h2], netns=hvs["hv2"].netns)
        ctl = ControllerProcess(tmp_path_factory.mktemp("loom-trace"),
                                [hv.db_remote for hv in hvs.values()], of_host=h1)
        ctl.start()
        ctl.wait_switches(2)
        api = ctl.api
        _security_group_api(api)

        net = api.create("network", name="net", project_id="p1")
        sub = api.create("subnet", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4,
                         project_id="p1")
        web = api.post("/v2.0/security-groups", {"security_group": {
            "name": "web", "project_id": "p1"}}).ok()["security_group"]
        web_rule = api.post("/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": web["id"], "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080,
            "project_id": "p1"}}).ok()["security_group_rule"]
        ports: dict[str, dict[str, Any]] = {}
        spec: dict[str, tuple[str, str, dict[str, Any]]] = {
            "c1": ("hv1", "10.0.0.11", {}),  # the project's default group
            "s1": ("hv1", "10.0.0.12", {"security_groups": [web["id"]]}),
            "s2": ("hv2", "10.0.0.13", {"security_groups": [web["id"]]}),
            "open": ("hv2", "10.0.0.14", {"port_security_enabled": False,
                                          "security_groups": []}),
        }
        for name, (_hv, ip, extra) in spec.items():
            ports[name] = api.create("port", wait=True, network_id=net["id"], project_id="p1",
                                     fixed_ips=[{"subnet_id": sub["id"], "ip_address": ip}],
                                     **extra)
        # another project, same addresses, its guest on hv2
        net_b = api.create("network", name="net-b", project_id="p2")
        sub_b = api.create("subnet", network_id=net_b["id"], cidr="10.0.0.0/24", ip_version=4,
                           project_id="p2")
        ports["b1"] = api.create("port", wait=True, network_id=net_b["id"], project_id="p2",
                                 fixed_ips=[{"subnet_id": sub_b["id"],
                                             "ip_address": "10.0.0.21"}])
        where = {name: spec[name][0] for name in spec} | {"b1": "hv2"}
        for name, port in ports.items():
            ip = port["fixed_ips"][0]["ip_address"]
            guests[name] = Guest(name, port["mac_address"], f"{ip}/24", sandbox=sandbox,
                                 ovs=hvs[where[name]], bridge="br-int", port_id=port["id"])
        for port in ports.values():
            wait_for(f"port {port['id']} ACTIVE", lambda p=port: api.get(
                f"/v2.0/ports/{p['id']}").ok()["port"]["status"] == "ACTIVE")
        # the tunnel mesh is up once a trace towards hv2 crosses it
        probe = f"/v1/trace?port={ports['c1']['id']}&dst_ip=10.0.0.14"
        wait_for("tunnel hv1 -> hv2", lambda: len((api.get(probe).body or {}).get("hops", [])) == 2)
        for a, b in (("hv1", "hv2"), ("hv2", "hv1")):  # prime the tunnel neighbour caches
            nsutil.run(["ping", "-c", "1", "-W", "2", ENCAP[b]], netns=hvs[a].netns, check=False)
        yield Lab(sandbox, hvs, ctl, api, guests, ports, web_rule, net)
    finally:
        for g in guests.values():
            g.close()
        if ctl is not None:
            ctl.stop()
            print("controller log tail:\n" + ctl.log_tail(40))
        for inst in hvs.values():
            inst.close(remove_workdir=True)
        sandbox.cleanup()


def _trace(api: ApiClient, src: dict[str, Any], dst_ip: str, **query: Any) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in {"port": src["id"], "dst_ip": dst_ip, **query,
                                               "raw": "true"}.items())
    resp = api.get(f"/v1/trace?{params}")
    assert resp.status == 200, resp.body
    return resp.body


def _capture(name: str, answer: dict[str, Any]) -> None:
    """Keep a scenario's raw ofproto/trace outputs and context as a unit-test fixture."""
    target = os.environ.get("LOOM_TRACE_FIXTURES")
    if not target:
        return
    owners = {json.dumps(t["owner"], sort_keys=True): t["owner"]
              for h in answer["hops"] for t in h["tables"] if t["owner"] and t["owner"]["id"]}
    fixture = {
        "scenario": name,
        "ovs": "Open vSwitch 3.1 (Debian 12), userspace datapath",
        "source": answer["source"], "destination": answer["destination"],
        "packet": answer["packet"], "conntrack": answer["conntrack"]["assumed"],
        "expected": {"verdict": answer["verdict"], "reason": answer["reason"]},
        "owners": sorted(owners.values(), key=lambda o: (o["kind"], o["id"])),
        "hops": [{k: h[k] for k in ("chassis", "bridge", "datapath_id", "in_port", "tun_id",
                                    "flow", "context", "ofproto_trace")}
                 for h in answer["hops"]],
    }
    Path(target).mkdir(parents=True, exist_ok=True)
    (Path(target) / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")


def _tables(hop: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["table_name"], t["priority_name"]) for t in hop["tables"]
            if t["bridge"] == hop["bridge"]]


def test_tcp_8080_is_allowed_by_the_web_rule(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.12", protocol="tcp", dst_port=8080)
    _capture("same_chassis_tcp_8080_allowed", answer)
    assert answer["verdict"] == "allowed", answer["reason"]
    reason = answer["reason"]
    assert reason["kind"] == "security_group_rule"
    assert reason["id"] == lab.web_rule["id"]
    assert reason["security_group_id"] == lab.web_rule["security_group_id"]
    assert reason["direction"] == "ingress" and reason["port"] == lab.ports["s1"]["id"]
    assert answer["conntrack"]["assumed"] == "trk,new"
    [hop] = answer["hops"]
    assert hop["chassis"] == "hv1" and hop["bridge"] == "br-int"
    names = _tables(hop)
    assert names[0] == ("classify", "port") and ("egress_acl", "rule") in names
    assert ("ingress_acl", "rule") in names and names[-1] == ("output", "deliver")
    rule_hits = [t for t in hop["tables"] if t["owner"] and t["owner"]["id"] == lab.web_rule["id"]]
    assert rule_hits and rule_hits[0]["cookie"].startswith("0x4")
    # ... and the switch agrees: the connection is made
    listener = lab.guests["s1"].tcp_listen(8080)
    assert lab.guests["c1"].tcp_connect("10.0.0.12", 8080, "trace says yes", listener=listener)


def test_blocked_connection_is_default_deny(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.12", protocol="tcp", dst_port=8081)
    _capture("same_chassis_tcp_8081_default_deny", answer)
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "default_deny"
    assert answer["reason"]["port"] == lab.ports["s1"]["id"]
    assert answer["reason"]["direction"] == "ingress"
    assert answer["hops"][0]["datapath_actions"][-1] == "drop"
    listener = lab.guests["s1"].tcp_listen(8081)
    assert not lab.guests["c1"].tcp_connect("10.0.0.12", 8081, "trace says no", timeout=2,
                                            listener=listener)


def test_cross_chassis_trace_continues_through_the_tunnel(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.13", protocol="tcp", dst_port=8080)
    _capture("cross_chassis_tcp_8080_allowed", answer)
    assert answer["verdict"] == "allowed", answer["reason"]
    assert answer["reason"]["id"] == lab.web_rule["id"]
    assert answer["reason"]["chassis"] == "hv2"
    first, second = answer["hops"]
    seg = lab.network["provider:segmentation_id"]
    assert first["chassis"] == "hv1" and second["chassis"] == "hv2"
    assert first["datapath_id"] != second["datapath_id"]
    [out] = [o for o in first["outputs"] if o["kind"] == "tunnel"]
    assert out["remote_chassis"] == "hv2" and out["tun_id"] == seg
    assert second["in_port"]["kind"] == "tunnel" and second["in_port"]["remote_chassis"] == "hv1"
    assert second["tun_id"] == seg and f"tun_id={seg:#x}" in second["flow"]
    assert _tables(second)[0] == ("classify", "tunnel")
    assert ("ingress_acl", "rule") in _tables(second)
    assert answer["delivered_to"] == [{"chassis": "hv2", "ofport": answer["destination"]["ofport"],
                                       "port": lab.ports["s2"]["id"]}]
    assert any("tnl_push" in a for a in first["datapath_actions"])
    listener = lab.guests["s2"].tcp_listen(8080)
    assert lab.guests["c1"].tcp_connect("10.0.0.13", 8080, "over the tunnel", listener=listener)


def test_cross_chassis_ping_is_denied_on_the_remote_chassis(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.13")
    _capture("cross_chassis_icmp_default_deny", answer)
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "default_deny"
    assert answer["reason"]["chassis"] == "hv2" and answer["reason"]["port"] == \
        lab.ports["s2"]["id"]
    assert [h["chassis"] for h in answer["hops"]] == ["hv1", "hv2"]
    assert lab.guests["c1"].ping("10.0.0.13", count=2, interval=0.2, timeout=1)[1] == 0


def test_port_without_port_security_is_exempt(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.14")
    _capture("cross_chassis_icmp_port_security_disabled", answer)
    assert answer["verdict"] == "allowed"
    assert answer["reason"]["kind"] == "port_security_disabled"
    assert answer["reason"]["port"] == lab.ports["open"]["id"]
    assert lab.guests["c1"].ping("10.0.0.14", count=2, interval=0.2)[1] == 2


def test_other_projects_address_is_isolated(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.21", protocol="tcp", dst_port=8080)
    _capture("isolation_flood_other_project", answer)
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "isolation"
    assert answer["reason"]["port"] == lab.ports["b1"]["id"]
    # an unknown MAC floods the source's own network only: never to project p2's port
    reached = {d["port"] for d in answer["delivered_to"]}
    assert lab.ports["b1"]["id"] not in reached
    assert reached <= {lab.ports[n]["id"] for n in ("s1", "s2", "open")}


def test_spoofed_source_is_port_security(lab: Lab) -> None:
    answer = _trace(lab.api, lab.ports["c1"], "10.0.0.12", protocol="tcp", dst_port=8080,
                    src_ip="10.0.0.99")
    _capture("spoofed_source_port_security", answer)
    assert answer["verdict"] == "dropped"
    assert answer["reason"]["kind"] == "port_security"
    assert answer["reason"]["port"] == lab.ports["c1"]["id"]


def test_errors_are_neutron_shaped(lab: Lab) -> None:
    resp = lab.api.get("/v1/trace?port=00000000-0000-0000-0000-000000000000&dst_ip=10.0.0.1")
    assert resp.status == 404 and resp.body["NeutronError"]["type"] == "PortNotFound"
    resp = lab.api.get(f"/v1/trace?port={lab.ports['c1']['id']}&dst_ip=10.0.0.12&protocol=tcp")
    assert resp.status == 400 and "dst_port" in resp.body["NeutronError"]["message"]
    resp = lab.api.get(f"/v1/trace?port={lab.ports['c1']['id']}&dst_ip=10.0.0.77")
    assert resp.status == 200 and resp.body["reason"]["kind"] == "unknown_destination"
