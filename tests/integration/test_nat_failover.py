"""A gateway chassis dies: the router's SNAT moves to the other gateway, and back.

Two hypervisors, both gateway chassis (`loom-gateway=true`), both mapping physnet1
(br-ex on each, joined by a veth). The router prefers one of them (rendezvous hash,
`gateway.gateway_order`): call it P, the other S. The guest and the outside host
(198.51.100.1, on S's br-ex) both sit on S, so the way out first crosses the tunnel
to P, SNATs there, and comes back over physnet1 to S's br-ex.

P's OVS is then killed (ovsdb-server and ovs-vswitchd: the host is gone). Checked:
the guest's ping to the outside resumes through S, and the gap is measured (printed,
not asserted: the machines are shared); the upstream's MAC, learnt on P, is not asked
again; when P comes back the router returns to it and the ping still goes.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.compiler.gateway import gateway_order
from tests.integration.test_nat import OUTSIDE_IP, PROVIDER_BRIDGE, _created, _physical_network
from topologies.guest import Guest
from topologies.lab import Lab

pytestmark = pytest.mark.integration

SPEC = """
name: natfo
hypervisors:
  - name: hv1
  - name: hv2
controller: {}
"""
INTERVAL = 0.05  # seconds between two pings while the gateway dies


def _quiet(_line: str) -> None:
    pass


class World:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.preferred = ""
        self.survivor = ""
        self.guest: Guest | None = None
        self.outside: Guest | None = None


def _build(world: World) -> None:
    lab, api = world.lab, world.lab.api
    _physical_network(lab, gateways=("hv1", "hv2"))
    public = _created(api.post("/v2.0/networks", {"network": {
        "name": "public", "project_id": "admin", "router:external": True, "shared": True,
        "provider:network_type": "flat", "provider:physical_network": "physnet1"}}), "public")
    _created(api.post("/v2.0/subnets", {"subnet": {
        "network_id": public["id"], "cidr": "198.51.100.0/24", "ip_version": 4,
        "gateway_ip": OUTSIDE_IP, "enable_dhcp": False, "project_id": "admin",
        "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.100.99"}]}}), "v4")
    net = _created(api.post("/v2.0/networks", {"network": {
        "name": "inside", "project_id": "alpha", "provider:network_type": "vxlan"}}), "net")
    subnet = _created(api.post("/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4,
        "project_id": "alpha"}}), "subnet")
    router = _created(api.post("/v2.0/routers", {"router": {
        "name": "edge", "project_id": "alpha",
        "external_gateway_info": {"network_id": public["id"]}}}), "router")
    resp = api.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                   {"subnet_id": subnet["id"]})
    assert resp.status == 200, resp.body
    world.preferred, world.survivor = gateway_order(router["id"], ("hv1", "hv2"))
    survivor = lab.hypervisor(world.survivor)
    port = _created(api.post("/v2.0/ports", {"port": {
        "network_id": net["id"], "project_id": "alpha",
        "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "10.0.0.11"}]}}), "port")
    world.guest = Guest("g1", port["mac_address"], "10.0.0.11/24", sandbox=lab.sandbox,
                        ovs=survivor.ovs, bridge="br-int", port_id=port["id"],
                        mtu=int(net["mtu"]))
    world.guest.run(["ip", "route", "replace", "default", "via", "10.0.0.1"])
    lab.wait_ports_active([port["id"]])
    world.outside = Guest("outside", "02:00:5e:00:51:01", f"{OUTSIDE_IP}/24",
                          sandbox=lab.sandbox, ovs=survivor.ovs, bridge=PROVIDER_BRIDGE)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    spec = tmp_path_factory.mktemp("natfo") / "natfo.yaml"
    spec.write_text(SPEC)
    lab = Lab.up(spec, name=f"natfo-{secrets.token_hex(3)}", progress=_quiet)
    w = World(lab)
    try:
        _build(w)
        assert w.guest is not None
        deadline = time.monotonic() + 40
        while w.guest.ping(OUTSIDE_IP, count=1, timeout=1)[1] != 1:
            assert time.monotonic() < deadline, "no SNATed ping to the outside in 40 s"
        yield w
    finally:
        for g in (w.guest, w.outside):
            if g is not None:
                g.close()
        problems = lab.down()
        assert not problems, problems


def _snat_packets(lab: Lab, hv: str) -> int:
    """Packets SNATed on `hv` (0 when it is not the gateway: other chassis' snat table
    only passes the frames on to it)."""
    rows = lab.hypervisor(hv).ovs.dump_flows("br-int", "table=42")
    return sum(int(m.group(1)) for r in rows if "nat(src=" in r
               for m in [re.search(r"n_packets=(\d+)", r)] if m)


def test_snat_moves_to_the_other_gateway_when_its_chassis_dies_and_back(world: World,
                                                                         capsys: Any) -> None:
    lab, guest = world.lab, world.guest
    assert guest is not None
    assert guest.ping(OUTSIDE_IP, count=3, interval=0.2) == (3, 3)
    assert _snat_packets(lab, world.preferred) > 0  # the way out is through P
    assert _snat_packets(lab, world.survivor) == 0
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", guest.netns, "ping", "-n", "-i", str(INTERVAL), "-w", "20",
         OUTSIDE_IP], stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)
    dead = lab.hypervisor(world.preferred).ovs
    dead.kill_vswitchd()
    dead.stop_ovsdb()
    try:
        out, _ = pinger.communicate(timeout=40)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        sent, received = int(m.group(1)), int(m.group(2))
        gap = (sent - received) * INTERVAL
        with capsys.disabled():
            print(f"\nSNAT gateway failover ({world.preferred} killed): {sent - received} of "
                  f"{sent} pings lost at {INTERVAL * 1000:.0f} ms: a gap of ~{gap:.1f} s")
        # it came back through the survivor before the loop ended
        assert received > 2.0 / INTERVAL * 0.8, out
        assert guest.ping(OUTSIDE_IP, count=3, interval=0.2) == (3, 3)
        assert _snat_packets(lab, world.survivor) > 0
    finally:
        dead.start()
    # P comes back: the router returns to it (its preferred gateway) and still goes out
    deadline = time.monotonic() + 60
    while _snat_packets(lab, world.preferred) == 0 or \
            guest.ping(OUTSIDE_IP, count=1, timeout=1)[1] != 1:
        assert time.monotonic() < deadline, "no way out through the returned gateway"
        guest.ping(OUTSIDE_IP, count=1, timeout=1)
        time.sleep(0.5)
